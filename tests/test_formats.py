"""The three papers' prompt formats: pinned by literal strings and against the spec files in shared/specs."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path

import pytest

from pivot_jax.data import formats as F
from pivot_jax.data import sources as S

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SPECS = SHARED / "specs"
DATA = SHARED / "data"

ALPACA_HEAD_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further "
                     "context. Write a response that appropriately completes the request.\n\n")
ALPACA_HEAD_NO_INPUT = ("Below is an instruction that describes a task. Write a response that appropriately "
                        "completes the request.\n\n")


def spec_text(name: str) -> str:
    path = SPECS / name
    if not path.is_file():
        pytest.skip(f"spec file {path} is absent (shared/specs is not checked out next to the repository)")
    return path.read_text(encoding="utf-8")


def data_path(*parts: str) -> Path:
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data {path} is absent (shared/data is not checked out next to the repository)")
    return path


def spec_span(text: str, label: str) -> str:
    """The first `...` span after `label` in formats.md, with its written `\\n` turned into newlines."""
    start = text.index(label) + len(label)
    return re.search(r"`([^`]*)`", text[start:]).group(1).replace("\\n", "\n")


@pytest.fixture
def fresh_tables(monkeypatch):
    """Registrations in a test stay in that test."""
    for name in ("LANGUAGE_NAMES", "RESPONSE_MARKERS", "QA_PROMPTS"):
        monkeypatch.setattr(F, name, dict(getattr(F, name)))


# ---------------------------------------------------------------------------------------------------------------
# Literal pins

def test_alpaca_literal():
    example = F.alpaca("Add the numbers.", "2, 3", "5", id="a1")
    assert example == F.Example(
        "Below is an instruction that describes a task, paired with an input that provides further context. Write a "
        "response that appropriately completes the request.\n\n### Instruction:\nAdd the numbers.\n\n### Input:\n2, 3"
        "\n\n### Response:", "5", "a1")
    example = F.alpaca("Say hi.", "", " Hi!\n")
    assert example.inputs == ("Below is an instruction that describes a task. Write a response that appropriately "
                              "completes the request.\n\n### Instruction:\nSay hi.\n\n### Response:")
    assert example.targets == " Hi!\n"  # the output as-is; EOS comes at tokenization
    assert example.id == ""


def test_translation_literal_and_rotation():
    assert len(F.TRANSLATION_TEMPLATES) == 33
    assert F.TRANSLATION_TEMPLATES[0] == "Translate the following sentences from {source_lang} to {target_lang}."
    assert F.TRANSLATION_TEMPLATES[32] == "Can you reveal the {target_lang} translation of the forthcoming sentences?"
    # all 33 pinned even without the spec file: sha256 of the templates joined by newlines
    assert hashlib.sha256("\n".join(F.TRANSLATION_TEMPLATES).encode()).hexdigest() == (
        "b085d7786695d8a70035cb5ce5f334c6143b88d513d286f2db37984ad6c932ad")
    example = F.translation("Hola.", "Hello.", "es", "en", None)
    assert example.inputs == (ALPACA_HEAD_INPUT + "### Instruction:\nTranslate the following sentences from Spanish "
                              "to English.\n\n### Input:\nHola.\n\n### Response:")
    assert example.targets == "Hello."
    assert "What do the following sentences mean in Chinese?" in F.translation("a", "b", "en", "zh", 34).inputs
    assert F.translation("a", "b", "en", "zh", 33).inputs == F.translation("a", "b", "en", "zh", None).inputs
    assert F.translation("a", "b", "eng_Latn", "zho_Hans", 0) == F.translation("a", "b", "en", "zh", 0)
    with pytest.raises(ValueError, match="line_index"):
        F.translation("a", "b", "en", "zh", -1)
    with pytest.raises(ValueError, match="non-empty source"):
        F.translation("", "b", "en", "zh", 0)


def test_qa_literal():
    example = F.qa("Paris is in France.", "Where is Paris?", "France", "en", id="q1")
    assert example.inputs == (ALPACA_HEAD_INPUT + "### Instruction:\nAnswer the final question with following "
                              "context\n\n### Input:\nContext: Paris is in France.\nQuestion: Where is Paris?\nAnswer: "
                              "\n\n### Response:")
    assert example.targets == "France" and example.id == "q1"
    assert F.QA_PROMPTS["zh"] == ("请根据以下段落，回答问题", "段落: {context}\n问题: {question}\n答案: ")
    assert set(F.QA_PROMPTS) == {"ar", "el", "en", "hi", "tr", "vi", "zh"}
    assert all(layout.endswith(": ") for _, layout in F.QA_PROMPTS.values())


def test_plug_literal():
    assert F.PLUG_SYSTEM_PROMPT == ("Please interpret the instruction in English, and then respond both in English "
                                    "and in {Language}.")
    assert F.MONOLINGUAL_SYSTEM_PROMPT == "Please respond to the following user message in {Language}."
    assert F.RESPONSE_MARKERS == {"en": "English response:", "zh": "中文回复：", "ko": "한국어 응답:",
                                  "it": "Risposta in italiano:", "es": "Respuesta en español:"}
    assert F.RESPONSE_MARKERS["zh"].endswith("\uff1a")  # full-width colon, no space after it
    example = F.plug(" ¿Qué es el sol? ", "A star.", "Una estrella.", "es", id="p1")
    assert example == F.Example(
        "<|system|>\nPlease interpret the instruction in English, and then respond both in English and in Spanish.\n"
        "<|user|>\n¿Qué es el sol?\n<|assistant|>\n",
        "English response: A star.\nRespuesta en español: Una estrella.", "p1")
    example = F.plug_monolingual("你好", "你好！", "zh")
    assert example.inputs == ("<|system|>\nPlease respond to the following user message in Chinese.\n<|user|>\n你好\n"
                              "<|assistant|>\n")
    assert example.targets == "你好！"
    assert F.chat("Hi", "Hello", system=None) == F.Example("<|user|>\nHi\n<|assistant|>\n", "Hello")
    assert F.chat("Hi", "Hello", system="  ") == F.chat("Hi", "Hello")


def test_plug_other_pivot_and_markers(fresh_tables):
    assert F.plug_system_prompt("ko") == ("Please interpret the instruction in English, and then respond both in "
                                          "English and in Korean.")
    F.register_marker("de", "Antwort auf Deutsch:")
    example = F.plug("Wie geht's?", "你好。", "Gut.", "de", pivot="zh")
    assert example.inputs.startswith("<|system|>\nPlease interpret the instruction in Chinese, and then respond both "
                                     "in Chinese and in German.\n<|user|>\n")
    assert example.targets == "中文回复： 你好。\nAntwort auf Deutsch: Gut."
    with pytest.raises(KeyError, match="'sw'.*register_marker"):
        F.plug("x", "y", "z", "sw")
    with pytest.raises(ValueError):
        F.register_marker("sw", " ")


def test_extract_plug_answer():
    generation = "English response: The sun is a star.\n中文回复：太阳是一颗恒星。\n"
    assert F.extract_plug_answer(generation, "zh") == "太阳是一颗恒星。"
    assert F.extract_plug_answer(generation, "en") == "The sun is a star.\n中文回复：太阳是一颗恒星。"
    assert F.extract_plug_answer("English response: only English", "zh") is None
    assert F.extract_plug_answer("中文回复：一\n中文回复：二", "zh") == "一\n中文回复：二"  # after the first marker
    assert F.extract_plug_answer(F.plug("q", "a", "b", "it").targets, "it") == "b"


def test_xinstruction_literal():
    example = F.xinstruction("Name a fruit.", "Ndizi.", "sw", id="x1")
    assert example == F.Example(ALPACA_HEAD_NO_INPUT + "### Instruction:\nName a fruit. Answer in Swahili. \n\n"
                                "### Response:", "Ndizi.", "x1")
    styled = F.xinstruction("Name a fruit.", "Ndizi.", "sw", style=True)
    assert styled.inputs == (ALPACA_HEAD_NO_INPUT + "### Instruction:\nName a fruit. Answer in Swahili and the style "
                             "of an AI assistant. \n\n### Response:")


def test_language_names(fresh_tables):
    assert F.language_name("zh") == "Chinese" and F.language_name("zho_Hans") == "Chinese"
    assert F.language_name("arb_Arab") == "Arabic" and F.language_name("swh_Latn") == "Swahili"
    for code in ("en zh es ko it ar el hi tr vi sw th fi id bn ta ur fr de ja ru pt".split()
                 + "eng_Latn zho_Hans kor_Hang ita_Latn spa_Latn arb_Arab ell_Grek hin_Deva tur_Latn vie_Latn "
                   "swh_Latn tha_Thai".split()):
        assert F.language_name(code)
    with pytest.raises(KeyError) as info:
        F.language_name("xx")
    message = str(info.value)
    assert "'xx'" in message and "zh" in message and "register_language" in message
    F.register_language("xx", "Examplish")
    assert F.translation("a", "b", "en", "xx", None).inputs.count("Examplish") == 1
    with pytest.raises(ValueError):
        F.register_language("yy", "")


def test_qa_unknown_and_registered_language(fresh_tables):
    with pytest.raises(KeyError, match="'es'.*register_qa_prompt"):
        F.qa("c", "q", "a", "es")
    with pytest.raises(ValueError, match="context"):
        F.register_qa_prompt("es", "Responde.", "Pregunta: {question}")
    F.register_qa_prompt("es", "Responde.", "C: {context}\nP: {question}\nR: ")
    assert F.qa("c", "q", "a", "es").inputs.endswith("### Instruction:\nResponde.\n\n### Input:\nC: c\nP: q\nR: \n\n"
                                                     "### Response:")


# ---------------------------------------------------------------------------------------------------------------
# Against the spec files

def test_formats_md_alpaca_and_xinstruction():
    text = spec_text("formats.md")
    assert spec_span(text, "Alpaca prompt with input:") == F.ALPACA_PROMPT_INPUT
    assert spec_span(text, "Alpaca prompt without input:") == F.ALPACA_PROMPT_NO_INPUT
    assert F.ALPACA_PROMPT_INPUT.endswith("### Response:") and F.ALPACA_PROMPT_NO_INPUT.endswith("### Response:")
    xinst = spec_span(text, "Training/inference prompt (Alpaca no-input template):")
    assert xinst == F.ALPACA_PROMPT_NO_INPUT.replace("{instruction}", F.XINSTRUCTION_INSTRUCTION)
    styled = spec_span(text, "Style-tagged variant:")
    assert styled.startswith("... ")
    assert F.ALPACA_PROMPT_NO_INPUT.replace("{instruction}", F.XINSTRUCTION_STYLE_INSTRUCTION).endswith(styled[4:])


def test_formats_md_plug():
    text = spec_text("formats.md")
    layout = spec_span(text, "Chat layout:")
    assert layout == F.PLUG_CHAT_TEMPLATE + "{response}"
    assert layout.replace("<|system|>\n{system}\n", "") == F.PLUG_CHAT_TEMPLATE_NO_SYSTEM + "{response}"
    assert spec_span(text, "PLUG system prompt:") == F.PLUG_SYSTEM_PROMPT
    assert spec_span(text, "Monolingual baseline system prompt:") == F.MONOLINGUAL_SYSTEM_PROMPT
    markers = re.search(r"Response markers:(.*?)\n- ", text, re.S).group(1)  # the bullet spans two lines
    assert dict(re.findall(r"(\w\w) `([^`]*)`", markers)) == F.RESPONSE_MARKERS


def test_translation_templates_file():
    lines = spec_text("xllama_translation_templates.txt").split("\n")
    assert lines[-1] == ""  # the file ends with a newline
    assert tuple(lines[:-1]) == F.TRANSLATION_TEMPLATES


def test_qa_prompts_md():
    text = spec_text("xllama_qa_prompts.md")
    instructions = dict(re.findall(r"^\| (\w\w) \| (.+?) \|$", text, re.M))
    layouts = {lang: "\n".join(re.findall(r"`([^`]*)`", spans))
               for lang, spans in re.findall(r"^- (\w\w): (.+)$", text, re.M)}
    assert set(instructions) == set(layouts) == set(F.QA_PROMPTS)
    for lang, (instruction, layout) in F.QA_PROMPTS.items():
        assert (instruction, layout) == (instructions[lang], layouts[lang]), lang


# ---------------------------------------------------------------------------------------------------------------
# Real data rendered

def test_render_xquad():
    en, zh = (S.read_squad(data_path("xquad", f"xquad.{lang}.json")) for lang in ("en", "zh"))
    for records, lang, answer_label in ((en, "en", "\nAnswer: "), (zh, "zh", "\n答案: ")):
        examples = [F.qa(r["context"], r["question"], r["answers"][0], lang, id=r["id"]) for r in records]
        assert len(examples) == 1190
        first = examples[0]
        assert first.inputs.startswith(ALPACA_HEAD_INPUT + f"### Instruction:\n{F.QA_PROMPTS[lang][0]}\n\n### Input:\n")
        assert first.inputs.endswith(f"{records[0]['question']}{answer_label}\n\n### Response:")
        assert records[0]["context"] in first.inputs and first.targets == records[0]["answers"][0]
    es = S.read_squad(data_path("xquad", "xquad.es.json"))
    with pytest.raises(KeyError, match="'es'"):
        F.qa(es[0]["context"], es[0]["question"], es[0]["answers"][0], "es")


def test_render_flores_and_tatoeba():
    flores = data_path("flores200_devtest")
    pairs = S.read_parallel(S.flores_path(flores, "eng_Latn"), S.flores_path(flores, "spa_Latn"))
    examples = [F.translation(src, tgt, "en", "es", None, id=str(i)) for i, src, tgt in pairs]
    assert len(examples) == 1012
    assert all("Translate the following sentences from English to Spanish.\n\n### Input:\n" in e.inputs
               for e in examples)
    tatoeba_dir = data_path("tatoeba_parallel")
    tatoeba = S.read_parallel(tatoeba_dir / "tatoeba.en-es.en", tatoeba_dir / "tatoeba.en-es.es")
    train = [F.translation(src, tgt, "en", "es", i) for i, src, tgt in tatoeba]
    used = Counter(next(k for k, t in enumerate(F.TRANSLATION_TEMPLATES)
                        if t.format(source_lang="English", target_lang="Spanish") in e.inputs) for e in train)
    assert len(train) == 5000 and set(used) == set(range(33))


def test_render_alpaca_eval_and_demo():
    records = S.read_alpaca_eval(data_path("alpaca_eval", "alpaca_eval.json"))
    assert len(records) == 805
    plug = [F.plug_monolingual(r["instruction"], r["output"], "en", id=str(r["id"])) for r in records]
    assert plug[0].inputs == (f"<|system|>\nPlease respond to the following user message in English.\n<|user|>\n"
                              f"{records[0]['instruction'].strip()}\n<|assistant|>\n")
    xinst = F.xinstruction(records[1]["instruction"], records[1]["output"], "th")
    assert xinst.inputs.endswith(f"{records[1]['instruction']} Answer in Thai. \n\n### Response:")
    for lang, count in (("en", 999), ("zh", 1000)):
        demo = S.read_records(data_path("alpaca_demo", f"alpaca_{lang}_demo.json"),
                              required=("instruction", "input", "output"))
        examples = [F.alpaca(r["instruction"], r["input"], r["output"]) for r in demo]
        assert len(examples) == count
        with_input = sum(e.inputs.startswith(ALPACA_HEAD_INPUT) for e in examples)
        assert with_input == sum(bool(r["input"]) for r in demo)
        assert all(e.targets == r["output"] for e, r in zip(examples, demo))
