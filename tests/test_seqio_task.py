"""Evaluation sets as seqio tasks: the `test` split holds each item's prompt and first reference."""

from pathlib import Path

import pytest
import seqio

from pivot_jax.config import eval_config
from pivot_jax.eval.seqio_task import eval_task
from pivot_jax.tokenizer import Tokenizer, seqio_vocabulary

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def vocab(smollm2_gguf):
    return seqio_vocabulary(Tokenizer.from_gguf(smollm2_gguf))


def _examples(task_name, split):
    task = seqio.get_mixture_or_task(task_name)
    ds = task.source.get_dataset(split=split, shuffle=False)
    return [{k: v.decode() for k, v in ex.items()} for ex in ds.as_numpy_iterator()]


def test_eval_sets_as_seqio_tasks(vocab):
    if not SHARED.exists():
        pytest.skip(f"{SHARED} is absent")
    flores = eval_config()
    flores.update(dict(set="translation", source_lang="en", target_lang="es", limit=10,
                       flores_dir=str(SHARED / "flores200_devtest")))
    eval_task("pivot_eval_flores_en_es", flores, vocab, 512)
    (first, *_) = _examples("pivot_eval_flores_en_es", "test")
    assert "Translate the following sentences from English to Spanish." in first["inputs"]
    assert first["targets"] and first["id"] == "en-es:0"
    xquad = eval_config()
    xquad.update(dict(set="qa", target_lang="zh", file=str(SHARED / "xquad/xquad.zh.json"), limit=5))
    eval_task("pivot_eval_xquad_zh", xquad, vocab, 512)
    assert _examples("pivot_eval_xquad_zh", "test")[0]["inputs"].endswith("答案: \n\n### Response:")
    alpaca_eval = eval_config()
    alpaca_eval.update(dict(set="alpaca_eval", target_lang="en", file=str(SHARED / "alpaca_eval/alpaca_eval.json"),
                            limit=3, prompt_format="plug"))
    eval_task("pivot_eval_x_alpacaeval_en", alpaca_eval, vocab, 512)
    assert _examples("pivot_eval_x_alpacaeval_en", "test")[0]["inputs"].startswith("<|system|>\n")


def test_cldr_eval_set_in_the_models_chat_format(smollm2_gguf, vocab):
    tokenizer = Tokenizer.from_gguf(smollm2_gguf)
    cldr = eval_config()
    cldr.update(dict(set="cldr", source_lang="en", target_lang="es", limit=4, prompt_format="chat"))
    assert eval_task("pivot_eval_cldr_en_es", cldr, vocab, 256, tokenizer) == "pivot_eval_cldr_en_es"
    examples = _examples("pivot_eval_cldr_en_es", "test")
    assert len(examples) == 4 and all(e["id"].startswith("es:") and e["targets"] for e in examples)
    assert examples[0]["inputs"].startswith("<|im_start|>") and "English to Spanish" in examples[0]["inputs"]
    assert set(seqio.get_mixture_or_task("pivot_eval_cldr_en_es").splits) == {"test"}
