"""An Orbax model directory: `config.json` (our LlamaConfig), `params/` (Orbax PyTree), `tokenizer/`.

This is what `hf-to-orbax` / `gguf-to-orbax` write and what `orbax:DIR` loads; restoring can place every
parameter straight onto its sharding, so large models never pass through one host whole.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from pivot_jax.convert.layout import WeightsError, param_shapes
from pivot_jax.jsonl import read_json
from pivot_jax.model import LlamaConfig

CONFIG_FILE = "config.json"
PARAMS_DIR = "params"
TOKENIZER_DIR = "tokenizer"
FORMAT = "pivot_jax.model_dir/1"


def save(directory: str | os.PathLike, cfg: LlamaConfig, params: dict[str, Any], tokenizer: Any = None) -> Path:
    """Write a model directory; refuses to overwrite an existing one (nothing already saved is lost)."""
    directory = Path(directory).absolute()
    if (directory / PARAMS_DIR).exists():
        raise FileExistsError(f"{directory}: already holds a model; choose a new destination")
    directory.mkdir(parents=True, exist_ok=True)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(directory / PARAMS_DIR, params)
        checkpointer.wait_until_finished()
    if tokenizer is not None:
        tokenizer.save(directory / TOKENIZER_DIR)
    # Written last: a directory without config.json is an interrupted save and is never loaded. The attention
    # kernel is left to the loading machine ("auto"), not the saving one's.
    model = cfg.replace(attention="auto").to_dict()
    (directory / CONFIG_FILE).write_text(json.dumps({"format": FORMAT, "model": model}, indent=2))
    return directory


def read_config(directory: str | os.PathLike) -> LlamaConfig:
    path = Path(directory) / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"{directory}: no {CONFIG_FILE} (not a pivot_jax model directory, or its save "
                                "was interrupted)")
    meta = read_json(path)
    if not isinstance(meta, dict) or not isinstance(meta.get("model"), dict):
        raise WeightsError(f"{path}: expected a JSON object with the model config under 'model'")
    try:
        return LlamaConfig.from_dict(meta["model"])
    except (TypeError, ValueError, ZeroDivisionError) as e:  # missing, unknown or ill-typed fields
        raise WeightsError(f"{path}: cannot read the model config ({e})") from None


def load_params(directory: str | os.PathLike, cfg: LlamaConfig | None = None, dtype: Any = None,
                shardings: Any = None) -> tuple[LlamaConfig, dict[str, Any]]:
    """Restore parameters, cast to `dtype` (default the config's param_dtype) and placed by `shardings`."""
    directory = Path(directory).absolute()
    cfg = cfg or read_config(directory)
    abstract = abstract_params(cfg, dtype, shardings)
    with ocp.StandardCheckpointer() as checkpointer:
        _check_shapes(directory, checkpointer.metadata(directory / PARAMS_DIR).item_metadata.tree, abstract)
        params = checkpointer.restore(directory / PARAMS_DIR, abstract)
    return cfg, params


def abstract_params(cfg: LlamaConfig, dtype: Any = None, shardings: Any = None) -> dict[str, Any]:
    """The parameter tree as `jax.ShapeDtypeStruct`s (dtype default the config's param_dtype) placed by
    `shardings` (default: the first device): the restore target for Orbax."""
    dtype = jnp.dtype(dtype or cfg.param_dtype)
    default_sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract: dict[str, Any] = {}
    for path, shape in param_shapes(cfg).items():
        node = abstract
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = jax.ShapeDtypeStruct(shape, dtype, sharding=default_sharding)
    if shardings is not None:
        abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
    return abstract


def _check_shapes(directory: Path, stored: Any, expected: Any) -> None:
    """Name the first parameter whose stored shape differs from the config's (before Orbax reads anything)."""
    stored_flat = dict(jax.tree_util.tree_flatten_with_path(stored)[0])
    for path, want in jax.tree_util.tree_flatten_with_path(expected)[0]:
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        if path not in stored_flat:
            raise ValueError(f"{directory}: parameter {name} is missing from the checkpoint")
        got = tuple(stored_flat[path].shape)
        if got != tuple(want.shape):
            raise ValueError(f"{directory}: parameter {name} has shape {got}, the config expects {want.shape}")
