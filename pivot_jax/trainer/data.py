"""The run's data: the config's seqio mixture, registered with the tokenizer the model trains with.

    name, bos_id = register_data(config, model_cfg)   # ("", 0) for the synthetic task
"""

from __future__ import annotations

from ml_collections import ConfigDict

from pivot_jax import model as model_lib
from pivot_jax.data import mixtures
from pivot_jax.errors import ConfigError
from pivot_jax.pretrained import load_tokenizer
from pivot_jax.tokenizer import seqio_vocabulary


def register_data(config: ConfigDict, model_cfg: model_lib.LlamaConfig) -> tuple[str, int]:
    """Register the seqio mixture of `config.data` with the model's tokenizer: (name, first input token)."""
    if config.data.source != "seqio":
        return "", 0
    spec = config.data.tokenizer or config.model.init_from
    if not spec:
        raise ConfigError("data.source='seqio' needs a tokenizer: set data.tokenizer (or model.init_from)")
    tokenizer = load_tokenizer(spec)
    if tokenizer.vocab_size > model_cfg.vocab_size:
        raise ConfigError(f"the tokenizer of {spec} has {tokenizer.vocab_size} ids but the model only "
                         f"{model_cfg.vocab_size} (set model.vocab_size)")
    name = mixtures.build(config.data, seqio_vocabulary(tokenizer), config.train.seq_len)
    # seqio shifts each packed segment right by one token: the model's BOS where it uses one, else EOS.
    start = tokenizer.bos_id if tokenizer.add_bos_token and tokenizer.bos_id is not None else tokenizer.eos_id
    return name, int(start)
