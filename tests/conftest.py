"""Shared fixtures: tiny random HF LLaMA models built locally (no downloads) and the packaged SmolLM2 GGUF."""

from __future__ import annotations

import os
from pathlib import Path

# 8 CPU devices for the sharding tests; set before JAX starts (single-device code still runs on device 0).
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
# The tests run on CPU: with libtpu installed (the dev extra, for the AOT tests) JAX would otherwise try the TPU
# first in every process (~1.4 s and a page of warnings). AOT compiles for TPU topologies all the same.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

# name -> transformers.LlamaConfig kwargs; together they cover GQA, MQA, tied embeddings and LLaMA-3 rope scaling.
TINY_HF_CONFIGS = {
    "gqa": dict(num_key_value_heads=2),
    "tied": dict(num_key_value_heads=4, tie_word_embeddings=True),
    "llama3": dict(num_key_value_heads=1, rope_theta=500000.0,
                   rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                 "high_freq_factor": 4.0, "original_max_position_embeddings": 16}),
}


def build_tiny_hf(name: str, directory: Path, seed: int = 0, **save_kwargs):
    """A random tiny `LlamaForCausalLM` saved as safetensors in `directory`; returns the torch model."""
    import torch
    import transformers

    torch.manual_seed(seed)
    config = transformers.LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                      num_attention_heads=4, max_position_embeddings=256, bos_token_id=1,
                                      eos_token_id=2, **TINY_HF_CONFIGS[name])
    model = transformers.LlamaForCausalLM(config).eval()
    model.save_pretrained(directory, **save_kwargs)
    return model


@pytest.fixture(scope="session", params=sorted(TINY_HF_CONFIGS))
def tiny_hf(request, tmp_path_factory):
    """(name, directory, torch model) for each tiny configuration; the directory is sharded safetensors."""
    directory = tmp_path_factory.mktemp(f"hf_{request.param}")
    model = build_tiny_hf(request.param, directory, max_shard_size="100KB")
    return request.param, directory, model


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    from pivot_jax.pretrained import packaged_smollm2

    try:
        return packaged_smollm2()
    except FileNotFoundError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def gcs_server():
    """The session's local GCS emulator (tests/gcs_emulator.py), bucket `pivot-test`, NOT active: use `gcs_workdir`."""
    import importlib.util

    if importlib.util.find_spec("gcp_storage_emulator") is None:
        pytest.skip("gcp-storage-emulator is not installed (pip install -e '.[dev]'): no local GCS for gs:// tests")
    from gcs_emulator import start_emulator

    emulator = start_emulator()
    yield emulator
    emulator.stop()


@pytest.fixture
def gcs_workdir(gcs_server, request):
    """A fresh `epath.Path("gs://pivot-test/<test name>-<8 hex>")` (nothing written yet) on the local emulator.

    During the test every GCS client of this process and of its child processes reaches the emulator (epath via
    gcsfs, Orbax/TensorStore, google-cloud-storage), anonymously, never the network; afterwards the environment
    is as before. The emulator object is `gcs_server` (`.list_objects(prefix)`, `.fs()`, `.url`).
    """
    import re
    import uuid

    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name).strip("-")[:60]
    with gcs_server.activated():
        yield gcs_server.path(f"{name}-{uuid.uuid4().hex[:8]}")
