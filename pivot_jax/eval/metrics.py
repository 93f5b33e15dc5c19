"""Metrics of the x-LLaMA, PLUG and X-Instruction evaluations, as plain functions over lists of strings.

Scores are percentages (0-100), as the papers report them, except `fidelity` and `*_share` (fractions in [0, 1])
and COMET (the checkpoint's own scale). Nothing is downloaded: the metrics that need a model file (spBLEU, COMET)
take a local path and raise `MissingResourceError` without one.
"""

from __future__ import annotations

import collections
import math
import os
import re
import string
import tempfile
import threading
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import py3langid
import sacrebleu
from py3langid.langid import RAW_FLOOR
from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.tokenizers import tokenizer_spm

from pivot_jax.data.formats import FLORES_CODES, extract_plug_answer


class MissingResourceError(RuntimeError):
    """A metric needs a local model file or package that is not there (nothing is downloaded at run time)."""


def _check_parallel(**columns: Sequence[Any]) -> int:
    lengths = {name: len(column) for name, column in columns.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"parallel inputs differ in length: {lengths}")
    n = next(iter(lengths.values()))
    if n == 0:
        raise ValueError(f"nothing to score: {', '.join(lengths)} are empty")
    return n


def _check_strings(**columns: Sequence[Any]) -> None:
    for name, column in columns.items():
        for i, value in enumerate(column):
            if not isinstance(value, str):
                raise TypeError(f"{name}[{i}] should be a str, got {type(value).__name__}")


# ---------------------------------------------------------------------------------------------------------------
# Translation: BLEU, chrF++, spBLEU (sacrebleu), COMET (unbabel-comet)

# "spm" is sacrebleu's deprecated alias of "flores101".
SPM_TOKENIZERS: tuple[str, ...] = tuple(key for key in tokenizer_spm.SPM_MODELS if key != "spm")
_SPM_LOCK = threading.Lock()


def _check_spm_tokenize(tokenize: str) -> None:
    if tokenize not in SPM_TOKENIZERS:
        raise ValueError(f"spBLEU tokenize must be one of {', '.join(SPM_TOKENIZERS)}, got {tokenize!r}")


def spm_model_filename(tokenize: str = "flores200") -> str:
    """The file name sacrebleu gives the SentencePiece model of an spBLEU tokenizer ("flores200sacrebleuspm")."""
    _check_spm_tokenize(tokenize)
    return os.path.basename(tokenizer_spm.SPM_MODELS[tokenize]["url"])


def _missing_spm_model(tokenize: str, reason: str) -> MissingResourceError:
    name = spm_model_filename(tokenize)
    url = tokenizer_spm.SPM_MODELS[tokenize]["url"]
    cached = os.path.join(tokenizer_spm.SACREBLEU_DIR, "models", name)
    return MissingResourceError(
        f"spBLEU (tokenize={tokenize!r}) needs sacrebleu's SentencePiece model {name!r}, and nothing is downloaded "
        f"at run time: {reason}. Get the file once where there is internet access (sacrebleu downloads it from "
        f"{url} to {cached}), copy it to this machine and pass its path: spm_model='/path/to/{name}'.")


def spbleu_metric(spm_model: str | os.PathLike[str] | None, tokenize: str = "flores200") -> BLEU:
    """sacrebleu's `BLEU(tokenize=tokenize)` (spBLEU) whose SentencePiece model is the local file `spm_model`.

    sacrebleu 2.x loads the model from `<SACREBLEU_DIR>/models/<spm_model_filename(tokenize)>` when its tokenizer is
    built and downloads it there if absent; `SACREBLEU_DIR` is read once from `$SACREBLEU` (default `~/.sacrebleu`)
    when sacrebleu is imported. While the metric is built, that directory is pointed at a temporary one holding a
    link to `spm_model` under the expected name, and sacrebleu's downloader raises instead of downloading.
    Use `.corpus_score(hypotheses, [references])` and `.get_signature()` on the result.
    """
    _check_spm_tokenize(tokenize)
    if spm_model is None:
        raise _missing_spm_model(tokenize, "no spm_model path was given")
    path = Path(spm_model)
    if not path.is_file():
        raise _missing_spm_model(tokenize, f"{path} does not exist")

    def refuse_download(url: str, *args: Any, **kwargs: Any) -> None:
        raise _missing_spm_model(tokenize, f"sacrebleu {sacrebleu.__version__} did not find the linked {path} where "
                                           f"this module put it and tried to download {url}")

    with _SPM_LOCK, tempfile.TemporaryDirectory() as directory:
        models = Path(directory, "models")
        models.mkdir()
        (models / spm_model_filename(tokenize)).symlink_to(path.resolve())
        saved = tokenizer_spm.SACREBLEU_DIR, tokenizer_spm.download_file
        tokenizer_spm.SACREBLEU_DIR, tokenizer_spm.download_file = directory, refuse_download
        try:
            return BLEU(tokenize=tokenize)  # the SentencePiece model is loaded here, so the link may go afterwards
        finally:
            tokenizer_spm.SACREBLEU_DIR, tokenizer_spm.download_file = saved


