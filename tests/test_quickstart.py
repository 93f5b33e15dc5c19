"""The README's main job, shortened: configs/quickstart.py end to end (built-in data, train, eval, report)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quickstart_runs_end_to_end(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pivot_jax.train", "--config", "configs/quickstart.py:steps=12",
         "--workdir", str(tmp_path), "--config.train.log_every_steps=6", "--config.checkpoint.every_steps=6",
         "--config.eval.every_steps=12", "--config.eval.steps=1",
         f"--config.eval.generate_config={REPO}/configs/eval/cldr.py:tgt=es+zh+ko+it,limit=3"],
        cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Results after 12 steps" in result.stdout
    for line in ("train loss", "held-out loss", "chrf++/zh", "language_fidelity/ko", "TensorBoard:", "checkpoint:"):
        assert line in result.stdout, line
    records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 6, 12] and records[2]["loss"] < records[1]["loss"]
    assert records[2]["eval_loss"] < records[0]["eval_loss"]  # held-out loss before training vs after
    assert (tmp_path / "checkpoints" / "12").is_dir()
    report = (tmp_path / "report.md").read_text()
    assert "@ step 0" in report and "@ step 12" in report and "| chrf++/ko |" in report
