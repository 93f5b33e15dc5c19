"""Local data prepared once as TFDS datasets, and seqio tasks that render any prepared TFDS dataset.

A team writes its files once into a TFDS `data_dir` (a local folder or a `gs://` bucket) with the command
(`python -m pivot_jax.data.tfds_builders`, see its `__main__`); every host then reads the prepared records from
there, without the original files:

  python -m pivot_jax.data.tfds_builders parallel --source train.en --target train.es \\
      --test_source eng_Latn.devtest --test_target spa_Latn.devtest --source_lang en --target_lang es \\
      --name en_es --data_dir gs://BUCKET/tfds
  python -m pivot_jax.data.tfds_builders instructions --file alpaca_en.json --name alpaca_en \\
      --data_dir gs://BUCKET/tfds

Each prints the versioned name (`pivot_parallel/en_es:1.0.0`) that `tfds_task` (or `tfds.load`) reads. Files
are read with `sources` readers, so every problem names the file, line and field. The versioned name makes TFDS
read the dataset from its files on disk, so readers need neither the source files nor these builders.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow_datasets as tfds

from pivot_jax.data import formats, sources, tasks
from pivot_jax.data.sources import PathLike
from pivot_jax.errors import PivotError

if TYPE_CHECKING:
    import seqio
    import tensorflow as tf

RENDERED = ("inputs", "targets", "id")
RENDER_BATCH = 256
# A TFDS-style config name. It becomes a folder under data_dir: no separators or dots that could leave it.
_NAME = re.compile(r"[a-z][a-z0-9_]*")


class DatasetNameError(PivotError, ValueError):
    """A dataset (config) name that is not a TFDS-style name."""


def check_name(name: str, what: str) -> None:
    """Refuse `name` (given as `what`, e.g. "--name") unless it is a TFDS-style name."""
    if not _NAME.fullmatch(name):
        raise DatasetNameError(f"{what} {name!r} is not a dataset name: use lowercase letters, digits and "
                               "underscores, starting with a letter (e.g. en_es)")


def _fingerprint(paths: Sequence[PathLike]) -> str:
    """One line per file with its sha256, so a dataset re-prepared from changed files is never taken as current."""
    return "\n".join(f"{os.path.abspath(path)} sha256:{hashlib.sha256(Path(path).read_bytes()).hexdigest()}"
                     for path in paths)


@dataclasses.dataclass(eq=False)
class ParallelConfig(tfds.core.BuilderConfig):
    """Line-aligned parallel files per split, `{split: (source file, target file)}`; `train` is required.

    The description records each file's path and sha256 (reading them now, so a missing file is named here).
    """

    files: Mapping[str, tuple[PathLike, PathLike]] = dataclasses.field(default_factory=dict)
    source_lang: str = ""
    target_lang: str = ""

    def __post_init__(self) -> None:
        check_name(self.name, "ParallelConfig name")
        if "train" not in self.files:
            raise ValueError(f"ParallelConfig {self.name!r} needs a 'train' split, got {sorted(self.files)}")
        languages = f"{self.source_lang or '?'} -> {self.target_lang or '?'}"
        self.description = self.description or "\n".join(
            [f"parallel text {languages}"] + [f"{split}: {_fingerprint(paths)}" for split, paths in self.files.items()])


@dataclasses.dataclass(eq=False)
class InstructionsConfig(tfds.core.BuilderConfig):
    """Alpaca-style record files per split, `{split: file}` (JSON list or JSON lines); `train` is required.

    `fields` renames source fields to the canonical `instruction`, `input`, `output`, `id` (as `read_records`).
    """

    files: Mapping[str, PathLike] = dataclasses.field(default_factory=dict)
    fields: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        check_name(self.name, "InstructionsConfig name")
        if "train" not in self.files:
            raise ValueError(f"InstructionsConfig {self.name!r} needs a 'train' split, got {sorted(self.files)}")
        renames = f" (fields renamed {dict(self.fields)})" if self.fields else ""
        self.description = self.description or "\n".join(
            [f"instruction records{renames}"] + [f"{split}: {_fingerprint([path])}"
                                                  for split, path in self.files.items()])


class _LocalFilesBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A builder of local files, named by its config's `files`: it downloads nothing."""

    VERSION = tfds.core.Version("1.0.0")
    # Without downloads there is no checksums file to look up; TFDS 4.9.10 would look for one next to the code
    # with `importlib_resources`, which it imports but does not require on Python >= 3.9 (tensorflow/datasets#11212).
    url_infos = None


