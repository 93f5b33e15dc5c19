"""GGUF (llama.cpp) LLaMA checkpoints -> our parameters, dequantized tensor by tensor."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from gguf import GGMLQuantizationType as QType

from pivot_jax.convert.layout import WeightsError, params_from_tensors
from pivot_jax.model import Llama3RopeScaling, LlamaConfig, rope_inverse_frequencies

SUPPORTED_TYPES = frozenset({QType.F32, QType.F16, QType.BF16, QType.Q8_0, QType.Q4_0, QType.Q4_1})

# llama.cpp writes LLaMA-3 RoPE scaling as per-pair frequency divisors instead of metadata.
ROPE_FREQS = "rope_freqs.weight"

_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_LAYER_TENSOR = re.compile(r"blk\.(\d+)\.(\w+)\.weight")
_REQUIRED = object()


def _hf_name(gguf_name: str) -> str:
    """The HF name of a llama.cpp tensor; unknown names pass through so the loader reports them as unexpected."""
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    match = _LAYER_TENSOR.fullmatch(gguf_name)
    if match and match.group(2) in _LAYER_NAMES:
        return f"model.layers.{match.group(1)}.{_LAYER_NAMES[match.group(2)]}.weight"
    return gguf_name


class _BoundedReader(gguf.GGUFReader):
    """A `GGUFReader` that refuses to read past the end of the file.

    The stock reader returns short (even empty) arrays there and goes on, so a corrupt count (an array of 2**63
    items in a 40-byte file) loops for ever instead of failing; with every read checked, each item read moves
    forward through the file and reading stops at its end.
    """

    def _get(self, offset: int, dtype: Any, count: int = 1, override_order: Any = None) -> np.ndarray:
        array = super()._get(offset, dtype, count, override_order)
        if len(array) != int(count):
            raise ValueError(f"{int(count)} value(s) of type {np.dtype(dtype).name} at byte {offset} run past the "
                             "end of the file")
        return array


def open_gguf(path: str | os.PathLike) -> gguf.GGUFReader:
    """A reader over `path` (memory-mapped; tensor data is only read when used)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such GGUF file")
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise WeightsError(f"{path}: not a GGUF file (starts with {magic!r}, expected b'GGUF')")
    try:
        return _BoundedReader(path)
    # What gguf raises on a cut or garbled file: bad values, types, names (UnicodeDecodeError), duplicate keys
    # (KeyError), unknown tensor types, and arrays nested deeper than the stack.
    except (ValueError, IndexError, KeyError, OverflowError, RecursionError) as e:
        raise WeightsError(f"{path}: unreadable GGUF file ({type(e).__name__}: {e})") from None


def _field(reader: gguf.GGUFReader, key: str, origin: str, default: Any = _REQUIRED) -> Any:
    field = reader.get_field(key)
    if field is None:
        if default is _REQUIRED:
            raise WeightsError(f"{origin}: missing metadata key {key!r}")
        return default
    try:
        return field.contents()
    except ValueError as e:  # a string value that is not UTF-8
        raise WeightsError(f"{origin}: metadata key {key!r} is unreadable ({e})") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return _is_int(value) or isinstance(value, float)


def _typed(value: Any, key: str, origin: str, kind: tuple[str, Callable[[Any], bool]]) -> Any:
    """`value` of metadata `key` when it is of `kind` (a description and a test), else a WeightsError."""
    description, test = kind
    if not test(value):
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise WeightsError(f"{origin}: metadata key {key!r} should be {description}, got {shown}")
    return value


_STRING = ("a string", lambda v: isinstance(v, str))
_COUNT = ("a positive integer", lambda v: _is_int(v) and v > 0)
_POSITIVE = ("a positive finite number", lambda v: _is_number(v) and 0 < v < math.inf)
_STRINGS = ("a list of strings", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v))


def _check_type(tensor: gguf.ReaderTensor, origin: str) -> None:
    if tensor.tensor_type not in SUPPORTED_TYPES:
        supported = ", ".join(sorted(t.name for t in SUPPORTED_TYPES))
        raise WeightsError(f"{origin}: tensor {tensor.name} has unsupported type {tensor.tensor_type.name} "
                           f"(supported: {supported})")


def _shape(tensor: gguf.ReaderTensor) -> tuple[int, ...]:
    """Numpy (HF) dimension order: GGUF lists dimensions innermost first."""
    return tuple(int(d) for d in reversed(tensor.shape))


def _dequantize(tensor: gguf.ReaderTensor, origin: str) -> np.ndarray:
    _check_type(tensor, origin)
    return gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(_shape(tensor))


