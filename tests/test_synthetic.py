import numpy as np

from pivot_jax.data import BATCH_KEYS
from pivot_jax.data.synthetic import EOS, SEP, SyntheticStream, packed_row


def test_rows_follow_the_decoder_contract():
    row = packed_row(seed=0, split="train", index=3, seq_len=64, vocab_size=100)
    assert set(row) == set(BATCH_KEYS)
    seg, tgt, inp, w = (row[k] for k in ("decoder_segment_ids", "decoder_target_tokens", "decoder_input_tokens",
                                        "decoder_loss_weights"))
    for s in range(1, seg.max() + 1):
        idx = np.flatnonzero(seg == s)
        example = tgt[idx].tolist()
        sep = example.index(SEP)
        assert example[sep + 1:] == example[:sep][::-1] + [EOS]  # response = reversed prompt + EOS
        assert w[idx].tolist() == [0] * (sep + 1) + [1] * (len(example) - sep - 1)  # loss on the response only
        assert inp[idx].tolist() == [0] + example[:-1]
        assert row["decoder_positions"][idx].tolist() == list(range(len(idx)))
    assert (w[seg == 0] == 0).all()


def test_processes_read_disjoint_slices_and_resume_exactly():
    whole = SyntheticStream(0, "train", 8, 32, 100)
    halves = [SyntheticStream(0, "train", 8, 32, 100, process_index=i, process_count=2) for i in range(2)]
    for _ in range(2):
        full = next(whole)
        parts = [next(h) for h in halves]
        np.testing.assert_array_equal(np.concatenate([p["decoder_target_tokens"] for p in parts]),
                                      full["decoder_target_tokens"])
    resumed = SyntheticStream(0, "train", 8, 32, 100)
    resumed.set_state(whole.get_state())
    np.testing.assert_array_equal(next(resumed)["decoder_input_tokens"], next(whole)["decoder_input_tokens"])
    val = next(SyntheticStream(0, "validation", 8, 32, 100))
    assert not np.array_equal(val["decoder_target_tokens"], full["decoder_target_tokens"])
