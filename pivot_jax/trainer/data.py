"""The run's data: the config's seqio mixture registered with the tokenizer the model trains with, the step
count `train.epochs` means for it, and each process's share of the global batches.

    name, bos_id = register_data(config, model_cfg)   # ("", 0) for the synthetic task
    stream = make_stream(config, name, bos_id, "train")
    batch = global_batch(next(stream), batch_sharding)
"""

from __future__ import annotations

import logging
import math

import jax
import numpy as np
from ml_collections import ConfigDict

from pivot_jax import model as model_lib
from pivot_jax.data import BATCH_KEYS, BatchStream, mixtures
from pivot_jax.data.synthetic import SyntheticStream
from pivot_jax.data.tasks import SeqioStream
from pivot_jax.errors import ConfigError
from pivot_jax.pretrained import load_tokenizer, tokenizer_spec
from pivot_jax.tokenizer import seqio_vocabulary

log = logging.getLogger("pivot_jax.train")


def register_data(config: ConfigDict, model_cfg: model_lib.LlamaConfig) -> tuple[str, int]:
    """Register the seqio mixture of `config.data` with the model's tokenizer: (name, first input token)."""
    if config.data.source != "seqio":
        return "", 0
    spec = tokenizer_spec(config.data, config.model, needed_for="data.source='seqio'")
    tokenizer = load_tokenizer(spec)
    if tokenizer.vocab_size > model_cfg.vocab_size:
        raise ConfigError(f"the tokenizer of {spec} has {tokenizer.vocab_size} ids but the model only "
                         f"{model_cfg.vocab_size} (set model.vocab_size)")
    name = mixtures.build(config.data, seqio_vocabulary(tokenizer), config.train.seq_len)
    # seqio shifts each packed segment right by one token: the model's BOS where it uses one, else EOS.
    start = tokenizer.bos_id if tokenizer.add_bos_token and tokenizer.bos_id is not None else tokenizer.eos_id
    return name, int(start)


def steps_from_epochs(config: ConfigDict, data_name: str, bos_id: int, sample_batches: int = 8) -> int:
    """`train.steps` for `train.epochs` passes over the training examples, at the packing rate measured on the
    first `sample_batches` batches."""
    import seqio  # seqio pulls in TensorFlow; only seqio data needs it

    mixture = seqio.get_mixture_or_task(data_name)
    examples = sum(task.num_input_examples("train") for task in getattr(mixture, "tasks", [mixture]))
    if examples == 0:  # e.g. translation_amount=0 with no other data: the baseline of a sweep
        log.info("train.epochs=%g over 0 training examples -> train.steps=0 (evaluations only)", config.train.epochs)
        return 0
    stream = SeqioStream(data_name, "train", config.train.seq_len, config.train.global_batch_size, config.seed,
                         bos_id)
    per_row = np.mean([next(stream)["decoder_segment_ids"].max(axis=1).mean() for _ in range(sample_batches)])
    steps = max(1, math.ceil(config.train.epochs * examples / (config.train.global_batch_size * per_row)))
    log.info("train.epochs=%g over %d examples at %.2f examples per packed row -> train.steps=%d",
             config.train.epochs, examples, per_row, steps)
    return steps


def make_stream(config: ConfigDict, data_name: str, bos_id: int, split: str) -> BatchStream:
    """This process's rows of the `split` batches: the registered seqio mixture, or the synthetic task."""
    if config.data.source == "seqio":
        return SeqioStream(data_name, split, config.train.seq_len, config.train.global_batch_size, config.seed,
                           bos_id, jax.process_index(), jax.process_count(), shuffle=split == "train")
    return SyntheticStream(config.seed, split, config.train.global_batch_size, config.train.seq_len,
                           config.data.vocab_size, jax.process_index(), jax.process_count())


def global_batch(local: dict[str, np.ndarray], batch_sharding: jax.sharding.NamedSharding) -> dict[str, jax.Array]:
    """Assemble the global batch from each process's rows (no host ever holds all of it)."""
    return {k: jax.make_array_from_process_local_data(batch_sharding, local[k]) for k in BATCH_KEYS}