def _unpermute(weight: np.ndarray, heads: int) -> np.ndarray:
    """Inverse of llama.cpp's q/k row permutation, back to the rotate-half layout our RoPE uses.

    convert_hf_to_gguf reorders each head's rows (h, half, i) -> (h, i, half) so that RoPE pairs are adjacent.
    """
    rows = weight.shape[0]
    return weight.reshape(heads, rows // heads // 2, 2, -1).swapaxes(1, 2).reshape(weight.shape)


def _llama3_scaling(divisors: np.ndarray, cfg: LlamaConfig, origin: str) -> Llama3RopeScaling | None:
    """The LLaMA-3 scaling that reproduces llama.cpp's per-pair frequency divisors (`rope_freqs.weight`)."""
    if divisors.shape != (cfg.head_dim // 2,):
        raise WeightsError(f"{origin}: {ROPE_FREQS} has shape {divisors.shape}, expected ({cfg.head_dim // 2},)")
    if not np.all(np.isfinite(divisors) & (divisors > 0)):
        raise WeightsError(f"{origin}: {ROPE_FREQS} holds factors that are not positive finite numbers")
    if np.allclose(divisors, 1.0):
        return None
    factor = float(divisors.max())
    base = np.asarray(rope_inverse_frequencies(cfg.replace(rope_scaling=None)), np.float64)
    # Between the two cut-offs, smooth = original / wavelength / (high - low) - low / (high - low): an affine
    # function of 1/wavelength fixing only these two ratios, so low_freq_factor = 1 loses nothing.
    smooth = (1 / divisors - 1 / factor) / (1 - 1 / factor)
    band = (smooth > 1e-4) & (smooth < 1 - 1e-4)
    scaling = Llama3RopeScaling(factor=factor)  # Meta's cut-offs, when too few pairs lie between them to fit
    if band.sum() >= 2:
        slope, intercept = np.polyfit(base[band] / (2 * math.pi), smooth[band], 1)
        if intercept < 0 and np.isfinite([slope / intercept, 1 / intercept]).all():
            scaling = Llama3RopeScaling(factor=factor, low_freq_factor=1.0,
                                        high_freq_factor=round(float(1 - 1 / intercept), 4),
                                        original_max_position_embeddings=round(float(-slope / intercept)))
    scaled = np.asarray(rope_inverse_frequencies(cfg.replace(rope_scaling=scaling)), np.float64)
    if not np.allclose(base / scaled, divisors, rtol=1e-4):
        raise WeightsError(f"{origin}: {ROPE_FREQS} holds RoPE frequency factors that are not LLaMA-3 scaling "
                           f"({np.round(divisors, 4).tolist()})")
    return scaling


def config_from_gguf(reader: gguf.GGUFReader, origin: str) -> LlamaConfig:
    """Our config from a GGUF file's `llama.*` metadata (and its tensor list, for tying and RoPE scaling)."""
    arch = _typed(_field(reader, "general.architecture", origin), "general.architecture", origin, _STRING)
    if arch != "llama":
        raise WeightsError(f"{origin}: architecture {arch!r} is not supported (only 'llama')")

    def get(key: str, kind: tuple[str, Callable[[Any], bool]], default: Any = _REQUIRED) -> Any:
        value = _field(reader, f"llama.{key}", origin, default)
        return value if value is default else _typed(value, f"llama.{key}", origin, kind)

    if get("expert_count", ("an integer", _is_int), 0):
        raise WeightsError(f"{origin}: mixture-of-experts models (llama.expert_count > 0) are not supported")
    scaling_type = get("rope.scaling.type", _STRING, "none")
    if scaling_type != "none":
        raise WeightsError(f"{origin}: RoPE scaling type {scaling_type!r} is not supported")
    embed_dim, num_heads = get("embedding_length", _COUNT), get("attention.head_count", _COUNT)
    head_dim = get("attention.key_length", _COUNT, embed_dim // num_heads)
    for key in ("attention.value_length", "rope.dimension_count"):
        if (value := get(key, _COUNT, head_dim)) != head_dim:
            raise WeightsError(f"{origin}: llama.{key}={value} differs from the head size {head_dim} (not supported)")
    vocab_size = get("vocab_size", _COUNT, None)
    if vocab_size is None:
        tokens = _field(reader, "tokenizer.ggml.tokens", origin, None)
        if tokens is None:
            raise WeightsError(f"{origin}: missing metadata key 'llama.vocab_size' (and no tokenizer.ggml.tokens)")
        vocab_size = len(_typed(tokens, "tokenizer.ggml.tokens", origin, _STRINGS))
    tensors = {t.name: t for t in reader.tensors}
    try:
        cfg = LlamaConfig(
            vocab_size=vocab_size, embed_dim=embed_dim, num_layers=get("block_count", _COUNT), num_heads=num_heads,
            num_kv_heads=get("attention.head_count_kv", _COUNT, num_heads), mlp_dim=get("feed_forward_length", _COUNT),
            head_dim=head_dim, norm_eps=float(get("attention.layer_norm_rms_epsilon", _POSITIVE)),
            rope_theta=float(get("rope.freq_base", _POSITIVE, 10000.0)),
            max_seq_len=get("context_length", _COUNT), tie_embeddings="output.weight" not in tensors)
    except ValueError as e:  # sizes that do not fit together (heads vs key-value heads)
        raise WeightsError(f"{origin}: {e}") from None
    if ROPE_FREQS in tensors:
        cfg = cfg.replace(rope_scaling=_llama3_scaling(_dequantize(tensors[ROPE_FREQS], origin), cfg, origin))
    return cfg


# The `tokenizer.*` keys `Tokenizer.from_gguf` reads, and what each must hold.
_TOKENIZER_KEYS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "tokenizer.ggml.model": _STRING, "tokenizer.ggml.pre": _STRING, "tokenizer.chat_template": _STRING,
    "tokenizer.ggml.tokens": _STRINGS, "tokenizer.ggml.merges": _STRINGS,
    "tokenizer.ggml.scores": ("a list of numbers", lambda v: isinstance(v, list) and all(map(_is_number, v))),
    "tokenizer.ggml.token_type": ("a list of integers", lambda v: isinstance(v, list) and all(map(_is_int, v))),
    **{f"tokenizer.ggml.{name}_token_id": ("an integer", _is_int)
       for name in ("bos", "eos", "padding", "unknown")},
    **{f"tokenizer.ggml.{flag}": ("a boolean", lambda v: isinstance(v, bool))
       for flag in ("add_bos_token", "add_eos_token", "add_space_prefix")},
}


def tokenizer_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """A GGUF file's `tokenizer.*` metadata, each key `Tokenizer.from_gguf` reads checked for its type, the
    per-token lists for their length, and a `gpt2` vocabulary's merges for pairs of tokens that make a token."""
    origin = str(path)
    reader = open_gguf(path)
    meta = {key: _field(reader, key, origin) for key in reader.fields if key.startswith("tokenizer.")}
    for key, kind in _TOKENIZER_KEYS.items():
        if key in meta:
            _typed(meta[key], key, origin, kind)
    tokens = meta.get("tokenizer.ggml.tokens", [])
    for key in ("tokenizer.ggml.scores", "tokenizer.ggml.token_type"):
        if key in meta and len(meta[key]) != len(tokens):
            raise WeightsError(f"{origin}: metadata key {key!r} has {len(meta[key])} values for {len(tokens)} tokens")
    if meta.get("tokenizer.ggml.model") == "gpt2":
        vocabulary = set(tokens)
        for number, merge in enumerate(meta.get("tokenizer.ggml.merges", [])):
            left, space, right = merge.partition(" ")
            if not (space and left in vocabulary and right in vocabulary and left + right in vocabulary):
                raise WeightsError(f"{origin}: tokenizer.ggml.merges[{number}] {merge!r} is not two tokens of the "
                                   "vocabulary, separated by a space, that merge into a third")
    return meta


class GGUFSource:
    """HF-named float32 tensors from a llama.cpp LLaMA GGUF file, dequantized one at a time on `get`."""

    def __init__(self, path: str | os.PathLike):
        self.origin = str(path)
        reader = open_gguf(path)
        self.config = config_from_gguf(reader, self.origin)
        self._tensors = {_hf_name(t.name): t for t in reader.tensors if t.name != ROPE_FREQS}
        for tensor in self._tensors.values():  # fail before any work is done
            _check_type(tensor, self.origin)
        self._heads = {"q_proj": self.config.num_heads, "k_proj": self.config.num_kv_heads}

    def keys(self) -> list[str]:
        return list(self._tensors)

    def shape(self, name: str) -> tuple[int, ...]:
        return _shape(self._tensors[name])

    def get(self, name: str) -> np.ndarray:
        array = _dequantize(self._tensors[name], self.origin)
        heads = self._heads.get(name.split(".")[-2])
        return array if heads is None else _unpermute(array, heads)


def read_config(path: str | os.PathLike) -> LlamaConfig:
    """The config of a GGUF file (from its metadata, plus its tensor list and any `rope_freqs.weight`)."""
    return config_from_gguf(open_gguf(path), str(path))


def load_params(path: str | os.PathLike, dtype: Any = None, place: Callable | None = None
                ) -> tuple[LlamaConfig, dict[str, Any]]:
    """Config and parameters of a LLaMA GGUF file; tensors are dequantized and placed one stack at a time."""
    source = GGUFSource(path)
    cfg = source.config
    dtype = np.dtype(dtype or cfg.param_dtype)
    return cfg, params_from_tensors(cfg, source, dtype, origin=source.origin, place=place)
