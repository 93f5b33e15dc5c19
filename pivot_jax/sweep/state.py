"""The sweep's own record, `SWEEP_DIR/sweep.json`: which point runs where (backend, job id), its attempts, its status
and time; replaced atomically, so a sweep command killed at any moment leaves a readable one.

    {"sweep": "configs/sweeps/quickstart.py", "points": {"quickstart-es-pairs100-seed0": {"status": "done",
      "backend": "local", "job": "4242:8812", "attempts": 1, "started": 1796140000.0, "wall_s": 31.5,
      "log": "points/quickstart-es-pairs100-seed0/train.log", "indexed": true}}}

A sweep that checks an allocation records it (`"allocation": "DIR2/allocation.json"`); its points and a plain
sweep's never share a directory. status: pending | running | done | failed. A point's own `status.json` (the
trainer's) decides how a job that ended without this command watching it went.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from etils import epath

from pivot_jax.jsonl import DataError, read_json
from pivot_jax.paths import write_text_atomic

FILENAME = "sweep.json"
STATUSES = ("pending", "running", "done", "failed")


@dataclasses.dataclass
class PointState:
    status: str = "pending"
    backend: str = ""
    job: str = ""
    attempts: int = 0
    started: float = 0.0  # when the current attempt started (time.time())
    wall_s: float = 0.0  # seconds of finished attempts
    log: str = ""
    returncode: int | None = None
    indexed: bool = False  # its results are in the sweep's results index


@dataclasses.dataclass
class SweepState:
    path: epath.Path
    source: str
    points: dict[str, PointState]
    allocation: str = ""

    @classmethod
    def load(cls, directory: epath.Path, source: str, allocation: str = "") -> SweepState:
        path = directory / FILENAME
        if not path.exists():
            return cls(path, source, {}, allocation)
        saved = read_json(path)
        try:
            points = {name: PointState(**fields) for name, fields in saved["points"].items()}
        except (KeyError, TypeError, AttributeError) as e:
            raise DataError(f"{path}: not a sweep state ({e}); move it aside to start the sweep afresh") from None
        if saved.get("allocation", "") != allocation:
            checks = lambda a: f"the check of {a}" if a else "a sweep"  # noqa: E731
            raise DataError(f"{path}: this directory holds {checks(saved.get('allocation', ''))}, not "
                            f"{checks(allocation)}; give it its own --workdir")
        return cls(path, saved.get("sweep", source), points, allocation)

    def point(self, name: str) -> PointState:
        return self.points.setdefault(name, PointState())

    def save(self) -> None:
        record: dict[str, Any] = {"sweep": self.source, **({"allocation": self.allocation} if self.allocation else {}),
                                  "points": {n: dataclasses.asdict(p) for n, p in sorted(self.points.items())}}
        write_text_atomic(self.path, json.dumps(record, indent=1) + "\n")
