import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from pivot_jax.data import BATCH_KEYS, formats, sources, tasks
from pivot_jax.data import tfds_builders as tb
from pivot_jax.data.tfds_builders.__main__ import main as tfds_command
from pivot_jax.errors import PivotError
from pivot_jax.tokenizer import Tokenizer, seqio_vocabulary

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
TATOEBA = (SHARED / "tatoeba_parallel/tatoeba.en-es.en", SHARED / "tatoeba_parallel/tatoeba.en-es.es")
FLORES = SHARED / "flores200_devtest"
ALPACA = SHARED / "alpaca_demo/alpaca_en_demo.json"


def _require_shared():
    missing = [p for p in (*TATOEBA, FLORES, ALPACA) if not p.exists()]
    if missing:
        pytest.skip(f"shared data is absent: {', '.join(map(str, missing))}")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="module")
def parallel(data_dir):
    """tfds name of Tatoeba en-es as train and FLORES devtest en-es as test."""
    _require_shared()
    files = {"train": TATOEBA, "test": (sources.flores_path(FLORES, "en"), sources.flores_path(FLORES, "es"))}
    config = tb.ParallelConfig(name="en_es", files=files, source_lang="en", target_lang="es")
    return tb.prepare("pivot_parallel", config, data_dir)


@pytest.fixture(scope="module")
def instructions(data_dir):
    _require_shared()
    return tb.prepare(tb.PivotInstructions, tb.InstructionsConfig(name="alpaca_en", files={"train": ALPACA}),
                      data_dir)


@pytest.fixture(scope="module")
def vocab(smollm2_gguf):
    return Tokenizer.from_gguf(smollm2_gguf)


def _rows(tfds_name, data_dir, split="train"):
    ds = tfds.load(tfds_name, data_dir=data_dir, split=split, shuffle_files=False, download=False)
    return [{k: v.decode() if isinstance(v, bytes) else int(v) for k, v in ex.items()}
            for ex in ds.as_numpy_iterator()]


def _translation(example):
    return formats.translation(example["source"], example["target"], "en", "es", example["line_index"],
                               id=f"en-es:{example['line_index']}")


def test_parallel_round_trip_equals_the_reader(parallel, data_dir):
    assert parallel == "pivot_parallel/en_es:1.0.0"
    for split, paths in (("train", TATOEBA), ("test", (FLORES / "eng_Latn.devtest", FLORES / "spa_Latn.devtest"))):
        rows = sorted(_rows(parallel, data_dir, split), key=lambda r: r["line_index"])
        expected = sources.read_parallel(*paths)
        assert [(r["line_index"], r["source"], r["target"]) for r in rows] == expected
        assert rows[7]["id"] == f"en_es/{split}/7"
    assert len(expected) == 1012
    info = tfds.builder(parallel, data_dir=data_dir).info
    assert "sha256:" in info.config_description and str(TATOEBA[0]) in info.config_description


def test_line_index_counts_skipped_empty_pairs(tmp_path):
    (tmp_path / "a.en").write_text("one\n\nthree\nfour\n \n")
    (tmp_path / "a.es").write_text("uno\ndos\ntres\n\ncinco\n")
    config = tb.ParallelConfig(name="gaps", files={"train": (tmp_path / "a.en", tmp_path / "a.es")})
    name = tb.prepare(tb.PivotParallel, config, tmp_path / "tfds")
    rows = sorted(_rows(name, tmp_path / "tfds"), key=lambda r: r["line_index"])
    assert [(r["line_index"], r["source"], r["target"]) for r in rows] == [(0, "one", "uno"), (2, "three", "tres")]


def test_instructions_round_trip_equals_the_reader(instructions, data_dir):
    assert instructions == "pivot_instructions/alpaca_en:1.0.0"
    rows = sorted(_rows(instructions, data_dir), key=lambda r: int(r["id"]))
    expected = sources.read_records(ALPACA)
    assert len(rows) == len(expected) == 999
    assert rows == [{"id": str(n), "instruction": r["instruction"], "input": r["input"], "output": r["output"]}
                    for n, r in enumerate(expected, 1)]


