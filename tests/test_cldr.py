import os
import subprocess
import sys
import unicodedata
from collections import Counter

import pytest

from pivot_jax.data.cldr import ALL_KINDS, Pair, cldr_pairs, split_pairs

MUIT_TARGETS = ("es", "zh", "ko", "it")
# (key, English, target) facts checked against babel 2.18's CLDR data.
KNOWN = {
    "es": [("territory:DE", "Germany", "Alemania"), ("language:fr", "French", "francés"),
           ("month:format:wide:1", "January", "enero"), ("day:format:wide:mon", "Monday", "lunes"),
           ("script:Cyrl", "Cyrillic", "cirílico"), ("currency:JPY", "Japanese Yen", "yen japonés"),
           ("unit:length-meter", "meters", "metros"), ("era:wide:0", "Before Christ", "antes de Cristo")],
    "zh": [("territory:DE", "Germany", "德国"), ("language:fr", "French", "法语"),
           ("month:format:wide:1", "January", "一月"), ("currency:EUR", "Euro", "欧元"),
           ("unit:length-meter", "meters", "米")],  # zh has short unit names only: CLDR's long -> short fallback
    "ko": [("territory:DE", "Germany", "독일"), ("language:fr", "French", "프랑스어"),
           ("month:format:wide:1", "January", "1월"), ("day:format:wide:mon", "Monday", "월요일")],
    "it": [("territory:DE", "Germany", "Germania"), ("language:fr", "French", "francese"),
           ("month:format:wide:1", "January", "gennaio"), ("quarter:format:wide:1", "1st quarter", "1º trimestre")],
}
# Unicode character-name prefix of each non-Latin target's script.
SCRIPT_NAMES = {"zh": "CJK UNIFIED IDEOGRAPH", "ko": "HANGUL SYLLABLE"}


@pytest.fixture(scope="module")
def pairs() -> dict[str, list[Pair]]:
    return {target: cldr_pairs("en", target) for target in MUIT_TARGETS}


@pytest.mark.parametrize("target", MUIT_TARGETS)
def test_known_cldr_facts(pairs, target):
    by_key = {p.key: p for p in pairs[target]}
    for key, english, translated in KNOWN[target]:
        assert (by_key[key].source, by_key[key].target) == (english, translated)


@pytest.mark.parametrize("target", MUIT_TARGETS)
def test_every_kind_yields_clean_sorted_unique_pairs(pairs, target):
    ps = pairs[target]
    counts = Counter(p.kind for p in ps)
    assert all(counts[kind] > 20 for kind in ALL_KINDS), counts
    assert len(ps) > 1000
    assert all(p.source.strip() and p.target.strip() for p in ps)
    keys = [p.key for p in ps]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert len({(p.source, p.target) for p in ps}) == len(ps)
    assert all(p.key.startswith(f"{p.kind}:") for p in ps if p.kind != "calendar")
    assert ps == cldr_pairs("en", target)


@pytest.mark.parametrize("target", SCRIPT_NAMES)
def test_non_latin_targets_are_in_their_script(pairs, target):
    in_script = [p for p in pairs[target]
                 if any(unicodedata.name(c, "").startswith(SCRIPT_NAMES[target]) for c in p.target)]
    assert len(in_script) > 0.9 * len(pairs[target])


def test_kinds_filter_and_unknown_kind():
    assert {p.kind for p in cldr_pairs("en", "it", kinds=["unit", "calendar"])} == {"unit", "calendar"}
    with pytest.raises(ValueError, match="planet"):
        cldr_pairs("en", "it", kinds=["planet"])


def test_reverse_direction_swaps_roles(pairs):
    forward = pairs["es"]
    assert cldr_pairs("es", "en") == [Pair(p.key, p.kind, p.target, p.source) for p in forward]


@pytest.mark.parametrize("target", ["ar", "el", "hi", "tr", "vi", "sw", "th", "fr", "de", "ja", "zh_Hant", "pt-BR"])
def test_other_locales_work(target):
    ps = cldr_pairs("en", target)
    assert len(ps) > 1000 and {p.kind for p in ps} == set(ALL_KINDS)


@pytest.mark.parametrize("bad", ["xx", "klingon", "es_XX", ""])
def test_unknown_locale_is_a_value_error_naming_it(bad):
    with pytest.raises(ValueError, match=f"unknown locale '{bad}'"):
        cldr_pairs("en", bad)
    with pytest.raises(ValueError, match=f"unknown locale '{bad}'"):
        cldr_pairs(bad, "en")


def test_split_is_disjoint_complete_and_about_the_asked_sizes(pairs):
    ps = pairs["es"]
    splits = split_pairs(ps, validation=0.05, test=0.1)
    assert set(splits) == {"train", "validation", "test"}
    assert Counter(p for split in splits.values() for p in split) == Counter(ps)
    assert 0.03 * len(ps) < len(splits["validation"]) < 0.07 * len(ps)
    assert 0.07 * len(ps) < len(splits["test"]) < 0.13 * len(ps)
    assert splits == split_pairs(ps, validation=0.05, test=0.1)
    assert split_pairs(ps, seed=1)["test"] != splits["test"]
    assert split_pairs(ps, validation=0.0, test=0.0)["train"] == ps


def test_the_same_items_are_held_out_for_every_target(pairs):
    split_of = {}
    for target in MUIT_TARGETS:
        for name, split in split_pairs(pairs[target]).items():
            for p in split:
                assert split_of.setdefault(p.key, name) == name, (target, p.key)


def test_split_is_stable_across_processes(pairs):
    code = ("from pivot_jax.data.cldr import cldr_pairs, split_pairs;"
            "print([p.key for p in split_pairs(cldr_pairs('en', 'ko'))['test']])")
    for hash_seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": hash_seed})
        assert out.stdout.strip() == str([p.key for p in split_pairs(pairs["ko"])["test"]])


def test_split_rejects_impossible_fractions():
    with pytest.raises(ValueError):
        split_pairs([], validation=0.6, test=0.5)


def test_cldr_tokenizer_is_deterministic_and_cached(tmp_path):
    from pivot_jax.data import formats
    from pivot_jax.data.cldr import cldr_tokenizer

    first = cldr_tokenizer(["es", "ko"], vocab_size=1024, directory=tmp_path / "a")
    second = cldr_tokenizer(["ko", "es"], vocab_size=1024, directory=tmp_path / "b")
    assert (first.vocab_size, first.pad_id, first.bos_id, first.eos_id, first.add_bos_token) == (1024, 0, 1, 2, True)
    prompt = formats.translation("Germany", "Alemania", "en", "es", 3).inputs
    assert first.encode(prompt) == second.encode(prompt)
    assert len(first.encode(prompt)) < len(prompt.split()) * 2  # the templates are learned, not spelled out
    for text in ("Alemania", "독일", "德国 ¿qué?"):  # byte-level: anything round-trips
        assert first.decode(first.encode(text)) == text
    cached = cldr_tokenizer(["es", "ko"], vocab_size=1024, directory=tmp_path / "a")
    assert cached.encode(prompt) == first.encode(prompt)
