"""Property-based tests of every reader of user files: generated valid files read back as written, and generated
broken ones (cut, garbled, of the wrong types, with BOMs and Unicode line separators) fail only with a
`PivotError` that names the file: no other exception, no hang.

About 3,000 examples, derandomized (the same ones on every run and in CI), sized to keep this module well under
a minute on two cores.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pivot_jax import jsonl
from pivot_jax.convert import gguf as gguf_lib
from pivot_jax.data import sources
from pivot_jax.errors import PivotError
from pivot_jax.eval import report
from pivot_jax.eval.predict import read_predictions
from pivot_jax.model import LlamaConfig
from pivot_jax.tokenizer import Tokenizer


def fuzz(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """One folder for the module: each example overwrites its files (function-scoped tmp_path is per test)."""
    return tmp_path_factory.mktemp("fuzz")


def read_or_named(read, *args, **kwargs) -> Any:
    """`read(*args)`, or None when it raised a PivotError naming one of the path arguments."""
    try:
        return read(*args, **kwargs)
    except PivotError as e:
        paths = [str(a) for a in args if isinstance(a, Path)]
        assert any(p in str(e) for p in paths), f"{type(e).__name__} does not name {paths}: {e}"
        return None


# Characters `str.splitlines()` breaks on, a BOM, and JSON's own escapes, mixed into generated text.
TRICKY = "\u2028\u2029\x85\x0b\x0c\x1c\x1d\x1e\r\n\t\ufeff\"\\{}[]:,"
texts = st.text(st.characters(codec="utf-8") | st.sampled_from(TRICKY), max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3), max_leaves=6)
objects = st.dictionaries(texts, json_values, max_size=4)


def write_lines(path: Path, lines: list[str], bom: bool, final_newline: bool = True) -> bytes:
    data = ("\ufeff" if bom else "") + "\n".join(lines) + ("\n" if final_newline and lines else "")
    path.write_bytes(data.encode("utf-8"))
    return path.read_bytes()


# ---------------------------------------------------------------------------------------------------------------
# JSON lines: results index, metrics, predictions and any .jsonl input go through `pivot_jax.jsonl`

@fuzz(300)
@given(records=st.lists(json_values, max_size=6), ascii_only=st.booleans(), bom=st.booleans(),
       final_newline=st.booleans(), torn_tail_ok=st.booleans())
def test_json_lines_round_trip(folder, records, ascii_only, bom, final_newline, torn_tail_ok):
    path = folder / "round.jsonl"
    write_lines(path, [json.dumps(r, ensure_ascii=ascii_only) for r in records], bom, final_newline)
    assert jsonl.read_numbered(path, torn_tail_ok=torn_tail_ok) == list(enumerate(records, 1))


@fuzz(300)
@given(records=st.lists(objects, min_size=1, max_size=5), bom=st.booleans(), cut=st.integers(min_value=0),
       more=st.lists(objects, max_size=2))
def test_json_lines_cut_anywhere_keep_every_complete_record(folder, records, bom, cut, more):
    """A file cut at any byte (a crash mid-write): resuming keeps each complete record, appending adds after them."""
    path = folder / "cut.jsonl"
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    data = write_lines(path, lines, bom)
    data = data[:cut % (len(data) + 1)]
    path.write_bytes(data)
    text = data.decode("utf-8", errors="replace").removeprefix("\ufeff")
    *complete, tail = text.split("\n")
    kept = records[:len(complete)] + ([records[len(complete)]] if tail and tail == lines[len(complete)] else [])
    assert jsonl.read_jsonl(path, torn_tail_ok=True) == kept
    assert read_or_named(jsonl.read_jsonl, path) in (kept, None)
    with jsonl.Appender(path) as out:
        for record in more:
            out.write(record)
    assert jsonl.read_jsonl(path) == kept + more


@fuzz(300)
@given(data=st.binary(max_size=60) | texts.map(lambda t: t.encode("utf-8")), torn_tail_ok=st.booleans())
def test_json_lines_of_any_bytes(folder, data, torn_tail_ok):
    path = folder / "any.jsonl"
    path.write_bytes(data)
    read_or_named(jsonl.read_jsonl, path, torn_tail_ok=torn_tail_ok)
    read_or_named(jsonl.read_json, path)


def index_rows():
    good = st.fixed_dictionaries({"metric": texts, "value": st.floats(allow_nan=False), "protocol": texts,
                                  "samples": st.integers(0, 10**6), "step": st.integers(0, 10**6).map(str)})
    return st.lists(good | json_values | good.flatmap(lambda row: st.dictionaries(
        st.sampled_from(sorted(row)), json_values).map(lambda change: {**row, **change})), max_size=4)


@fuzz(200)
@given(rows=index_rows(), cut=st.integers(min_value=0))
def test_results_index(folder, rows, cut):
    workdir = folder / "run"
    workdir.mkdir(exist_ok=True)
    (workdir / "metrics.jsonl").write_text("")
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    (workdir / "results_index.jsonl").write_bytes(data[:cut % (len(data) + 1)])
    run = read_or_named(report.read_run, workdir)
    for metrics in (run.evals.values() if run else ()):
        for r in metrics.values():
            assert isinstance(r.value, float) and isinstance(r.protocol, str) and isinstance(r.samples, int)


@fuzz(200)
@given(records=st.lists(st.fixed_dictionaries({"id": texts, "answer": st.none() | texts}) | json_values,
                        max_size=4), cut=st.integers(min_value=0))
def test_predictions(folder, records, cut):
    path = folder / "predictions.jsonl"
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    path.write_bytes(data[:cut % (len(data) + 1)])
    done = read_or_named(read_predictions, path)
    for key, record in (done or {}).items():
        assert record["id"] == key and isinstance(record["answer"], (str, type(None)))


# ---------------------------------------------------------------------------------------------------------------
# Training and evaluation data (`pivot_jax.data.sources`)

FIELDS = ("instruction", "input", "output", "id", "group", "dataset")
instruction_records = st.lists(st.dictionaries(st.sampled_from(FIELDS) | texts, texts | json_values, max_size=5),
                               max_size=4)


@fuzz(300)
@given(records=instruction_records, as_list=st.booleans(), indent=st.none() | st.integers(0, 2), bom=st.booleans())
def test_instruction_records(folder, records, as_list, indent, bom):
    path = folder / "records.json"
    text = json.dumps(records, indent=indent, ensure_ascii=False) if as_list else "\n".join(
        json.dumps(r, ensure_ascii=False) for r in records)
    path.write_bytes((("\ufeff" if bom else "") + text).encode("utf-8"))
    got = read_or_named(sources.read_records, path, required=("instruction", "output"))
    if got is not None:
        assert got == [{**r, **({"input": ""} if "input" in r and r["input"] is None else {})} for r in records]
        for record in got:
            assert all(isinstance(record.get(f, ""), str) for f in ("instruction", "input", "output"))
            assert isinstance(record.get("id", ""), (str, int)) and not isinstance(record.get("id"), bool)
    read_or_named(sources.read_instruction_records, path)
    read_or_named(sources.read_alpaca_eval, path)


def squad_documents():
    def maybe(valid):  # mostly the right type, sometimes any JSON value
        return st.one_of(valid, valid, valid, json_values)

    qa = st.fixed_dictionaries({"id": maybe(texts), "question": maybe(texts),
                                "answers": maybe(st.lists(st.fixed_dictionaries({"text": maybe(texts)}), max_size=2))})
    paragraph = st.fixed_dictionaries({"context": maybe(texts), "qas": maybe(st.lists(maybe(qa), max_size=2))})
    article = st.fixed_dictionaries({"paragraphs": maybe(st.lists(maybe(paragraph), max_size=2))})
    return st.fixed_dictionaries({"data": maybe(st.lists(maybe(article), max_size=2))})


@fuzz(300)
@given(document=squad_documents(), cut=st.none() | st.integers(min_value=0))
def test_squad_layout(folder, document, cut):
    path = folder / "squad.json"
    data = json.dumps(document, ensure_ascii=False).encode("utf-8")
    path.write_bytes(data if cut is None else data[:cut % (len(data) + 1)])
    examples = read_or_named(sources.read_squad, path)
    for example in examples or ():
        assert isinstance(example["question"], str) and all(isinstance(a, str) for a in example["answers"])
    read_or_named(sources.read_instruction_records, path)


lines = st.lists(st.text(st.characters(codec="utf-8", exclude_characters="\n\ufeff") | st.sampled_from(TRICKY[:9]),
                         max_size=8), max_size=6)


@fuzz(300)
@given(pairs=st.lists(st.tuples(lines.map("\t".join), lines.map("\t".join)), max_size=5), bom=st.booleans(),
       cut=st.none() | st.integers(min_value=0))
def test_parallel_text_and_tsv(folder, pairs, bom, cut):
    src, tgt = folder / "x.en", folder / "x.es"
    write_lines(src, [s for s, _ in pairs], bom)
    data = write_lines(tgt, [t for _, t in pairs], bom)
    if cut is not None:
        tgt.write_bytes(data[:cut % (len(data) + 1)])
    got = read_or_named(sources.read_parallel, src, tgt)
    if got is not None and cut is None:
        assert got == [(i, s.strip(), t.strip()) for i, (s, t) in enumerate(pairs) if s.strip() and t.strip()]
    tsv = folder / "x.tsv"
    write_lines(tsv, [f"{s}\t{t}" for s, t in pairs], bom)
    read_or_named(sources.read_mgsm, tsv)


# ---------------------------------------------------------------------------------------------------------------
# GGUF headers (`pivot_jax.convert.gguf`, and `Tokenizer.from_gguf` through it)

UINT8, INT8, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = 0, 1, 4, 5, 6, 7, 8, 9, 10, 11, 12
_PACK = {UINT8: "B", INT8: "b", UINT32: "I", INT32: "i", FLOAT32: "f", BOOL: "?", UINT64: "Q", INT64: "q",
         FLOAT64: "d"}


def _value(kind: int, value: Any) -> bytes:
    if kind == STRING:
        data = value.encode("utf-8")
        return struct.pack("<Q", len(data)) + data
    if kind == ARRAY:
        item_kind, items = value
        return struct.pack("<IQ", item_kind, len(items)) + b"".join(_value(item_kind, v) for v in items)
    return struct.pack("<" + _PACK[kind], value)


def gguf_bytes(metadata: list[tuple[str, int, Any]], tensors: dict[str, np.ndarray]) -> bytes:
    """A GGUF v3 file as llama.cpp lays it out: header, key-values, tensor infos, then F32 data aligned to 32."""
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(metadata))
    out += b"".join(_value(STRING, key) + struct.pack("<I", kind) + _value(kind, value)
                    for key, kind, value in metadata)
    blobs, offset = b"", 0
    for name, array in tensors.items():
        out += _value(STRING, name) + struct.pack("<I", array.ndim) + b"".join(
            struct.pack("<Q", d) for d in reversed(array.shape)) + struct.pack("<IQ", 0, offset)
        blob = array.astype("<f4").tobytes()
        blob += b"\0" * (-len(blob) % 32)
        blobs, offset = blobs + blob, offset + len(blob)
    return out + b"\0" * (-len(out) % 32) + blobs


@st.composite
def llama_metadata(draw) -> tuple[list[tuple[str, int, Any]], dict[str, Any]]:
    """Valid `llama.*` metadata of a tiny model, and the config fields it means."""
    heads = draw(st.sampled_from([1, 2, 4]))
    fields = dict(embed_dim=heads * draw(st.sampled_from([2, 4, 8])), num_heads=heads,
                  num_kv_heads=draw(st.sampled_from([h for h in (1, 2, 4) if heads % h == 0])),
                  num_layers=draw(st.integers(1, 4)), mlp_dim=draw(st.integers(1, 64)),
                  vocab_size=draw(st.integers(1, 300)), max_seq_len=draw(st.integers(1, 4096)),
                  norm_eps=draw(st.sampled_from([1e-5, 1e-6])), rope_theta=draw(st.sampled_from([1e4, 5e5])))
    metadata = [("general.architecture", STRING, "llama"),
                ("llama.embedding_length", UINT32, fields["embed_dim"]),
                ("llama.attention.head_count", UINT32, heads),
                ("llama.attention.head_count_kv", UINT32, fields["num_kv_heads"]),
                ("llama.block_count", UINT32, fields["num_layers"]),
                ("llama.feed_forward_length", UINT32, fields["mlp_dim"]),
                ("llama.vocab_size", UINT32, fields["vocab_size"]),
                ("llama.context_length", UINT32, fields["max_seq_len"]),
                ("llama.attention.layer_norm_rms_epsilon", FLOAT32, fields["norm_eps"]),
                ("llama.rope.freq_base", FLOAT32, fields["rope_theta"])]
    return draw(st.permutations(metadata)), fields


# A tiny byte-level BPE and a tiny SentencePiece vocabulary, as llama.cpp stores them.
BPE_TOKENS = ["a", "b", "c", "ab", "abc", "<s>", "</s>"]
TOKENIZERS = {
    "gpt2": [("tokenizer.ggml.model", STRING, "gpt2"), ("tokenizer.ggml.pre", STRING, "default"),
             ("tokenizer.ggml.tokens", ARRAY, (STRING, BPE_TOKENS)),
             ("tokenizer.ggml.token_type", ARRAY, (INT32, [1, 1, 1, 1, 1, 3, 3])),
             ("tokenizer.ggml.merges", ARRAY, (STRING, ["a b", "ab c"])),
             ("tokenizer.ggml.bos_token_id", UINT32, 5), ("tokenizer.ggml.eos_token_id", UINT32, 6)],
    "llama": [("tokenizer.ggml.model", STRING, "llama"),
              ("tokenizer.ggml.tokens", ARRAY, (STRING, ["<unk>", "<s>", "</s>", "\u2581", "a", "\u2581a"])),
              ("tokenizer.ggml.scores", ARRAY, (FLOAT32, [0.0, 0.0, 0.0, -1.0, -2.0, -3.0])),
              ("tokenizer.ggml.token_type", ARRAY, (INT32, [2, 3, 3, 1, 1, 1])),
              ("tokenizer.ggml.unknown_token_id", UINT32, 0), ("tokenizer.ggml.bos_token_id", UINT32, 1),
              ("tokenizer.ggml.add_bos_token", BOOL, True)],
}


def read_gguf(path: Path) -> None:
    """Both GGUF readers: a config / tokenizer, or a PivotError naming the file."""
    config = read_or_named(gguf_lib.read_config, path)
    assert config is None or isinstance(config, LlamaConfig)
    tokenizer = read_or_named(Tokenizer.from_gguf, path)
    assert tokenizer is None or isinstance(tokenizer, Tokenizer)


@fuzz(100)
@given(model=llama_metadata(), vocabulary=st.sampled_from(sorted(TOKENIZERS)), tied=st.booleans())
def test_gguf_round_trip(folder, model, vocabulary, tied):
    metadata, fields = model
    path = folder / "model.gguf"
    tensors = {} if tied else {"output.weight": np.zeros((2, 2), np.float32)}
    path.write_bytes(gguf_bytes(metadata + TOKENIZERS[vocabulary], tensors))
    config = gguf_lib.read_config(path)
    assert {k: getattr(config, k) for k in fields} == pytest.approx(fields) and config.tie_embeddings == tied
    tokenizer = Tokenizer.from_gguf(path)
    text = "abc" if vocabulary == "gpt2" else "a"
    assert tokenizer.decode(tokenizer.encode(text)) == text


SCALARS = {UINT8: st.integers(0, 255), INT8: st.integers(-128, 127), UINT32: st.integers(0, 2**32 - 1),
           INT32: st.integers(-2**31, 2**31 - 1), UINT64: st.integers(0, 2**64 - 1),
           INT64: st.integers(-2**63, 2**63 - 1), FLOAT32: st.floats(width=32), FLOAT64: st.floats(),
           BOOL: st.booleans()}
kinds = st.sampled_from(sorted(SCALARS))
# (GGUF type, value) of any type: scalars, strings, arrays of either.
any_value = (kinds.flatmap(lambda kind: st.tuples(st.just(kind), SCALARS[kind]))
             | st.tuples(st.just(STRING), texts)
             | st.tuples(st.just(ARRAY), st.tuples(st.just(STRING), st.lists(texts, max_size=4)))
             | kinds.flatmap(lambda kind: st.tuples(st.just(ARRAY), st.tuples(st.just(kind),
                                                                              st.lists(SCALARS[kind], max_size=3)))))


@fuzz(250)
@given(model=llama_metadata(), vocabulary=st.sampled_from(sorted(TOKENIZERS)), data=st.data())
def test_gguf_metadata_of_any_type(folder, model, vocabulary, data):
    metadata = model[0] + TOKENIZERS[vocabulary]
    changed = data.draw(st.lists(st.integers(0, len(metadata) - 1), max_size=3, unique=True))
    for position in changed:
        key = metadata[position][0]
        metadata[position] = data.draw(st.just(None) | any_value.map(lambda kv, key=key: (key, *kv)))
    path = folder / "typed.gguf"
    path.write_bytes(gguf_bytes([m for m in metadata if m is not None], {}))
    read_gguf(path)


@fuzz(300)
@given(model=llama_metadata(), vocabulary=st.sampled_from(sorted(TOKENIZERS)), rope=st.booleans(),
       cut=st.integers(min_value=4), garble=st.lists(st.tuples(st.integers(0), st.binary(min_size=1, max_size=8)),
                                                     max_size=3))
def test_gguf_bytes_cut_or_garbled(folder, model, vocabulary, rope, cut, garble):
    tensors = {"rope_freqs.weight": np.linspace(1.0, 8.0, 4, dtype=np.float32)} if rope else {}
    data = bytearray(gguf_bytes(model[0] + TOKENIZERS[vocabulary], tensors))
    for position, replacement in garble:
        position = 4 + position % (len(data) - 4)
        data[position:position + len(replacement)] = replacement
    path = folder / "broken.gguf"
    path.write_bytes(bytes(data[:max(4, cut % (len(data) + 1))]))  # still starts with the magic
    read_gguf(path)
