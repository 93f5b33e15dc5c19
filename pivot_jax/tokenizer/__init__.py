"""Tokenizers: one `Tokenizer` over SentencePiece, HF `tokenizer.json` and GGUF vocabularies (`core`), GGUF
vocabularies rebuilt (`gguf_vocab`), sandboxed chat templates (`chat_template`), the seqio adapter
(`seqio_vocab`: TensorFlow is imported only when one is built)."""

from typing import Any

from pivot_jax.tokenizer import seqio_vocab
from pivot_jax.tokenizer.core import END_OF_TURN_TOKENS, Tokenizer
from pivot_jax.tokenizer.seqio_vocab import seqio_vocabulary

# `SeqioVocabulary` is importable from here too (see `__getattr__`), but not listed: `import *` must not load
# TensorFlow.
__all__ = ["END_OF_TURN_TOKENS", "Tokenizer", "seqio_vocabulary"]


def __getattr__(name: str) -> Any:
    if name == "SeqioVocabulary":  # built on first use: it subclasses seqio.Vocabulary
        return seqio_vocab.SeqioVocabulary
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
