"""English<->X parallel phrases from the Unicode CLDR (via `babel`): built-in translation data, no download.

Every CLDR item with a display name in both locales becomes a `Pair`: territory, language, script and currency
names, measurement-unit names, and gregorian calendar names (wide month and day names, wide era names, wide
quarter names). `split_pairs` assigns items to train/validation/test by their key alone, so an item held out for
one target language is held out for every target language.

Pairs from English with babel 2.18 (CLDR 47), measured (a script named like a language, e.g. "Arabic" -> "árabe",
is dropped as a duplicate of the language pair, hence the low es script count):

    target  territory  language  script  currency  unit  calendar  total  train/validation/test (defaults)
    es            294       572      93       282   187        25   1453  1218/83/152
    zh            294       583     190       305   183        25   1580  1319/93/168
    ko            294       582     165       293   184        25   1543  1285/90/168
    it            294       643     129       275   187        25   1553  1294/87/172

Other locales: fr 1626, de 1602, ja 1619, ar 1432, hi 1375, tr 1620, vi 1559, el 1469, th 1583, sw 1192.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import babel
from babel import Locale, UnknownLocaleError
from babel.units import get_unit_name

from pivot_jax.data import formats
from pivot_jax.tokenizer import Tokenizer

ALL_KINDS = ("territory", "language", "script", "currency", "unit", "calendar")
SPLITS = ("train", "validation", "test")
# CLDR day types; babel numbers weekdays from Monday = 0.
_DAY_TYPES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class Pair:
    """One CLDR item named in both languages; `key` (e.g. `territory:DE`, `month:format:wide:1`) is its identity."""

    key: str
    kind: str
    source: str
    target: str


def _locale(identifier: str) -> Locale:
    try:
        return Locale.parse(identifier.replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError) as e:
        raise ValueError(f"unknown locale {identifier!r}: babel has no CLDR data for it") from e


def _unit_names(locale: Locale) -> dict[str, str]:
    names = {}
    for unit in locale.unit_display_names:
        # CLDR's root aliases the long unit names to the short ones and locales omit long names that equal their
        # short ones (most of zh), so the short name is the resolved long name when babel has no long one.
        name = get_unit_name(unit, "long", locale) or get_unit_name(unit, "short", locale)
        # Names made of symbols only ("%", "°") are not phrases to translate.
        if name and any(c.isalpha() for c in name):
            names[unit] = name
    return names


def _calendar_names(locale: Locale) -> dict[str, str]:
    names = {f"month:format:wide:{m}": name for m, name in locale.months["format"]["wide"].items()}
    names.update({f"day:format:wide:{_DAY_TYPES[d]}": name for d, name in locale.days["format"]["wide"].items()})
    names.update({f"era:wide:{e}": name for e, name in locale.eras["wide"].items()})
    names.update({f"quarter:format:wide:{q}": name for q, name in locale.quarters["format"]["wide"].items()})
    return names


# kind -> the babel `Locale` property naming its items by code.
_LOCALE_NAMES = {"territory": "territories", "language": "languages", "script": "scripts", "currency": "currencies"}


def _names(locale: Locale, kind: str) -> dict[str, str]:
    if kind == "calendar":
        return _calendar_names(locale)
    by_code = _unit_names(locale) if kind == "unit" else getattr(locale, _LOCALE_NAMES[kind])
    return {f"{kind}:{code}": name for code, name in by_code.items()}


def _usable(key: str, name: str | None) -> bool:
    return bool(name and name.strip()) and name != key.rsplit(":", 1)[1]


def cldr_pairs(source: str = "en", target: str = "es", kinds: Sequence[str] = ALL_KINDS) -> list[Pair]:
    """Every CLDR item of `kinds` named in both locales, sorted by key, without duplicate (source, target) pairs.

    Items whose name is missing or just the item's code in either locale are skipped; of pairs with the same
    (source, target) text only the one with the smallest key is kept. Raises ValueError for an unknown locale
    or kind.
    """
    src, tgt = _locale(source), _locale(target)
    unknown = [k for k in kinds if k not in ALL_KINDS]
    if unknown:
        raise ValueError(f"unknown CLDR kinds {unknown}; choose from {ALL_KINDS}")
    candidates = []
    for kind in dict.fromkeys(kinds):
        src_names, tgt_names = _names(src, kind), _names(tgt, kind)
        candidates += [Pair(key, kind, name, tgt_names[key]) for key, name in src_names.items()
                       if key in tgt_names and _usable(key, name) and _usable(key, tgt_names[key])]
    pairs, seen = [], set()
    for pair in sorted(candidates, key=lambda p: p.key):
        if (pair.source, pair.target) not in seen:
            seen.add((pair.source, pair.target))
            pairs.append(pair)
    return pairs


def _unit_interval(key: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_pairs(pairs: Iterable[Pair], validation: float = 0.05, test: float = 0.1,
                seed: int = 0) -> dict[str, list[Pair]]:
    """Pairs split into "train", "validation" and "test" (about the given fractions), keeping the input order.

    Where a pair goes depends only on (seed, key), across processes and target languages alike.
    """
    if validation < 0 or test < 0 or validation + test > 1:
        raise ValueError(f"need validation, test >= 0 with validation + test <= 1, got {validation}, {test}")
    splits: dict[str, list[Pair]] = {name: [] for name in SPLITS}
    for pair in pairs:
        u = _unit_interval(pair.key, seed)
        splits["test" if u < test else "validation" if u < test + validation else "train"].append(pair)
    return splits


def cldr_tokenizer(target_langs: Sequence[str], pivot: str = "en", vocab_size: int = 4096,
                   directory: str | os.PathLike | None = None):
    """A byte-level BPE trained on the CLDR training pairs of `target_langs` plus the prompt templates.

    It lets a random model train on the built-in data with no downloaded vocabulary (quickstart, tests).
    Training is deterministic; the result is cached under `directory` (default ~/.cache/pivot_jax/tokenizers).
    """
    langs = sorted(set(target_langs))
    name = f"cldr-{pivot}-{'-'.join(langs)}-{vocab_size}-babel{babel.__version__}"
    directory = Path(directory or Path.home() / ".cache" / "pivot_jax" / "tokenizers") / name
    if (directory / "tokenizer.json").is_file():
        return Tokenizer.from_hf_json(directory)
    texts = []  # the rendered training examples, both directions: prompts get merges as frequent as they are
    for lang in langs:
        for index, pair in enumerate(split_pairs(cldr_pairs(pivot, lang))["train"]):
            for ex in (formats.translation(pair.source, pair.target, pivot, lang, index),
                       formats.translation(pair.target, pair.source, lang, pivot, index)):
                texts.append(ex.inputs + ex.targets)
    return Tokenizer.train_bpe(texts, vocab_size, directory)
