"""The three methods' training data as seqio tasks and mixtures, built from a config's `data` section.

- CoIT(X) = pivot-language Alpaca + Alpaca in X + pivot->X translation as instructions (x-LLaMA);
  MuIT = the same over several languages, with a translation amount per language (what scaling-law
  allocations train). Translation pairs come from line-aligned files or, with no files given, from the
  built-in CLDR pairs.
- PLUG(X): pivot Alpaca joined by id with Alpaca in X, answered in the pivot and then in X; its monolingual
  baseline answers in X only.
- X-Instruction(X): English instruction + " Answer in {Language}. ", response in X.

A translation amount N takes the first N pairs of one fixed shuffle, so smaller amounts are subsets of larger
ones. Validation examples are held out by a stable hash of each item's key (or CLDR's own split).
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from typing import Any

from ml_collections import ConfigDict

from pivot_jax.data import cldr, formats, sources
from pivot_jax.data.tasks import add_mixture, add_task, first_n_of_fixed_shuffle, import_tf
from pivot_jax.errors import ConfigError

METHODS = ("coit", "muit", "plug", "plug_monolingual", "xinstruct")
DIRECTIONS = ("pivot-to-target", "both")


def parse_languages(text: str) -> list[str]:
    langs = [part.strip() for part in text.split(",") if part.strip()]
    if not langs:
        raise ValueError("data.langs is empty: name at least one target language (e.g. 'es' or 'es,zh')")
    return langs


def parse_amounts(text: str, langs: Sequence[str]) -> dict[str, int | None]:
    """`""` (all pairs), `"1000"` (every language) or `"es:1000,zh:500"` -> amount per language."""
    text = text.strip()
    if not text:
        return {lang: None for lang in langs}
    if ":" not in text:
        return {lang: int(text) for lang in langs}
    amounts: dict[str, int | None] = {lang: None for lang in langs}
    for part in text.split(","):
        lang, _, value = part.partition(":")
        if lang.strip() not in amounts:
            raise ValueError(f"data.translation_amount names {lang.strip()!r}, which is not in data.langs {langs}")
        amounts[lang.strip()] = int(value)
    return amounts


def parse_fields(text: str) -> dict[str, str] | None:
    """`"instruction:prompt,output:completion"` -> {source field: canonical field} for `read_records`."""
    if not text.strip():
        return None
    mapping = {}
    for part in text.split(","):
        canonical, _, source = part.partition(":")
        mapping[source.strip()] = canonical.strip()
    return mapping


def _language_path(data: ConfigDict, key: str, lang: str) -> str:
    """`data.<key>` with each "{lang}" replaced by `lang`; any other placeholder is a typo, named with the key."""
    template = data[key]
    try:
        fields = [(name, conversion, spec) for _, name, spec, conversion in string.Formatter().parse(template)
                  if name is not None]
    except ValueError as e:  # a brace left open or closed alone
        problem = f"an unmatched brace ({e})"
    else:
        unknown = [name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
                   for name, conversion, spec in fields if (name, conversion, spec) != ("lang", None, "")]
        if not unknown:
            return template.format(lang=lang)
        problem = f"unknown placeholder {unknown[0]!r}"
    raise ConfigError(f"data.{key}={template!r}: {problem}; the only placeholder allowed is {{lang}} (replaced by "
                      "each code of data.langs); write {{ or }} for a brace that is part of the path")


def hold_out(items: Sequence[Any], key: Callable[[Any], str], fraction: float) -> dict[str, list[Any]]:
    """Train / validation by a stable hash of each item's key (same item, same split, every run)."""
    splits: dict[str, list[Any]] = {"train": [], "validation": []}
    for item in items:
        splits["validation" if sources.in_validation_split(key(item), fraction) else "train"].append(item)
    return splits


