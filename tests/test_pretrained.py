"""The public API and CLIs on the real SmolLM2-135M-Instruct GGUF (skipped with a reason if not installed)."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

import pivot_jax
from pivot_jax.convert.__main__ import main as convert_main

PROMPTS = ["What is the capital of Spain?", "Translate to Italian: good morning, my friend"]


@pytest.fixture(scope="module")
def smollm2(smollm2_gguf):
    return pivot_jax.load_pretrained(f"gguf:{smollm2_gguf}")


@pytest.fixture(scope="module")
def hf_smollm2(smollm2_gguf):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate", reason="transformers needs accelerate to load GGUF files")
    return transformers.AutoModelForCausalLM.from_pretrained(
        str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name, dtype=torch.float32).eval()


def test_loaded_model_has_config_params_tokenizer(smollm2):
    assert smollm2.config.num_params() == 134_515_008
    assert smollm2.config.tie_embeddings and smollm2.config.num_kv_heads == 3
    assert smollm2.params["layers"]["attn"]["q_proj"].shape == (30, 576, 9, 64)
    assert smollm2.tokenizer.decode(smollm2.tokenizer.encode("Hola, ¿qué tal?")) == "Hola, ¿qué tal?"
    logits = smollm2.logits([[1, 2, 3, 4], [5, 6, 7, 8]])
    assert logits.shape == (2, 4, 49152) and logits.dtype == np.float32


def test_greedy_chat_generation_matches_transformers(smollm2, hf_smollm2):
    ids = smollm2.encode_prompts(PROMPTS, chat=True)
    texts, counts = smollm2.generate_with_counts(PROMPTS, max_new_tokens=24, chat=True)
    tok = smollm2.tokenizer
    length = max(len(p) for p in ids)
    with torch.no_grad():
        out = hf_smollm2.generate(
            input_ids=torch.tensor([[tok.pad_id] * (length - len(p)) + p for p in ids]),
            attention_mask=torch.tensor([[0] * (length - len(p)) + [1] * len(p) for p in ids]),
            max_new_tokens=24, do_sample=False, pad_token_id=tok.pad_id, eos_token_id=sorted(tok.stop_ids))
    for row, text, count in zip(out[:, length:].tolist(), texts, counts):
        stop = next((i + 1 for i, t in enumerate(row) if t in tok.stop_ids), len(row))
        assert count == stop
        assert text == tok.decode(row[:stop])


def test_orbax_round_trip_and_hf_export(smollm2, tmp_path, hf_smollm2):
    smollm2.save(tmp_path / "orbax")
    again = pivot_jax.load_pretrained(f"orbax:{tmp_path / 'orbax'}")
    tokens = [[1, 300, 2000, 45, 9]]
    np.testing.assert_array_equal(again.logits(tokens), smollm2.logits(tokens))
    assert again.tokenizer.encode("¿Dónde está la biblioteca?") == smollm2.tokenizer.encode("¿Dónde está la biblioteca?")

    convert_main(["orbax-to-hf", str(tmp_path / "orbax"), str(tmp_path / "hf")])
    transformers = pytest.importorskip("transformers")
    exported = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32)
    with torch.no_grad():
        ref = hf_smollm2(torch.tensor(tokens)).logits.numpy()
        np.testing.assert_allclose(exported(torch.tensor(tokens)).logits.numpy(), ref, atol=1e-4)
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert hf_tok.encode("Buongiorno a tutti!") == smollm2.tokenizer.encode("Buongiorno a tutti!")


def test_gguf_to_orbax_cli(smollm2_gguf, tmp_path):
    convert_main(["gguf-to-orbax", str(smollm2_gguf), str(tmp_path / "m"), "--dtype", "bfloat16"])
    m = pivot_jax.load_pretrained(f"orbax:{tmp_path / 'm'}")
    assert m.params["embed"].dtype.name == "bfloat16"


def test_generate_cli(smollm2_gguf):
    result = subprocess.run([sys.executable, "-m", "pivot_jax.generate", "--model", f"gguf:{smollm2_gguf}",
                             "--prompt", PROMPTS[0], "--chat", "--max_new_tokens", "12"],
                            capture_output=True, text=True, check=True)
    assert result.stdout.startswith(f"### {PROMPTS[0]}\n") and len(result.stdout.split("\n", 1)[1].strip()) > 0
    assert "new tokens in" in result.stderr


def test_bad_specs_are_named(tmp_path):
    with pytest.raises(ValueError, match="hf:DIR, gguf:FILE, orbax:DIR or run:WORKDIR"):
        pivot_jax.load_pretrained("weights.bin")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        pivot_jax.load_pretrained(f"hf:{tmp_path / 'nowhere'}")
    with pytest.raises(FileNotFoundError, match="config.json"):
        pivot_jax.load_pretrained(f"orbax:{tmp_path}")


def _run_dir(tmp_path, text: str):
    (tmp_path / "config.json").write_text(text, encoding="utf-8")
    return f"run:{tmp_path}"


@pytest.mark.parametrize("drop, message", [
    (("model", "param_dtype"), r"missing key 'model\.param_dtype' \(expected a string, e\.g\. 'float32'\)"),
    (("model", "scan_layers"), r"missing key 'model\.scan_layers' \(expected a boolean, e\.g\. True\)"),
    (("model", None), r"missing key 'model' \(expected the model section of a training config\)"),
])
def test_run_config_missing_keys_are_named(tmp_path, drop, message):
    from pivot_jax.config import base_config
    from pivot_jax.errors import PivotError
    from pivot_jax.pretrained import read_config

    saved = base_config().to_dict()
    section, key = drop
    del (saved[section] if key else saved)[key or section]
    spec = _run_dir(tmp_path, json.dumps(saved))
    with pytest.raises(PivotError, match=rf"{re.escape(str(tmp_path / 'config.json'))}: {message}"):
        read_config(spec)


def test_run_config_wrong_types_and_non_json_are_named(tmp_path):
    from pivot_jax.config import base_config
    from pivot_jax.errors import PivotError
    from pivot_jax.pretrained import load_tokenizer, read_config

    saved = base_config().to_dict()
    saved["model"]["max_seq_len"] = "long"
    with pytest.raises(PivotError, match=r"config\.json: key 'model\.max_seq_len' should be an integer, got 'long'"):
        read_config(_run_dir(tmp_path, json.dumps(saved)))
    saved = base_config().to_dict()
    del saved["data"]["tokenizer"]
    with pytest.raises(PivotError, match=r"config\.json: missing key 'data\.tokenizer'"):
        load_tokenizer(_run_dir(tmp_path, json.dumps(saved)))
    with pytest.raises(PivotError, match=r"config\.json: line 1: invalid JSON"):
        read_config(_run_dir(tmp_path, "model:\n  preset: tiny\n"))
    with pytest.raises(PivotError, match=r"config\.json: expected a JSON object \(a training config\), got list"):
        read_config(_run_dir(tmp_path, "[]"))


def test_run_config_leaves_attention_to_the_reading_machine(tmp_path):
    from pivot_jax.config import base_config
    from pivot_jax.pretrained import read_config

    saved = base_config().to_dict()
    del saved["model"]["attention"]  # a run saved before model.attention existed
    assert read_config(_run_dir(tmp_path, json.dumps(saved))).attention == "auto"
    saved["model"]["attention"] = "splash"  # trained on a TPU, read elsewhere
    assert read_config(_run_dir(tmp_path, json.dumps(saved))).attention == "auto"


# ---------------------------------------------------------------------------------------------------------------
# The spec parser


@pytest.mark.parametrize("text, scheme, path, step", [
    ("hf:/models/llama", "hf", "/models/llama", None),
    ("gguf:/models/smol.gguf", "gguf", "/models/smol.gguf", None),
    ("orbax:relative/dir", "orbax", "relative/dir", None),
    ("run:/runs/coit", "run", "/runs/coit", None),
    ("run:/runs/coit@1200", "run", "/runs/coit", 1200),
    ("run:/runs/a@b", "run", "/runs/a@b", None),  # an "@" not followed by digits belongs to the name
    ("run:/runs/x@2@30", "run", "/runs/x@2", 30),
    ("hf:a:b", "hf", "a:b", None),  # only the first ":" separates the scheme
])
def test_parse_spec_schemes(text, scheme, path, step):
    from pathlib import Path

    from pivot_jax.pretrained import ModelSpec, parse_spec

    parsed = parse_spec(text)
    assert parsed == ModelSpec(scheme, Path(path), step)
    assert isinstance(parsed.path, Path) and parsed.languages == () and parsed.has_weights
    assert str(parsed) == text


def test_parse_spec_expands_home_and_keeps_urls(monkeypatch, tmp_path):
    from pivot_jax.pretrained import parse_spec

    monkeypatch.setenv("HOME", str(tmp_path))
    assert parse_spec("hf:~/m").path == tmp_path / "m"
    url = parse_spec("orbax:gs://bucket/models/m@5")
    assert str(url.path) == "gs://bucket/models/m@5" and url.step is None  # @STEP is run:'s alone
    assert str(url.path / "config.json") == "gs://bucket/models/m@5/config.json"  # not pathlib's gs:/bucket
    run = parse_spec("run:gs://bucket/runs/coit@40")
    assert str(run.path) == "gs://bucket/runs/coit" and run.step == 40


def test_parse_spec_cldr_is_a_tokenizer_only(tmp_path):
    from pivot_jax.errors import ConfigError
    from pivot_jax.pretrained import ModelSpec, load_params_onto, load_pretrained, parse_spec, read_config

    assert parse_spec("cldr:es,zh") == ModelSpec("cldr", languages=("es", "zh"))
    assert parse_spec("cldr: es + zh ,").languages == ("es", "zh")
    cldr = parse_spec("cldr:sw")
    assert cldr.path is None and not cldr.has_weights and str(cldr) == "cldr:sw"
    for load in (read_config, load_pretrained, lambda spec: load_params_onto(spec, None)):
        with pytest.raises(ConfigError, match=r"'cldr:es' names a tokenizer only, not weights") as info:
            load("cldr:es")
        assert "data.tokenizer" in info.value.hint


@pytest.mark.parametrize("text", ["weights.bin", "hf", "hf:", "hf:  ", "safetensors:/m", "gs://bucket/m", "cldr:",
                                  "cldr: , +", ":/m", "HF:/m"])
def test_bad_spec_names_itself_and_every_form(text):
    from pivot_jax.errors import ConfigError
    from pivot_jax.pretrained import parse_spec

    with pytest.raises(ConfigError) as info:
        parse_spec(text)
    message = str(info.value)
    assert message.startswith(f"model spec {text!r} must look like ")
    for form in ("hf:DIR", "gguf:FILE", "orbax:DIR", "run:WORKDIR[@STEP]", "cldr:LANG[,LANG...]"):
        assert form in message
    assert isinstance(info.value, ValueError)


def test_missing_paths_are_named_where_loaded(tmp_path):
    from pivot_jax.pretrained import load_tokenizer, parse_spec, read_config

    spec = f"gguf:{tmp_path / 'absent.gguf'}"
    assert parse_spec(spec).path == tmp_path / "absent.gguf"  # parsing reads nothing
    for load in (read_config, load_tokenizer):
        with pytest.raises(FileNotFoundError, match=rf"model spec '{re.escape(spec)}': .*absent\.gguf does not exist"):
            load(spec)


def test_tokenizer_spec_prefers_data_tokenizer():
    from pivot_jax.config import base_config
    from pivot_jax.errors import ConfigError
    from pivot_jax.pretrained import tokenizer_spec

    config = base_config()
    config.model.init_from = "gguf:/m.gguf"
    assert tokenizer_spec(config.data, config.model, "data.source='seqio'") == "gguf:/m.gguf"
    config.data.tokenizer = "cldr:es"
    assert tokenizer_spec(config.data, config.model, "data.source='seqio'") == "cldr:es"
    config.data.tokenizer = config.model.init_from = ""
    with pytest.raises(ConfigError, match=re.escape("data.source='seqio' needs a tokenizer: set data.tokenizer "
                                                    "(or model.init_from)")) as info:
        tokenizer_spec(config.data, config.model, "data.source='seqio'")
    assert "cldr:" in info.value.hint


def test_run_without_tokenizer_loads_as_weights_without_one(tmp_path):
    from pivot_jax.config import base_config
    from pivot_jax.pretrained import load_tokenizer

    saved = base_config().to_dict()
    spec = _run_dir(tmp_path, json.dumps(saved))
    with pytest.raises(FileNotFoundError, match="the run names no tokenizer"):  # load_pretrained: tokenizer None
        load_tokenizer(spec)
    saved["data"]["tokenizer"] = "cldr:es"
    assert load_tokenizer(_run_dir(tmp_path, json.dumps(saved))).vocab_size > 100


def test_a_model_section_saved_before_the_attention_key_reads_as_auto():
    """collect and reports read config.json files of older runs, whose model section lacks `attention`."""
    from ml_collections import ConfigDict

    from pivot_jax.config import base_config
    from pivot_jax.pretrained import model_config

    saved = base_config().model.to_dict()
    del saved["attention"]
    assert model_config(ConfigDict(saved)).attention == "auto"