def test_instructions_with_renamed_fields_keep_their_ids(tmp_path):
    path = tmp_path / "chat.jsonl"
    path.write_text('{"id": "q7", "prompt": "Say hi.", "response": "Hi!"}\n'
                    '{"id": 8, "prompt": "Add", "input": "2+2", "response": "4"}\n')
    config = tb.InstructionsConfig(name="chat", files={"train": path},
                                   fields={"prompt": "instruction", "response": "output"})
    rows = _rows(tb.prepare(tb.PivotInstructions, config, tmp_path / "tfds"), tmp_path / "tfds")
    assert sorted(rows, key=lambda r: r["id"]) == [
        {"id": "8", "instruction": "Add", "input": "2+2", "output": "4"},
        {"id": "q7", "instruction": "Say hi.", "input": "", "output": "Hi!"}]


def _rendered(task, split):
    ds = task.preprocessors[0](task.source.get_dataset(split=split, shuffle=False))
    return {ex["id"].decode(): (ex["inputs"].decode(), ex["targets"].decode()) for ex in ds.as_numpy_iterator()}


def test_task_renders_like_the_in_memory_renderer(parallel, data_dir, vocab):
    task = tb.tfds_task("tfds_test_translation", parallel, data_dir, _translation, seqio_vocabulary(vocab))
    assert sorted(task.splits) == ["test", "train"]
    expected = {e.id: (e.inputs, e.targets)
                for e in (formats.translation(s, t, "en", "es", i, id=f"en-es:{i}")
                          for i, s, t in sources.read_parallel(*TATOEBA))}
    assert _rendered(task, "train") == expected
    assert task.num_input_examples("train") == 5000
    first_lines = {inputs.split("### Instruction:\n")[1].split("\n")[0] for inputs, _ in expected.values()}
    assert len(first_lines) == 33  # the line index rotates all the templates


def test_packed_batches_through_seqio_stream(parallel, instructions, data_dir, vocab):
    v = seqio_vocabulary(vocab)
    tb.tfds_task("tfds_test_mt", parallel, data_dir, _translation, v, splits=["train"], max_length=128)
    alpaca = tb.tfds_task("tfds_test_alpaca", instructions, data_dir,
                          lambda r: formats.alpaca(r["instruction"], r["input"], r["output"], r["id"]), v,
                          splits={"train": "train[:90%]", "validation": "train[90%:]"}, max_length=128)
    counts = [alpaca.num_input_examples(split) for split in ("train", "validation")]
    assert sum(counts) == 999 and 90 < counts[1] < 110
    tasks.add_mixture("tfds_test_mix", ["tfds_test_mt", "tfds_test_alpaca"])

    def stream(skip):
        s = tasks.SeqioStream("tfds_test_mix", "train", 128, 4, seed=0, bos_id=vocab.eos_id)
        s.set_state({"batch_index": skip})
        return s

    first = stream(0)
    batches = [next(first) for _ in range(2)]
    assert set(batches[0]) == set(BATCH_KEYS) and batches[0]["decoder_target_tokens"].shape == (4, 128)
    for row in range(4):
        seg, tgt, w = (batches[0][k][row] for k in ("decoder_segment_ids", "decoder_target_tokens",
                                                    "decoder_loss_weights"))
        for s in range(1, seg.max() + 1):
            prompt = vocab.decode(tgt[(seg == s) & (w == 0)].tolist())
            response = tgt[(seg == s) & (w == 1)].tolist()
            assert prompt.startswith("Below is an instruction") and prompt.endswith("### Response:")
            assert response[-1] == vocab.eos_id and len(response) > 1
    assert np.array_equal(next(stream(1))["decoder_target_tokens"], batches[1]["decoder_target_tokens"])