def _tfds_rows(name: str, data_dir: str) -> list[dict[str, Any]]:
    """The train split of a prepared TFDS dataset (e.g. from `pivot_jax.data.tfds_builders`) as Python rows."""
    import tensorflow_datasets as tfds  # its builders load TensorFlow (~2 s); only data.tfds_dir needs them

    import_tf()
    builder = tfds.core.read_only_builder.builder_from_files(name, data_dir=data_dir)
    decode = lambda v: v.decode("utf-8") if isinstance(v, bytes) else v.item() if hasattr(v, "item") else v  # noqa
    return [{k: decode(v) for k, v in row.items()} for row in tfds.as_numpy(builder.as_dataset(split="train"))]


def _records(path: str, data: ConfigDict, required: Sequence[str]) -> list[dict[str, Any]]:
    """Instruction records from a JSON/JSONL file, or from a TFDS name when `data.tfds_dir` is set."""
    if data.tfds_dir:
        return _tfds_rows(path, data.tfds_dir)
    return sources.read_instruction_records(path, parse_fields(data.alpaca_fields), required)


def translation_pairs(data: ConfigDict, lang: str) -> dict[str, list[tuple[int, str, str]]]:
    """(line index, pivot text, target text) per split, from files, a prepared TFDS dataset, or CLDR."""
    if not data.parallel_source:
        pairs = cldr.cldr_pairs(data.pivot, lang)
        index = {pair.key: i for i, pair in enumerate(pairs)}
        split = cldr.split_pairs(pairs)
        return {name: [(index[p.key], p.source, p.target) for p in split[name]] for name in ("train", "validation")}
    if data.tfds_dir:
        rows = [(r["line_index"], r["source"], r["target"])
                for r in _tfds_rows(_language_path(data, "parallel_source", lang), data.tfds_dir)]
        return hold_out(rows, key=lambda row: f"{row[1]}\t{row[2]}", fraction=data.validation_fraction)
    if not data.parallel_target:
        raise ValueError("data.parallel_source is set but data.parallel_target is empty")
    rows = sources.read_parallel(_language_path(data, "parallel_source", lang),
                                 _language_path(data, "parallel_target", lang))
    return hold_out(rows, key=lambda row: f"{row[1]}\t{row[2]}", fraction=data.validation_fraction)


def _alpaca_records(path: str, data: ConfigDict) -> dict[str, list[dict[str, Any]]]:
    records = _records(path, data, required=("instruction", "output"))
    return hold_out(records, key=lambda r: r.get("group") or f"{r['instruction']}\t{r.get('input', '')}",
                    fraction=data.validation_fraction)


def _alpaca_examples(split_records: dict[str, list[dict[str, Any]]]) -> Callable[[str], list[formats.Example]]:
    return lambda split: [formats.alpaca(r["instruction"], r.get("input") or "", r["output"], str(r.get("id", "")))
                          for r in split_records[split]]


def _translation_examples(pairs: dict[str, list[tuple[int, str, str]]], src: str, tgt: str, amount: int | None,
                          both: bool) -> Callable[[str], list[formats.Example]]:
    def examples(split: str) -> list[formats.Example]:
        rows = pairs[split]
        if split == "train":
            rows = first_n_of_fixed_shuffle(rows, amount)
        index = (lambda i: i) if split == "train" else (lambda i: None)  # evaluation: template 0
        out = [formats.translation(s, t, src, tgt, index(i), id=f"{src}-{tgt}:{i}") for i, s, t in rows]
        if both:
            out += [formats.translation(t, s, tgt, src, index(i), id=f"{tgt}-{src}:{i}") for i, s, t in rows]
        return out

    return examples


