"""`python -m pivot_jax.construct translate`: PLUG's prompts pinned to the spec, the split of an answer at the
markers, the endpoint path against a local OpenAI-compatible server, and our-model path on a tiny random model."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path

import pytest
from flax import nnx
from test_chat_client import ChatHandler, FakeChatServer, clear_env, serving

from pivot_jax import model as model_lib
from pivot_jax.construct import translate as T
from pivot_jax.construct.__main__ import main
from pivot_jax.errors import ConfigError
from pivot_jax.jsonl import read_jsonl
from pivot_jax.pretrained import Pretrained
from pivot_jax.tokenizer import Tokenizer

SPEC = Path(__file__).resolve().parents[1].parent / "shared" / "specs" / "formats.md"
API_KEY = "sk-translate-0a1b2c3d-SECRET"
KEY_ENV = "PIVOT_TEST_TRANSLATE_KEY"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    clear_env(monkeypatch)


# ---------------------------------------------------------------------------------------------------------------
# Prompts and the split


def test_prompts_are_the_specs_verbatim():
    if not SPEC.is_file():
        pytest.skip(f"the spec formats.md is not in the shared folder beside the repository ({SPEC.parent.name}/)")
    text = SPEC.read_text(encoding="utf-8")
    section = text[text.index("## PLUG: translating an English instruction set into X"):]
    section = section[:section.find("\n## ", 1) if "\n## " in section[1:] else len(section)]
    spec = {lang: body.replace("\\n", "\n") for lang, body in re.findall(r"^  - (\w+): `(.*)`$", section, re.M)}
    assert sorted(spec) == ["es", "it", "ko", "zh"]
    assert T.PROMPTS == spec


def test_prompt_rendering_and_unknown_language():
    assert T.render_prompt("es", "Di hola {x}", "Hola") == (
        "Traduce el siguiente texto al español. Mantén dos tokens especiales <|user|> y <|assistant|> tal como "
        "están.\n\n<|user|> Di hola {x} \n\n<|assistant|> Hola")
    with pytest.raises(ConfigError, match="'fr'.*known: es, it, ko, zh"):
        T.prompt_template("fr")


@pytest.mark.parametrize("answer, expected", [
    ("<|user|> Di hola \n\n<|assistant|> Hola ", ("Di hola", "Hola")),
    ("Claro:\n<|user|>Línea 1\nLínea 2<|assistant|>\nR", ("Línea 1\nLínea 2", "R")),
    # the prompt's first line echoed: the last <|user|> counts
    ("Mantén <|user|> y <|assistant|> tal cual.\n\n<|user|> I \n\n<|assistant|> R", ("I", "R")),
    ("Di hola <|assistant|> Hola", None),  # no <|user|>
    ("<|user|> Di hola Hola", None),  # no <|assistant|>
    ("<|assistant|> Hola <|user|> Di hola", None),  # out of order
    ("<|user|>  \n<|assistant|> Hola", None),  # empty instruction
    ("<|user|> Di hola <|assistant|>  ", None),  # empty response
])
def test_split_answer(answer, expected):
    assert T.split_answer(answer) == expected


def test_truncation_shares_the_budget():
    assert T._share_budget(3000, 100, 2038) == (1938, 100)
    assert T._share_budget(100, 3000, 2038) == (100, 1938)
    assert T._share_budget(1500, 1500, 2038) == (1019, 1019)
    assert T._cut_words("one  two\nthree four", 3) == "one  two\nthree"


# ---------------------------------------------------------------------------------------------------------------
# The endpoint, end to end


class Translator(FakeChatServer):
    """Answers in PLUG's marker format (Spanish around the English), except for GARBAGE (no markers) and ENGLISH
    (the English copied back, as a small model does); FAIL gets an HTTP 500 that echoes the Authorization header
    (the client must keep the key out of what it reports)."""

    def reply(self, messages: list[dict]) -> str:
        instruction, response = T.split_answer(messages[-1]["content"])
        if "GARBAGE" in instruction:
            return "Lo siento, no puedo traducir esto."
        if "ENGLISH" in instruction:
            return f"<|user|> {instruction} \n\n<|assistant|> {response}"
        return f"Aquí está:\n<|user|> {ES}{instruction} \n\n<|assistant|> {ES_ANSWER}{response}"


ES, ES_ANSWER = "Por favor, traduce esto al español: ", "La respuesta en español es la siguiente: "


class TranslatorHandler(ChatHandler):
    def do_POST(self):
        fake = self.server.fake
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with fake.lock:
            fake.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
        if "FAIL" in body["messages"][-1]["content"]:
            self._send(500, {}, f"upstream broke; you sent {self.headers.get('Authorization')}")
            return
        message = {"role": "assistant", "content": fake.reply(body["messages"])}
        response = {"choices": [{"index": 0, "message": message}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 10}}
        self._send(200, {"Content-Type": "application/json"}, json.dumps(response))


LONG = " ".join(f"word{i}" for i in range(40))
RECORDS = [
    {"instruction": "Say hello.", "input": "", "output": "Hello!"},
    {"instruction": "Translate to French.", "input": "the cat", "output": "le chat"},
    {"instruction": "GARBAGE please", "output": "x"},
    {"instruction": "FAIL now", "output": "y"},
    {"instruction": "No output here"},
    {"id": "custom-7", "instruction": 5, "output": "z"},
    {"id": 42, "instruction": "Count.", "output": LONG},
    {"instruction": "ENGLISH copied back", "output": "It stays in English, as the source was."},
]


def _run(tmp_path: Path, base_url: str, cache: str, *more: str) -> dict:
    return main(["translate", "--input", str(tmp_path / "alpaca_en.json"), "--lang", "es", "--output",
                 str(tmp_path / "out" / "alpaca_es.jsonl"), "--endpoint", base_url, "--endpoint_model", "m",
                 "--api_key_env", KEY_ENV, "--cache_dir", str(tmp_path / cache), "--max_retries", "1",
                 "--workers", "2", "--batch_size", "3", "--max_input_tokens", "20", *more])


def test_endpoint_end_to_end(tmp_path, monkeypatch, caplog, capsys):
    monkeypatch.setenv(KEY_ENV, API_KEY)
    caplog.set_level(logging.INFO, logger="pivot_jax")
    (tmp_path / "alpaca_en.json").write_text(json.dumps(RECORDS, indent=1), encoding="utf-8")
    out = tmp_path / "out"
    with serving(Translator(), handler=TranslatorHandler) as server:
        summary = _run(tmp_path, server.base_url, "cache1")
        sent = len(server.requests)
        assert sent == 7  # 5 answerable examples, FAIL twice (one retry), long one once
        assert all(r["headers"]["Authorization"] == f"Bearer {API_KEY}" for r in server.requests)
        assert {r["body"]["temperature"] for r in server.requests} == {0.0}

        expected = {"total": 8, "kept": 3, "dropped": 5, "truncated": 1, "pending": 0,
                    "dropped_by_reason": {"endpoint_error": 1, "missing_field": 2, "no_markers": 1,
                                          "wrong_language": 1}}
        assert {k: summary[k] for k in expected} == expected
        assert json.loads((out / "alpaca_es.summary.json").read_text(encoding="utf-8")) == summary
        kept = {r["id"]: r for r in read_jsonl(out / "alpaca_es.jsonl")}
        assert sorted(kept) == ["0", "1", "42"]
        assert kept["1"] == {
            "id": "1", "lang": "es", "instruction": f"{ES}Translate to French.\n\nthe cat",
            "output": f"{ES_ANSWER}le chat", "source_instruction": "Translate to French.\n\nthe cat",
            "source_output": "le chat", "truncated": False,
            "raw": f"Aquí está:\n<|user|> {ES}Translate to French.\n\nthe cat \n\n<|assistant|> {ES_ANSWER}le chat"}
        assert kept["42"]["truncated"] and kept["42"]["source_output"] == " ".join(LONG.split()[:19])
        dropped = {r["id"]: r for r in read_jsonl(out / "alpaca_es.dropped.jsonl")}
        assert {i: r["reason"] for i, r in dropped.items()} == {
            "2": "no_markers", "3": "endpoint_error", "4": "missing_field", "custom-7": "missing_field",
            "7": "wrong_language"}
        assert "detected as 'en', not 'es'" in dropped["7"]["message"]
        assert dropped["2"]["raw"] == "Lo siento, no puedo traducir esto."
        assert "HTTP 500" in dropped["3"]["message"] and "<redacted>" in dropped["3"]["message"]

        # A rerun (even with an empty cache) sends nothing for the ids done or dropped.
        before = (out / "alpaca_es.jsonl").read_bytes()
        again = _run(tmp_path, server.base_url, "cache2")
        assert len(server.requests) == sent and (out / "alpaca_es.jsonl").read_bytes() == before
        assert {k: again[k] for k in expected} == expected
        assert again["this_run"] == {"kept": 0, "dropped_by_reason": {}}

        # --retry_dropped sends the dropped examples again (missing fields need no request).
        retried = _run(tmp_path, server.base_url, "cache3", "--retry_dropped")
        assert len(server.requests) == sent + 4 and {k: retried[k] for k in expected} == expected
        assert retried["this_run"]["dropped_by_reason"] == {"endpoint_error": 1, "missing_field": 2,
                                                             "no_markers": 1, "wrong_language": 1}

        # --nocheck_language keeps the English copy (answered from the cache: no request).
        unchecked = _run(tmp_path, server.base_url, "cache3", "--retry_dropped", "--nocheck_language")
        assert len(server.requests) == sent + 4 + 2 and unchecked["kept"] == 4  # FAIL is sent again (not cached)

    shown = capsys.readouterr()
    assert "6/6 done" in caplog.text and "examples/s" in caplog.text and "ETA" in caplog.text
    written = "".join(p.read_text("utf-8") for p in tmp_path.rglob("*") if p.is_file())
    for text in (shown.out, shown.err, caplog.text, written):
        assert API_KEY not in text and "SECRET" not in text


def test_command_line_errors(tmp_path, capsys):
    (tmp_path / "in.json").write_text("[]", encoding="utf-8")
    base = ["translate", "--input", str(tmp_path / "in.json"), "--output", str(tmp_path / "o.jsonl")]
    with pytest.raises(SystemExit):
        main([*base, "--lang", "fr", "--endpoint", "http://127.0.0.1:9/v1", "--endpoint_model", "m"])
    assert "known: es, it, ko, zh" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "--lang", "es", "--endpoint", "http://127.0.0.1:9/v1", "--model", "gguf:x.gguf"])
    assert "one of --model" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# Our model: a tiny random one


@pytest.fixture(scope="module")
def tiny_pretrained(tmp_path_factory) -> Pretrained:
    texts = ["Say hello. Hello! Translate to Spanish.", "<|user|> <|assistant|> Traduce el siguiente texto"] * 20
    tok = Tokenizer.train_bpe(texts, vocab_size=300, directory=tmp_path_factory.mktemp("tok"))
    cfg = model_lib.preset("tiny", vocab_size=tok.vocab_size, max_seq_len=256)
    params = nnx.to_pure_dict(nnx.state(model_lib.create(cfg), nnx.Param))
    return Pretrained(cfg, params, tok, source="tiny")


def test_our_model_writes_one_record_per_input_and_resumes(tiny_pretrained, tmp_path):
    records = [{"instruction": f"Say hello {i}.", "input": "", "output": "Hello! " * (1 + 20 * (i == 2))}
               for i in range(4)] + [{"output": "no instruction"}]
    (tmp_path / "in.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    output = tmp_path / "es.jsonl"
    engine = T.model_engine(tiny_pretrained, max_new_tokens=8, batch_size=2)
    summary = T.translate_file(tmp_path / "in.jsonl", output, "es", engine, max_input_tokens=30)
    assert summary["total"] == 5 and summary["pending"] == 0 and summary["kept"] + summary["dropped"] == 5
    assert summary["dropped_by_reason"]["missing_field"] == 1 and summary["truncated"] == 1
    ids = [r["id"] for r in read_jsonl(output)] + [r["id"] for r in read_jsonl(T.sibling(output, ".dropped.jsonl"))]
    assert sorted(ids) == ["0", "1", "2", "3", "4"]

    calls = []
    resumed = dataclasses.replace(engine, answer=lambda prompts: calls.append(prompts) or [])
    again = T.translate_file(tmp_path / "in.jsonl", output, "es", resumed, max_input_tokens=30)
    assert calls == [] and {k: again[k] for k in ("kept", "dropped", "truncated")} == \
        {k: summary[k] for k in ("kept", "dropped", "truncated")}


def test_our_model_context_too_small_is_a_clear_error(tiny_pretrained, tmp_path):
    (tmp_path / "in.json").write_text(json.dumps(RECORDS[:1]), encoding="utf-8")
    engine = T.model_engine(tiny_pretrained, max_new_tokens=250, batch_size=2)
    with pytest.raises(ConfigError, match="no room for the English text"):
        T.translate_file(tmp_path / "in.json", tmp_path / "o.jsonl", "es", engine)
