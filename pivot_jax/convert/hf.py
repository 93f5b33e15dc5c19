"""Hugging Face safetensors checkpoints <-> our parameters, streamed tensor by tensor (no pickle, ever)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from pivot_jax.convert.layout import WeightsError, params_from_tensors, tensors_from_params
from pivot_jax.model import Llama3RopeScaling, LlamaConfig

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


def config_from_hf(hf: dict[str, Any], origin: str = "config.json") -> LlamaConfig:
    """Our config from an HF `LlamaConfig` dict (transformers 4 `rope_scaling` or 5 `rope_parameters`)."""
    model_type = hf.get("model_type", "llama")
    if model_type not in ("llama", "mistral"):
        raise WeightsError(f"{origin}: model_type {model_type!r} is not a LLaMA-family model")
    for flag in ("attention_bias", "mlp_bias"):
        if hf.get(flag):
            raise WeightsError(f"{origin}: {flag}=true is not supported by the LLaMA implementation")
    if hf.get("hidden_act", "silu") != "silu":
        raise WeightsError(f"{origin}: hidden_act {hf['hidden_act']!r} is not supported (LLaMA uses silu)")
    rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    theta = rope.get("rope_theta", hf.get("rope_theta", 10000.0))
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type == "llama3":
        scaling = Llama3RopeScaling(factor=float(rope["factor"]), low_freq_factor=float(rope["low_freq_factor"]),
                                    high_freq_factor=float(rope["high_freq_factor"]),
                                    original_max_position_embeddings=int(rope["original_max_position_embeddings"]))
    elif rope_type == "default":
        scaling = None
    else:
        raise WeightsError(f"{origin}: rope type {rope_type!r} is not supported (only default and llama3)")
    try:
        num_heads = int(hf["num_attention_heads"])
        return LlamaConfig(
            vocab_size=int(hf["vocab_size"]), embed_dim=int(hf["hidden_size"]),
            num_layers=int(hf["num_hidden_layers"]), num_heads=num_heads,
            num_kv_heads=int(hf.get("num_key_value_heads") or num_heads),
            mlp_dim=int(hf["intermediate_size"]), head_dim=int(hf.get("head_dim") or 0),
            norm_eps=float(hf.get("rms_norm_eps", 1e-6)), rope_theta=float(theta), rope_scaling=scaling,
            max_seq_len=int(hf.get("max_position_embeddings", 2048)),
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)))
    except KeyError as e:
        raise WeightsError(f"{origin}: missing key {e.args[0]!r}") from None


def config_to_hf(cfg: LlamaConfig, torch_dtype: str = "float32", **token_ids: int | None) -> dict[str, Any]:
    """An HF `config.json` dict that `transformers.AutoConfig` reads as the same architecture."""
    hf: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.embed_dim, "intermediate_size": cfg.mlp_dim, "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads, "num_key_value_heads": cfg.num_kv_heads, "head_dim": cfg.head_dim,
        "hidden_act": "silu", "rms_norm_eps": cfg.norm_eps, "rope_theta": cfg.rope_theta,
        "max_position_embeddings": cfg.max_seq_len, "tie_word_embeddings": cfg.tie_embeddings,
        "attention_bias": False, "mlp_bias": False, "torch_dtype": torch_dtype, "rope_scaling": None,
    }
    if cfg.rope_scaling is not None:
        s = cfg.rope_scaling
        hf["rope_scaling"] = {"rope_type": "llama3", "factor": s.factor, "low_freq_factor": s.low_freq_factor,
                              "high_freq_factor": s.high_freq_factor,
                              "original_max_position_embeddings": s.original_max_position_embeddings}
    hf.update({k: v for k, v in token_ids.items() if v is not None})
    return hf


def _check_shard(directory: Path, index: Path, tensor: str, name: Any) -> None:
    """Refuse an index's shard `name` (of `tensor`) that is not a file inside `directory`, directly or through a
    symlink: an index, often downloaded, must not make us read files elsewhere."""
    where = f"{index}: tensor {tensor!r} is in shard {name!r}"
    if not isinstance(name, str) or not name:
        raise WeightsError(f"{where}, which is not a file name")
    root = directory.resolve()
    path = directory / name
    # The folders on the way must stay inside; the file itself may link into the Hugging Face cache, as a
    # snapshot's files do (models--ORG--NAME/snapshots/REV/x -> ../../blobs/HASH).
    target = path.resolve()
    hub_blob = target.parent.name == "blobs" and target.parent.parent.name.startswith("models--")
    if not path.parent.resolve().is_relative_to(root) or not (target.is_relative_to(root) or hub_blob):
        raise WeightsError(f"{where}, which is not inside the model directory {directory}",
                           hint="shard names in the index are file names relative to the model directory")


class SafetensorsSource:
    """HF tensors from one `model.safetensors` or the shards named by `model.safetensors.index.json`."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        index = self.directory / INDEX_FILE
        if index.exists():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise WeightsError(f"{index}: not a safetensors index ({e})") from None
            if not isinstance(weight_map, dict):
                raise WeightsError(f"{index}: weight_map should map tensor names to shard files")
            for tensor, name in weight_map.items():
                _check_shard(self.directory, index, tensor, name)
            files = sorted(set(weight_map.values()))
        elif (self.directory / SINGLE_FILE).exists():
            files = [SINGLE_FILE]
        else:
            found = sorted(p.name for p in self.directory.glob("*")) if self.directory.is_dir() else []
            hint = " (PyTorch .bin checkpoints are not loaded: pickle is unsafe; convert them to safetensors)" \
                if any(n.endswith(".bin") for n in found) else ""
            raise FileNotFoundError(f"{self.directory}: no {SINGLE_FILE} or {INDEX_FILE}{hint}")
        self._handles = {}
        self._where: dict[str, str] = {}
        for name in files:
            path = self.directory / name
            if not path.exists():
                raise FileNotFoundError(f"{index}: shard {name} is listed but missing")
            handle = safe_open(str(path), framework="numpy")
            self._handles[name] = handle
            for key in handle.keys():
                self._where[key] = name

    def keys(self) -> list[str]:
        return list(self._where)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._handles[self._where[name]].get_slice(name).get_shape())

    def get(self, name: str) -> np.ndarray:
        return self._handles[self._where[name]].get_tensor(name)