class PivotParallel(_LocalFilesBuilder):
    """Parallel sentence pairs; `line_index` is the pair's 0-based line in its files, skipped empty pairs counted."""

    name = "pivot_parallel"

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, description=self.__doc__, features=tfds.features.FeaturesDict({
            "id": tfds.features.Text(), "line_index": np.int64, "source": tfds.features.Text(),
            "target": tfds.features.Text()}))

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        # Every split is read (and checked) before anything is written.
        pairs = {split: sources.read_parallel(*paths) for split, paths in self.builder_config.files.items()}
        return {split: self._generate_examples(split, rows) for split, rows in pairs.items()}

    def _generate_examples(self, split: str, rows: list[tuple[int, str, str]]
                           ) -> Iterator[tuple[int, dict[str, Any]]]:
        for line_index, source, target in rows:
            yield line_index, {"id": f"{self.builder_config.name}/{split}/{line_index}", "line_index": line_index,
                               "source": source, "target": target}


class PivotInstructions(_LocalFilesBuilder):
    """Instruction records: `id` (the record's own, else its 1-based position), `instruction`, `input`, `output`."""

    name = "pivot_instructions"

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, description=self.__doc__, features=tfds.features.FeaturesDict({
            name: tfds.features.Text() for name in ("id", "instruction", "input", "output")}))

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        config = self.builder_config
        records = {split: _instruction_records(path, config.fields) for split, path in config.files.items()}
        return {split: self._generate_examples(rows) for split, rows in records.items()}

    def _generate_examples(self, rows: list[dict[str, str]]) -> Iterator[tuple[int, dict[str, str]]]:
        yield from enumerate(rows)


def _instruction_records(path: PathLike, fields: Mapping[str, str] | None) -> list[dict[str, str]]:
    records = sources.read_records(path, fields, required=("instruction", "output"))
    rows = []
    for number, record in enumerate(records, 1):
        row = {"id": str(number if record.get("id") is None else record["id"]), "instruction": record["instruction"],
               "input": record.get("input") or "", "output": record["output"]}
        for field in ("instruction", "input", "output"):
            if not isinstance(row[field], str):
                raise sources.DataError(f"{path}: record {number}: field {field!r} should be a string, got "
                                        f"{type(row[field]).__name__}")
        rows.append(row)
    return rows


def prepare(builder: str | type[tfds.core.DatasetBuilder], config: tfds.core.BuilderConfig | None,
            data_dir: PathLike, overwrite: bool = False) -> str:
    """Write the dataset of `builder` (a registered name or class) and `config` into `data_dir`; its tfds name.

    Nothing is downloaded: the builders read local files. Preparing again from the same files reuses the
    dataset; from changed files it is an error unless `overwrite` (a new config name keeps both).
    """
    tasks.import_tf()  # hides accelerators from TF before anything starts it
    cls = tfds.builder_cls(builder) if isinstance(builder, str) else builder
    instance = cls(config=config, data_dir=os.fspath(data_dir))
    config = instance.builder_config
    tfds_name = f"{instance.name}/{config.name}:{instance.version}" if config else f"{instance.name}:{instance.version}"
    if config and instance.is_prepared() and not overwrite:
        stored = json.loads((instance.data_path / "dataset_info.json").read_text()).get("configDescription", "")
        if stored != (config.description or ""):
            raise ValueError(f"{instance.data_dir} already holds {tfds_name}, prepared from other files:\n{stored}\n"
                             f"now:\n{config.description}\nchoose another name, or overwrite it")
    mode = tfds.download.GenerateMode
    # The download manager still makes its (empty) folders: keep them out of data_dir, which may be a bucket.
    with tempfile.TemporaryDirectory() as downloads:
        instance.download_and_prepare(download_dir=downloads, download_config=tfds.download.DownloadConfig(
            try_download_gcs=False, compute_stats=tfds.download.ComputeStatsMode.SKIP,
            download_mode=mode.REUSE_CACHE_IF_EXISTS if overwrite else mode.REUSE_DATASET_IF_EXISTS))
    return tfds_name


# ---------------------------------------------------------------------------------------------------------------
# seqio tasks over prepared TFDS datasets

def _python(value: Any) -> Any:
    """A feature value from TF as Python: str for strings (UTF-8), int/float/bool, nested lists for tensors."""
    def decode(item: Any) -> Any:
        if isinstance(item, bytes):
            return item.decode("utf-8")
        if isinstance(item, list):
            return [decode(v) for v in item]
        return item

    return decode(np.asarray(value).tolist())


