"""GGUF import: synthetic llama.cpp-style files against transformers, and the published SmolLM2 Q4_1 file."""

from __future__ import annotations

import signal
import struct
from pathlib import Path

import gguf
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from gguf import GGMLQuantizationType as QType

from pivot_jax.convert.gguf import load_params, read_config
from pivot_jax.convert.layout import WeightsError
from pivot_jax.model import Llama3RopeScaling, create, rope_inverse_frequencies

TYPES = [QType.F32, QType.F16, QType.BF16, QType.Q8_0, QType.Q4_0, QType.Q4_1]

TINY = dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            rms_norm_eps=1e-5, max_position_embeddings=256)
VARIANTS = {
    "gqa": dict(TINY, num_key_value_heads=2, tie_word_embeddings=False, rope_parameters={"rope_theta": 10000.0}),
    "tied": dict(TINY, num_key_value_heads=4, tie_word_embeddings=True, rope_parameters={"rope_theta": 50000.0}),
    "head_dim": dict(TINY, num_key_value_heads=1, head_dim=32, tie_word_embeddings=False,
                     rope_parameters={"rope_theta": 10000.0}),
}

_GLOBAL = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
           "lm_head.weight": "output.weight"}
_LAYER = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
          "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
          "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}


def gguf_name(hf: str) -> str:
    if hf in _GLOBAL:
        return _GLOBAL[hf]
    _, _, layer, rest = hf.split(".", 3)
    return f"blk.{layer}.{_LAYER[rest.removesuffix('.weight')]}.weight"


def llama_cpp_permute(w: np.ndarray, heads: int) -> np.ndarray:
    """What llama.cpp's convert_hf_to_gguf does to q_proj/k_proj rows (rotate-half -> interleaved pairs)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def encode(array: np.ndarray, qtype: QType) -> np.ndarray:
    try:
        return gguf.quants.quantize(array, qtype)
    except NotImplementedError:  # gguf-py cannot quantize K-quants; all-zero blocks are valid ones
        return np.zeros(gguf.quants.quant_shape_to_byte_shape(array.shape, qtype), np.uint8)


def roundtrip(array: np.ndarray, qtype: QType) -> np.ndarray:
    return gguf.quants.dequantize(encode(array, qtype), qtype)


def random_hf_model(seed: int = 0, **config) -> transformers.LlamaForCausalLM:
    """A tiny HF LLaMA whose weights are large enough that attention is far from uniform (so q/k layout shows)."""
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**config)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            else:
                p.normal_(0.0, 0.25)
    return model


def hf_tensors(model: transformers.LlamaForCausalLM) -> dict[str, np.ndarray]:
    tensors = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        tensors.pop("lm_head.weight")
    return tensors


def write_gguf(path: Path, config: transformers.LlamaConfig, tensors: dict[str, np.ndarray], qtype: QType, *,
               arch: str = "llama", vocab: tuple[str, ...] = ("metadata", "tokens"), drop_keys: tuple[str, ...] = (),
               drop_tensors: tuple[str, ...] = (), types: dict[str, QType] | None = None,
               extra: dict[str, np.ndarray] | None = None) -> Path:
    """A GGUF file laid out the way llama.cpp's convert_hf_to_gguf writes a LLaMA (norms stay F32)."""
    writer = gguf.GGUFWriter(path, arch)
    writer.add_string("general.name", "tiny-test-llama")
    ints = {"block_count": config.num_hidden_layers, "context_length": config.max_position_embeddings,
            "embedding_length": config.hidden_size, "feed_forward_length": config.intermediate_size,
            "attention.head_count": config.num_attention_heads,
            "attention.head_count_kv": config.num_key_value_heads, "attention.key_length": config.head_dim,
            "attention.value_length": config.head_dim, "rope.dimension_count": config.head_dim}
    if "metadata" in vocab:
        ints["vocab_size"] = config.vocab_size
    floats = {"attention.layer_norm_rms_epsilon": config.rms_norm_eps,
              "rope.freq_base": config.rope_parameters["rope_theta"]}
    for key, value in ints.items():
        if f"{arch}.{key}" not in drop_keys:
            writer.add_uint32(f"{arch}.{key}", value)
    for key, value in floats.items():
        if f"{arch}.{key}" not in drop_keys:
            writer.add_float32(f"{arch}.{key}", value)
    writer.add_tokenizer_model("gpt2")
    if "tokens" in vocab:
        writer.add_token_list([f"<t{i}>" for i in range(config.vocab_size)])
    types = types or {}
    for hf, array in tensors.items():
        name = gguf_name(hf)
        if name in drop_tensors:
            continue
        if hf.endswith("q_proj.weight"):
            array = llama_cpp_permute(array, config.num_attention_heads)
        elif hf.endswith("k_proj.weight"):
            array = llama_cpp_permute(array, config.num_key_value_heads)
        tensor_type = types.get(name, QType.F32 if array.ndim == 1 else qtype)
        encoded = encode(np.ascontiguousarray(array, np.float32), tensor_type)
        writer.add_tensor(name, encoded, raw_dtype=None if encoded.dtype != np.uint8 else tensor_type)
    for name, array in (extra or {}).items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def our_logits(path: Path, tokens: np.ndarray, change=None) -> np.ndarray:
    cfg, params = load_params(path)
    if change is not None:
        params = change(params)
    model = create(cfg)
    nnx.update(model, params)
    return np.asarray(model(jnp.asarray(tokens))[0])