def read_config(directory: str | os.PathLike) -> LlamaConfig:
    path = Path(directory) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{directory}: no config.json")
    try:
        return config_from_hf(json.loads(path.read_text()), str(path))
    except json.JSONDecodeError as e:
        raise WeightsError(f"{path}: invalid JSON ({e})") from None


def load_params(directory: str | os.PathLike, cfg: LlamaConfig | None = None, dtype: Any = None,
                place: Callable | None = None) -> tuple[LlamaConfig, dict[str, Any]]:
    """Config and parameters of an HF LLaMA directory; tensors are read and placed one stack at a time."""
    cfg = cfg or read_config(directory)
    dtype = jnp.dtype(dtype or cfg.param_dtype)
    params = params_from_tensors(cfg, SafetensorsSource(directory), dtype, origin=str(directory), place=place)
    return cfg, params


def save_params(directory: str | os.PathLike, cfg: LlamaConfig, params: dict[str, Any], dtype: Any = None,
                max_shard_bytes: int = 5 * 2**30, extra_config: dict[str, Any] | None = None) -> None:
    """Write `config.json` and safetensors shards (+ index when more than one) that transformers loads."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    dtype = jnp.dtype(dtype) if dtype is not None else None
    shard_names: list[str] = []
    shard: dict[str, np.ndarray] = {}
    shard_bytes = total_bytes = 0
    weight_map: dict[str, str] = {}

    def flush():  # only one shard is ever held in host memory
        name = f"model-{len(shard_names) + 1:05d}.safetensors"
        save_file(shard, str(directory / name), metadata={"format": "pt"})
        shard_names.append(name)
        shard.clear()

    stored_dtype = None
    for name, tensor in tensors_from_params(cfg, params, dtype):
        stored_dtype = tensor.dtype
        if shard_bytes and shard_bytes + tensor.nbytes > max_shard_bytes:
            flush()
            shard_bytes = 0
        shard[name] = tensor
        weight_map[name] = f"model-{len(shard_names) + 1:05d}.safetensors"
        shard_bytes += tensor.nbytes
        total_bytes += tensor.nbytes
    flush()
    if len(shard_names) == 1:
        os.replace(directory / shard_names[0], directory / SINGLE_FILE)
    else:
        index = {"metadata": {"total_size": total_bytes}, "weight_map": weight_map}
        (directory / INDEX_FILE).write_text(json.dumps(index, indent=2))
    hf_config = config_to_hf(cfg, torch_dtype=str(stored_dtype))
    hf_config.update(extra_config or {})
    (directory / "config.json").write_text(json.dumps(hf_config, indent=2))
