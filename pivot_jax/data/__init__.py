"""Data for the trainer: batches in the t5x packed-decoder contract, from a stream that can be resumed.

Every batch is a dict of int32 arrays [rows, seq_len]: `decoder_input_tokens`, `decoder_target_tokens`,
`decoder_loss_weights`, `decoder_segment_ids` (0 = padding), `decoder_positions`.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

BATCH_KEYS = ("decoder_input_tokens", "decoder_target_tokens", "decoder_loss_weights", "decoder_segment_ids",
              "decoder_positions")


class BatchStream(Protocol):
    """This process's rows of each global batch, in a fixed order, with a position that checkpoints save."""

    def __next__(self) -> dict[str, np.ndarray]: ...

    def get_state(self) -> dict[str, Any]: ...

    def set_state(self, state: dict[str, Any]) -> None: ...