def hf_logits(model: transformers.PreTrainedModel, tokens: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(tokens)).logits.float().numpy()


def transformers_from_gguf(path: Path) -> transformers.PreTrainedModel:
    """transformers' own GGUF loader (dequantizes with gguf-py, undoes the q/k permutation itself)."""
    pytest.importorskip("accelerate", reason="transformers needs accelerate to load GGUF files")
    return transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                             dtype=torch.float32).eval()


def tokens_for(vocab: int, shape=(2, 24), seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, shape)


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_round_trip_matches_transformers(tmp_path, variant, qtype):
    hf = random_hf_model(**VARIANTS[variant])
    tensors = hf_tensors(hf)
    path = write_gguf(tmp_path / "tiny.gguf", hf.config, tensors, qtype,
                      vocab=("metadata", "tokens") if variant == "gqa" else ("tokens",))

    cfg = read_config(path)
    c = hf.config
    assert (cfg.vocab_size, cfg.embed_dim, cfg.num_layers, cfg.num_heads, cfg.num_kv_heads, cfg.mlp_dim,
            cfg.head_dim, cfg.max_seq_len, cfg.tie_embeddings, cfg.rope_scaling) == (
        c.vocab_size, c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads,
        c.intermediate_size, c.head_dim, c.max_position_embeddings, c.tie_word_embeddings, None)
    assert (cfg.rope_theta, cfg.norm_eps) == pytest.approx((c.rope_parameters["rope_theta"], c.rms_norm_eps))

    # The reference holds exactly the values the file stores: quantization is per row, so it commutes with
    # llama.cpp's row permutation, and the comparison stays tight for every type.
    with torch.no_grad():
        for p in hf.parameters():
            if p.ndim == 2:
                p.copy_(torch.from_numpy(roundtrip(p.numpy(), qtype)))
    tokens = tokens_for(cfg.vocab_size)
    ours, ref = our_logits(path, tokens), hf_logits(hf, tokens)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4)

    if qtype == QType.F32:  # the tolerance above would catch a missing inverse q/k permutation
        interleaved = np.arange(cfg.head_dim).reshape(2, -1).T.ravel()

        def keep_llama_cpp_order(params):
            attn = params["layers"]["attn"]
            attn["q_proj"], attn["k_proj"] = attn["q_proj"][..., interleaved], attn["k_proj"][..., interleaved]
            return params

        assert np.abs(our_logits(path, tokens, keep_llama_cpp_order) - ref).max() > 1e-2
    if qtype in (QType.Q8_0, QType.Q4_1):
        np.testing.assert_allclose(ours, hf_logits(transformers_from_gguf(path), tokens), rtol=0, atol=1e-4)


