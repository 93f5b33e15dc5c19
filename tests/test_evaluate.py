"""End-to-end evaluation of the real SmolLM2-135M-Instruct GGUF on small slices (8 CPU devices, data parallel)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pivot_jax
from pivot_jax.config import eval_config
from pivot_jax.eval.items import build_items, render_prompt
from pivot_jax.eval.run import evaluate

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
    assert len(lines) == len(results) and lines[0]["tags"] == {"pairs": "0"} and lines[0]["step"] is None and lines[0]["target_lang"] == "es"


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
    assert json.loads((tmp_path / "index.jsonl").read_text().splitlines()[0])["tags"]["run"] == "test"
    bad = subprocess.run([sys.executable, "-m", "pivot_jax.evaluate", "--config", f"{REPO}/configs/eval/cldr.py",
                          "--model", f"gguf:{smollm2_gguf}", "--config.max_new_tokenz=8"],
                         capture_output=True, text=True, cwd=REPO)
    assert bad.returncode != 0 and "max_new_tokenz" in bad.stderr


class LongerAnswerJudge:
    """An OpenAI-compatible /chat/completions on 127.0.0.1 whose verdict prefers the longer answer."""

    def __init__(self):
        import http.server
        import threading

        judge = self
        self.requests = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                judge.requests += 1
                user = body["messages"][-1]["content"]
                a = user.split("[The Start of Assistant A's Answer]\n")[1].split("\n[The End of Assistant A's")[0]
                b = user.split("[The Start of Assistant B's Answer]\n")[1].split("\n[The End of Assistant B's")[0]
                verdict = "[[A]]" if len(a) > len(b) else "[[B]]" if len(b) > len(a) else "[[C]]"
                reply = json.dumps({"choices": [{"message": {"role": "assistant", "content": f"Fine. {verdict}"}}],
                                    "usage": {"prompt_tokens": 10, "completion_tokens": 3}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def test_pairwise_judging_against_another_run(smollm2_gguf, tmp_path):
    from pivot_jax.eval.judge import ChatClient
    from pivot_jax.eval.run import JudgeOptions

    if not SHARED.exists():
        pytest.skip(f"{SHARED} is absent")
    cfg = eval_config()
    cfg.update(dict(set="alpaca_eval", target_lang="en", file=str(SHARED / "alpaca_eval/alpaca_eval.json"), limit=3,
                    prompt_format="chat", max_new_tokens=6, batch_size=3))
    # The other run: short answers for the first two items, a long one for the third.
    other = tmp_path / "other"
    other.mkdir()
    ids = [item.id for item in build_items(cfg)]
    answers = ["x", "y", "a much longer answer than six tokens could ever be " * 3]
    (other / "predictions.jsonl").write_text("".join(json.dumps({"id": i, "answer": a}) + "\n"
                                                     for i, a in zip(ids, answers)))
    server = LongerAnswerJudge()
    try:
        client = ChatClient(base_url=server.url, model="judge", api_key="sk-test", cache_dir=tmp_path / "cache")
        results = evaluate(cfg, f"gguf:{smollm2_gguf}", tmp_path / "ours", judge=JudgeOptions("pairwise", other, client))
    finally:
        server.close()
    values = {r["name"]: r["value"] for r in results}
    assert values["judge_win_pct"] == pytest.approx(200 / 3) and values["judge_loss_pct"] == pytest.approx(100 / 3)
    assert server.requests == 6  # both orders for each item
    judged = json.loads((tmp_path / "ours" / "judge.json").read_text())
    assert judged["summary"]["per_dataset"] and judged["usage"]["requests"] == 6
    assert "sk-test" not in (tmp_path / "ours" / "judge.json").read_text()


@pytest.mark.slow
def test_two_processes_evaluate_like_one(smollm2_gguf, tmp_path):
    """`python -m pivot_jax.evaluate` on two hosts (one device each): it initialises the job, splits the rows,
    and writes what one process writes."""
    import socket

    def command(out, *flags):
        return [sys.executable, "-m", "pivot_jax.evaluate", "--config", f"{REPO}/configs/eval/cldr.py:tgt=it,limit=4",
                "--model", f"gguf:{smollm2_gguf}", "--output", str(out), "--results_index", str(out / "index.jsonl"),
                "--config.max_new_tokens=4", "--config.batch_size=2", *flags]

    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1", "JAX_PLATFORMS": "cpu"}
    one = subprocess.run(command(tmp_path / "one"), env=env, capture_output=True, text=True, cwd=REPO)
    assert one.returncode == 0, one.stderr[-2000:]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    procs = [subprocess.Popen(command(tmp_path / "two", f"--coordinator_address=127.0.0.1:{port}",
                                      "--num_processes=2", f"--process_id={i}"),
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
             for i in range(2)]
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-2000:]

    def outputs(out):
        return {r["id"]: r["output"] for r in map(json.loads, (out / "predictions.jsonl").read_text().split("\n")[:-1])}

    assert outputs(tmp_path / "two") == outputs(tmp_path / "one") and len(outputs(tmp_path / "one")) == 4
