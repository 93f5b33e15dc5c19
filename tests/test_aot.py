"""`python -m pivot_jax.aot`: the trainer's own step compiled for TPU slices with libtpu on this CPU host (no TPU),
its memory against HBM, its FLOPs, and the search for a change that fits."""

import json
from pathlib import Path

import pytest

pytest.importorskip("libtpu", reason="libtpu (jax[tpu], in the dev extra) compiles for TPUs and is not installed")

from pivot_jax import sharding  # noqa: E402
from pivot_jax.aot.__main__ import main  # noqa: E402
from pivot_jax.aot.flops import program_flops  # noqa: E402
from pivot_jax.aot.plan import apply_overrides, out_of_memory_temporaries  # noqa: E402
from pivot_jax.aot.planner import plan_config  # noqa: E402
from pivot_jax.aot.topology import TopologyError, compile_devices, parse_slice  # noqa: E402
from pivot_jax.config import load_config_file  # noqa: E402
from pivot_jax.errors import ConfigError  # noqa: E402
from pivot_jax.model import preset  # noqa: E402
from pivot_jax.throughput import training_flops_per_token  # noqa: E402
from pivot_jax.trainer.build import build  # noqa: E402

TINY = str(Path(__file__).resolve().parents[1] / "configs" / "tiny.py")


def test_tiny_on_v5p_8_compiles_with_consistent_figures(tmp_path, capsys):
    out = tmp_path / "plan.json"
    figures = main(["--config", TINY, "--topology", "v5p-8", "--output", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(figures))
    assert "fits" in capsys.readouterr().out
    plan, roof = figures["plan"], figures["roofline"]
    assert figures["fits"] and plan["chips"] == 4 and plan["device_kind"] == "TPU v5"
    assert plan["mesh"] == {"data": 4, "fsdp": 1, "tensor": 1} and plan["hbm_bytes"] == 95 * 2**30
    m = plan["memory"]
    assert all(m[k] > 0 for k in ("params", "opt_state", "batch", "arguments", "temporaries", "generated_code"))
    assert m["total"] == m["arguments"] + m["temporaries"] + m["generated_code"] + m["outputs"] - m["aliased"]
    # data=4 replicates the parameters: each device holds all of them in float32, and Adam's two moments.
    params = preset("tiny").num_params() * 4
    assert m["params"] == params and params * 2 <= m["opt_state"] < params * 2 + 64
    assert m["arguments"] >= m["params"] + m["opt_state"] + m["batch"]
    assert 0 < m["aliased"] <= m["outputs"]  # the new state is written over the donated old one
    tokens = 16 * 64
    assert roof["analytic_flops"] == training_flops_per_token(preset("tiny"), 64) * tokens
    # Attention's full square over the causal half; XLA's own count sees the scanned layer once.
    assert roof["analytic_flops"] < roof["program_flops"] < 1.2 * roof["analytic_flops"]
    assert roof["xla_flops"] < roof["program_flops"] and roof["hbm_bytes"] > 0
    assert roof["step_s"] == max(roof["compute_s"], roof["memory_s"]) and 0 < roof["mfu_bound"] <= 1


def _program_flops(config, devices):
    mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor, devices)
    s = build(config, mesh, num_steps=10)
    with s.activate():
        return program_flops(s.step_fn, s.abstract_state, s.abstract_batch())


def test_program_flops_count_every_layer_micro_batch_and_recomputation():
    """Exactly the matmuls: 6 x matmul parameters x tokens plus attention's two [S, S] products (forward and
    twice backward) per layer, scanned or not, in one batch or two; full remat adds the layers' forward."""
    devices = compile_devices(parse_slice("v4-8"))
    config = apply_overrides(load_config_file(TINY), {"model.preset": "tiny-llama3", "model.attention": "xla",
                                                      "mesh.data": 1, "mesh.fsdp": 4})
    m = preset("tiny-llama3")
    rows, length, tokens = 16, 64, 16 * 64
    layer_params = m.num_layers * (m.embed_dim * m.head_dim * (2 * m.num_heads + 2 * m.num_kv_heads)
                                   + 3 * m.embed_dim * m.mlp_dim)
    matmul_params = layer_params + m.embed_dim * m.vocab_size  # the output projection; the embedding is a gather
    scores = 2 * length * length * m.num_heads * m.head_dim * rows * m.num_layers  # one [S, S] product
    exact = 6 * matmul_params * tokens + 6 * scores
    for change in ({}, {"model.scan_layers": False}, {"train.grad_accum_steps": 2}):
        assert _program_flops(apply_overrides(config, change), devices) == exact, change
    # The forward again, less each layer's last matmul (MLP down): no gradient needs its output, so none recomputes it.
    down = m.num_layers * m.mlp_dim * m.embed_dim
    full = _program_flops(apply_overrides(config, {"model.remat_policy": "full"}), devices)
    assert full == exact + 2 * (layer_params - down) * tokens + 2 * scores


