import importlib.util
import json
from pathlib import Path

import pytest

from pivot_jax.config import RANGES, base_config, flatten, parse_arg, resume_differences, validate
from pivot_jax.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def load(name, arg=None):
    spec = importlib.util.spec_from_file_location(name, CONFIGS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def test_method_configs_follow_the_papers():
    coit = load("coit", "lang=ar,model=llama-7b")
    assert (coit.optimizer.lr, coit.train.epochs, coit.train.global_batch_size, coit.optimizer.schedule,
            coit.optimizer.warmup_ratio, coit.train.seq_len) == (2e-5, 3.0, 128, "cosine", 0.03, 512)
    assert (coit.data.method, coit.data.langs, coit.model.preset) == ("coit", "ar", "llama-7b")
    plug = load("plug", "lang=ko")
    assert (plug.optimizer.lr, plug.train.epochs, plug.train.global_batch_size, plug.optimizer.schedule,
            plug.optimizer.warmup_ratio, plug.train.seq_len) == (5e-6, 4.0, 64, "linear", 0.03, 4096)
    assert load("plug", "lang=ko,baseline=true").data.method == "plug_monolingual"
    muit = load("muit", "langs=es+zh,amounts=es:100+zh:200")
    assert (muit.data.langs, muit.data.translation_amount) == ("es,zh", "es:100,zh:200")
    assert load("xinstruct").data.method == "xinstruct"
    tiny = load("tiny")
    assert tiny.model.preset == "tiny" and tiny.data.source == "synthetic"


def test_config_arguments_are_checked():
    assert parse_arg("lang=zh", lang="es", model="m").lang == "zh"
    with pytest.raises(ValueError, match="langg"):
        parse_arg("langg=zh", lang="es")


def test_smollm2_configs_point_at_the_packaged_model_and_their_test_data(smollm2_gguf):
    coit = load("smollm2_coit", "lang=es,flores=/data/flores200_devtest,limit=50")
    assert coit.model.init_from == f"gguf:{smollm2_gguf}" and coit.eval.generate_at_start
    assert coit.eval.generate_config.endswith("flores.py:src=en,tgt=es,limit=50,dir=/data/flores200_devtest,"
                                              "new_tokens=160")
    assert coit.eval.generate_every_steps == coit.train.steps == 80 and coit.data.method == "coit"
    plug = load("smollm2_plug", "lang=es,xquad=/data/xquad")
    assert (plug.data.method, plug.data.alpaca_pivot, plug.data.alpaca_target, plug.data.validation_fraction) == (
        "plug", "/data/xquad/xquad.en.json", "/data/xquad/xquad.{lang}.json", 0.2)
    assert "format=plug," in plug.eval.generate_config and "held_out=0.2" in plug.eval.generate_config
    mono = load("smollm2_plug", "lang=es,xquad=/data/xquad,baseline=true")
    assert mono.data.method == "plug_monolingual" and "format=plug_monolingual," in mono.eval.generate_config
    assert (mono.train.steps, mono.train.global_batch_size, mono.optimizer.lr) == (
        plug.train.steps, plug.train.global_batch_size, plug.optimizer.lr)  # the same budget
    with pytest.raises(ValueError, match="flores=DIR"):
        load("smollm2_coit")
    with pytest.raises(ValueError, match="xquad=DIR"):
        load("smollm2_plug")


@pytest.mark.slow
def test_smollm2_plug_runs_and_reports(smollm2_gguf, tmp_path):
    """The real model through the PLUG config: step-0 and final evaluation on held-out articles, report."""
    import json

    from pivot_jax.trainer import loop

    shared = CONFIGS.parents[1] / "shared" / "data"
    if not shared.exists():
        pytest.skip(f"{shared} is absent")
    config = load("smollm2_plug", f"lang=es,xquad={shared / 'xquad'},limit=2,steps=1")
    config.mesh.data, config.mesh.fsdp = 1, -1  # params + Adam sharded over the 8 forced CPU devices, not copied
    config.train.global_batch_size = 8  # one row per device
    config.train.seq_len = 256
    config.data.overflow = "truncate"
    config.eval.steps = 1
    loop.train(config, tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "results_index.jsonl").read_text().splitlines()]
    metrics = {(r["step"], r["metric"]) for r in rows}
    assert {(0, "f1"), (1, "f1"), (0, "plug_marker_not_found"), (1, "language_fidelity")} <= metrics
    assert all(r["samples"] == 2 and r["protocol"] == "xquad/es/plug/greedy" for r in rows)
    assert "| f1 |" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize("key, value, message", [
    ("train.seq_len", 0, "train.seq_len=0: must be >= 2"),
    ("optimizer.lr", -1.0, "optimizer.lr=-1.0: must be > 0 and finite"),
    ("optimizer.lr", float("nan"), "optimizer.lr=nan: must be > 0 and finite"),
    ("train.log_every_steps", 0, "train.log_every_steps=0: must be >= 1"),
    ("train.global_batch_size", 0, "train.global_batch_size=0"),
    ("optimizer.b2", 1.0, r"optimizer.b2=1.0: must be in \[0, 1\)"),
    ("optimizer.eps", 0.0, "optimizer.eps=0.0"),
    ("train.epochs", float("inf"), "train.epochs=inf"),
    ("mesh.fsdp", 0, "mesh.fsdp=0: must be >= 1, or -1"),
    ("eval.steps", 0, "eval.steps=0"),
    ("checkpoint.keep", -1, "checkpoint.keep=-1"),
    ("data.validation_fraction", 1.0, "data.validation_fraction=1.0"),
    ("model.dtype", "float8", "model.dtype='float8'"),
    ("model.preset", "llama9", "model.preset='llama9'"),
    ("model.attention", "flash", r"model.attention='flash': must be one of \('auto', 'xla', 'splash'"),
    ("train.loss_chunk", -1, "train.loss_chunk=-1: must be >= 0"),
    ("train.loss_positions", -2, "train.loss_positions=-2: must be >= 0"),
])
def test_out_of_range_values_are_refused_naming_key_and_value(key, value, message):
    config = base_config()
    section, leaf = key.split(".")
    config[section][leaf] = value
    with pytest.raises(ConfigError, match=message):
        validate(config)