def translation_metrics(hypotheses: Sequence[str], references: Sequence[str],
                        spm_model: str | os.PathLike[str] | None = None,
                        tokenize: str = "flores200") -> dict[str, float | int]:
    """Corpus BLEU (sacrebleu default, 13a), chrF++ and, given a local SentencePiece model, spBLEU.

    Returns `bleu`, `chrf++`, `n` and, only when `spm_model` is given, `spbleu` (BLEU with the `tokenize`
    SentencePiece tokenizer, `flores101` in x-LLaMA's evaluation; see `spbleu_metric`).
    """
    _check_spm_tokenize(tokenize)
    n = _check_parallel(hypotheses=hypotheses, references=references)
    _check_strings(hypotheses=hypotheses, references=references)
    hypotheses, streams = list(hypotheses), [list(references)]
    scores: dict[str, float | int] = {
        "bleu": BLEU().corpus_score(hypotheses, streams).score,
        "chrf++": CHRF(word_order=2).corpus_score(hypotheses, streams).score,
        "n": n,
    }
    if spm_model is not None:
        scores["spbleu"] = spbleu_metric(spm_model, tokenize).corpus_score(hypotheses, streams).score
    return scores


def comet_score(sources: Sequence[str], hypotheses: Sequence[str], references: Sequence[str],
                checkpoint_path: str | os.PathLike[str], batch_size: int = 16, gpus: int = 0) -> dict[str, float | int]:
    """System-level COMET (x-LLaMA: wmt22-comet-da) from a local checkpoint, with the `unbabel-comet` package.

    The checkpoint's encoder files (e.g. xlm-roberta-large) must already be in the local Hugging Face cache; set
    `HF_HUB_OFFLINE=1` so that nothing is fetched.
    """
    n = _check_parallel(sources=sources, hypotheses=hypotheses, references=references)
    path = Path(checkpoint_path)
    if not path.is_file():
        raise MissingResourceError(
            f"COMET checkpoint {path} does not exist; nothing is downloaded at run time: copy a checkpoint file (for "
            f"wmt22-comet-da, checkpoints/model.ckpt of the Unbabel/wmt22-comet-da model) to this machine and pass "
            f"its path")
    try:
        import comet  # optional (unbabel-comet, with PyTorch): only COMET scoring needs it
    except ImportError:
        raise MissingResourceError("comet_score needs the unbabel-comet package, which is not installed: "
                                   "pip install unbabel-comet") from None
    model = comet.load_from_checkpoint(str(path))
    data = [{"src": s, "mt": h, "ref": r} for s, h, r in zip(sources, hypotheses, references)]
    output = model.predict(data, batch_size=batch_size, gpus=gpus, progress_bar=False)
    return {"comet": float(output.system_score), "n": n}


# ---------------------------------------------------------------------------------------------------------------
# QA (XQuAD, MLQA): x-LLaMA substring accuracy, SQuAD v1.1 EM/F1, MLQA-style character F1

_ASCII_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")

# Scripts written without spaces between words -> character ranges whose every character is a token. zh is the
# range of MLQA's official evaluation; the others extend its rule to further unspaced scripts.
UNSPACED_SCRIPTS: dict[str, str] = {
    "zh": "\u4e00-\u9fa5",
    "ja": "\u3040-\u30ff\u4e00-\u9fff",
    "th": "\u0e00-\u0e7f",
    "lo": "\u0e80-\u0eff",
    "km": "\u1780-\u17ff",
    "my": "\u1000-\u109f",
}


def normalize_answer(text: str) -> str:
    """SQuAD v1.1 normalisation: lower-case, drop ASCII punctuation, drop the articles a/an/the, collapse spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _ASCII_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _token_f1(prediction_tokens: Sequence[str], gold_tokens: Sequence[str]) -> float:
    common = collections.Counter(prediction_tokens) & collections.Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(prediction_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def substring_match(prediction: str, gold: str) -> bool:
    """x-LLaMA's QA score: the lower-cased gold answer occurs in the lower-cased prediction."""
    return gold.lower() in prediction.lower()


