"""A `Tokenizer` as a `seqio.Vocabulary`; TensorFlow and seqio are imported only when one is built."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import seqio

    from pivot_jax.tokenizer.core import Tokenizer

def seqio_vocabulary(tokenizer: Tokenizer) -> seqio.Vocabulary:
    """`tokenizer` as a `seqio.Vocabulary` (imports TensorFlow and seqio)."""
    return _seqio_vocabulary_class()(tokenizer)


def __getattr__(name: str) -> Any:
    # `SeqioVocabulary` subclasses `seqio.Vocabulary`; building it on first use keeps TensorFlow out of imports
    # of this module. Pickle also finds the class through here.
    if name == "SeqioVocabulary":
        return _seqio_vocabulary_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _seqio_vocabulary_class() -> type:
    import seqio  # seqio and TensorFlow take ~4 s to import: only building a vocabulary needs them
    import tensorflow as tf

    class SeqioVocabulary(seqio.Vocabulary):
        """A `Tokenizer` as a `seqio.Vocabulary`.

        seqio reserves id 0 for padding (`pad_id` is 0, and its feature converters treat 0 as padding), whatever
        token 0 is in the vocabulary; so 0 is dropped when decoding. `eos_id` and `unk_id` are the tokenizer's.
        Encoding adds neither BOS nor EOS (seqio appends EOS itself).
        """

        def __init__(self, tokenizer: Tokenizer) -> None:
            self.tokenizer = tokenizer
            super().__init__(extra_ids=0)

        @property
        def bos_id(self) -> int | None:
            return self.tokenizer.bos_id

        @property
        def eos_id(self) -> int | None:
            return self.tokenizer.eos_id

        @property
        def unk_id(self) -> int | None:
            return self.tokenizer.unk_id

        @property
        def _base_vocab_size(self) -> int:
            return self.tokenizer.vocab_size

        def _encode(self, s: str) -> list[int]:
            return self.tokenizer.encode(s)

        def _decode(self, ids: Iterable[int]) -> str:
            return self.tokenizer.decode([i for i in ids if i != seqio.vocabularies.PAD_ID])

        def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
            """A scalar string gives int32 `[length]`; a 1-D batch of strings gives a ragged int32 `[batch, None]`."""
            s = tf.convert_to_tensor(s, dtype=tf.string)
            if s.shape.rank not in (0, 1):
                raise ValueError(f"_encode_tf takes a scalar or 1-D string tensor, got shape {s.shape}")

            def encode(texts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
                encoded = [self.tokenizer.encode(t.decode("utf-8")) for t in np.atleast_1d(texts)]
                flat = np.array([i for ids in encoded for i in ids], dtype=np.int32)
                return flat, np.array([len(ids) for ids in encoded], dtype=np.int64)

            flat, lengths = tf.numpy_function(encode, [s], (tf.int32, tf.int64), stateful=False)
            flat.set_shape([None])
            if s.shape.rank == 0:
                return flat
            lengths.set_shape(s.shape)
            return tf.RaggedTensor.from_row_lengths(flat, lengths)

        def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
            """int ids `[..., length]` give strings `[...]` (a scalar for 1-D ids)."""
            ids = tf.convert_to_tensor(ids)
            if ids.shape.rank is None or ids.shape.rank < 1:
                raise ValueError(f"_decode_tf takes ids of rank >= 1, got shape {ids.shape}")

            def decode(batch: np.ndarray) -> np.ndarray:
                rows = batch.reshape(int(np.prod(batch.shape[:-1])), batch.shape[-1])
                texts = [self._decode(row.tolist()).encode("utf-8") for row in rows]
                return np.array(texts, dtype=object).reshape(batch.shape[:-1])

            texts = tf.numpy_function(decode, [ids], tf.string, stateful=False)
            texts.set_shape(ids.shape[:-1])
            return texts

        def __eq__(self, other: object) -> bool:
            return isinstance(other, SeqioVocabulary) and other.tokenizer is self.tokenizer

        def __hash__(self) -> int:
            return id(self.tokenizer)

    SeqioVocabulary.__module__ = __name__
    SeqioVocabulary.__qualname__ = "SeqioVocabulary"
    return SeqioVocabulary
