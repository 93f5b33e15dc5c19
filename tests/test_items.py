from pathlib import Path

import pytest

from pivot_jax.config import eval_config
from pivot_jax.eval.items import Item, build_items, extract_answer, render_prompt

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def cfg(**kw):
    c = eval_config()
    c.update(kw)
    return c


@pytest.fixture(scope="module")
def shared():
    if not SHARED.exists():
        pytest.skip(f"{SHARED} is absent")
    return SHARED


def test_sets_from_the_real_files(shared):
    flores = build_items(cfg(set="translation", source_lang="en", target_lang="es",
                             flores_dir=str(shared / "flores200_devtest"), limit=5))
    assert len(flores) == 5 and flores[0].id == "en-es:0" and flores[0].references[0]
    assert flores[0].instruction == "Translate the following sentences from English to Spanish."
    assert len(build_items(cfg(set="translation", source_lang="en", target_lang="zh",
                               flores_dir=str(shared / "flores200_devtest")))) == 1012
    xquad = build_items(cfg(set="qa", target_lang="zh", file=str(shared / "xquad/xquad.zh.json")))
    assert len(xquad) == 1190 and xquad[0].instruction == "请根据以下段落，回答问题"
    assert xquad[0].input.startswith("段落: ") and xquad[0].input.endswith("\n答案: ")
    es = build_items(cfg(set="qa", target_lang="es", qa_prompt_lang="en", file=str(shared / "xquad/xquad.es.json")))
    assert es[0].input.startswith("Context: ") and es[0].language == "es"
    with pytest.raises(ValueError, match="qa_prompt_lang"):
        build_items(cfg(set="qa", target_lang="es", file=str(shared / "xquad/xquad.es.json")))
    evals = build_items(cfg(set="alpaca_eval", target_lang="en", file=str(shared / "alpaca_eval/alpaca_eval.json")))
    assert len(evals) == 805 and evals[0].references == () and evals[0].dataset
    mgsm = build_items(cfg(set="math", target_lang="es", file=str(shared / "mgsm/mgsm_es.tsv")))
    assert len(mgsm) == 250 and mgsm[0].references[0].replace(",", "").isdigit()


def test_held_out_items_are_what_training_held_out(shared):
    from pivot_jax.data.sources import in_validation_split, read_instruction_records

    path = str(shared / "xquad/xquad.es.json")
    items = build_items(cfg(set="qa", target_lang="es", qa_prompt_lang="none", file=path, held_out_fraction=0.2))
    held = {r["id"] for r in read_instruction_records(path) if in_validation_split(r["group"], 0.2)}
    assert {i.id for i in items} == held and 100 < len(held) < 500
    assert items[0].input.startswith(items[0].references[0][:0]) and items[0].instruction.endswith("?")
    assert items[0].references[0] in items[0].input  # bare question + context
    assert render_prompt(items[0], "plug_monolingual").endswith(
        f"<|user|>\n{items[0].instruction}\n\n{items[0].input}\n<|assistant|>\n")
    assert len(build_items(cfg(set="qa", target_lang="es", qa_prompt_lang="none", file=path, held_out_fraction=0.2,
                               limit=7))) == 7
    flores = dict(set="translation", source_lang="en", target_lang="es", flores_dir=str(shared / "flores200_devtest"))
    held_pairs = build_items(cfg(**flores, held_out_fraction=0.1))
    assert {i.group for i in held_pairs} == {i.group for i in build_items(cfg(**flores))
                                             if in_validation_split(i.group, 0.1)}
    with pytest.raises(ValueError, match="keeps no item"):
        build_items(cfg(**flores, held_out_fraction=1e-9))


def test_cldr_test_split_needs_no_files():
    items = build_items(cfg(set="cldr", source_lang="en", target_lang="it"))
    assert 100 < len(items) < 250 and all(i.references[0] for i in items)


ITEM = Item("1", "Translate the following sentences from English to Spanish.", "Good morning.", ("Buenos días.",),
            "es")


def test_prompt_formats():
    assert render_prompt(ITEM, "alpaca") == (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n### Instruction:\nTranslate the following "
        "sentences from English to Spanish.\n\n### Input:\nGood morning.\n\n### Response:")
    assert render_prompt(ITEM, "plug") == (
        "<|system|>\nPlease interpret the instruction in English, and then respond both in English and in "
        "Spanish.\n<|user|>\nTranslate the following sentences from English to Spanish.\n\nGood morning.\n"
        "<|assistant|>\n")
    assert "Please respond to the following user message in Spanish." in render_prompt(ITEM, "plug_monolingual")
    assert "Good morning. Answer in Spanish. \n\n### Response:" in render_prompt(ITEM, "xinstruct")

    class ChatML:
        def apply_chat_template(self, messages):
            return f"<|im_start|>user\n{messages[0]['content']}<|im_end|>\n<|im_start|>assistant\n"

    assert render_prompt(ITEM, "chat", ChatML()).endswith("Good morning.<|im_end|>\n<|im_start|>assistant\n")
    with pytest.raises(ValueError, match="prompt format"):
        render_prompt(ITEM, "markdown")


def test_plug_answers_are_extracted_after_the_marker():
    assert extract_answer("English response: Hi.\nRespuesta en español: Hola.", "plug", "es") == "Hola."
    assert extract_answer("Hi there.", "plug", "es") is None
    assert extract_answer("  Hola.\n", "alpaca", "es") == "Hola."