def llama3_divisors(model: transformers.LlamaForCausalLM) -> np.ndarray:
    """The per-pair frequency divisors llama.cpp stores as rope_freqs.weight for LLaMA-3 scaling."""
    head_dim = model.config.head_dim
    theta = model.config.rope_parameters["rope_theta"]
    base = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    return (base / model.model.rotary_emb.inv_freq).numpy().astype(np.float32)


LLAMA3 = {  # HF rope parameters -> what we read back from llama.cpp's divisors
    # Meta's Llama 3.2 values: one pair lies between the cut-offs, too few to fit; Meta's cut-offs match.
    "meta": (dict(factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192),
             Llama3RopeScaling(factor=32.0)),
    # Two pairs between the cut-offs: fitted, as the equivalent parameters with low_freq_factor=1.
    "fitted": (dict(factor=8.0, low_freq_factor=2.0, high_freq_factor=32.0, original_max_position_embeddings=16384),
               Llama3RopeScaling(factor=8.0, low_freq_factor=1.0, high_freq_factor=16.0,
                                 original_max_position_embeddings=8192)),
}


@pytest.mark.parametrize("scaling", sorted(LLAMA3))
def test_llama3_rope_freqs(tmp_path, scaling):
    hf_rope, expected = LLAMA3[scaling]
    rope = dict(hf_rope, rope_type="llama3", rope_theta=500000.0)
    hf = random_hf_model(**dict(TINY, num_key_value_heads=1, rope_parameters=rope, max_position_embeddings=32768))
    divisors = llama3_divisors(hf)
    assert divisors.max() > 1
    path = write_gguf(tmp_path / "llama3.gguf", hf.config, hf_tensors(hf), QType.F32,
                      extra={"rope_freqs.weight": divisors})

    cfg = read_config(path)
    assert cfg.rope_scaling == expected
    np.testing.assert_allclose(rope_inverse_frequencies(cfg), hf.model.rotary_emb.inv_freq.numpy(), rtol=1e-6)
    tokens = tokens_for(cfg.vocab_size, (2, 64))
    np.testing.assert_allclose(our_logits(path, tokens), hf_logits(hf, tokens), rtol=0, atol=1e-4)


def test_rope_freqs_that_are_not_llama3_are_rejected(tmp_path):
    hf = random_hf_model(**VARIANTS["gqa"])
    divisors = np.linspace(1.0, 3.0, 8, dtype=np.float32)[::-1].copy()
    path = write_gguf(tmp_path / "odd.gguf", hf.config, hf_tensors(hf), QType.F32,
                      extra={"rope_freqs.weight": divisors})
    with pytest.raises(WeightsError, match="rope_freqs.weight holds RoPE frequency factors that are not LLaMA-3"):
        read_config(path)


@pytest.fixture(scope="module")
def error_model() -> transformers.LlamaForCausalLM:
    # Rows of 256 so that K-quant blocks fit.
    return random_hf_model(**dict(TINY, hidden_size=256, intermediate_size=256, num_hidden_layers=1,
                                  num_key_value_heads=2))


@pytest.mark.parametrize("qtype", [QType.Q5_0, QType.Q6_K], ids=lambda t: t.name)
def test_unsupported_quantization_type(tmp_path, error_model, qtype):
    path = write_gguf(tmp_path / "m.gguf", error_model.config, hf_tensors(error_model), QType.Q8_0,
                      types={"blk.0.ffn_down.weight": qtype})
    with pytest.raises(WeightsError, match=rf"m\.gguf: tensor blk\.0\.ffn_down\.weight has unsupported type "
                                           rf"{qtype.name} \(supported: BF16, F16, F32, Q4_0, Q4_1, Q8_0\)"):
        load_params(path)