def test_any_prepared_dataset_with_nested_features(tmp_path, vocab):
    class QaToy(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version("2.0.0")
        url_infos = None

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "context": tfds.features.Text(), "question": tfds.features.Text(),
                "answers": tfds.features.Sequence({"text": tfds.features.Text(), "start": np.int32})}))

        def _split_generators(self, dl_manager):
            return {"validation": self._generate_examples()}

        def _generate_examples(self):
            yield 0, {"context": "Paris is the capital.", "question": "Capital?",
                      "answers": {"text": ["Paris", "paris"], "start": [0, 0]}}

    name = tb.prepare(QaToy, None, tmp_path)
    assert name == "qa_toy:2.0.0"
    task = tb.tfds_task("tfds_test_qa", name, tmp_path, lambda ex: formats.qa(
        ex["context"], ex["question"], ex["answers"]["text"][0], "en" if ex["answers"]["start"] == [0, 0] else "?",
        id="q"), seqio_vocabulary(vocab))
    rendered = formats.qa("Paris is the capital.", "Capital?", "Paris", "en", id="q")
    assert _rendered(task, "validation") == {"q": (rendered.inputs, rendered.targets)}


def test_render_errors_name_the_dataset_and_example(instructions, data_dir, vocab):
    task = tb.tfds_task("tfds_test_bad", instructions, data_dir, lambda r: formats.qa("c", "q", "a", "xx"),
                        seqio_vocabulary(vocab))
    with pytest.raises(tf.errors.OpError, match=r"pivot_instructions/alpaca_en:1\.0\.0: cannot render example '\d+': "
                                        r"UnknownLanguageError: no QA prompt for language 'xx'"):
        _rendered(task, "train")


def test_a_dataset_not_prepared_in_data_dir_is_named_at_registration(tmp_path, vocab):
    with pytest.raises(tfds.core.DatasetNotFoundError, match=f"pivot_parallel/en_es:1.0.0.*{tmp_path}"):
        tb.tfds_task("tfds_test_absent", "pivot_parallel/en_es:1.0.0", tmp_path, _translation,
                     seqio_vocabulary(vocab))


def test_missing_and_misaligned_files_are_named(tmp_path):
    (tmp_path / "a.en").write_text("one\ntwo\nthree\n")
    (tmp_path / "a.es").write_text("uno\ndos\n")
    with pytest.raises(FileNotFoundError, match="nope.es"):
        tb.ParallelConfig(name="x", files={"train": (tmp_path / "a.en", tmp_path / "nope.es")})
    with pytest.raises(FileNotFoundError, match="nope.json"):
        tb.InstructionsConfig(name="x", files={"train": tmp_path / "nope.json"})
    config = tb.ParallelConfig(name="bad", files={"train": (tmp_path / "a.en", tmp_path / "a.es")})
    with pytest.raises(sources.DataError, match=r"misaligned parallel files: .*a\.en has 3 lines but .*a\.es has 2"):
        tb.prepare(tb.PivotParallel, config, tmp_path / "tfds")
    assert not tb.PivotParallel(config=config, data_dir=tmp_path / "tfds").is_prepared()
    (tmp_path / "bad.json").write_text('[{"instruction": "x", "output": "y"},\n {"instruction": "z"}]')
    with pytest.raises(sources.DataError, match=r"bad\.json: line 2 \(record 2\): missing required field 'output'"):
        tb.prepare(tb.PivotInstructions, tb.InstructionsConfig(name="bad", files={"train": tmp_path / "bad.json"}),
                   tmp_path / "tfds")


def test_preparing_again_reuses_and_changed_files_need_overwrite(tmp_path):
    (tmp_path / "a.en").write_text("one\n")
    (tmp_path / "a.es").write_text("uno\n")

    def config():
        return tb.ParallelConfig(name="tiny", files={"train": (tmp_path / "a.en", tmp_path / "a.es")})

    name = tb.prepare(tb.PivotParallel, config(), tmp_path / "tfds")
    assert tb.prepare(tb.PivotParallel, config(), tmp_path / "tfds") == name
    (tmp_path / "a.es").write_text("una\n")
    with pytest.raises(ValueError, match="already holds pivot_parallel/tiny:1.0.0, prepared from other files"):
        tb.prepare(tb.PivotParallel, config(), tmp_path / "tfds")
    tb.prepare(tb.PivotParallel, config(), tmp_path / "tfds", overwrite=True)
    assert _rows(name, tmp_path / "tfds")[0]["target"] == "una"


