"""One tokenizer interface over SentencePiece `tokenizer.model`, HF `tokenizer.json` and GGUF vocabularies.

- `Tokenizer.from_sentencepiece(path)`: LLaMA-1/2 style `tokenizer.model`, run by the `sentencepiece` package.
- `Tokenizer.from_hf_json(path_or_dir)`: HF `tokenizer.json` (LLaMA-3, SmolLM2, ...), run by `tokenizers`, with
  special tokens and the chat template read from `tokenizer_config.json` / `special_tokens_map.json`.
- `Tokenizer.from_gguf(path)`: the vocabulary in a GGUF file's metadata. `gpt2` (byte-level BPE) becomes a
  `tokenizers` BPE with llama.cpp's pre-tokenizer regexes; `llama` (SentencePiece BPE) becomes a SentencePiece
  model proto, so it tokenizes exactly like the `sentencepiece` library.
- `Tokenizer.from_dir(directory)` / `Tokenizer.save(directory)`: a directory that `transformers.AutoTokenizer`
  also loads.

GGUF vocabularies are rebuilt in `gguf_vocab`, chat templates render in `chat_template`, and `seqio_vocab`
adapts a `Tokenizer` to `seqio.Vocabulary`.

Special tokens written in the text (`<|im_start|>`, `<s>`, ...) are encoded as their ids by every backend, as HF
and llama.cpp do, so a rendered chat template encodes correctly.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import sentencepiece
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from pivot_jax.convert.gguf import tokenizer_metadata
from pivot_jax.convert.layout import WeightsError
from pivot_jax.jsonl import read_json
from pivot_jax.tokenizer import gguf_vocab
from pivot_jax.tokenizer.chat_template import compile_chat_template

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
        self.model_proto = model_proto
        self.processor = sentencepiece.SentencePieceProcessor(model_proto=model_proto)
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
            if pre not in gguf_vocab.GGUF_PRE_TOKENIZERS:
                raise WeightsError(f"{path}: unsupported pre-tokenizer {pre!r} in GGUF key 'tokenizer.ggml.pre' "
                                   f"(supported: {', '.join(sorted(gguf_vocab.GGUF_PRE_TOKENIZERS))})")
            backend: _Backend = _HFBackend(gguf_vocab.byte_level_bpe(
                tokens, require("tokenizer.ggml.merges"), token_types, pre))
            add_bos_default = pre in gguf_vocab.LLAMA3_PRES
        elif model == "llama":
            proto = gguf_vocab.sentencepiece_proto(meta, tokens, token_types, require("tokenizer.ggml.scores"))
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
        template = compile_chat_template(self._chat_template)
        special_tokens = {name: token for name, token in self._special_tokens.items() if token is not None}
        return template.render({**special_tokens, **template_vars}, messages=messages,
                               add_generation_prompt=add_generation_prompt)


# --------------------------------------------------------------------------------------------------- helpers


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


