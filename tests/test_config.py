import importlib.util
from pathlib import Path

import pytest

from pivot_jax.config import parse_arg

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