def build(data: ConfigDict, vocabulary: Any, max_length: int) -> str:
    """Register the tasks and the mixture that `data` describes; returns the mixture's name."""
    if data.method not in METHODS:
        raise ValueError(f"data.method must be one of {METHODS}, got {data.method!r}")
    if data.translation_directions not in DIRECTIONS:
        raise ValueError(f"data.translation_directions must be one of {DIRECTIONS}, "
                         f"got {data.translation_directions!r}")
    langs = parse_languages(data.langs)
    if data.method == "coit" and len(langs) != 1:
        raise ValueError(f"data.method='coit' trains one language; got data.langs={data.langs!r} (use 'muit')")
    task_names: list[str] = []

    def task(name: str, examples: Callable[[str], list[formats.Example]]) -> None:
        add_task(name, examples, vocabulary, max_length=max_length, overflow=data.overflow)
        task_names.append(name)

    method = data.method
    if method in ("coit", "muit"):
        amounts = parse_amounts(data.translation_amount, langs)
        if data.alpaca_pivot:
            task(f"pivot_{method}_alpaca_{data.pivot}", _alpaca_examples(_alpaca_records(data.alpaca_pivot, data)))
        for lang in langs:
            if data.alpaca_target:
                records = _alpaca_records(_language_path(data, "alpaca_target", lang), data)
                task(f"pivot_{method}_alpaca_{lang}", _alpaca_examples(records))
            pairs = translation_pairs(data, lang)
            task(f"pivot_{method}_translation_{data.pivot}_{lang}",
                 _translation_examples(pairs, data.pivot, lang, amounts[lang],
                                       both=data.translation_directions == "both"))
    elif method in ("plug", "plug_monolingual"):
        if not (data.alpaca_pivot and data.alpaca_target):
            raise ValueError(f"data.method={method!r} needs data.alpaca_pivot and data.alpaca_target (joined by id)")
        # PLUG answers in the pivot first, so its pivot records need their output; the baseline does not.
        pivot = _records(data.alpaca_pivot, data, ("id", "instruction", "output") if method == "plug" else
                         ("id", "instruction"))
        for lang in langs:
            target = _records(_language_path(data, "alpaca_target", lang), data, ("id", "instruction", "output"))
            joined = sources.join_by_id(pivot, target)
            split = hold_out(joined.pairs, key=lambda pair: str(pair[0].get("group") or pair[0]["id"]),
                             fraction=data.validation_fraction)
            if method == "plug":
                render = lambda p, t, lang=lang: formats.plug(  # noqa: E731
                    _with_input(t), p["output"], t["output"], lang, pivot=data.pivot, id=str(p["id"]))
            else:
                render = lambda p, t, lang=lang: formats.plug_monolingual(  # noqa: E731
                    _with_input(t), t["output"], lang, id=str(p["id"]))
            task(f"pivot_{method}_{lang}", lambda s, split=split, render=render: [render(p, t) for p, t in split[s]])
    else:
        for lang in langs:
            records = _records(_language_path(data, "xinstruct_file", lang), data, ("instruction", "output"))
            split = hold_out(records, key=lambda r: r["instruction"], fraction=data.validation_fraction)
            task(f"pivot_xinstruct_{lang}",
                 lambda s, split=split, lang=lang: [formats.xinstruction(r["instruction"], r["output"], lang,
                                                                         id=str(r.get("id", "")))
                                                    for r in split[s]])
    name = f"pivot_mix_{method}_{'_'.join(langs)}"
    add_mixture(name, _rates(task_names, data.mixing))
    return name


def _with_input(record: dict[str, Any]) -> str:
    return formats.user_message(record["instruction"], record.get("input") or "")


def _rates(task_names: list[str], mixing: str) -> list[str | tuple[str, float]]:
    """`examples` (rate by example count) or explicit weights `"translation:2,alpaca:1"` matched by substring."""
    if mixing.strip() in ("", "examples"):
        return list(task_names)
    weights = {}
    for part in mixing.split(","):
        key, _, value = part.partition(":")
        weights[key.strip()] = float(value)
    rated = []
    for name in task_names:
        matches = [w for key, w in weights.items() if key in name]
        if not matches:
            raise ValueError(f"data.mixing {mixing!r} gives no weight for task {name}")
        rated.append((name, matches[0]))
    return rated