def squad_exact_match(prediction: str, gold: str) -> bool:
    """SQuAD v1.1 exact match: equal after `normalize_answer`."""
    return normalize_answer(prediction) == normalize_answer(gold)


def squad_f1(prediction: str, gold: str) -> float:
    """SQuAD v1.1 token F1 in [0, 1] over whitespace tokens of the normalised strings.

    In Chinese, Thai or Japanese a whole phrase is one whitespace token, so this F1 cannot credit a partial
    overlap there; use `char_f1` for those languages.
    """
    return _token_f1(normalize_answer(prediction).split(), normalize_answer(gold).split())


def _is_punctuation(ch: str) -> bool:
    return ch in _ASCII_PUNCTUATION or unicodedata.category(ch).startswith("P")


def mixed_segmentation(text: str, language: str = "zh") -> list[str]:
    """MLQA's mixed segmentation: every character of the language's unspaced script (`UNSPACED_SCRIPTS`) and every
    punctuation mark is a token; the text between them is split on whitespace."""
    code = normalize_language_code(language)
    if code not in UNSPACED_SCRIPTS:
        raise ValueError(f"no unspaced script for language {language!r}; known: {', '.join(UNSPACED_SCRIPTS)}")
    single = re.compile(f"[{UNSPACED_SCRIPTS[code]}]")
    tokens: list[str] = []
    run_start = 0
    for i, ch in enumerate(text):
        if single.match(ch) or _is_punctuation(ch):
            tokens.extend(text[run_start:i].split())
            tokens.append(ch)
            run_start = i + 1
    tokens.extend(text[run_start:].split())
    return tokens


def _char_tokens(text: str, language: str) -> list[str]:
    # MLQA's normalisation for zh: lower-case, drop all Unicode punctuation, segment (zh has no articles).
    return mixed_segmentation("".join(ch for ch in text.lower() if not _is_punctuation(ch)), language)


def char_exact_match(prediction: str, gold: str, language: str) -> bool:
    """MLQA-style exact match: equal token sequences after punctuation removal and `mixed_segmentation`."""
    return _char_tokens(prediction, language) == _char_tokens(gold, language)


def char_f1(prediction: str, gold: str, language: str) -> float:
    """MLQA-style F1 in [0, 1] over `mixed_segmentation` tokens (characters of unspaced scripts)."""
    return _token_f1(_char_tokens(prediction, language), _char_tokens(gold, language))


def qa_metrics(predictions: Sequence[str], gold_answers: Sequence[Sequence[str]],
               language: str) -> dict[str, float | int]:
    """XQuAD/MLQA scores of generated answers, each the best over an example's gold answers, in percent.

    `substring_accuracy` (x-LLaMA), `exact_match` and `f1` (SQuAD v1.1, XQuAD's official evaluation: its
    normalisation drops the English articles whatever the language), `n`; for languages in `UNSPACED_SCRIPTS` also
    `exact_match_char` and `f1_char` (mixed segmentation; for zh exactly MLQA's official evaluation).
    """
    n = _check_parallel(predictions=predictions, gold_answers=gold_answers)
    for i, golds in enumerate(gold_answers):
        if isinstance(golds, str) or not golds or not all(isinstance(g, str) and g.strip() for g in golds):
            raise ValueError(f"gold_answers[{i}] should be a non-empty list of non-empty strings, got {golds!r}")
    code = normalize_language_code(language)
    scorers: dict[str, Callable[[str, str], float]] = {
        "substring_accuracy": substring_match, "exact_match": squad_exact_match, "f1": squad_f1}
    if code in UNSPACED_SCRIPTS:
        scorers["exact_match_char"] = lambda p, g: char_exact_match(p, g, code)
        scorers["f1_char"] = lambda p, g: char_f1(p, g, code)
    scores: dict[str, float | int] = {"n": n}
    for name, scorer in scorers.items():
        total = sum(max(float(scorer(p, g)) for g in golds) for p, golds in zip(predictions, gold_answers))
        scores[name] = 100.0 * total / n
    return scores


# ---------------------------------------------------------------------------------------------------------------
# Response language: py3langid (its model ships inside the package)

