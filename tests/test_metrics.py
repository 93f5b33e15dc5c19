"""Evaluation metrics: hand-worked cases on invented sentences; sacrebleu and py3langid on the real shared data."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import sacrebleu
import sentencepiece as spm
from sacrebleu.tokenizers import tokenizer_spm

from pivot_jax.data import sources as S
from pivot_jax.eval import metrics as M

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def data_path(*parts: str) -> Path:
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data {path} is absent (shared/data is not checked out next to the repository)")
    return path


def flores(code: str, n: int | None = 50) -> list[str]:
    return S.flores_path(data_path("flores200_devtest"), code).read_text(encoding="utf-8").splitlines()[:n]


def perturb(sentences: list[str]) -> list[str]:
    """Deterministic damage: every third sentence kept, one loses its last word, one has its first two swapped."""
    out = []
    for i, sentence in enumerate(sentences):
        words = sentence.split()
        if i % 3 == 1:
            words = words[:-1]
        elif i % 3 == 2:
            words[:2] = words[1::-1]
        out.append(" ".join(words))
    return out


def xquad_golds(lang: str) -> list[list[str]]:
    return [example["answers"] for example in S.read_squad(data_path("xquad", f"xquad.{lang}.json"))]


# ---------------------------------------------------------------------------------------------------------------
# Translation

@pytest.mark.parametrize("code", ["es", "en"])
def test_bleu_and_chrf_equal_sacrebleu_on_flores(code):
    references = flores(code)
    hypotheses = perturb(references)
    scores = M.translation_metrics(hypotheses, references)
    assert scores["bleu"] == sacrebleu.corpus_bleu(hypotheses, [references]).score
    assert scores["chrf++"] == sacrebleu.corpus_chrf(hypotheses, [references], word_order=2).score
    assert scores["n"] == 50 and "spbleu" not in scores
    assert 20 < scores["bleu"] < 100 and 50 < scores["chrf++"] < 100
    assert M.translation_metrics(references, references)["bleu"] == pytest.approx(100.0)


@pytest.fixture(scope="module")
def tiny_spm(tmp_path_factory) -> Path:
    """A small SentencePiece model trained on the Flores spa + eng devtest text, in a temporary directory."""
    directory = tmp_path_factory.mktemp("spm")
    corpus = directory / "corpus.txt"
    corpus.write_text("\n".join(flores("es", None) + flores("en", None)) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(directory / "tiny"), vocab_size=600,
                                   character_coverage=1.0, minloglevel=2)
    return directory / "tiny.model"


@pytest.mark.parametrize("tokenize", ["flores200", "flores101"])
def test_spbleu_with_a_local_model_equals_bleu_on_text_pretokenized_with_it(tiny_spm, tokenize):
    references = flores("es")
    hypotheses = perturb(references)
    saved = tokenizer_spm.SACREBLEU_DIR, tokenizer_spm.download_file

    scores = M.translation_metrics(hypotheses, references, spm_model=str(tiny_spm), tokenize=tokenize)

    processor = spm.SentencePieceProcessor(model_file=str(tiny_spm))

    def pieces(texts: list[str]) -> list[str]:
        return [" ".join(processor.encode(text, out_type=str)) for text in texts]

    expected = sacrebleu.corpus_bleu(pieces(hypotheses), [pieces(references)], tokenize="none").score
    assert scores["spbleu"] == expected
    assert scores["spbleu"] != scores["bleu"]
    metric = M.spbleu_metric(tiny_spm, tokenize)
    assert metric.corpus_score(hypotheses, [references]).score == expected
    assert f"tok:{tokenize}" in metric.get_signature().format()
    assert (tokenizer_spm.SACREBLEU_DIR, tokenizer_spm.download_file) == saved  # sacrebleu's globals restored


def test_spbleu_without_the_model_file_names_it_and_says_how_to_provide_it(tmp_path):
    absent = tmp_path / "flores200sacrebleuspm"
    with pytest.raises(M.MissingResourceError) as error:
        M.translation_metrics(["Hola."], ["Hola."], spm_model=absent)
    message = str(error.value)
    assert "'flores200sacrebleuspm'" in message and f"{absent} does not exist" in message
    assert "spm_model='/path/to/flores200sacrebleuspm'" in message and "nothing is downloaded" in message
    with pytest.raises(M.MissingResourceError, match="no spm_model path was given"):
        M.spbleu_metric(None)
    with pytest.raises(M.MissingResourceError, match="'sacrebleu_tokenizer_spm.model'"):
        M.spbleu_metric(absent, "flores101")
    with pytest.raises(ValueError, match="flores101, flores200"):
        M.translation_metrics(["Hola."], ["Hola."], tokenize="13a")
    assert M.spm_model_filename() == "flores200sacrebleuspm"


def test_sacrebleu_never_downloads_when_it_misses_the_linked_model(tiny_spm, monkeypatch):
    monkeypatch.setattr(M, "spm_model_filename", lambda tokenize="flores200": "not-the-name-sacrebleu-expects")
    with pytest.raises(M.MissingResourceError, match="tried to download https://tinyurl.com/flores200sacrebleuspm"):
        M.spbleu_metric(tiny_spm)


def test_translation_inputs_are_checked():
    with pytest.raises(ValueError, match="differ in length"):
        M.translation_metrics(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="nothing to score"):
        M.translation_metrics([], [])
    with pytest.raises(TypeError, match=r"hypotheses\[1\] should be a str"):
        M.translation_metrics(["a", None], ["a", "b"])


def test_comet_needs_a_local_checkpoint_and_the_package(tmp_path):
    with pytest.raises(M.MissingResourceError, match="COMET checkpoint .* does not exist"):
        M.comet_score(["Hola."], ["Hello."], ["Hello."], tmp_path / "model.ckpt")
    try:
        import comet  # noqa: F401
    except ImportError:
        checkpoint = tmp_path / "model.ckpt"
        checkpoint.write_bytes(b"")
        with pytest.raises(M.MissingResourceError, match="pip install unbabel-comet"):
            M.comet_score(["Hola."], ["Hello."], ["Hello."], checkpoint)
    else:
        pytest.skip("unbabel-comet is installed; its missing-package error cannot be checked")


# ---------------------------------------------------------------------------------------------------------------
# QA

def test_squad_normalisation_exact_match_and_f1_hand_worked():
    assert M.normalize_answer("The  Quick, brown fox!") == "quick brown fox"
    assert M.normalize_answer("An apple-pie") == "applepie"  # ASCII punctuation is deleted, not spaced
    assert M.squad_exact_match("an Apple.", "apple")
    assert not M.squad_exact_match("apples", "apple")
    # pred [cat, sat, on, mat], gold [cat, on, mat]: P = 3/4, R = 1, F1 = 6/7
    assert M.squad_f1("the cat sat on a mat", "cat on the mat") == pytest.approx(6 / 7)
    assert M.squad_f1("dog", "cat") == 0.0
    assert M.substring_match("I think it is the Blue Whale.", "blue whale")
    assert not M.substring_match("a blue whale", "whales")


def test_qa_metrics_hand_worked_english():
    predictions = ["I think it is the Blue Whale.", "Paris", "forty two"]
    golds = [["blue whale"], ["London", "paris"], ["42"]]
    scores = M.qa_metrics(predictions, golds, "en")
    # substring 1, 1, 0; EM 0, 1, 0; F1: [i think it is blue whale] vs [blue whale] = 2*(2/6)/(2/6+1) = 0.5, 1, 0
    assert scores == pytest.approx({"n": 3, "substring_accuracy": 200 / 3, "exact_match": 100 / 3, "f1": 50.0})


def test_mixed_segmentation_and_character_f1_hand_worked():
    assert M.mixed_segmentation("我爱Python 3和猫，好!") == ["我", "爱", "Python", "3", "和", "猫", "，", "好", "!"]
    assert M.mixed_segmentation("ราคา 20 บาท", "th") == ["ร", "า", "ค", "า", "20", "บ", "า", "ท"]
    with pytest.raises(ValueError, match="no unspaced script"):
        M.mixed_segmentation("hello", "en")
    # [我 喜 欢 猫] vs [喜 欢 狗]: P = 2/4, R = 2/3, F1 = 4/7; as whitespace tokens the phrases share nothing
    assert M.char_f1("我喜欢猫", "喜欢狗", "zh") == pytest.approx(4 / 7)
    assert M.squad_f1("我喜欢猫", "喜欢狗") == 0.0
    assert M.char_exact_match("北京 大学。", "北京大学", "zh") and not M.squad_exact_match("北京 大学。", "北京大学")
    scores = M.qa_metrics(["我喜欢猫", "北京 大学。"], [["喜欢狗"], ["北京大学"]], "zh-Hans")
    assert scores == pytest.approx({"n": 2, "substring_accuracy": 0.0, "exact_match": 0.0, "f1": 0.0,
                                    "exact_match_char": 50.0, "f1_char": 100 * (4 / 7 + 1) / 2})


def test_qa_metrics_on_xquad_spanish_answers():
    golds = xquad_golds("es")
    first = [answers[0] for answers in golds]
    assert M.qa_metrics(first, golds, "es") == {"n": 1190, "substring_accuracy": 100.0, "exact_match": 100.0,
                                                "f1": 100.0}
    shouted = M.qa_metrics([answer.upper() for answer in first], golds, "es")
    assert shouted["substring_accuracy"] == 100.0 and shouted["exact_match"] == 100.0
    # "creo que" adds two tokens to the g gold tokens: P = g/(g+2), R = 1, so F1 = g/(g+1); EM is never met.
    hedged = M.qa_metrics([f"Creo que {answer}" for answer in first], golds, "es")
    lengths = [len(M.normalize_answer(answer).split()) for answer in first]
    assert hedged["substring_accuracy"] == 100.0 and hedged["exact_match"] == 0.0
    assert hedged["f1"] == pytest.approx(100 * sum(g / (g + 1) for g in lengths) / len(lengths))
    assert "f1_char" not in hedged


def test_qa_metrics_on_xquad_chinese_answers_with_spaces_between_characters():
    golds = xquad_golds("zh")
    spaced = [re.sub("([\u4e00-\u9fa5])", r"\1 ", answers[0]) for answers in golds]
    scores = M.qa_metrics(spaced, golds, "zh")
    assert scores["exact_match_char"] == 100.0 and scores["f1_char"] == 100.0
    # whitespace tokens see a different answer whenever the gold has two or more Chinese characters
    assert scores["exact_match"] < 20 and scores["f1"] < 20 and scores["substring_accuracy"] < 20
    assert M.qa_metrics([answers[0] for answers in golds], golds, "zho_Hans")["f1_char"] == 100.0


def test_qa_inputs_are_checked():
    with pytest.raises(ValueError, match=r"gold_answers\[0\] should be a non-empty list"):
        M.qa_metrics(["x"], [[]], "en")
    with pytest.raises(ValueError, match=r"gold_answers\[0\] should be a non-empty list"):
        M.qa_metrics(["x"], ["x"], "en")
    with pytest.raises(ValueError, match="differ in length"):
        M.qa_metrics(["x", "y"], [["x"]], "en")


# ---------------------------------------------------------------------------------------------------------------
# Response language

def test_language_codes_compare_across_spellings():
    for code in ["zh", "zh-Hans", "zh_TW", "zho_Hans", "zho_Hant", "cmn", "ZH-hant", "wuu"]:
        assert M.normalize_language_code(code) == "zh"
    assert [M.normalize_language_code(c) for c in ["EN", "arb_Arab", "arz", "pt-BR", "iw", "spa"]] == [
        "en", "ar", "ar", "pt", "he", "es"]


def test_detect_language_hand_worked():
    assert M.detect_language("The weather is lovely today, so we are walking to the park after lunch.") == "en"
    assert M.detect_language("我们明天早上一起去图书馆看书，然后在附近的小饭馆吃午饭。") == "zh"
    assert M.detect_language("") == "und"
    assert M.detect_language("12345 !!!") == "und"


@pytest.mark.parametrize("code", ["en", "es", "zh", "ko", "it", "ar"])
def test_language_fidelity_on_flores(code):
    sentences = flores(code, 100)
    result = M.language_fidelity(sentences, S.FLORES_CODES[code])
    assert result["fidelity"] >= 0.9, result["counts"]
    assert result["n"] == 100 and sum(result["counts"].values()) == 100
    other = "es" if code == "en" else "en"
    assert M.language_fidelity(sentences, other)["fidelity"] <= 0.1


def test_mi_eval_gate():
    english = "Photosynthesis lets plants turn sunlight, water and carbon dioxide into sugar and oxygen."
    spanish = "La fotosíntesis permite a las plantas convertir la luz del sol y el agua en azúcar y oxígeno."
    assert M.mi_eval_gate(spanish, english, "es") == "A"
    assert M.mi_eval_gate(english, spanish, "es-ES") == "B"
    assert M.mi_eval_gate(spanish, spanish, "es") is None
    assert M.mi_eval_gate(english, english, "es") is None


# ---------------------------------------------------------------------------------------------------------------
# PLUG and math

def test_plug_metrics_count_missing_markers():
    outputs = [
        "English response: It is blue.\nRespuesta en español: Es azul.",
        "English response: Only English here.",
        "Respuesta en español:",  # marker present, empty answer: found
        "respuesta en español: minúsculas",  # markers are case-sensitive
    ]
    assert M.plug_metrics(outputs, "es") == {"answers": ["Es azul.", "", "", ""], "n": 4, "not_found": 2,
                                             "not_found_share": 0.5}
    result = M.plug_metrics(["English response: Hi.\n中文回复：你好。", "中文回复: 你好"], "zh")
    assert result["answers"] == ["你好。", ""] and result["not_found"] == 1


@pytest.mark.parametrize("text, number", [
    ("He paid $1,234.50 in total.", 1234.5), ("Answer: 18.", 18.0), ("from 3 to -4", -4.0), ("x = \u22127.5", -7.5),
    ("COVID-19 cases", 19.0), ("5-3", 3.0), ("1,000,000 people", 1e6), ("12,34", 34.0), ("no digits", None),
])
def test_extract_number_hand_worked(text, number):
    assert M.extract_number(text) == number


def test_math_accuracy_on_mgsm_answers():
    answers = [row["answer"] for row in S.read_mgsm(data_path("mgsm", "mgsm_en.tsv"))]
    for lang in ["es", "zh", "sw", "th"]:
        for row in S.read_mgsm(data_path("mgsm", f"mgsm_{lang}.tsv")):
            assert M.extract_number(row["answer"]) == float(row["answer"].replace(",", ""))
    predictions = []
    for i, answer in enumerate(answers):
        value = int(answer.replace(",", ""))
        predictions.append([f"La respuesta es {answer}.", f"{answer} + 1 = {value + 1:,}", "No lo sé.",
                            f"Step 1: 3 apples. The answer is {value}"][i % 4])
    scores = M.math_accuracy(predictions, answers)
    correct = sum(i % 4 in (0, 3) for i in range(len(answers)))
    assert scores == {"accuracy": 100 * correct / len(answers), "correct": correct, "n": len(answers),
                      "no_number": sum(i % 4 == 2 for i in range(len(answers)))}
    assert M.math_accuracy(["It is 2.50 dollars"], [2.5])["correct"] == 1
    assert math.isclose(M.math_accuracy(["7", "8"], ["7", "9"])["accuracy"], 50.0)
    with pytest.raises(ValueError, match="holds no number"):
        M.math_accuracy(["7"], ["seven"])
