"""SeqIO tasks and mixtures over rendered examples, and the packed, sharded, resumable stream the trainer reads.

A task is a list of `formats.Example`s per split (built lazily by a factory from files or CLDR), tokenized
with the model's tokenizer, fitted to the sequence length (over-long examples dropped or truncated), and
packed by seqio's `DecoderFeatureConverter` into the t5x batch contract with loss on the responses only.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from pivot_jax.data import BATCH_KEYS
from pivot_jax.data.formats import Example

OVERFLOW = ("drop", "truncate")


def import_tf():
    """TensorFlow, kept off the GPUs (JAX owns them); imported here only: it takes ~2 s."""
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")
    return tf


def output_features(vocabulary: Any) -> dict[str, Any]:
    import seqio  # seqio pulls in TensorFlow (~3 s): imported only once seqio data is used

    return {"inputs": seqio.Feature(vocabulary, add_eos=False, required=False),
            "targets": seqio.Feature(vocabulary, add_eos=True)}


def _fit_length_preprocessor(max_length: int, overflow: str) -> Callable:
    """Make prompt + response fit `max_length`: drop the example, or truncate it.

    `truncate` keeps the prompt (cut to the limit if it alone is too long) and cuts the response's end, as
    the papers' training code does; an example left with no response tokens is dropped either way.
    """
    tf = import_tf()

    def fit(ds):
        def keep(ex):
            return tf.size(ex["inputs"]) + tf.size(ex["targets"]) <= max_length

        if overflow == "drop":
            return ds.filter(keep)

        def cut(ex):
            inputs = ex["inputs"][:max_length - 1]
            targets = ex["targets"][:max_length - tf.size(inputs)]
            return {**ex, "inputs": inputs, "targets": targets}

        return ds.map(cut).filter(lambda ex: tf.size(ex["targets"]) > 0)

    return fit


def example_preprocessors(max_length: int, overflow: str) -> list[Callable]:
    """What every task does after producing `inputs`/`targets` strings: tokenize, EOS, fit `max_length`."""
    import seqio  # seqio pulls in TensorFlow (~3 s): imported only once seqio data is used

    if overflow not in OVERFLOW:
        raise ValueError(f"data.overflow must be one of {OVERFLOW}, got {overflow!r}")
    return [seqio.preprocessors.tokenize, seqio.preprocessors.append_eos,
            _fit_length_preprocessor(max_length, overflow)]


def add_task(name: str, examples: Callable[[str], Sequence[Example]], vocabulary: Any,
             splits: Sequence[str] = ("train", "validation"), max_length: int = 512, overflow: str = "drop"
             ) -> Any:
    """Register (or re-register) a seqio Task whose split `s` yields `examples(s)` (computed once, lazily)."""
    import seqio  # seqio pulls in TensorFlow (~3 s): imported only once seqio data is used

    preprocessors = example_preprocessors(max_length, overflow)
    tf = import_tf()
    cached = functools.lru_cache(maxsize=None)(lambda split: list(examples(split)))

    def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None):
        rows = cached(split)
        return tf.data.Dataset.from_tensor_slices({
            "inputs": tf.constant([e.inputs for e in rows], tf.string),
            "targets": tf.constant([e.targets for e in rows], tf.string),
            "id": tf.constant([e.id for e in rows], tf.string)})

    if name in seqio.TaskRegistry.names():
        seqio.TaskRegistry.remove(name)
    return seqio.TaskRegistry.add(
        name,
        source=seqio.FunctionDataSource(dataset_fn, splits=list(splits),
                                        num_input_examples=_Counts(cached, splits)),
        preprocessors=preprocessors, output_features=output_features(vocabulary))


class _Counts(Mapping):
    """Examples per split, counted only when seqio asks (mixing rates by example count)."""

    def __init__(self, cached: Callable[[str], list], splits: Sequence[str]):
        self._cached, self._splits = cached, tuple(splits)

    def __getitem__(self, split: str) -> int:
        if split not in self._splits:
            raise KeyError(split)
        return len(self._cached(split))

    def __iter__(self):
        return iter(self._splits)

    def __len__(self) -> int:
        return len(self._splits)


def add_mixture(name: str, tasks: Sequence[str | tuple[str, float]], default_rate: Any = None) -> Any:
    """Register (or re-register) a mixture; rates are explicit weights or, by default, example counts."""
    import seqio  # seqio pulls in TensorFlow (~3 s): imported only once seqio data is used

    if name in seqio.MixtureRegistry.names():
        seqio.MixtureRegistry.remove(name)
    return seqio.MixtureRegistry.add(name, list(tasks),
                                     default_rate=default_rate or seqio.mixing_rate_num_examples)


def first_n_of_fixed_shuffle(items: Sequence[Any], n: int | None, seed: int = 0) -> list[Any]:
    """The first `n` items of one fixed permutation: smaller amounts are subsets of larger ones."""
    order = np.random.default_rng(seed).permutation(len(items))
    chosen = order if n is None else order[:n]
    if n is not None and n > len(items):
        raise ValueError(f"asked for {n} items but only {len(items)} are available")
    return [items[i] for i in chosen]


class SeqioStream:
    """Packed global-batch rows of a task or mixture for this process, in a fixed order; resumable.

    The position is the number of batches read; restoring replays the deterministic pipeline up to it
    (`skip`), so no tf.data buffer ever has to be saved.
    """

    def __init__(self, name: str, split: str, seq_len: int, global_rows: int, seed: int, bos_id: int,
                 process_index: int = 0, process_count: int = 1, shuffle: bool = True, repeat: bool = True):
        if global_rows % process_count:
            raise ValueError(f"global batch {global_rows} is not divisible by {process_count} processes")
        self.name, self.split, self.seq_len, self.seed, self.bos_id = name, split, seq_len, seed, bos_id
        self.local_rows = global_rows // process_count
        self.shard = (process_index, process_count)
        self.shuffle, self.repeat = shuffle, repeat
        self.batch_index = 0
        self._iterator = None

    def dataset(self) -> Any:
        import seqio  # seqio pulls in TensorFlow (~3 s): imported only once seqio data is used

        tf = import_tf()
        # The converter packs prompt + response into rows of inputs + targets lengths. The fit-length
        # preprocessor already bounds each example's sum by seq_len, so any split of seq_len between the two
        # serves and nothing is trimmed here; seqio's per-feature length check would wrongly reject a long
        # prompt with a short response, hence apply_length_check=False.
        lengths = {"inputs": self.seq_len // 2, "targets": self.seq_len - self.seq_len // 2}
        ds = seqio.get_dataset(
            self.name, task_feature_lengths=lengths, dataset_split=self.split, shuffle=self.shuffle,
            num_epochs=None if self.repeat else 1, seed=self.seed, trim_output_features=False,
            shard_info=seqio.ShardInfo(index=self.shard[0], num_shards=self.shard[1]),
            feature_converter=seqio.DecoderFeatureConverter(pack=True, bos_id=self.bos_id,
                                                            apply_length_check=False))
        options = tf.data.Options()
        options.deterministic = True
        return ds.with_options(options).batch(self.local_rows, drop_remainder=True)

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._iterator is None:
            self._iterator = self.dataset().skip(self.batch_index).as_numpy_iterator()
        batch = next(self._iterator)
        self.batch_index += 1
        return {k: batch[k].astype(np.int32) for k in BATCH_KEYS}

    def get_state(self) -> dict[str, Any]:
        return {"batch_index": self.batch_index}

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.batch_index = int(state["batch_index"])
        self._iterator = None
