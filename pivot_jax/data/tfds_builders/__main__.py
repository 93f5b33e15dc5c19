"""Prepare local files once as TFDS datasets (`pivot_jax.data.tfds_builders`), into a local or gs:// data_dir:

  python -m pivot_jax.data.tfds_builders parallel --source train.en --target train.es \\
      --test_source eng_Latn.devtest --test_target spa_Latn.devtest --source_lang en --target_lang es \\
      --name en_es --data_dir gs://BUCKET/tfds
  python -m pivot_jax.data.tfds_builders instructions --file alpaca_en.json --name alpaca_en \\
      --data_dir gs://BUCKET/tfds

Each prints the versioned name (`pivot_parallel/en_es:1.0.0`) that `tfds_task` (or `tfds.load`) reads.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

from absl import flags

from pivot_jax.cli import Command, Subcommand
from pivot_jax.data.mixtures import parse_fields
from pivot_jax.data.tfds_builders import (
    InstructionsConfig,
    ParallelConfig,
    PivotInstructions,
    PivotParallel,
    check_name,
    prepare,
)


def _define_flags() -> None:
    flags.DEFINE_string("source", None, "parallel: training source-language file")
    flags.DEFINE_string("target", None, "parallel: training target-language file, line-aligned with --source")
    for split in ("validation", "test"):
        flags.DEFINE_string(f"{split}_source", "", f"parallel: {split} source-language file")
        flags.DEFINE_string(f"{split}_target", "", f"parallel: {split} target-language file")
        flags.register_multi_flags_validator(
            [f"{split}_source", f"{split}_target"], lambda v: all(v.values()) or not any(v.values()),
            f"--{split}_source and --{split}_target go together")
    flags.DEFINE_string("source_lang", "", "parallel: source language code, e.g. en")
    flags.DEFINE_string("target_lang", "", "parallel: target language code, e.g. es")
    flags.DEFINE_string("file", None, "instructions: training records, JSON list or JSON lines")
    flags.DEFINE_string("validation_file", "", "instructions: validation records")
    flags.DEFINE_string("test_file", "", "instructions: test records")
    flags.DEFINE_string("fields", "", 'instructions: renames "canonical:source,...", e.g. "output:response"')
    flags.DEFINE_string("name", None, "config name: lowercase letters, digits, underscores; e.g. en_es")
    flags.DEFINE_string("data_dir", None, "TFDS data_dir (local or gs://)")
    flags.DEFINE_bool("overwrite", False, "replace a dataset prepared from other files")
    flags.mark_flags_as_required(["name", "data_dir"])


def _parallel(f: Any) -> str:
    check_name(f.name, "--name")  # before the configs, which would name it as their own field
    files = {"train": (f.source, f.target)}
    for split in ("validation", "test"):
        if f[f"{split}_source"].value:
            files[split] = (f[f"{split}_source"].value, f[f"{split}_target"].value)
    config = ParallelConfig(name=f.name, files=files, source_lang=f.source_lang, target_lang=f.target_lang)
    return _prepare_and_print(PivotParallel, config, f)


def _instructions(f: Any) -> str:
    files = {split: path for split, path in (("train", f.file), ("validation", f.validation_file),
                                             ("test", f.test_file)) if path}
    check_name(f.name, "--name")
    config = InstructionsConfig(name=f.name, files=files, fields=parse_fields(f.fields))
    return _prepare_and_print(PivotInstructions, config, f)


def _prepare_and_print(builder: type, config: Any, f: Any) -> str:
    with contextlib.redirect_stdout(sys.stderr):  # TFDS reports progress on stdout; it carries only the name
        tfds_name = prepare(builder, config, f.data_dir, overwrite=f.overwrite)
    print(tfds_name)
    return tfds_name


COMMAND = Command("pivot_jax.data.tfds_builders", __doc__, _define_flags, [
    Subcommand("parallel", _parallel, "line-aligned parallel text -> pivot_parallel/NAME",
               required=("source", "target")),
    Subcommand("instructions", _instructions, "Alpaca-style records -> pivot_instructions/NAME",
               required=("file",)),
])
# main(argv): the command line `argv` (without the program name); prints and returns the tfds name.
main = COMMAND.main

if __name__ == "__main__":
    COMMAND.cli()
