"""Prompt formats of x-LLaMA (CoIT/MuIT), PLUG and X-Instruction, rendered as (inputs, targets) examples.

The template strings are the papers' published formats (see `shared/specs/formats.md`,
`xllama_translation_templates.txt`, `xllama_qa_prompts.md`) and must stay byte-identical to them: the tests pin
them. `inputs` carries no loss; `targets` does, and the tokenizer appends EOS to it.
"""

from __future__ import annotations

import dataclasses
from typing import TypeVar

_V = TypeVar("_V")


@dataclasses.dataclass(frozen=True)
class Example:
    """One training/evaluation example."""

    inputs: str  # the prompt: no loss on these tokens
    targets: str  # the response: loss on these; EOS is appended at tokenization, not here
    id: str = ""


class UnknownLanguageError(KeyError):
    """A language code with no entry in one of the tables below."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0])


# ---------------------------------------------------------------------------------------------------------------
# Languages

# ISO 639-1 code -> FLORES-200 code.
FLORES_CODES: dict[str, str] = {
    "en": "eng_Latn", "zh": "zho_Hans", "es": "spa_Latn", "ko": "kor_Hang", "it": "ita_Latn", "ar": "arb_Arab",
    "el": "ell_Grek", "hi": "hin_Deva", "tr": "tur_Latn", "vi": "vie_Latn", "sw": "swh_Latn", "th": "tha_Thai",
    "fi": "fin_Latn", "id": "ind_Latn", "bn": "ben_Beng", "ta": "tam_Taml", "ur": "urd_Arab", "fr": "fra_Latn",
    "de": "deu_Latn", "ja": "jpn_Jpan", "ru": "rus_Cyrl", "pt": "por_Latn",
}

_ISO_NAMES = {
    "en": "English", "zh": "Chinese", "es": "Spanish", "ko": "Korean", "it": "Italian", "ar": "Arabic",
    "el": "Greek", "hi": "Hindi", "tr": "Turkish", "vi": "Vietnamese", "sw": "Swahili", "th": "Thai",
    "fi": "Finnish", "id": "Indonesian", "bn": "Bengali", "ta": "Tamil", "ur": "Urdu", "fr": "French",
    "de": "German", "ja": "Japanese", "ru": "Russian", "pt": "Portuguese",
}

# ISO and FLORES codes -> the English language name that fills the prompts.
LANGUAGE_NAMES: dict[str, str] = {**_ISO_NAMES, **{FLORES_CODES[iso]: name for iso, name in _ISO_NAMES.items()}}


def _lookup(table: dict[str, _V], code: str, what: str, register: str) -> _V:
    try:
        return table[code]
    except KeyError:
        raise UnknownLanguageError(f"no {what} for language {code!r}; known: {', '.join(sorted(table))}; "
                                   f"add one with {register}") from None


def language_name(code: str) -> str:
    """English name of a language given its ISO 639-1 or FLORES-200 code (e.g. "zh" or "zho_Hans" -> "Chinese")."""
    return _lookup(LANGUAGE_NAMES, code, "English name", "register_language(code, name)")


def register_language(code: str, name: str) -> None:
    """Add (or override) the English name used for `code`."""
    if not code or not name:
        raise ValueError(f"register_language needs a non-empty code and name, got {code!r}, {name!r}")
    LANGUAGE_NAMES[code] = name


# ---------------------------------------------------------------------------------------------------------------
# x-LLaMA: Alpaca templates, translation as instruction, QA

ALPACA_PROMPT_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
)
ALPACA_PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:"
)


def alpaca(instruction: str, input: str, output: str, id: str = "") -> Example:
    """x-LLaMA/Alpaca example: the with-input template when `input` is non-empty; the output is the target as-is."""
    if input:
        prompt = ALPACA_PROMPT_INPUT.format(instruction=instruction, input=input)
    else:
        prompt = ALPACA_PROMPT_NO_INPUT.format(instruction=instruction)
    return Example(prompt, output, id)


TRANSLATION_TEMPLATES: tuple[str, ...] = (
    "Translate the following sentences from {source_lang} to {target_lang}.",
    "What do the following sentences mean in {target_lang}?",
    "Please provide the {target_lang} translation for the following sentences.",
    "Convert the subsequent sentences from {source_lang} into {target_lang}.",
    "Render the listed sentences in {target_lang} from their original {source_lang} form.",
    "Transform the upcoming sentences from {source_lang} language to {target_lang} language.",
    "Change the given sentences from {source_lang} to {target_lang} format.",
    "Turn the following sentences from their {source_lang} version to the {target_lang} version.",
    "Adapt the mentioned sentences from {source_lang} to the {target_lang} language.",
    "Transpose the next sentences from the {source_lang} format to the {target_lang} format.",
    "Switch the specified sentences from their {source_lang} form to {target_lang} form.",
    "Reinterpret the ensuing sentences from {source_lang} to {target_lang} language.",
    "Modify the forthcoming sentences, converting them from {source_lang} to {target_lang}.",
    "How can the subsequent sentences be interpreted in {target_lang}?",
    "What is the meaning of these sentences when translated to {target_lang}?",
    "In the context of {target_lang}, what do the upcoming sentences signify?",
    "How would you express the meaning of the following sentences in {target_lang}?",
    "What is the significance of the mentioned sentences in {target_lang}?",
    "In {target_lang}, what do the given sentences convey?",
    "When translated to {target_lang}, what message do these sentences carry?",
    "What is the intended meaning of the ensuing sentences in {target_lang}?",
    "How should the following sentences be comprehended in {target_lang}?",
    "In terms of {target_lang}, what do the next sentences imply?",
    "Kindly furnish the {target_lang} translation of the subsequent sentences.",
    "Could you supply the {target_lang} translation for the upcoming sentences?",
    "Please offer the {target_lang} rendition for the following statements.",
    "I'd appreciate it if you could present the {target_lang} translation for these sentences.",
    "Can you deliver the {target_lang} translation for the mentioned sentences?",
    "Please share the {target_lang} version of the given sentences.",
    "It would be helpful if you could provide the {target_lang} translation of the ensuing sentences.",
    "Kindly submit the {target_lang} interpretation for the next sentences.",
    "Please make available the {target_lang} translation for the listed sentences.",
    "Can you reveal the {target_lang} translation of the forthcoming sentences?",
)


def translation(source_text: str, target_text: str, source_lang: str, target_lang: str, line_index: int | None,
                id: str = "") -> Example:
    """x-LLaMA translation-as-instruction example.

    `line_index` is the 0-based line of the pair in the source file, counting skipped empty pairs: training uses
    template `line_index % 33`; `None` (test/validation) uses template 0. The source sentence is the Alpaca input.
    """
    if line_index is not None and line_index < 0:
        raise ValueError(f"line_index must be >= 0 or None, got {line_index}")
    if not source_text:
        raise ValueError("translation needs a non-empty source sentence (the Alpaca input)")
    template = TRANSLATION_TEMPLATES[0 if line_index is None else line_index % len(TRANSLATION_TEMPLATES)]
    instruction = template.format(source_lang=language_name(source_lang), target_lang=language_name(target_lang))
    return alpaca(instruction, source_text, target_text, id)


# language -> (instruction, layout); the layout fills the Alpaca input and ends with a space.
QA_PROMPTS: dict[str, tuple[str, str]] = {
    "ar": ("الرجاء الإجابة على الأسئلة بناءً على الفقرات التالية", "فقرة: {context}\nسؤال: {question}\nإجابة: "),
    "el": ("Απαντήστε στις ερωτήσεις με βάση τις παρακάτω παραγράφους",
           "παράγραφος: {context}\nερώτηση: {question}\nΑπάντηση: "),
    "en": ("Answer the final question with following context", "Context: {context}\nQuestion: {question}\nAnswer: "),
    "hi": ("कृपया निम्नलिखित पैराग्राफ के अनुसार प्रश्नों के उत्तर दें",
           "अनुच्छेद: {context}\nसवाल: {question}\nउत्तर: "),
    "tr": ("Lütfen soruları aşağıdaki paragraflara göre cevaplayınız",
           "paragraf: {context}\nsoru: {question}\nCevap: "),
    "vi": ("Hãy trả lời các câu hỏi theo đoạn văn sau", "đoạn văn: {context}\ncâu hỏi: {question}\nTrả lời: "),
    "zh": ("请根据以下段落，回答问题", "段落: {context}\n问题: {question}\n答案: "),
}


def register_qa_prompt(lang: str, instruction: str, layout: str) -> None:
    """Add (or override) the QA instruction and layout (with `{context}` and `{question}`) for `lang`."""
    if not lang or not instruction or "{context}" not in layout or "{question}" not in layout:
        raise ValueError(f"register_qa_prompt needs a language, an instruction and a layout containing {{context}} "
                         f"and {{question}}, got {lang!r}, {instruction!r}, {layout!r}")
    QA_PROMPTS[lang] = (instruction, layout)


def qa(context: str, question: str, answer: str, language: str, id: str = "") -> Example:
    """x-LLaMA XQuAD/MLQA example: the language's instruction and layout in the Alpaca with-input template."""
    instruction, layout = _lookup(QA_PROMPTS, language, "QA prompt", "register_qa_prompt(lang, instruction, layout)")
    return alpaca(instruction, layout.format(context=context, question=question), answer, id)


