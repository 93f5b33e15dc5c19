"""End-to-end evaluation of the real SmolLM2-135M-Instruct GGUF on small slices (8 CPU devices, data parallel)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import pivot_jax
from pivot_jax.eval.items import build_items, render_prompt
from pivot_jax.evaluate import evaluate, eval_config

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def flores_cfg(**kw):
    if not SHARED.exists():
        pytest.skip(f"{SHARED} is absent")
    c = eval_config()
    c.update(dict(set="translation", source_lang="en", target_lang="es", limit=4, prompt_format="chat",
                  max_new_tokens=12, batch_size=3, flores_dir=str(SHARED / "flores200_devtest")))
    c.update(kw)
    return c


def test_sharded_predictions_equal_single_device_generation_and_are_scored(smollm2_gguf, tmp_path):
    cfg = flores_cfg()
    index = tmp_path / "index.jsonl"
    results = evaluate(cfg, f"gguf:{smollm2_gguf}", tmp_path / "out", index, {"pairs": "0"})
    names = {r["name"] for r in results}
    assert {"bleu", "chrf++", "language_fidelity"} <= names
    assert all(r["samples"] == 4 and r["protocol"] == "translation/en-es/chat/greedy" for r in results)
    records = [json.loads(l) for l in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == 4 and {"id", "prompt", "output", "answer", "language"} <= set(records[0])

    m = pivot_jax.load_pretrained(f"gguf:{smollm2_gguf}")  # one device, no mesh
    items = build_items(cfg)
    by_id = {r["id"]: r for r in records}
    expected = m.generate([item.instruction + "\n\n" + item.input for item in items], max_new_tokens=12, chat=True)
    assert [by_id[item.id]["output"] for item in items] == expected
    assert by_id[items[0].id]["prompt"] == render_prompt(items[0], "chat", m.tokenizer)

    summary = json.loads((tmp_path / "out" / "results.json").read_text())
    assert summary["model"].startswith("gguf:") and summary["metrics"] == results
    assert "| bleu |" in (tmp_path / "out" / "results.md").read_text()
    lines = [json.loads(l) for l in index.read_text().splitlines()]
    assert len(lines) == len(results) and lines[0]["pairs"] == "0" and lines[0]["target_lang"] == "es"


def test_interrupted_run_resumes_without_regenerating(smollm2_gguf, tmp_path):
    cfg = flores_cfg(limit=3, max_new_tokens=6)
    out = tmp_path / "out"
    evaluate(cfg, f"gguf:{smollm2_gguf}", out)
    lines = (out / "predictions.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    first["output"] = first["answer"] = "SENTINEL"  # proves this one is not generated again
    (out / "predictions.jsonl").write_text(json.dumps(first) + "\n" + lines[1][: len(lines[1]) // 2])  # torn line
    evaluate(cfg, f"gguf:{smollm2_gguf}", out)
    records = [json.loads(l) for l in (out / "predictions.jsonl").read_text().splitlines() if l.endswith("}")]
    by_id = {r["id"]: r for r in records}
    assert len(by_id) == 3 and by_id[first["id"]]["output"] == "SENTINEL"


def test_cli_on_the_builtin_cldr_split(smollm2_gguf, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pivot_jax.evaluate", "--config", f"{REPO}/configs/eval/cldr.py:tgt=it,limit=3,format=chat",
         "--model", f"gguf:{smollm2_gguf}", "--output", str(tmp_path / "cldr"), "--results_index",
         str(tmp_path / "index.jsonl"), "--config.max_new_tokens=8", "--tag", "run=test"],
        capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| chrf++ |" in result.stdout
    assert json.loads((tmp_path / "index.jsonl").read_text().splitlines()[0])["run"] == "test"
    bad = subprocess.run([sys.executable, "-m", "pivot_jax.evaluate", "--config", f"{REPO}/configs/eval/cldr.py",
                          "--model", f"gguf:{smollm2_gguf}", "--config.max_new_tokenz=8"],
                         capture_output=True, text=True, cwd=REPO)
    assert bad.returncode != 0 and "max_new_tokenz" in bad.stderr
