import json
from pathlib import Path

import pytest
import seqio

from pivot_jax.config import base_config
from pivot_jax.data import formats, mixtures
from pivot_jax.errors import PivotError
from pivot_jax.tokenizer import Tokenizer, seqio_vocabulary

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def vocab(smollm2_gguf):
    return seqio_vocabulary(Tokenizer.from_gguf(smollm2_gguf))


def data_config(**kw):
    d = base_config().data
    d.source = "seqio"
    d.update(kw)
    return d


def _examples(task_name, split):
    task = seqio.get_mixture_or_task(task_name)
    ds = task.source.get_dataset(split=split, shuffle=False)
    return [{k: v.decode() for k, v in ex.items()} for ex in ds.as_numpy_iterator()]


def test_coit_from_cldr_rotates_templates_and_holds_out(vocab):
    name = mixtures.build(data_config(method="coit", langs="es"), vocab, 128)
    mixture = seqio.get_mixture_or_task(name)
    (task,) = mixture.tasks
    train, valid = _examples(task.name, "train"), _examples(task.name, "validation")
    assert len(train) > 1000 and 40 < len(valid) < 150
    assert {e["id"] for e in train}.isdisjoint({e["id"] for e in valid})
    first_lines = {e["inputs"].split("### Instruction:\n")[1].split("\n")[0] for e in train}
    assert len(first_lines) == 33  # all 33 templates appear in training
    for e in valid:
        assert "Translate the following sentences from English to Spanish." in e["inputs"]
    germany = next(e for e in train if e["inputs"].endswith("### Input:\nGermany\n\n### Response:"))
    assert germany["targets"] == "Alemania"


def test_coit_from_files_mixes_alpaca_and_translation(vocab):
    if not SHARED.exists():
        pytest.skip(f"{SHARED} is absent")
    d = data_config(method="coit", langs="zh", alpaca_pivot=str(SHARED / "alpaca_demo/alpaca_en_demo.json"),
                    alpaca_target=str(SHARED / "alpaca_demo/alpaca_{lang}_demo.json"),
                    parallel_source=str(SHARED / "tatoeba_parallel/tatoeba.en-{lang}.en"),
                    parallel_target=str(SHARED / "tatoeba_parallel/tatoeba.en-{lang}.{lang}"))
    mixture = seqio.get_mixture_or_task(mixtures.build(d, vocab, 256))
    names = sorted(t.name for t in mixture.tasks)
    assert names == ["pivot_coit_alpaca_en", "pivot_coit_alpaca_zh", "pivot_coit_translation_en_zh"]
    counts = {t.name: t.num_input_examples("train") for t in mixture.tasks}
    assert 950 < counts["pivot_coit_alpaca_en"] < 999 and counts["pivot_coit_translation_en_zh"] > 2000
    rates = {t.name: mixture.get_rate(t) for t in mixture.tasks}
    assert rates == pytest.approx(counts)  # by example count
    zh = _examples("pivot_coit_translation_en_zh", "train")[0]
    assert "Chinese" in zh["inputs"] and zh["inputs"].startswith(formats.ALPACA_PROMPT_INPUT.split("{")[0])


def test_muit_amounts_are_nested_subsets(vocab):
    small = mixtures.build(data_config(method="muit", langs="es,zh", translation_amount="es:100,zh:40"), vocab, 128)
    es_small = {e["id"] for e in _examples("pivot_muit_translation_en_es", "train")}
    assert len(es_small) == 100 and len(_examples("pivot_muit_translation_en_zh", "train")) == 40
    mixtures.build(data_config(method="muit", langs="es,zh", translation_amount="300"), vocab, 128)
    es_large = {e["id"] for e in _examples("pivot_muit_translation_en_es", "train")}
    assert len(es_large) == 300 and es_small < es_large
    assert small == "pivot_mix_muit_es_zh"


def test_both_directions(vocab):
    mixtures.build(data_config(method="coit", langs="it", translation_directions="both",
                               translation_amount="20"), vocab, 128)
    inputs = [e["inputs"] for e in _examples("pivot_coit_translation_en_it", "train")]
    assert len(inputs) == 40
    assert any("Italian" in i.split("### Input")[0] for i in inputs)
    assert any(("English" in i.split("### Input")[0]) and ("Italian" not in i.split("### Input")[0])
               for i in inputs)


@pytest.fixture
def plug_files(tmp_path):
    en = [{"id": i, "instruction": f"Name a colour ({i}).", "input": "", "output": f"Blue {i}."} for i in range(30)]
    es = [{"id": i, "instruction": f"Nombra un color ({i}).", "input": "", "output": f"Azul {i}."}
          for i in range(30) if i != 7]
    (tmp_path / "en.json").write_text(json.dumps(en))
    (tmp_path / "es.jsonl").write_text("\n".join(json.dumps(r) for r in es))
    return tmp_path


def test_plug_and_monolingual_baseline(vocab, plug_files):
    d = data_config(method="plug", langs="es", alpaca_pivot=str(plug_files / "en.json"),
                    alpaca_target=str(plug_files / "{lang}.jsonl"), validation_fraction=0.0)
    mixtures.build(d, vocab, 256)
    ex = _examples("pivot_plug_es", "train")
    assert len(ex) == 29  # id 7 has no translation
    first = next(e for e in ex if e["id"] == "3")
    assert first["inputs"] == ("<|system|>\nPlease interpret the instruction in English, and then respond both in "
                               "English and in Spanish.\n<|user|>\nNombra un color (3).\n<|assistant|>\n")
    assert first["targets"] == "English response: Blue 3.\nRespuesta en español: Azul 3."
    d.method = "plug_monolingual"
    mixtures.build(d, vocab, 256)
    mono = next(e for e in _examples("pivot_plug_monolingual_es", "train") if e["id"] == "3")
    assert mono["targets"] == "Azul 3."
    assert "Please respond to the following user message in Spanish." in mono["inputs"]