# ---------------------------------------------------------------------------------------------------------------
# PLUG

def user_message(instruction: str, input: str = "") -> str:
    """One user turn from an Alpaca-style record: the instruction, then its input (if any) after a blank line.
    Training data (PLUG) and evaluation prompts both use it, so what a model is tested on is what it learned."""
    return f"{instruction}\n\n{input}" if input else instruction


PLUG_CHAT_TEMPLATE = "<|system|>\n{system}\n<|user|>\n{instruction}\n<|assistant|>\n"
PLUG_CHAT_TEMPLATE_NO_SYSTEM = "<|user|>\n{instruction}\n<|assistant|>\n"
PLUG_SYSTEM_PROMPT = ("Please interpret the instruction in English, and then respond both in English and in "
                      "{Language}.")
MONOLINGUAL_SYSTEM_PROMPT = "Please respond to the following user message in {Language}."

RESPONSE_MARKERS: dict[str, str] = {
    "en": "English response:",
    "zh": "中文回复：",  # full-width colon
    "ko": "한국어 응답:",
    "it": "Risposta in italiano:",
    "es": "Respuesta en español:",
}


def register_marker(lang: str, marker: str) -> None:
    """Add (or override) the PLUG response marker that introduces a response in `lang`."""
    if not lang or not marker.strip():
        raise ValueError(f"register_marker needs a non-empty language and marker, got {lang!r}, {marker!r}")
    RESPONSE_MARKERS[lang] = marker


