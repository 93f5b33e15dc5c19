"""GGUF vocabularies rebuilt as the libraries that run them: a `gpt2` (byte-level BPE) vocabulary as a
`tokenizers` BPE pre-tokenizing with llama.cpp's regexes for its `tokenizer.ggml.pre`, a `llama` (SentencePiece
BPE) vocabulary as a SentencePiece model proto. `Tokenizer.from_gguf` reads the metadata and calls these.
"""

from __future__ import annotations

from typing import Any

from sentencepiece import sentencepiece_model_pb2 as sp_pb2
from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

# GGUF token types (llama.cpp's `llama_token_type`); they use SentencePiece's numbering.
GGUF_CONTROL = 3
GGUF_USER_DEFINED = 4
GGUF_BYTE = 6

# llama.cpp's pre-tokenizer for each `tokenizer.ggml.pre` value: regexes applied in turn, each one splitting every
# piece so far into its matches and the text between them, before byte-level BPE runs on each piece.
_GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
_QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
_GPT4O_REGEX = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_DEFAULT_REGEXES = (r"[\p{P}\$\+<=>\^~\|]+", _GPT2_REGEX, r"\p{N}+", r"[0-9][0-9][0-9]")


# The LLaMA-3 family: llama.cpp also matches a whole word against the vocabulary before merging (HF's
# `ignore_merges`) and adds BOS unless the file says otherwise.
LLAMA3_PRES = ("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2")


def _pre_tokenizer_table() -> dict[str, tuple[str, ...]]:
    table: dict[str, tuple[str, ...]] = {"default": _DEFAULT_REGEXES}
    for name in ("gpt-2", "gpt2", "phi-2", "mpt", "olmo", "jais", "roberta-bpe", "jina-es", "jina-de"):
        table[name] = (_GPT2_REGEX,)
    for name in ("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"):
        table[name] = (r"\p{N}", _GPT2_REGEX)
    for name in (*LLAMA3_PRES, "dbrx", "smaug-bpe"):
        table[name] = (_LLAMA3_REGEX,)
    for name in ("qwen2", "deepseek-r1-qwen", "megrez", "stablelm2"):
        table[name] = (_QWEN2_REGEX,)
    for name in ("gpt-4o", "llama4"):
        table[name] = (_GPT4O_REGEX,)
    return table


GGUF_PRE_TOKENIZERS = _pre_tokenizer_table()


def byte_level_bpe(tokens: list[str], merges: list[str], token_types: list[int], pre: str) -> HFTokenizer:
    """A `tokenizers` byte-level BPE from a GGUF `gpt2` vocabulary, pre-tokenizing as llama.cpp does for `pre`."""
    bpe = models.BPE(
        vocab={token: i for i, token in enumerate(tokens)},
        # Byte-level symbols never contain a space, so the first space separates the pair.
        merges=[tuple(merge.split(" ", 1)) for merge in merges],
        ignore_merges=pre in LLAMA3_PRES,
    )
    tokenizer = HFTokenizer(bpe)
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(regex), behavior="isolated") for regex in GGUF_PRE_TOKENIZERS[pre]]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    # Control tokens are matched whole in the text and skipped by decode; user-defined tokens (stored as plain
    # text by llama.cpp) are matched whole too but decoded.
    tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False)
                                  for token, kind in zip(tokens, token_types) if kind == GGUF_CONTROL])
    tokenizer.add_tokens([AddedToken(token, special=False, normalized=False)
                          for token, kind in zip(tokens, token_types) if kind == GGUF_USER_DEFINED])
    return tokenizer


def sentencepiece_proto(meta: dict[str, Any], tokens: list[str], token_types: list[int], scores: list[float]
                        ) -> bytes:
    """A SentencePiece BPE model proto from a GGUF `llama` vocabulary, so that `sentencepiece` runs it exactly.

    llama.cpp writes the pieces, scores and types of the original `tokenizer.model` (its token types are
    SentencePiece's) and applies no normalisation beyond escaping spaces and the optional dummy prefix.
    """
    proto = sp_pb2.ModelProto()
    valid_types = set(sp_pb2.ModelProto.SentencePiece.Type.values())
    for token, score, kind in zip(tokens, scores, token_types):
        proto.pieces.add(piece=token, score=score, type=kind if kind in valid_types else 1)  # 1: NORMAL
    trainer = proto.trainer_spec
    trainer.model_type = sp_pb2.TrainerSpec.BPE
    trainer.vocab_size = len(tokens)
    trainer.byte_fallback = GGUF_BYTE in token_types
    # SentencePiece finds its bos/eos/pad/unk by these piece names.
    for key, field in (("bos_token_id", "bos"), ("eos_token_id", "eos"), ("padding_token_id", "pad"),
                       ("unknown_token_id", "unk")):
        token_id = meta.get(f"tokenizer.ggml.{key}")
        has_token = token_id is not None and 0 <= token_id < len(tokens)
        setattr(trainer, f"{field}_id", token_id if has_token else -1)
        if has_token:
            setattr(trainer, f"{field}_piece", tokens[token_id])
    normalizer = proto.normalizer_spec
    normalizer.name = "identity"
    normalizer.add_dummy_prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", True))
    normalizer.remove_extra_whitespaces = False
    normalizer.escape_whitespaces = True
    return proto.SerializeToString()
