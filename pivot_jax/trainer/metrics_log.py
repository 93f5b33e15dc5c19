"""What a run logs: `WORKDIR/metrics.jsonl` (one JSON line per logged step) and TensorBoard scalars in
`WORKDIR/tensorboard/`, both written through the path layer, so a `gs://` workdir gets them like a local one.

The event file is TensorBoard's own record format (`tensorboard`'s RecordWriter and Event protos), written
without TensorFlow's file system: TF's GCS client can only reach Google's endpoints, while epath follows the
workdir wherever it is.
"""

from __future__ import annotations

import socket
import time

import jax
from etils import epath
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

from pivot_jax.jsonl import Appender
from pivot_jax.paths import AppendFile


class TensorBoardWriter:
    """Scalars into a new `events.out.tfevents.*` file under `directory` (one per run or resumption)."""

    def __init__(self, directory: epath.Path):
        directory.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{jax.process_index()}"
        self.path = directory / name
        self._records = RecordWriter(AppendFile(self.path))
        self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

    def _write(self, event: event_pb2.Event) -> None:
        self._records.write(event.SerializeToString())

    def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
        values = [summary_pb2.Summary.Value(tag=tag, simple_value=float(value)) for tag, value in scalars.items()]
        self._write(event_pb2.Event(wall_time=time.time(), step=step, summary=summary_pb2.Summary(value=values)))

    def flush(self) -> None:
        self._records.flush()

    def close(self) -> None:
        self._records.close()


class MetricsLog:
    """`metrics.jsonl` + TensorBoard events (process 0 only)."""

    def __init__(self, workdir: epath.Path):
        self.enabled = jax.process_index() == 0
        if not self.enabled:
            return
        self.jsonl = Appender(workdir / "metrics.jsonl")  # a line cut short by a kill is repaired, not continued
        self.tensorboard = TensorBoardWriter(workdir / "tensorboard")

    def write(self, step: int, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.jsonl.write({"step": step, **scalars})
        self.jsonl.flush()
        self.tensorboard.write_scalars(step, scalars)
        self.tensorboard.flush()

    def close(self) -> None:
        if self.enabled:
            self.jsonl.close()
            self.tensorboard.close()