def test_every_numeric_key_of_the_schema_has_a_range():
    numeric = {key for key, value in flatten(base_config())
               if isinstance(value, (int, float)) and not isinstance(value, bool)}
    assert numeric <= set(RANGES), sorted(numeric - set(RANGES))
    validate(base_config())
    for name in ("coit", "muit", "plug", "xinstruct", "tiny", "quickstart"):
        validate(load(name))


def test_resume_differences_name_run_defining_keys_only():
    saved = json.loads(base_config().to_json_best_effort())
    config = base_config()
    config.optimizer.lr, config.eval.steps, config.mesh.fsdp, config.checkpoint.keep = 5e-3, 9, 2, 1
    assert resume_differences(saved, config) == ["optimizer.lr: saved 0.001, now 0.005"]
    config.resume_allow = "optimizer"
    assert resume_differences(saved, config) == []
    config.train.epochs, config.train.steps = 2.0, 77  # steps derived from epochs: compared through the data
    assert resume_differences(saved, config) == ["train.epochs: saved 0.0, now 2.0"]
    del saved["data"]["tfds_dir"]  # an older schema without the key: not compared
    config.data.tfds_dir = "/x"
    assert resume_differences(saved, config) == ["train.epochs: saved 0.0, now 2.0"]


def test_pairs_eval_is_exactly_what_training_held_out():
    """configs/eval/pairs.py scores the Tatoeba pairs `data.validation_fraction` kept out of training: the same
    pairs, none of the training ones (configs/sweeps/tatoeba.py evaluates its points on them)."""
    from pivot_jax.config import load_config_file
    from pivot_jax.data.mixtures import translation_pairs
    from pivot_jax.eval.items import build_items

    tatoeba = CONFIGS.parents[1] / "shared" / "data" / "tatoeba_parallel"
    if not tatoeba.exists():
        pytest.skip(f"{tatoeba} is absent")
    data = base_config().data
    data.parallel_source = f"{tatoeba}/tatoeba.en-{{lang}}.en"
    data.parallel_target = f"{tatoeba}/tatoeba.en-{{lang}}.{{lang}}"
    data.validation_fraction = 0.02
    split = translation_pairs(data, "es")
    items = build_items(load_config_file(f"{CONFIGS}/eval/pairs.py:tgt=es,src_file={tatoeba}/tatoeba.en-es.en,"
                                         f"tgt_file={tatoeba}/tatoeba.en-es.es,held_out=0.02"))
    assert sorted((i.source, i.references[0]) for i in items) == sorted((s, t) for _, s, t in split["validation"])
    assert 80 < len(items) < 120 and not {(s, t) for _, s, t in split["train"]} & {(i.source, i.references[0])
                                                                                  for i in items}


def test_sweep_files_load():
    from pivot_jax.sweep.spec import load_sweep

    assert len(load_sweep(f"{CONFIGS}/sweeps/quickstart.py").points) == 12
    tatoeba = load_sweep(f"{CONFIGS}/sweeps/tatoeba.py:data=DATA")
    assert len(tatoeba.points) == 14 and tatoeba.points[1].overrides["eval.generate_config"].endswith(
        "tgt=es,src_file=DATA/tatoeba.en-es.en,tgt_file=DATA/tatoeba.en-es.es,held_out=0.02")