@pytest.mark.slow
def test_a_step_over_the_hbm_given_gets_a_change_that_fits_when_planned_again():
    config = apply_overrides(load_config_file(TINY), {"train.global_batch_size": 64})
    report = plan_config(config, "v5p-8", hbm_gib=0.025)
    assert not report.plan.fits and "RESOURCE_EXHAUSTED" in report.plan.error
    assert report.plan.memory.total > 0.025 * 2**30  # what the compiler said the step needs
    suggestion = report.search.plan
    assert suggestion is not None and suggestion.fits and not report.search.topology
    assert report.search.override_line == " ".join(f"--config.{k}={v}" for k, v in suggestion.overrides.items())
    assert set(suggestion.overrides) <= {"mesh.data", "mesh.fsdp", "mesh.tensor", "model.remat_policy",
                                         "train.grad_accum_steps"}
    again = plan_config(apply_overrides(config, suggestion.overrides), "v5p-8", hbm_gib=0.025, search=False)
    assert again.plan.fits and again.plan.memory.total <= 0.025 * 2**30


@pytest.mark.slow
def test_a_model_no_layout_of_the_slice_holds_gets_the_smallest_slice_that_does(capsys):
    """llama2-7b's float32 state (75 GiB) overflows one v5e chip and four; eight hold it."""
    args = ["--config", TINY, "--config.model.preset=llama2-7b", "--config.train.global_batch_size=8"]
    figures = main([*args, "--topology", "v5litepod-1"])
    suggestion = figures["suggestion"]
    assert not figures["fits"] and suggestion["topology"] == "v5litepod-8"
    assert suggestion["line"].startswith("--topology=v5litepod-8 --config.mesh.data=1 --config.mesh.fsdp=8")
    assert "fits on v5litepod-8 with: --topology=v5litepod-8" in capsys.readouterr().out
    again = main([*args, *suggestion["line"].split()])
    assert again["fits"] and again["topology"] == "v5litepod-8"


def test_slice_names_and_their_errors(capsys):
    assert (parse_slice("v5p-64").chips, parse_slice("v5p-64").shape) == (32, (2, 4, 4))
    assert parse_slice("v5litepod-16").shape == parse_slice("v5e-16").shape == (4, 4)
    assert (parse_slice("v4-8").chips, parse_slice("v6e-8").topology) == (4, "v6e:2x4")
    with pytest.raises(TopologyError, match=r"--topology='v5p-7': no such v5p slice; the sizes are v5p-8, v5p-16"):
        parse_slice("v5p-7")
    with pytest.raises(TopologyError, match="not a TPU slice name"):
        parse_slice("v9-8")
    with pytest.raises(SystemExit):
        main(["--config", TINY, "--topology", "h100-8"])
    assert "error: --topology='h100-8': not a TPU slice name" in capsys.readouterr().err
    with pytest.raises(TopologyError, match=r"--hbm_gib=32.0: must be in \(0, 16"):
        plan_config(load_config_file(TINY), "v5litepod-4", hbm_gib=32.0)


def test_multislice_meshes_put_the_data_axis_across_slices():
    devices = compile_devices(parse_slice("v5p-8"), num_slices=2)
    mesh = sharding.make_mesh(2, 4, 1, devices)
    assert [{d.slice_index for d in row.flat} for row in mesh.devices] == [{0}, {1}]
    with pytest.raises(ConfigError, match="mesh.data=1: must be a multiple of the 2 slices"):
        sharding.make_mesh(1, 8, 1, devices)
    report = plan_config(load_config_file(TINY), "v5p-8", num_slices=2)
    assert report.plan.fits and report.plan.num_slices == 2 and report.plan.mesh["data"] == 8


def test_out_of_memory_messages_are_read_for_what_the_step_needs():
    assert out_of_memory_temporaries("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for "
                                     "HLO temporaries (54.55G) exceeds available HBM (15.75G).", 0) == int(
        54.55 * 2**30)
    assert out_of_memory_temporaries("Ran out of memory in memory space hbm. Used 25.13M of 25.00M hbm. Exceeded "
                                     "hbm capacity by 131.7K.", 2**20) == int(25.13 * 2**20) - 2**20
    assert out_of_memory_temporaries("RESOURCE_EXHAUSTED: something else", 0) is None
