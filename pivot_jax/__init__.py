"""pivot_jax: cross-lingual instruction tuning of LLaMA-family models through a pivot language, in JAX."""

from pivot_jax.pretrained import Pretrained, load_pretrained

__all__ = ["Pretrained", "load_pretrained"]
__version__ = "0.1.0"
