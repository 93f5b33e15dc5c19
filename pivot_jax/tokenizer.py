"""One tokenizer interface over SentencePiece `tokenizer.model`, HF `tokenizer.json` and GGUF vocabularies.

- `Tokenizer.from_sentencepiece(path)`: LLaMA-1/2 style `tokenizer.model`, run by the `sentencepiece` package.
- `Tokenizer.from_hf_json(path_or_dir)`: HF `tokenizer.json` (LLaMA-3, SmolLM2, ...), run by `tokenizers`, with
  special tokens and the chat template read from `tokenizer_config.json` / `special_tokens_map.json`.
- `Tokenizer.from_gguf(path)`: the vocabulary in a GGUF file's metadata. `gpt2` (byte-level BPE) becomes a
  `tokenizers` BPE with llama.cpp's pre-tokenizer regexes; `llama` (SentencePiece BPE) becomes a SentencePiece
  model proto, so it tokenizes exactly like the `sentencepiece` library.
- `Tokenizer.from_dir(directory)` / `Tokenizer.save(directory)`: a directory that `transformers.AutoTokenizer`
  also loads.

`seqio_vocabulary(tokenizer)` (or `SeqioVocabulary`) adapts a `Tokenizer` to `seqio.Vocabulary`; TensorFlow and
seqio are imported only then.

Special tokens written in the text (`<|im_start|>`, `<s>`, ...) are encoded as their ids by every backend, as HF
and llama.cpp do, so a rendered chat template encodes correctly.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pivot_jax.jsonl import read_json

if TYPE_CHECKING:
    import jinja2
    import sentencepiece
    import seqio
    import tokenizers

# `SeqioVocabulary` is also importable from here (see `__getattr__`), but not listed: `import *` must not load
# TensorFlow.
__all__ = ["Tokenizer", "seqio_vocabulary"]

logger = logging.getLogger(__name__)

HF_JSON = "tokenizer.json"
SENTENCEPIECE_MODEL = "tokenizer.model"
TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"

# Special tokens that end a turn or a document in common chat formats; each one present in a vocabulary as a
# special token joins `stop_ids`, since instruct models often stop with one of these rather than their eos.
END_OF_TURN_TOKENS = (
    "<|im_end|>",  # ChatML (SmolLM2, Qwen)
    "<|eot_id|>",  # LLaMA-3
    "<|eom_id|>",  # LLaMA-3.1 tool calls
    "<|end_of_text|>",  # LLaMA-3 base
    "<|endoftext|>",  # GPT-2 style documents
    "<end_of_turn>",  # Gemma
    "<|end|>",  # Phi-3
    "</s>",  # LLaMA-1/2
)

# GGUF token types (llama.cpp's `llama_token_type`); they use SentencePiece's numbering.
_GGUF_CONTROL = 3
_GGUF_USER_DEFINED = 4
_GGUF_BYTE = 6

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
_LLAMA3_PRES = ("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2")


def _pre_tokenizer_table() -> dict[str, tuple[str, ...]]:
    table: dict[str, tuple[str, ...]] = {"default": _DEFAULT_REGEXES}
    for name in ("gpt-2", "gpt2", "phi-2", "mpt", "olmo", "jais", "roberta-bpe", "jina-es", "jina-de"):
        table[name] = (_GPT2_REGEX,)
    for name in ("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"):
        table[name] = (r"\p{N}", _GPT2_REGEX)
    for name in (*_LLAMA3_PRES, "dbrx", "smaug-bpe"):
        table[name] = (_LLAMA3_REGEX,)
    for name in ("qwen2", "deepseek-r1-qwen", "megrez", "stablelm2"):
        table[name] = (_QWEN2_REGEX,)
    for name in ("gpt-4o", "llama4"):
        table[name] = (_GPT4O_REGEX,)
    return table


GGUF_PRE_TOKENIZERS = _pre_tokenizer_table()


class _Backend(Protocol):
    """What `Tokenizer` needs from the library that does the work."""

    @property
    def vocab_size(self) -> int: ...

    @property
    def special_ids(self) -> frozenset[int]: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int], skip_special_tokens: bool) -> str: ...

    def token_to_id(self, token: str) -> int | None: ...

    def id_to_token(self, token_id: int) -> str | None: ...

    def save(self, directory: Path) -> None: ...


class _HFBackend:
    """A `tokenizers.Tokenizer`."""

    def __init__(self, tokenizer: tokenizers.Tokenizer) -> None:
        self.tokenizer = tokenizer
        self._special_ids = frozenset(i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def special_ids(self) -> frozenset[int]:
        return self._special_ids

    def encode(self, text: str) -> list[int]:
        # BOS/EOS are added by `Tokenizer.encode`, not by the post-processor.
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int], skip_special_tokens: bool) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self.tokenizer.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self.tokenizer.id_to_token(token_id)

    def save(self, directory: Path) -> None:
        self.tokenizer.save(str(directory / HF_JSON))


class _SentencePieceBackend:
    """A `sentencepiece` model, plus matching of its control tokens written in the text."""

    def __init__(self, model_proto: bytes) -> None:
        import sentencepiece as spm

        self.model_proto = model_proto
        self.processor: sentencepiece.SentencePieceProcessor = spm.SentencePieceProcessor(model_proto=model_proto)
        sp = self.processor
        self._special_ids = frozenset(
            i for i in range(sp.get_piece_size()) if sp.is_control(i) or sp.is_unknown(i)
        )
        # SentencePiece itself reads "<s>" in text as characters; HF and llama.cpp read it as the token, which
        # chat templates rely on. Longest first so that a token wins over its prefix.
        specials = sorted((sp.id_to_piece(i) for i in self._special_ids), key=len, reverse=True)
        self._special_re = re.compile("|".join(map(re.escape, specials))) if specials else None

    @property
    def vocab_size(self) -> int:
        return self.processor.get_piece_size()

    @property
    def special_ids(self) -> frozenset[int]:
        return self._special_ids

    def encode(self, text: str) -> list[int]:
        if self._special_re is None:
            return self.processor.encode(text)
        ids: list[int] = []
        start = 0
        # Each stretch of text between special tokens is encoded on its own (and so gets the dummy prefix),
        # as in HF's legacy LLaMA tokenizer and llama.cpp.
        for match in self._special_re.finditer(text):
            ids += self.processor.encode(text[start : match.start()])
            ids.append(self.processor.piece_to_id(match.group()))
            start = match.end()
        return ids + self.processor.encode(text[start:])

    def decode(self, ids: list[int], skip_special_tokens: bool) -> str:
        if skip_special_tokens:
            return self.processor.decode([i for i in ids if i not in self._special_ids])
        # SentencePiece renders control tokens as "", so write them out between decoded stretches.
        parts: list[str] = []
        run: list[int] = []
        for i in ids:
            if i in self._special_ids:
                parts += [self.processor.decode(run), self.processor.id_to_piece(i)]
                run = []
            else:
                run.append(i)
        return "".join(parts) + self.processor.decode(run)

    def token_to_id(self, token: str) -> int | None:
        # `piece_to_id` answers unk for a piece it does not know.
        token_id = self.processor.piece_to_id(token)
        return token_id if self.processor.id_to_piece(token_id) == token else None

    def id_to_token(self, token_id: int) -> str | None:
        return self.processor.id_to_piece(token_id) if 0 <= token_id < self.vocab_size else None

    def save(self, directory: Path) -> None:
        (directory / SENTENCEPIECE_MODEL).write_bytes(self.model_proto)

    def __reduce__(self) -> tuple[type, tuple[bytes]]:
        # The processor does not pickle; the model bytes rebuild it.
        return type(self), (self.model_proto,)


class Tokenizer:
    """Text to ids and back, special tokens, chat template; built by the `from_*` constructors.

    `add_bos_token` / `add_eos_token` record whether the source expects BOS / EOS around every sequence;
    `encode` adds them only when asked to.
    """

    def __init__(
        self,
        backend: _Backend,
        *,
        bos_token: str | None = None,
        eos_token: str | None = None,
        pad_token: str | None = None,
        unk_token: str | None = None,
        chat_template: str | None = None,
        add_bos_token: bool = False,
        add_eos_token: bool = False,
    ) -> None:
        self._backend = backend
        self._special_tokens: dict[str, str | None] = {}
        for name, token in (("bos_token", bos_token), ("eos_token", eos_token), ("pad_token", pad_token),
                            ("unk_token", unk_token)):
            if token is not None and backend.token_to_id(token) is None:
                # HF would add such a token as a new id; a model has no embedding for it, so leave it out.
                logger.warning("%s %r is not in the vocabulary; ignoring it", name, token)
                token = None
            self._special_tokens[name] = token
        self._chat_template = chat_template
        self.add_bos_token = add_bos_token
        self.add_eos_token = add_eos_token

    def __repr__(self) -> str:
        return (f"Tokenizer({type(self._backend).__name__}, vocab_size={self.vocab_size}, bos_id={self.bos_id}, "
                f"eos_id={self.eos_id}, pad_id={self.pad_id})")

    # ----------------------------------------------------------------------------------------------- constructors

    @classmethod
    def from_sentencepiece(cls, path: str | Path) -> Tokenizer:
        """A SentencePiece `tokenizer.model` (or a directory holding one); a `tokenizer_config.json` beside it
        overrides its special tokens and supplies the chat template."""
        path = Path(path)
        if path.is_dir():
            path = path / SENTENCEPIECE_MODEL
        if not path.is_file():
            raise FileNotFoundError(f"SentencePiece model not found: {path}")
        backend = _SentencePieceBackend(path.read_bytes())
        sp = backend.processor

        def piece(token_id: int) -> str | None:
            return sp.id_to_piece(token_id) if token_id >= 0 else None

        # LLaMA-1/2 add BOS and no EOS, as HF's LlamaTokenizer does by default.
        defaults = {"bos_token": piece(sp.bos_id()), "eos_token": piece(sp.eos_id()), "pad_token": piece(sp.pad_id()),
                    "unk_token": piece(sp.unk_id()), "add_bos_token": True, "add_eos_token": False}
        return cls(backend, **{**defaults, **_read_hf_config(path.parent)})

    @classmethod
    def from_hf_json(cls, path_or_dir: str | Path) -> Tokenizer:
        """An HF `tokenizer.json` (or a directory holding one) with its `tokenizer_config.json`,
        `special_tokens_map.json` and `chat_template.jinja` when present."""
        import tokenizers

        path = Path(path_or_dir)
        if path.is_dir():
            path = path / HF_JSON
        if not path.is_file():
            raise FileNotFoundError(f"HF tokenizer.json not found: {path}")
        backend = _HFBackend(tokenizers.Tokenizer.from_file(str(path)))
        config = _read_hf_config(path.parent)
        if "add_bos_token" not in config or "add_eos_token" not in config:
            # Without the flags, what the post-processor adds (LLaMA-3 adds BOS there) says what the model wants.
            added = backend.tokenizer.encode("", add_special_tokens=True).tokens
            config.setdefault("add_bos_token", bool(added) and added[0] == config.get("bos_token"))
            config.setdefault("add_eos_token", bool(added) and added[-1] == config.get("eos_token"))
        return cls(backend, **config)

    @classmethod
    def train_bpe(cls, texts: Iterable[str], vocab_size: int, directory: str | Path) -> Tokenizer:
        """A byte-level BPE trained on `texts` (deterministic for the same texts), saved in `directory`.

        Ids 0-2 are `<pad>`, `<s>` (BOS, added to every sequence) and `</s>` (EOS); every byte has a token, so
        any text encodes. For small random models (quickstart, tests) that need no downloaded vocabulary.
        """
        import tokenizers
        from tokenizers import decoders, models, pre_tokenizers, trainers

        specials = ["<pad>", "<s>", "</s>"]
        backend = tokenizers.Tokenizer(models.BPE())
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        backend.train_from_iterator(texts, trainer)
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        backend.save(str(directory / HF_JSON))
        (directory / TOKENIZER_CONFIG).write_text(json.dumps(
            {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "add_bos_token": True,
             "add_eos_token": False}, indent=2))
        return cls.from_hf_json(directory)

    @classmethod
    def from_gguf(cls, path: str | Path) -> Tokenizer:
        """The tokenizer described by a GGUF file's `tokenizer.*` metadata (`gpt2` or `llama` model)."""
        from pivot_jax.convert.gguf import tokenizer_metadata
        from pivot_jax.convert.layout import WeightsError

        path = Path(path)
        meta = tokenizer_metadata(path)  # checked for types and lengths

        def require(key: str) -> Any:
            if key not in meta:
                raise WeightsError(f"{path}: GGUF metadata has no {key!r}")
            return meta[key]

        model = require("tokenizer.ggml.model")
        tokens: list[str] = require("tokenizer.ggml.tokens")
        token_types: list[int] = meta.get("tokenizer.ggml.token_type") or [1] * len(tokens)
        if model == "gpt2":
            # Files written before the key existed get llama.cpp's "default" pre-tokenizer.
            pre = meta.get("tokenizer.ggml.pre") or "default"
            if pre not in GGUF_PRE_TOKENIZERS:
                raise WeightsError(f"{path}: unsupported pre-tokenizer {pre!r} in GGUF key 'tokenizer.ggml.pre' "
                                   f"(supported: {', '.join(sorted(GGUF_PRE_TOKENIZERS))})")
            backend: _Backend = _HFBackend(_byte_level_bpe_from_gguf(
                tokens, require("tokenizer.ggml.merges"), token_types, pre))
            add_bos_default = pre in _LLAMA3_PRES
        elif model == "llama":
            proto = _sentencepiece_proto_from_gguf(meta, tokens, token_types, require("tokenizer.ggml.scores"))
            try:
                backend = _SentencePieceBackend(proto)
            except RuntimeError as e:  # sentencepiece refuses the model (a duplicate piece, no unknown token...)
                raise WeightsError(f"{path}: the 'llama' vocabulary is not a valid SentencePiece model ({e})") from None
            add_bos_default = True  # llama.cpp adds BOS to SentencePiece vocabularies unless told otherwise
        else:
            raise WeightsError(f"{path}: unsupported tokenizer model {model!r} in GGUF key 'tokenizer.ggml.model' "
                               "(supported: 'gpt2', 'llama')")

        def token(key: str) -> str | None:
            token_id = meta.get(f"tokenizer.ggml.{key}")
            return tokens[token_id] if token_id is not None and 0 <= token_id < len(tokens) else None

        return cls(
            backend,
            bos_token=token("bos_token_id"),
            eos_token=token("eos_token_id"),
            pad_token=token("padding_token_id"),
            unk_token=token("unknown_token_id"),
            chat_template=meta.get("tokenizer.chat_template"),
            add_bos_token=bool(meta.get("tokenizer.ggml.add_bos_token", add_bos_default)),
            add_eos_token=bool(meta.get("tokenizer.ggml.add_eos_token", False)),
        )

    @classmethod
    def from_dir(cls, directory: str | Path) -> Tokenizer:
        """`tokenizer.json` (preferred) or `tokenizer.model` in `directory`."""
        directory = Path(directory)
        if (directory / HF_JSON).is_file():
            return cls.from_hf_json(directory / HF_JSON)
        if (directory / SENTENCEPIECE_MODEL).is_file():
            return cls.from_sentencepiece(directory / SENTENCEPIECE_MODEL)
        raise FileNotFoundError(f"no tokenizer in {directory}: looked for {HF_JSON} and {SENTENCEPIECE_MODEL}")

    def save(self, directory: str | Path) -> None:
        """Write `tokenizer.json` or `tokenizer.model`, plus `tokenizer_config.json`, for `from_dir` and
        `transformers.AutoTokenizer.from_pretrained`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._backend.save(directory)
        config: dict[str, Any] = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "add_bos_token": self.add_bos_token,
            "add_eos_token": self.add_eos_token,
            # Our decode never rewrites spaces; this keeps transformers' decode the same.
            "clean_up_tokenization_spaces": False,
            **{name: token for name, token in self._special_tokens.items() if token is not None},
        }
        if isinstance(self._backend, _SentencePieceBackend):
            # LlamaTokenizer is the transformers class that reads a bare `tokenizer.model`; its legacy mode treats
            # text after a special token as `sentencepiece` and llama.cpp do (with a new dummy prefix).
            config.update(tokenizer_class="LlamaTokenizer", legacy=True)
        if self._chat_template is not None:
            config["chat_template"] = self._chat_template
        (directory / TOKENIZER_CONFIG).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")

    # ------------------------------------------------------------------------------------------------- encoding

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Token ids of `text`; special tokens written in it become their ids."""
        ids = self._backend.encode(text)
        if add_bos:
            ids.insert(0, self._require_id("bos"))
        if add_eos:
            ids.append(self._require_id("eos"))
        return ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text of `ids`, leaving out special tokens unless `skip_special_tokens` is False."""
        return self._backend.decode([int(i) for i in ids], skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        """Id of a token string, or None if it is not in the vocabulary."""
        return self._backend.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        """Token string of an id, or None if out of range."""
        return self._backend.id_to_token(token_id)

    # ------------------------------------------------------------------------------------------- special tokens

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included."""
        return self._backend.vocab_size

    @property
    def bos_id(self) -> int | None:
        return self._id_of("bos_token")

    @property
    def eos_id(self) -> int | None:
        return self._id_of("eos_token")

    @property
    def unk_id(self) -> int | None:
        return self._id_of("unk_token")

    @property
    def pad_id(self) -> int | None:
        """The source's pad token; else eos (as HF generation does); else 0 when there is no eos either."""
        pad_id = self._id_of("pad_token")
        if pad_id is not None:
            return pad_id
        return self.eos_id if self.eos_id is not None else 0

    @property
    def special_tokens(self) -> dict[str, str | None]:
        """`bos_token`, `eos_token`, `pad_token`, `unk_token` as the source names them (None if absent)."""
        return dict(self._special_tokens)

    @property
    def stop_ids(self) -> frozenset[int]:
        """Ids that end generation: eos plus the end-of-turn special tokens in `END_OF_TURN_TOKENS`."""
        stop = {self.eos_id} if self.eos_id is not None else set()
        for token in END_OF_TURN_TOKENS:
            token_id = self._backend.token_to_id(token)
            if token_id is not None and token_id in self._backend.special_ids:
                stop.add(token_id)
        return frozenset(stop)

    def _id_of(self, name: str) -> int | None:
        token = self._special_tokens[name]
        return None if token is None else self._backend.token_to_id(token)

    def _require_id(self, name: str) -> int:
        token_id = self._id_of(f"{name}_token")
        if token_id is None:
            raise ValueError(f"this tokenizer has no {name} token")
        return token_id

    # ------------------------------------------------------------------------------------------------ chat template

    @property
    def chat_template(self) -> str | None:
        return self._chat_template

    def apply_chat_template(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True,
                            **template_vars: Any) -> str:
        """Render `messages` with the Jinja chat template as HF does; `template_vars` (e.g. `tools`) are passed
        to the template too."""
        if self._chat_template is None:
            raise ValueError("this tokenizer has no chat template (the source had no 'chat_template')")
        template = _compile_chat_template(self._chat_template)
        special_tokens = {name: token for name, token in self._special_tokens.items() if token is not None}
        return template.render({**special_tokens, **template_vars}, messages=messages,
                               add_generation_prompt=add_generation_prompt)