def test_command_line_prints_a_usable_tfds_name(tmp_path, capsys):
    (tmp_path / "a.en").write_text("one\n\nthree\n")
    (tmp_path / "a.es").write_text("uno\ndos\ntres\n")
    out = subprocess.run([sys.executable, "-m", "pivot_jax.data.tfds_builders", "parallel", "--source",
                          str(tmp_path / "a.en"), "--target", str(tmp_path / "a.es"), "--name", "cli_en_es",
                          "--data_dir", str(tmp_path / "tfds")], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "pivot_parallel/cli_en_es:1.0.0\n"
    rows = sorted(_rows(out.stdout.strip(), tmp_path / "tfds"), key=lambda r: r["line_index"])
    assert [(r["line_index"], r["target"]) for r in rows] == [(0, "uno"), (2, "tres")]  # "dos" has no source

    (tmp_path / "r.jsonl").write_text('{"q": "Hi?", "a": "Hello."}\n')
    name = tfds_command(["instructions", "--file", str(tmp_path / "r.jsonl"), "--fields", "instruction:q,output:a",
                    "--name", "cli_chat", "--data_dir", str(tmp_path / "tfds")])
    assert capsys.readouterr().out == "pivot_instructions/cli_chat:1.0.0\n" and name.startswith("pivot_instructions/")
    assert _rows(name, tmp_path / "tfds") == [{"id": "1", "instruction": "Hi?", "input": "", "output": "Hello."}]


@pytest.mark.parametrize("name", ["../../escape", "..", "a/b", "{tmp}/abs", "en.es", "en-es", "En_es", "1st", "_x",
                                  "", "x\n"])
def test_dataset_names_cannot_leave_data_dir(tmp_path, name, capsys, monkeypatch):
    monkeypatch.delenv("PIVOT_JAX_VERBOSE", raising=False)
    name = name.format(tmp=tmp_path)  # an absolute name is the path itself: keep it where the test may write
    (tmp_path / "in").mkdir()
    for suffix, line in (("en", "one\n"), ("es", "uno\n")):
        (tmp_path / "in" / f"a.{suffix}").write_text(line)
    (tmp_path / "in" / "r.jsonl").write_text('{"instruction": "Hi?", "output": "Hello."}\n')
    data_dir = tmp_path / "out" / "D"
    commands = (["parallel", "--source", str(tmp_path / "in/a.en"), "--target", str(tmp_path / "in/a.es")],
                ["instructions", "--file", str(tmp_path / "in/r.jsonl")])
    for command in commands:
        with pytest.raises(PivotError) as info:  # --verbose: the error itself
            tfds_command([*command, "--name", name, "--data_dir", str(data_dir), "--verbose"])
        assert isinstance(info.value, ValueError)
        assert f"--name {name!r}" in str(info.value)
        with pytest.raises(SystemExit):  # the command line: one line naming the flag
            tfds_command([*command, "--name", name, "--data_dir", str(data_dir)])
        assert f"error: --name {name!r}" in capsys.readouterr().err
    with pytest.raises(PivotError, match=f"ParallelConfig name {re.escape(repr(name))}"):
        tb.ParallelConfig(name=name, files={"train": (tmp_path / "in/a.en", tmp_path / "in/a.es")})
    with pytest.raises(PivotError, match=f"InstructionsConfig name {re.escape(repr(name))}"):
        tb.InstructionsConfig(name=name, files={"train": tmp_path / "in/r.jsonl"})
    assert not (tmp_path / "out").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["in"]