def render_preprocessor(render: Callable[[dict[str, Any]], formats.Example], where: str
                        ) -> Callable[[tf.data.Dataset], tf.data.Dataset]:
    """A seqio preprocessor mapping each example's features (a nested dict) to `inputs`/`targets`/`id` strings.

    A renderer's error names `where` (e.g. the tfds name) and the example's `id` feature.

    `render` is Python, run through `tf.numpy_function`, so the renderers of `formats` stay the one definition of
    the published templates (TF string ops would duplicate them). Entering Python costs some 0.2 ms per call, far
    more than rendering one example (a few microseconds), so examples enter `RENDER_BATCH` at a time (one at a
    time when a feature's shape varies, which `Dataset.batch` cannot stack). Batched, rendering adds about
    0.06 ms per example on one CPU core, against about 0.45 ms for tokenizing it (`SeqioVocabulary` is a
    `numpy_function` too). Both hold the GIL and keep the pipeline in this process (no tf.data service).
    """
    tf = tasks.import_tf()

    def preprocess(ds: tf.data.Dataset) -> tf.data.Dataset:
        spec = ds.element_spec
        stackable = all(leaf.shape.is_fully_defined() for leaf in tf.nest.flatten(spec))

        def render_columns(*columns: np.ndarray) -> tuple[np.ndarray, ...]:
            rendered = []
            for values in zip(*columns):
                features = tf.nest.pack_sequence_as(spec, [_python(v) for v in values])
                try:
                    rendered.append(render(features))
                except Exception as e:
                    shown = features.get("id", features) if isinstance(features, dict) else features
                    raise ValueError(f"{where}: cannot render example {shown!r}: {type(e).__name__}: {e}") from e
            return tuple(np.array([getattr(e, field).encode("utf-8") for e in rendered], dtype=object)
                         for field in RENDERED)

        def render_batch(batch: Any) -> dict[str, tf.Tensor]:
            strings = tf.numpy_function(render_columns, tf.nest.flatten(batch), [tf.string] * len(RENDERED),
                                        stateful=False)
            for string in strings:
                string.set_shape([None])
            return dict(zip(RENDERED, strings))

        batched = ds.batch(RENDER_BATCH if stackable else 1)
        return batched.map(render_batch, num_parallel_calls=tf.data.AUTOTUNE).unbatch()

    return preprocess


def tfds_task(name: str, tfds_name: str, data_dir: PathLike | None,
              render: Callable[[dict[str, Any]], formats.Example], vocabulary: Any,
              splits: Sequence[str] | Mapping[str, str] | None = None, max_length: int = 512,
              overflow: str = "drop") -> seqio.Task:
    """Register (or re-register) a seqio Task reading the prepared TFDS dataset `tfds_name` from `data_dir`.

    `render` maps one example's features (str, int, ... as Python values) to a `formats.Example`; it applies to
    every split (register one task per split for split-dependent rendering, e.g. x-LLaMA's template 0 at test).
    `splits`: the dataset's split names, or `{task split: TFDS split or slice}` such as
    `{"train": "train[:98%]", "validation": "train[98%:]"}`; default all of the dataset's splits. Then it is
    tokenized and fitted to `max_length` as `tasks.add_task` does.
    """
    import seqio  # seqio pulls in TensorFlow (~3 s): only registering a task needs it

    preprocessors = tasks.example_preprocessors(max_length, overflow)
    data_dir = os.fspath(data_dir) if data_dir else None
    # Fails now, naming data_dir, when the dataset is not prepared there; at the first batch, TFDS would instead
    # blame a missing builder config of our (registered) builders.
    tfds.core.read_only_builder.builder_from_files(tfds_name, data_dir=data_dir)
    # read_only: hosts only read. Otherwise seqio calls tfds.load(download=True, try_gcs=True), which first asks
    # the public GCS bucket whether it hosts the dataset: a network call on every host.
    source = seqio.TfdsDataSource(tfds_name=tfds_name, tfds_data_dir=data_dir, splits=splits, read_only=True)
    if name in seqio.TaskRegistry.names():
        seqio.TaskRegistry.remove(name)
    return seqio.TaskRegistry.add(
        name, source=source,
        preprocessors=[render_preprocessor(render, tfds_name), *preprocessors],
        output_features=tasks.output_features(vocabulary))
