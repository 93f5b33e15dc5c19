import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from pivot_jax import model as M
from pivot_jax.convert import hf
from pivot_jax.decode import Sampling, filter_logits, generate_ids

PAD = 0


def _ours(directory):
    cfg, params = hf.load_params(directory)
    model = M.create(cfg)
    nnx.update(model, params)
    return model


def _hf_greedy(hf_model, prompts, max_new_tokens, eos=None):
    length = max(len(p) for p in prompts)
    ids = torch.tensor([[PAD] * (length - len(p)) + list(p) for p in prompts])
    mask = torch.tensor([[0] * (length - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        out = hf_model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                                pad_token_id=PAD, eos_token_id=eos)
    rows = out[:, length:].tolist()
    if eos is None:
        return rows
    return [row[:row.index(eos) + 1] if eos in row else row for row in rows]


def test_greedy_batch_with_padding_matches_transformers(tiny_hf):
    _, directory, hf_model = tiny_hf
    rng = np.random.RandomState(0)
    prompts = [rng.randint(3, 128, n).tolist() for n in (5, 17, 11)]  # ragged: rows are padded differently
    ours = generate_ids(_ours(directory), prompts, max_new_tokens=20)
    assert ours == _hf_greedy(hf_model, prompts, 20)


def test_stop_token_ends_each_row_independently(tiny_hf):
    _, directory, hf_model = tiny_hf
    model = _ours(directory)
    prompts = [[5, 6, 7], [9, 10, 11, 12, 13, 14]]
    free = generate_ids(model, prompts, max_new_tokens=12)
    stop = free[0][3]  # a token row 0 really produces, so that row stops early
    stopped = generate_ids(model, prompts, max_new_tokens=12, stop_ids=[stop])
    assert stopped[0] == free[0][:free[0].index(stop) + 1]
    assert stopped == _hf_greedy(hf_model, prompts, 12, eos=stop)


def test_top_k_one_and_tiny_top_p_are_greedy():
    model = M.create(M.preset("tiny"))
    prompts = [[1, 2, 3, 4], [7, 8]]
    greedy = generate_ids(model, prompts, max_new_tokens=8)
    assert generate_ids(model, prompts, max_new_tokens=8, sampling=Sampling(greedy=False, top_k=1), seed=3) == greedy
    assert generate_ids(model, prompts, max_new_tokens=8,
                        sampling=Sampling(greedy=False, top_p=1e-6), seed=4) == greedy


def test_sampling_is_seeded_and_varies_with_seed():
    model = M.create(M.preset("tiny"))
    hot = Sampling(greedy=False, temperature=5.0)
    a = generate_ids(model, [[1, 2, 3]], max_new_tokens=16, sampling=hot, seed=1)
    assert a == generate_ids(model, [[1, 2, 3]], max_new_tokens=16, sampling=hot, seed=1)
    assert a != generate_ids(model, [[1, 2, 3]], max_new_tokens=16, sampling=hot, seed=2)


def test_filters_keep_exactly_the_right_tokens():
    logits = jnp.log(jnp.array([[0.5, 0.2, 0.15, 0.1, 0.05]]))
    kept = lambda s: np.isfinite(np.asarray(filter_logits(logits, s)))[0].tolist()  # noqa: E731
    assert kept(Sampling(greedy=False, top_k=2)) == [True, True, False, False, False]
    assert kept(Sampling(greedy=False, top_p=0.7)) == [True, True, False, False, False]
    assert kept(Sampling(greedy=False, top_p=0.71)) == [True, True, True, False, False]
    # Sampled frequencies follow the renormalised distribution.
    draws = jax.random.categorical(jax.random.key(0), filter_logits(logits, Sampling(greedy=False, top_k=2)),
                                   shape=(20000, 1))
    np.testing.assert_allclose(np.bincount(np.asarray(draws[:, 0]), minlength=5)[:2] / 20000, [5 / 7, 2 / 7],
                               atol=0.02)


def test_bad_requests_are_refused():
    model = M.create(M.preset("tiny"))
    with pytest.raises(ValueError, match="max_seq_len"):
        generate_ids(model, [[1] * 250], max_new_tokens=10)
    with pytest.raises(ValueError, match="at least one token"):
        generate_ids(model, [[]])
    with pytest.raises(ValueError, match="temperature"):
        Sampling(greedy=False, temperature=0)
