"""benchmarks/: the result files run.py collects, the goals it reads from them, and FSDP really dividing the
state (no timings are asserted: speed lives in the printed figures)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import run  # noqa: E402  (benchmarks/run.py)

from common import format_table  # noqa: E402


def _results(train_ratio=1.3, decode_ratio=1.5, ours_gib=80.0, maxtext_gib=90.0):
    return {
        "matmul": {"rows": [{"product": "square 2048^3", "XLA GFLOP/s": 800.0, "torch GFLOP/s": 1000.0}]},
        "train_step": {"rows": [{"model": "smollm2-135m", "pivot_jax / torch": train_ratio, "pivot_jax TFLOP/s": 0.1,
                                 "pivot_jax tok/s": 150.0},
                                {"model": "quickstart", "pivot_jax / torch": 2.5, "pivot_jax TFLOP/s": 0.05}]},
        "quickstart": {"rows": [{"settings": "before: x", "vs before": 1.0},
                                {"settings": "configs/quickstart.py", "vs before": 1.4, "tokens/s": 13440.0}]},
        "generate": {"rows": [{"batch": 1, "ratio": 1.0}, {"batch": 8, "ratio": decode_ratio}]},
        "maxtext": {"rows": [{"peer": "pivot_jax", "slice": "v5p-8", "total GiB": ours_gib},
                             {"peer": "MaxText", "slice": "v5p-8", "total GiB": maxtext_gib},
                             {"peer": "MaxText", "slice": "cpu x1 (float32)", "tokens/s/device": 100.0}]},
    }


def test_goals_read_each_section_and_judge_the_target():
    table = {g["goal"]: g for g in run.goals(_results())}
    assert table["train step vs torch, float32 (smollm2-135m)"]["met"] == "yes"
    assert table["greedy decoding vs transformers, batch 8"]["met"] == "no"
    assert table["greedy decoding vs transformers, batch 8"]["measured"] == 1.5
    memory = table["AOT per-device memory vs MaxText (llama2-7b, v5p-8)"]
    assert memory["measured"] == pytest.approx(80 / 90) and memory["met"] == "yes"
    assert table["quickstart tokens/s vs before this work"]["measured"] == pytest.approx(2.1)
    peak = table["fraction of this machine's float32 matmul peak (smollm2-135m train step)"]
    assert peak["measured"] == pytest.approx(0.1)
    assert table["train step vs MaxText on this CPU (SmolLM2-135M shape, float32)"]["measured"] == 1.5
    assert "| goal" in format_table(list(table.values()))


def test_goals_say_what_was_not_measured():
    results = _results()
    del results["maxtext"], results["generate"]
    results["train_step"] = {"benchmark": "train_step", "failed": "boom"}
    table = {g["goal"]: g for g in run.goals(results)}
    assert table["greedy decoding vs transformers, batch 8"]["met"] == "not measured"
    assert table["AOT per-device memory vs MaxText (llama2-7b, v5p-8)"]["met"] == "not measured"
    assert table["train step vs torch, float32 (smollm2-135m)"]["met"] == "not measured"


def test_run_records_a_failing_section_and_goes_on(tmp_path):
    result = run.run_section("broken", ["matmul_peak.py", "--size", "not-a-number"], tmp_path)
    assert "failed" in result and "invalid int value" in result["failed"]


def test_fsdp_divides_params_and_optimizer_state_across_devices(tmp_path):
    out = tmp_path / "fsdp.json"
    subprocess.run([sys.executable, str(BENCHMARKS / "fsdp_memory.py"), "--devices", "1", "4", "--preset", "tiny",
                    "--batch", "4", "--seq_len", "32", "--json", str(out)], check=True, capture_output=True)
    rows = json.loads(out.read_text())["rows"]
    assert [r["devices"] for r in rows] == [1, 4]
    # Norm scales stay whole on every device; everything else is split four ways.
    assert 0.25 <= rows[1]["params + optimizer vs 1 device"] < 0.3
    assert rows[0]["params MiB"] > 0 and rows[0]["optimizer MiB"] > rows[0]["params MiB"]
