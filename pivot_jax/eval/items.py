"""Evaluation sets as items (id, prompt parts, references), and prompts rendered in a chosen format.

Sets: `translation` (Flores-200 devtest layout or any two line-aligned files), `cldr` (the built-in CLDR test
split), `qa` (XQuAD / MLQA, SQuAD layout), `alpaca_eval` (AlpacaEval / X-AlpacaEval JSON: instructions only,
for judging), `math` (MGSM TSV). Formats: `alpaca` (x-LLaMA), `chat` (the model's own chat template), `plug`
and `plug_monolingual` (PLUG's chat layout and system prompts), `xinstruct` (X-Instruction).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ml_collections import ConfigDict

from pivot_jax.data import cldr, formats, sources

SETS = ("translation", "cldr", "qa", "alpaca_eval", "math")
FORMATS = ("alpaca", "chat", "plug", "plug_monolingual", "xinstruct")


@dataclasses.dataclass(frozen=True)
class Item:
    id: str
    instruction: str
    input: str
    references: tuple[str, ...]  # empty for judge-only sets
    language: str  # the language the answer should be in
    source: str = ""  # the text to translate / the question, for reports and COMET
    dataset: str = ""  # source dataset (AlpacaEval's `dataset` field), for per-dataset breakdowns
    group: str = ""  # the key training splits hold out by (a QA article, a sentence pair); empty = the id


def _translation_instruction(src: str, tgt: str) -> str:
    return formats.TRANSLATION_TEMPLATES[0].format(source_lang=formats.language_name(src),
                                                   target_lang=formats.language_name(tgt))


def build_items(cfg: ConfigDict) -> list[Item]:
    """The evaluation set `cfg.set` (only the items held out at `cfg.held_out_fraction` when > 0; then the first
    `cfg.limit` items when > 0)."""
    if cfg.set not in SETS:
        raise ValueError(f"eval set must be one of {SETS}, got {cfg.set!r}")
    if cfg.set == "translation":
        src_file = cfg.source_file or sources.flores_path(cfg.flores_dir, cfg.source_lang)
        tgt_file = cfg.target_file or sources.flores_path(cfg.flores_dir, cfg.target_lang)
        instruction = _translation_instruction(cfg.source_lang, cfg.target_lang)
        items = [Item(f"{cfg.source_lang}-{cfg.target_lang}:{i}", instruction, s, (t,), cfg.target_lang, source=s,
                      group=f"{s}\t{t}") for i, s, t in sources.read_parallel(src_file, tgt_file)]
    elif cfg.set == "cldr":  # several targets ("es+zh") give each language's first `limit` items
        items = []
        for target in cfg.target_lang.split("+"):
            pairs = cldr.split_pairs(cldr.cldr_pairs(cfg.source_lang, target))["test"]
            instruction = _translation_instruction(cfg.source_lang, target)
            found = [Item(f"{target}:{p.key}", instruction, p.source, (p.target,), target, source=p.source)
                     for p in pairs]
            items += found[:cfg.limit] if cfg.limit > 0 else found
        return items
    elif cfg.set == "qa":
        prompt_lang = cfg.qa_prompt_lang or cfg.target_lang
        if prompt_lang == "none":  # the question as instruction, the context as input (PLUG data from SQuAD files)
            parts = lambda r: (r["question"], r["context"])  # noqa: E731
        elif prompt_lang in formats.QA_PROMPTS:
            instruction, layout = formats.QA_PROMPTS[prompt_lang]
            parts = lambda r: (instruction, layout.format(context=r["context"], question=r["question"]))  # noqa
        else:
            raise ValueError(f"no x-LLaMA QA prompt for {prompt_lang!r} (known: {sorted(formats.QA_PROMPTS)}); set "
                             "qa_prompt_lang (e.g. en, or none for the bare question and context) or add one with "
                             "pivot_jax.data.formats.register_qa_prompt")
        items = [Item(r["id"], *parts(r), tuple(r["answers"]), cfg.target_lang, source=r["question"],
                      group=f"article:{r['article']}") for r in sources.read_squad(cfg.file)]
    elif cfg.set == "alpaca_eval":
        items = [Item(str(r["id"]), r["instruction"], "", (), cfg.target_lang, source=r["instruction"],
                      dataset=str(r.get("dataset", ""))) for r in sources.read_alpaca_eval(cfg.file)]
    else:
        items = [Item(f"mgsm:{i}", r["question"], "", (r["answer"],), cfg.target_lang, source=r["question"])
                 for i, r in enumerate(sources.read_mgsm(cfg.file))]
    if cfg.held_out_fraction > 0:  # exactly what a training run on the same file held out
        items = [item for item in items if sources.in_validation_split(item.group or item.id, cfg.held_out_fraction)]
        if not items:
            raise ValueError(f"held_out_fraction={cfg.held_out_fraction} keeps no item of {cfg.set!r}")
    return items[:cfg.limit] if cfg.limit > 0 else items


def render_prompt(item: Item, prompt_format: str, tokenizer: Any = None, pivot: str = "en") -> str:
    """The prompt text the model completes, in `prompt_format`."""
    if prompt_format not in FORMATS:
        raise ValueError(f"prompt format must be one of {FORMATS}, got {prompt_format!r}")
    user = formats.user_message(item.instruction, item.input)
    if prompt_format == "alpaca":
        return formats.alpaca(item.instruction, item.input, "").inputs
    if prompt_format == "chat":
        return tokenizer.apply_chat_template([{"role": "user", "content": user}])
    if prompt_format == "plug":
        return formats.chat(user, "", system=formats.plug_system_prompt(item.language, pivot)).inputs
    if prompt_format == "plug_monolingual":
        system = formats.MONOLINGUAL_SYSTEM_PROMPT.format(Language=formats.language_name(item.language))
        return formats.chat(user, "", system=system).inputs
    return formats.xinstruction(user, "", item.language).inputs


def extract_answer(output: str, prompt_format: str, language: str) -> str | None:
    """The answer to score: PLUG's text after the target marker (None if missing), else the output stripped."""
    if prompt_format == "plug":
        return formats.extract_plug_answer(output, language)
    return output.strip()
