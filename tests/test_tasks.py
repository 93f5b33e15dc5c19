import numpy as np
import pytest

from pivot_jax.data import BATCH_KEYS, tasks
from pivot_jax.data.formats import Example
from pivot_jax.tokenizer import Tokenizer, seqio_vocabulary


@pytest.fixture(scope="module")
def vocab(smollm2_gguf):
    return Tokenizer.from_gguf(smollm2_gguf)


def _examples(split):
    n = 40 if split == "train" else 8
    # Some prompts are longer than half the row: packing must use the whole row for prompt + response.
    return [Example(f"Q{i}:" + " long" * (16 if i % 5 == 0 else 0), " ".join(["word"] * (i % 9 + 1)), str(i))
            for i in range(n)]


@pytest.fixture(scope="module")
def registered(vocab):
    v = seqio_vocabulary(vocab)
    tasks.add_task("test_drop", _examples, v, max_length=10, overflow="drop")
    tasks.add_task("test_truncate", _examples, v, max_length=10, overflow="truncate")
    tasks.add_mixture("test_mix", ["test_drop", "test_truncate"])
    return vocab


def _stream(name, skip=0, **kw):
    s = tasks.SeqioStream(name, "train", 32, 4, seed=0, bos_id=1, **kw)
    s.set_state({"batch_index": skip})
    return s


def test_packed_batches_follow_the_contract_with_loss_on_responses(registered):
    batch = next(_stream("test_drop"))
    assert set(batch) == set(BATCH_KEYS) and batch["decoder_target_tokens"].shape == (4, 32)
    tok = registered
    for row in range(4):
        seg = batch["decoder_segment_ids"][row]
        for s in range(1, seg.max() + 1):
            idx = np.flatnonzero(seg == s)
            tgt, inp, w = (batch[k][row][idx] for k in ("decoder_target_tokens", "decoder_input_tokens",
                                                       "decoder_loss_weights"))
            assert inp[0] == 1 and (inp[1:] == tgt[:-1]).all()  # shifted right, BOS first
            prompt = tok.decode(tgt[w == 0].tolist())
            response = tgt[w == 1].tolist()
            assert prompt.startswith("Q") and prompt.endswith(":")
            assert response[-1] == tok.eos_id and set(tok.decode(response).split()) == {"word"}
            assert len(idx) <= 10  # fitted to max_length


def test_drop_and_truncate(registered):
    def responses(name):  # response length of every packed segment
        b = next(_stream(name))
        return [int(w[seg == s].sum()) for w, seg in zip(b["decoder_loss_weights"], b["decoder_segment_ids"])
                for s in range(1, seg.max() + 1)]

    # Prompts are 3 tokens; responses 1-9 words + EOS: drop keeps short ones, truncate keeps all (cut).
    drop = tasks.SeqioStream("test_drop", "validation", 512, 1, seed=0, bos_id=1, shuffle=False, repeat=False)
    trunc = tasks.SeqioStream("test_truncate", "validation", 512, 1, seed=0, bos_id=1, shuffle=False, repeat=False)
    n_drop = int(next(drop)["decoder_segment_ids"].max())
    n_trunc = int(next(trunc)["decoder_segment_ids"].max())
    assert n_trunc == 8 and n_drop < 8
    assert max(responses("test_truncate")) <= 7


@pytest.mark.parametrize("name", ["test_drop", "test_mix"])
def test_order_is_fixed_and_resume_is_exact(registered, name):
    a = [next(s)["decoder_target_tokens"] for s in [_stream(name)] for _ in range(4)]
    b = [next(s)["decoder_target_tokens"] for s in [_stream(name)] for _ in range(4)]
    resumed = _stream(name, skip=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert np.array_equal(next(resumed)["decoder_target_tokens"], a[2])
    assert np.array_equal(next(resumed)["decoder_target_tokens"], a[3])


def test_processes_read_different_shards(registered):
    first = next(tasks.SeqioStream("test_drop", "train", 32, 4, seed=0, bos_id=1, process_index=0, process_count=2))
    second = next(tasks.SeqioStream("test_drop", "train", 32, 4, seed=0, bos_id=1, process_index=1, process_count=2))
    assert first["decoder_target_tokens"].shape == (2, 32)
    assert not np.array_equal(first["decoder_target_tokens"], second["decoder_target_tokens"])


def test_first_n_of_fixed_shuffle_nests():
    items = list(range(100))
    small, large = tasks.first_n_of_fixed_shuffle(items, 10), tasks.first_n_of_fixed_shuffle(items, 50)
    assert small == large[:10] and len(set(large)) == 50
    with pytest.raises(ValueError, match="only 100"):
        tasks.first_n_of_fixed_shuffle(items, 101)


def test_bad_overflow_is_named(registered):
    with pytest.raises(ValueError, match="overflow"):
        tasks.add_task("x", _examples, seqio_vocabulary(registered), overflow="wrap")


def test_a_prompt_longer_than_half_the_row_still_packs(registered):
    tasks.add_task("test_long", _examples, seqio_vocabulary(registered), max_length=32)
    batch = next(tasks.SeqioStream("test_long", "validation", 32, 8, seed=0, bos_id=1, shuffle=False))
    prompt_lengths = [int(((seg == s) & (w == 0)).sum())
                      for w, seg in zip(batch["decoder_loss_weights"], batch["decoder_segment_ids"])
                      for s in range(1, seg.max() + 1)]
    assert max(prompt_lengths) > 16


def test_mixture_samples_at_the_configured_rates(registered):
    import seqio

    v = seqio_vocabulary(registered)
    tasks.add_task("rate_a", lambda s: [Example("A?", "a", str(i)) for i in range(50)], v, max_length=16)
    tasks.add_task("rate_b", lambda s: [Example("B?", "b", str(i)) for i in range(50)], v, max_length=16)
    tasks.add_mixture("rate_mix", [("rate_a", 3.0), ("rate_b", 1.0)])
    ds = seqio.get_mixture_or_task("rate_mix").get_dataset(
        {"inputs": 8, "targets": 8}, split="train", shuffle=True, seed=0, num_epochs=None)
    first = [registered.decode(ex["inputs"].tolist()) for _, ex in zip(range(2000), ds.as_numpy_iterator())]
    assert abs(first.count("A?") / len(first) - 0.75) < 0.03
