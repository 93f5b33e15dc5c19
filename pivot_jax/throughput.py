"""Training FLOPs, per-chip peaks and MFU, counted the way MaxText reports them."""

from __future__ import annotations

import jax

from pivot_jax.model import LlamaConfig

# Dense bf16 peak TFLOP/s per chip.
PEAK_TFLOPS = {
    "TPU v4": 275.0,
    "TPU v5 lite": 197.0,  # v5e
    "TPU v5e": 197.0,
    "TPU v5p": 459.0,
    "TPU v5": 459.0,
    "TPU v6 lite": 918.0,  # v6e (Trillium)
    "TPU v6e": 918.0,
    "NVIDIA H100": 989.0,
    "NVIDIA H200": 989.0,
}


def peak_tflops(device: jax.Device | None = None) -> float | None:
    """The chip's bf16 peak, or None where MFU is not meaningful (CPU, unknown chips)."""
    kind = (device or jax.devices()[0]).device_kind
    # Longest names first so "TPU v5 lite" is not read as "TPU v5".
    for name in sorted(PEAK_TFLOPS, key=len, reverse=True):
        if kind.startswith(name) or name in kind:
            return PEAK_TFLOPS[name]
    return None


def training_flops_per_token(cfg: LlamaConfig, seq_len: int) -> float:
    """6 * N (matmul parameters) + causal attention (QK^T and AV, forward + backward, half the score matrix).

    N excludes the input embedding table, which is a gather, unless it is tied to the output projection.
    """
    matmul_params = cfg.num_params() - (0 if cfg.tie_embeddings else cfg.vocab_size * cfg.embed_dim)
    # Per layer and token: 2 matmuls x 2 FLOPs x seq x heads x head_dim, halved by the causal mask, x3 for training.
    attention = 6 * cfg.num_layers * seq_len * cfg.num_heads * cfg.head_dim
    return 6.0 * matmul_params + attention