def response_marker(lang: str) -> str:
    """The PLUG response marker of `lang`."""
    return _lookup(RESPONSE_MARKERS, lang, "response marker", "register_marker(lang, marker)")


def chat(instruction: str, response: str, system: str | None = None, id: str = "") -> Example:
    """PLUG chat layout; the `<|system|>` line is omitted without a system prompt.

    Like PLUG's training code, the system prompt, instruction and response are stripped.
    """
    system = (system or "").strip()
    if system:
        prompt = PLUG_CHAT_TEMPLATE.format(system=system, instruction=instruction.strip())
    else:
        prompt = PLUG_CHAT_TEMPLATE_NO_SYSTEM.format(instruction=instruction.strip())
    return Example(prompt, response.strip(), id)


def plug_system_prompt(language: str, pivot: str = "en") -> str:
    """PLUG system prompt for target `language`; another pivot takes English's place in the published prompt."""
    # The published prompt names the pivot literally ("English"); other pivots substitute their name there.
    return PLUG_SYSTEM_PROMPT.replace("English", language_name(pivot)).format(Language=language_name(language))


def plug(instruction: str, pivot_response: str, target_response: str, language: str, pivot: str = "en",
         id: str = "") -> Example:
    """PLUG example: the response in the pivot language, then in the target language, each after its marker."""
    response = (f"{response_marker(pivot)} {pivot_response.strip()}\n"
                f"{response_marker(language)} {target_response.strip()}")
    return chat(instruction, response, plug_system_prompt(language, pivot), id)


def plug_monolingual(instruction: str, response: str, language: str, id: str = "") -> Example:
    """PLUG's monolingual baseline: respond directly in `language`, without a pivot response."""
    return chat(instruction, response, MONOLINGUAL_SYSTEM_PROMPT.format(Language=language_name(language)), id)


def extract_plug_answer(text: str, language: str) -> str | None:
    """Everything after the first `language` marker in a generation, stripped; None when the marker is missing."""
    marker = response_marker(language)
    start = text.find(marker)
    if start < 0:
        return None
    return text[start + len(marker):].strip()


# ---------------------------------------------------------------------------------------------------------------
# X-Instruction

XINSTRUCTION_INSTRUCTION = "{instruction} Answer in {output_lang}. "
XINSTRUCTION_STYLE_INSTRUCTION = "{instruction} Answer in {output_lang} and the style of an AI assistant. "


def xinstruction(english_instruction: str, response: str, language: str, style: bool = False,
                 id: str = "") -> Example:
    """X-Instruction example: English instruction + "Answer in {Language}. " (Alpaca no-input), response in X."""
    template = XINSTRUCTION_STYLE_INSTRUCTION if style else XINSTRUCTION_INSTRUCTION
    instruction = template.format(instruction=english_instruction, output_lang=language_name(language))
    return alpaca(instruction, "", response, id)