def test_missing_tensor(tmp_path, error_model):
    path = write_gguf(tmp_path / "m.gguf", error_model.config, hf_tensors(error_model), QType.F16,
                      drop_tensors=("blk.0.ffn_up.weight",))
    with pytest.raises(WeightsError, match=r"m\.gguf: missing tensor\(s\) \['model\.layers\.0\.mlp\.up_proj"):
        load_params(path)


def test_missing_metadata_key(tmp_path, error_model):
    path = write_gguf(tmp_path / "m.gguf", error_model.config, hf_tensors(error_model), QType.F16,
                      drop_keys=("llama.embedding_length",))
    with pytest.raises(WeightsError, match=r"m\.gguf: missing metadata key 'llama\.embedding_length'"):
        read_config(path)


def test_missing_vocab_size(tmp_path, error_model):
    path = write_gguf(tmp_path / "m.gguf", error_model.config, hf_tensors(error_model), QType.F16, vocab=())
    with pytest.raises(WeightsError, match=r"m\.gguf: missing metadata key 'llama\.vocab_size' \(and no tokenizer"):
        read_config(path)


def test_non_llama_architecture(tmp_path, error_model):
    path = write_gguf(tmp_path / "q.gguf", error_model.config, hf_tensors(error_model), QType.F16, arch="qwen2")
    with pytest.raises(WeightsError, match=r"q\.gguf: architecture 'qwen2' is not supported \(only 'llama'\)"):
        load_params(path)


def test_not_a_gguf_file(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    with pytest.raises(WeightsError, match=r"model\.safetensors: not a GGUF file"):
        load_params(path)
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(b"GGUF\x03\x00\x00\x00\x05")
    with pytest.raises(WeightsError, match=r"truncated\.gguf: unreadable GGUF file"):
        read_config(truncated)
    with pytest.raises(FileNotFoundError, match=r"absent\.gguf: no such GGUF file"):
        load_params(tmp_path / "absent.gguf")


def _header(*kv: bytes, tensors: int = 0) -> bytes:
    """A GGUF v3 header: magic, version, tensor count, key count, then the given key-value records."""
    return b"GGUF" + struct.pack("<IQQ", 3, tensors, len(kv)) + b"".join(kv)


def _key(name: str) -> bytes:
    return struct.pack("<Q", len(name)) + name.encode()


ARRAY, UINT8, UINT32, STRING = 9, 0, 4, 8


@pytest.mark.parametrize("data", [
    _header(_key("a") + struct.pack("<IIQ", ARRAY, UINT8, 2**63)),  # 2**63 items in a file of 40 bytes
    _header(_key("a") + struct.pack("<IIQ", ARRAY, ARRAY, 2**62)),  # as many empty nested arrays
    _header(_key("general.architecture") + struct.pack("<IQ", STRING, 2**62) + b"llama"),  # a cut string
    _header(_key("a") + struct.pack("<II", UINT32, 1), tensors=1),  # a cut value, then a missing tensor
    _header(_key("a") + struct.pack("<IB", 99, 0)),  # an unknown value type
], ids=["huge-array", "huge-nested-array", "cut-string", "cut-value", "unknown-type"])
def test_corrupt_counts_and_cut_headers_fail_fast(tmp_path, data):
    path = tmp_path / "corrupt.gguf"
    path.write_bytes(data)
    previous = signal.signal(signal.SIGALRM, lambda *_: pytest.fail("reading the header did not stop"))
    signal.alarm(10)
    try:
        with pytest.raises(WeightsError, match=r"corrupt\.gguf: unreadable GGUF file"):
            read_config(path)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_smollm2_q4_1_matches_transformers(smollm2_gguf):
    path = smollm2_gguf
    tokens = tokens_for(49152, (2, 32), seed=0)
    ours = our_logits(path, tokens)
    ref_logits = hf_logits(transformers_from_gguf(path), tokens)
    diff = float(np.abs(ours - ref_logits).max())
    print(f"\nSmolLM2-135M Q4_1: max |ours - transformers| = {diff:.3g} (logits up to {np.abs(ref_logits).max():.3g})")
    assert diff < 1e-3
