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
