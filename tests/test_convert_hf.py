import json

import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from safetensors.numpy import load_file, save_file

from pivot_jax import model as M
from pivot_jax.convert import hf, model_dir
from pivot_jax.convert.__main__ import main as convert_main
from pivot_jax.convert.layout import WeightsError
from tests.conftest import build_tiny_hf


def _logits(cfg, params, tokens):
    model = M.create(cfg)
    nnx.update(model, params)
    return np.asarray(model(tokens)[0])


def test_sharded_index_is_read(tiny_hf):
    _, directory, _ = tiny_hf
    assert (directory / hf.INDEX_FILE).exists()
    source = hf.SafetensorsSource(directory)
    assert "model.layers.1.mlp.down_proj.weight" in source.keys()


def test_export_loads_in_transformers_with_same_logits(tiny_hf, tmp_path):
    name, directory, hf_model = tiny_hf
    cfg, params = hf.load_params(directory)
    hf.save_params(tmp_path / "out", cfg, params, max_shard_bytes=40_000)
    assert (tmp_path / "out" / hf.INDEX_FILE).exists()
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    tokens = torch.tensor(np.random.RandomState(0).randint(0, 128, (1, 40)))
    with torch.no_grad():
        np.testing.assert_array_equal(reloaded(tokens).logits.numpy(), hf_model(tokens).logits.numpy())
    assert reloaded.config.tie_word_embeddings == cfg.tie_embeddings


def test_bfloat16_export_and_import(tmp_path):
    build_tiny_hf("gqa", tmp_path / "src")
    cfg, params = hf.load_params(tmp_path / "src", dtype="bfloat16")
    assert params["embed"].dtype.name == "bfloat16"
    hf.save_params(tmp_path / "bf16", cfg, params)
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "bf16", dtype=torch.bfloat16)
    assert model.model.embed_tokens.weight.dtype == torch.bfloat16


def test_cli_round_trip_through_orbax(tmp_path):
    hf_model = build_tiny_hf("llama3", tmp_path / "src")
    convert_main(["hf-to-orbax", str(tmp_path / "src"), str(tmp_path / "orbax")])
    assert (tmp_path / "orbax" / model_dir.CONFIG_FILE).exists()
    convert_main(["orbax-to-hf", str(tmp_path / "orbax"), str(tmp_path / "back")])
    src = load_file(tmp_path / "src" / "model.safetensors")
    back = load_file(tmp_path / "back" / "model.safetensors")
    assert src.keys() == back.keys()
    for key in src:
        np.testing.assert_array_equal(src[key], back[key], err_msg=key)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "back")
    assert reloaded.config.rope_parameters["rope_type"] == "llama3"
    tokens = torch.tensor([[5, 9, 2, 7] * 8])
    with torch.no_grad():
        np.testing.assert_array_equal(reloaded(tokens).logits.numpy(), hf_model(tokens).logits.numpy())
    with pytest.raises(FileExistsError, match="already holds a model"):
        convert_main(["hf-to-orbax", str(tmp_path / "src"), str(tmp_path / "orbax")])


def test_orbax_restore_rejects_a_config_that_does_not_match(tmp_path):
    build_tiny_hf("gqa", tmp_path / "src")
    cfg, params = hf.load_params(tmp_path / "src")
    model_dir.save(tmp_path / "m", cfg, params)
    restored_cfg, restored = model_dir.load_params(tmp_path / "m")
    assert restored_cfg == cfg
    np.testing.assert_array_equal(restored["layers"]["mlp"]["up_proj"], params["layers"]["mlp"]["up_proj"])
    with pytest.raises(ValueError, match=r"layers/mlp/down_proj has shape \(2, 96, 64\), the config expects \(2, 128, 64\)"):
        model_dir.load_params(tmp_path / "m", cfg.replace(mlp_dim=128))


@pytest.fixture
def broken(tmp_path):
    build_tiny_hf("gqa", tmp_path)
    return tmp_path, load_file(tmp_path / "model.safetensors")


