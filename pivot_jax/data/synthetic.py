"""A synthetic reverse-the-prompt task: learnable in seconds, needs no files (tests and smoke runs).

Each example is `prompt tokens, SEP` followed by the response `reversed prompt, EOS`; only the response
carries loss. Examples are packed into rows; row `i` of split `s` depends only on (seed, s, i), so any
process can produce any slice of any batch and a resumed run sees exactly the same data.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SEP, EOS = 1, 2
FIRST_TOKEN = 3  # ids below are reserved (0 = padding)
SPLITS = {"train": 0, "validation": 1}


def packed_row(seed: int, split: str, index: int, seq_len: int, vocab_size: int) -> dict[str, np.ndarray]:
    """One packed row of the t5x decoder contract (loss on responses only)."""
    rng = np.random.default_rng([seed, SPLITS[split], index])
    inputs, targets, weights, segments, positions = ([] for _ in range(5))
    segment = 0
    while True:
        prompt = rng.integers(FIRST_TOKEN, vocab_size, rng.integers(3, 9)).tolist()
        example = prompt + [SEP] + prompt[::-1] + [EOS]
        if len(inputs) + len(example) > seq_len:
            break
        segment += 1
        inputs += [0] + example[:-1]  # shifted right, 0 starts every segment (t5x convention)
        targets += example
        weights += [0] * (len(prompt) + 1) + [1] * (len(prompt) + 1)
        segments += [segment] * len(example)
        positions += list(range(len(example)))
    pad = seq_len - len(inputs)
    row = {"decoder_input_tokens": inputs, "decoder_target_tokens": targets, "decoder_loss_weights": weights,
           "decoder_segment_ids": segments, "decoder_positions": positions}
    return {k: np.asarray(v + [0] * pad, np.int32) for k, v in row.items()}


class SyntheticStream:
    """Rows `[batch * global_rows + first_row, ... + local_rows)` of batch after batch, for this process."""

    def __init__(self, seed: int, split: str, global_rows: int, seq_len: int, vocab_size: int,
                 process_index: int = 0, process_count: int = 1):
        if global_rows % process_count:
            raise ValueError(f"global batch {global_rows} is not divisible by {process_count} processes")
        if vocab_size <= FIRST_TOKEN + 1:
            raise ValueError(f"data.vocab_size must exceed {FIRST_TOKEN + 1}, got {vocab_size}")
        self.seed, self.split, self.seq_len, self.vocab_size = seed, split, seq_len, vocab_size
        self.global_rows = global_rows
        self.local_rows = global_rows // process_count
        self.first_row = process_index * self.local_rows
        self.batch_index = 0

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        start = self.batch_index * self.global_rows + self.first_row
        rows = [packed_row(self.seed, self.split, start + r, self.seq_len, self.vocab_size)
                for r in range(self.local_rows)]
        self.batch_index += 1
        return {k: np.stack([row[k] for row in rows]) for k in rows[0]}

    def get_state(self) -> dict[str, Any]:
        return {"batch_index": self.batch_index}

    def set_state(self, state: dict[str, Any]) -> None:
        self.batch_index = int(state["batch_index"])