def test_plug_from_parallel_squad_files_holds_out_whole_articles(vocab):
    if not SHARED.exists():
        pytest.skip(f"{SHARED} is absent")
    d = data_config(method="plug", langs="es", alpaca_pivot=str(SHARED / "xquad/xquad.en.json"),
                    alpaca_target=str(SHARED / "xquad/xquad.{lang}.json"), validation_fraction=0.2)
    mixtures.build(d, vocab, 100_000)
    train, held = _examples("pivot_plug_es", "train"), _examples("pivot_plug_es", "validation")
    assert len(train) + len(held) == 1190 and 100 < len(held) < 500
    context = lambda e: e["inputs"].split("<|user|>\n")[1].split("\n\n", 1)[1]  # noqa: E731
    assert not {context(e) for e in train} & {context(e) for e in held}  # no article on both sides
    first = train[0]
    assert first["targets"].startswith("English response: ") and "\nRespuesta en español: " in first["targets"]
    english, spanish = first["targets"].split("\nRespuesta en español: ")
    assert spanish in context(first)


def test_xinstruct(vocab, tmp_path):
    (tmp_path / "sw.jsonl").write_text(json.dumps({"instruction": "Describe the sea.", "output": "Bahari ni kubwa."}))
    mixtures.build(data_config(method="xinstruct", langs="sw", xinstruct_file=str(tmp_path / "{lang}.jsonl"),
                               validation_fraction=0.0), vocab, 256)
    (ex,) = _examples("pivot_xinstruct_sw", "train")
    assert "### Instruction:\nDescribe the sea. Answer in Swahili. \n\n### Response:" in ex["inputs"]


@pytest.mark.parametrize("kw,message", [
    (dict(method="coit", langs="es,zh"), "muit"),
    (dict(method="muit", langs="es", translation_amount="zh:5"), "zh"),
    (dict(method="dpo"), "data.method"),
    (dict(method="coit", langs="es", mixing="alpaca:1"), "no weight"),
    (dict(method="plug", langs="es"), "alpaca_pivot"),
])
def test_bad_data_configs_are_named(vocab, kw, message):
    with pytest.raises(ValueError, match=message):
        mixtures.build(data_config(**kw), vocab, 128)


def test_coit_from_prepared_tfds_equals_coit_from_files(vocab, tmp_path):
    from pivot_jax.data import tfds_builders

    if not SHARED.exists():
        pytest.skip(f"{SHARED} is absent")
    src, tgt = SHARED / "tatoeba_parallel/tatoeba.en-es.en", SHARED / "tatoeba_parallel/tatoeba.en-es.es"
    alpaca = SHARED / "alpaca_demo/alpaca_en_demo.json"
    parallel = tfds_builders.prepare("pivot_parallel", tfds_builders.ParallelConfig(
        name="en_es", files={"train": (src, tgt)}, source_lang="en", target_lang="es"), tmp_path)
    instructions = tfds_builders.prepare("pivot_instructions", tfds_builders.InstructionsConfig(
        name="alpaca_en", files={"train": alpaca}), tmp_path)
    from_tfds = data_config(method="coit", langs="es", tfds_dir=str(tmp_path), alpaca_pivot=instructions,
                            parallel_source=parallel.replace("en_es", "en_{lang}"))
    mixtures.build(from_tfds, vocab, 256)
    def texts(name):  # ids differ by design: TFDS numbers records that have none
        return sorted((e["inputs"], e["targets"]) for e in _examples(name, "train"))

    tfds_examples = {name: texts(name) for name in ("pivot_coit_alpaca_en", "pivot_coit_translation_en_es")}
    from_files = data_config(method="coit", langs="es", alpaca_pivot=str(alpaca), parallel_source=str(src),
                             parallel_target=str(tgt))
    mixtures.build(from_files, vocab, 256)
    for name, examples in tfds_examples.items():
        assert examples == texts(name), name


@pytest.mark.parametrize("key, value, shown", [
    ("parallel_target", "DIR/x.{lng}", "'lng'"),
    ("alpaca_target", "DIR/alpaca_{0}.json", "'0'"),
    ("parallel_source", "DIR/x.{lang", "unmatched brace"),
    ("xinstruct_file", "DIR/{lang.upper}.jsonl", "'lang.upper'"),
])
def test_placeholder_typos_in_data_paths_are_named(tmp_path, key, value, shown):
    kw = dict(method="xinstruct" if key == "xinstruct_file" else "coit", langs="es",
              parallel_source=str(tmp_path / "x.{lang}"), parallel_target=str(tmp_path / "y.{lang}"))
    kw[key] = value.replace("DIR", str(tmp_path))
    with pytest.raises(PivotError) as info:
        mixtures.build(data_config(**kw), None, 128)  # fails before any task needs a vocabulary
    message = str(info.value)
    assert f"data.{key}" in message and kw[key] in message and "{lang}" in message and shown in message


def test_plug_pivot_records_need_their_output(tmp_path):
    (tmp_path / "en.jsonl").write_text('{"id": 1, "instruction": "a", "output": "b"}\n{"id": 2, "instruction": "c"}\n')
    (tmp_path / "es.jsonl").write_text('{"id": 1, "instruction": "x", "output": "y"}\n')
    d = data_config(method="plug", langs="es", alpaca_pivot=str(tmp_path / "en.jsonl"),
                    alpaca_target=str(tmp_path / "{lang}.jsonl"))
    with pytest.raises(PivotError, match=r"en\.jsonl: line 2: missing required field 'output'"):
        mixtures.build(d, None, 128)  # fails while reading, before any task needs a vocabulary