_FLORES_TO_ISO = {flores: iso for iso, flores in FLORES_CODES.items()}
_ALIASES = {
    **{flores.split("_")[0]: iso for iso, flores in FLORES_CODES.items()},  # ISO 639-3 of FLORES: zho, spa, ...
    "iw": "he", "in": "id", "ji": "yi", "jw": "jv", "mo": "ro",  # withdrawn ISO 639-1 codes
    # Individual languages of a macrolanguage that py3langid or users name; folded so that e.g. a Mandarin
    # sentence that py3langid labels Wu, or Egyptian Arabic, counts as zh / ar.
    "cmn": "zh", "wuu": "zh", "yue": "zh", "ara": "ar", "arz": "ar", "ary": "ar", "nb": "no", "nn": "no",
    "zsm": "ms", "uzs": "uz", "pes": "fa", "swa": "sw",
}


def normalize_language_code(code: str) -> str:
    """ISO 639-1 code of a language tag: "zh-Hans", "zh_TW", "zho_Hans", "cmn" -> "zh"; unknown codes lower-cased."""
    code = code.strip()
    if code in _FLORES_TO_ISO:
        return _FLORES_TO_ISO[code]
    primary = re.split(r"[-_]", code.lower(), maxsplit=1)[0]
    return _ALIASES.get(primary, primary)


def detect_language(text: str) -> str:
    """ISO 639-1 code of the language of `text` (py3langid); "und" for text without letters or known features."""
    if not any(ch.isalpha() for ch in text):
        return "und"
    code, score = py3langid.classify(text)
    if score == RAW_FLOOR:  # py3langid's score when no feature of its model occurs in the text
        return "und"
    return normalize_language_code(code)


def language_fidelity(texts: Sequence[str], expected_language: str) -> dict[str, Any]:
    """Share of `texts` detected as `expected_language` (`fidelity`), `n`, and `counts` per detected language."""
    n = _check_parallel(texts=texts)
    expected = normalize_language_code(expected_language)
    counts = collections.Counter(detect_language(text) for text in texts)
    return {"fidelity": counts[expected] / n, "n": n, "counts": dict(counts.most_common())}


def mi_eval_gate(answer_a: str, answer_b: str, expected_language: str) -> Literal["A", "B"] | None:
    """x-LLaMA MI-Eval language gate: the answer alone in `expected_language` wins; otherwise None (ask the judge).

    x-LLaMA used fastText language ID; this uses py3langid.
    """
    expected = normalize_language_code(expected_language)
    a_ok, b_ok = detect_language(answer_a) == expected, detect_language(answer_b) == expected
    if a_ok == b_ok:
        return None
    return "A" if a_ok else "B"


# ---------------------------------------------------------------------------------------------------------------
# PLUG answer extraction

def plug_metrics(outputs: Sequence[str], language: str) -> dict[str, Any]:
    """PLUG final answers (`answers`: after the first `language` marker; "" when it is missing), `n`, `not_found`
    and `not_found_share`."""
    n = _check_parallel(outputs=outputs)
    extracted = [extract_plug_answer(output, language) for output in outputs]
    not_found = sum(answer is None for answer in extracted)
    return {"answers": ["" if answer is None else answer for answer in extracted], "n": n, "not_found": not_found,
            "not_found_share": not_found / n}


# ---------------------------------------------------------------------------------------------------------------
# MGSM-style math

# A minus sign only when not glued to a preceding word or number ("5-3" and "COVID-19" hold hyphens); commas only
# as thousands separators in groups of three; the point is the decimal mark, as in MGSM's answers.
_NUMBER = re.compile(r"(?:(?<![\w.,\-])[-\u2212])?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?")


def extract_number(text: str) -> float | None:
    """The last number in `text` ("1,234.5" -> 1234.5, "-4" -> -4.0), or None when there is none."""
    numbers = _NUMBER.findall(text)
    if not numbers:
        return None
    return float(numbers[-1].replace(",", "").replace("\u2212", "-"))


def math_accuracy(predictions: Sequence[str], answers: Sequence[str | float]) -> dict[str, float | int]:
    """Share of predictions whose last number equals the answer (`accuracy`, percent), `correct`, `n` and
    `no_number` (predictions without any number)."""
    n = _check_parallel(predictions=predictions, answers=answers)
    golds = []
    for i, answer in enumerate(answers):
        gold = extract_number(answer) if isinstance(answer, str) else float(answer)
        if gold is None:
            raise ValueError(f"answers[{i}] = {answer!r} holds no number")
        golds.append(gold)
    predicted = [extract_number(prediction) for prediction in predictions]
    correct = sum(value is not None and math.isclose(value, gold, rel_tol=1e-9, abs_tol=1e-9)
                  for value, gold in zip(predicted, golds))
    return {"accuracy": 100.0 * correct / n, "correct": correct, "n": n,
            "no_number": sum(value is None for value in predicted)}