def test_missing_tensor_is_named(broken):
    directory, tensors = broken
    del tensors["model.layers.1.self_attn.k_proj.weight"]
    save_file(tensors, directory / "model.safetensors")
    with pytest.raises(WeightsError, match=r"model\.layers\.1\.self_attn\.k_proj\.weight"):
        hf.load_params(directory)


def test_misshapen_tensor_is_named(broken):
    directory, tensors = broken
    tensors["model.layers.0.mlp.up_proj.weight"] = np.zeros((95, 64), np.float32)
    save_file(tensors, directory / "model.safetensors")
    with pytest.raises(WeightsError, match=r"up_proj\.weight has shape \(95, 64\).*\(96, 64\)"):
        hf.load_params(directory)


def test_config_that_does_not_match_the_weights(broken):
    directory, _ = broken
    config = json.loads((directory / "config.json").read_text())
    config["num_hidden_layers"] = 1
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match=r"unexpected tensor.*model\.layers\.1"):
        hf.load_params(directory)
    del config["hidden_size"]
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="missing key 'hidden_size'"):
        hf.load_params(directory)


def test_pickle_checkpoints_are_refused(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(FileNotFoundError, match="pickle"):
        hf.SafetensorsSource(tmp_path)


def test_unsupported_rope_type_is_named():
    with pytest.raises(WeightsError, match="yarn"):
        hf.config_from_hf({"vocab_size": 8, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
                           "intermediate_size": 8, "rope_scaling": {"rope_type": "yarn", "factor": 2.0}})


def _indexed(directory, shard):
    """A model directory whose index puts tensor 'a' in a shard of its own and tensor 'b' in `shard`; the index."""
    directory.mkdir(parents=True, exist_ok=True)
    save_file({"a": np.zeros(2, np.float32)}, directory / "model-00001-of-00002.safetensors")
    index = directory / hf.INDEX_FILE
    index.write_text(json.dumps({"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors", "b": shard}}))
    return index


@pytest.mark.parametrize("shard", ["../outside.safetensors", "{outside}", "sub/../../outside.safetensors", "..",
                                   "link.safetensors", "linked_dir/outside.safetensors", "", 3, None])
def test_index_shards_must_stay_in_the_model_directory(tmp_path, shard):
    outside = tmp_path / "outside.safetensors"
    save_file({"b": np.ones(2, np.float32)}, outside)
    shard = shard.format(outside=outside) if isinstance(shard, str) else shard
    index = _indexed(tmp_path / "model", shard)
    (tmp_path / "model" / "sub").mkdir()
    (tmp_path / "model" / "link.safetensors").symlink_to(outside)
    (tmp_path / "model" / "linked_dir").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(WeightsError) as info:
        hf.SafetensorsSource(tmp_path / "model")
    assert f"{index}: tensor 'b'" in str(info.value) and f"shard {shard!r}" in str(info.value)


def test_index_shards_in_subfolders_and_the_hub_cache_layout_load(tmp_path):
    _indexed(tmp_path / "plain", "sub/../sub/model-00002-of-00002.safetensors")
    (tmp_path / "plain" / "sub").mkdir()
    save_file({"b": np.ones(2, np.float32)}, tmp_path / "plain" / "sub" / "model-00002-of-00002.safetensors")
    assert sorted(hf.SafetensorsSource(tmp_path / "plain").keys()) == ["a", "b"]
    # The Hugging Face cache: a snapshot's files are links into its repository's blobs/.
    repo = tmp_path / "hub" / "models--org--tiny"
    (repo / "blobs").mkdir(parents=True)
    save_file({"b": np.ones(2, np.float32)}, repo / "blobs" / "0123abcd")
    snapshot = repo / "snapshots" / "rev1"
    _indexed(snapshot, "model-00002-of-00002.safetensors")
    (snapshot / "model-00002-of-00002.safetensors").symlink_to("../../blobs/0123abcd")
    assert sorted(hf.SafetensorsSource(snapshot).keys()) == ["a", "b"]
