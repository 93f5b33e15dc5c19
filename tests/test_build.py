"""`trainer.build` compiles the train step from a config alone: abstract shapes, no data, no weights."""

import importlib.util
from pathlib import Path

import jax

from pivot_jax import sharding
from pivot_jax.trainer.build import build

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _config(name, arg):
    spec = importlib.util.spec_from_file_location(name, CONFIGS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def test_llama2_7b_coit_step_compiles_on_8_devices_from_the_config_alone():
    config = _config("coit", "lang=es,model=llama2-7b")  # seqio data, 3 epochs: neither is touched here
    mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor, jax.devices()[:8])
    s = build(config, mesh, num_steps=1000)
    assert s.model_cfg.num_params() == 6_738_415_616 and dict(mesh.shape) == {"data": 1, "fsdp": 8, "tensor": 1}
    assert s.abstract_state["params"]["layers"]["mlp"]["gate_proj"].sharding.shard_shape((32, 4096, 11008))[1] == 512
    with s.activate():
        compiled = s.step_fn.lower(s.abstract_state, s.abstract_batch()).compile()
    # Per device: its eighth of the f32 params and both Adam moments (~10 GB), plus activations.
    memory = compiled.memory_analysis()
    assert memory is None or memory.argument_size_in_bytes < 12e9


def test_the_trainer_takes_the_chunked_loss_from_its_config():
    """`train.loss_chunk` and `train.loss_positions` reach the compiled step: the same loss as the full logits."""
    import numpy as np

    rng = np.random.default_rng(0)
    batch = {"decoder_input_tokens": rng.integers(1, 200, (8, 32)),
             "decoder_target_tokens": rng.integers(1, 200, (8, 32)),
             "decoder_loss_weights": (rng.random((8, 32)) < 0.3).astype(np.int32),
             "decoder_segment_ids": np.ones((8, 32), np.int32), "decoder_positions": np.tile(np.arange(32), (8, 1))}
    losses = {}
    for chunk, positions in ((0, 0), (12, 0), (8, 32)):
        config = _config("tiny", None)
        config.train.seq_len, config.train.loss_chunk, config.train.loss_positions = 32, chunk, positions
        mesh = sharding.make_mesh(1, 1, 1, jax.devices()[:1])
        s = build(config, mesh, num_steps=1)
        with s.activate():
            state = s.init_fn()
            device_batch = {k: jax.device_put(np.asarray(v, np.int32), s.batch_sharding) for k, v in batch.items()}
            _, metrics = s.step_fn(state, device_batch)
        losses[(chunk, positions)] = float(metrics["loss"])
    full = losses.pop((0, 0))
    assert all(abs(v - full) < 1e-5 * abs(full) for v in losses.values()), (full, losses)