# --------------------------------------------------------------------------------------------------- helpers


def _raise_template_exception(message: str) -> None:
    import jinja2

    raise jinja2.exceptions.TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    # Jinja's own `tojson` escapes HTML characters, which would change what a template renders.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@functools.lru_cache(maxsize=16)
def _compile_chat_template(source: str) -> jinja2.Template:
    """Chat templates are untrusted code from model repos: render them in Jinja's immutable sandbox, with the
    options and helpers HF gives them so that they render identically."""
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_template_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(source)


def _token_content(value: Any) -> str | None:
    """A special token as HF config files write it: a string or an AddedToken dict."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _read_hf_config(directory: Path) -> dict[str, Any]:
    """The `Tokenizer` keyword arguments found in the HF config files of `directory` (only those present)."""
    config: dict[str, Any] = {}
    tokens_map_path = directory / SPECIAL_TOKENS_MAP
    tokens_map = read_json(tokens_map_path) if tokens_map_path.is_file() else {}
    config_path = directory / TOKENIZER_CONFIG
    tokenizer_config = read_json(config_path) if config_path.is_file() else {}
    for name in ("bos_token", "eos_token", "pad_token", "unk_token"):
        # tokenizer_config.json wins: it is what current transformers writes and reads first.
        for source in (tokenizer_config, tokens_map):
            if name in source:
                config[name] = _token_content(source[name])
                break
    for flag in ("add_bos_token", "add_eos_token"):
        if isinstance(tokenizer_config.get(flag), bool):
            config[flag] = tokenizer_config[flag]
    template = tokenizer_config.get("chat_template")
    if isinstance(template, list):  # several named templates; the default one is the chat template
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    if (directory / CHAT_TEMPLATE_FILE).is_file():  # newer transformers save the template on its own
        template = (directory / CHAT_TEMPLATE_FILE).read_text()
    if template is not None:
        config["chat_template"] = template
    return config


def _byte_level_bpe_from_gguf(tokens: list[str], merges: list[str], token_types: list[int],
                              pre: str) -> tokenizers.Tokenizer:
    """A `tokenizers` byte-level BPE from a GGUF `gpt2` vocabulary, pre-tokenizing as llama.cpp does for `pre`."""
    from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer

    bpe = models.BPE(
        vocab={token: i for i, token in enumerate(tokens)},
        # Byte-level symbols never contain a space, so the first space separates the pair.
        merges=[tuple(merge.split(" ", 1)) for merge in merges],
        ignore_merges=pre in _LLAMA3_PRES,
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
                                  for token, kind in zip(tokens, token_types) if kind == _GGUF_CONTROL])
    tokenizer.add_tokens([AddedToken(token, special=False, normalized=False)
                          for token, kind in zip(tokens, token_types) if kind == _GGUF_USER_DEFINED])
    return tokenizer


def _sentencepiece_proto_from_gguf(meta: dict[str, Any], tokens: list[str], token_types: list[int],
                                   scores: list[float]) -> bytes:
    """A SentencePiece BPE model proto from a GGUF `llama` vocabulary, so that `sentencepiece` runs it exactly.

    llama.cpp writes the pieces, scores and types of the original `tokenizer.model` (its token types are
    SentencePiece's) and applies no normalisation beyond escaping spaces and the optional dummy prefix.
    """
    from sentencepiece import sentencepiece_model_pb2 as sp_pb2

    proto = sp_pb2.ModelProto()
    valid_types = set(sp_pb2.ModelProto.SentencePiece.Type.values())
    for token, score, kind in zip(tokens, scores, token_types):
        proto.pieces.add(piece=token, score=score, type=kind if kind in valid_types else 1)  # 1: NORMAL
    trainer = proto.trainer_spec
    trainer.model_type = sp_pb2.TrainerSpec.BPE
    trainer.vocab_size = len(tokens)
    trainer.byte_fallback = _GGUF_BYTE in token_types
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


# ------------------------------------------------------------------------------------------------------ seqio


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
    import numpy as np
    import seqio
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
