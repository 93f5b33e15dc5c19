"""The one path layer: every file the project writes or reads back (workdirs, checkpoints, `config.json`,
`metrics.jsonl`, results, reports) goes through `etils.epath`, so a `gs://` workdir works like a local one (TPU
VMs lose their local disks on preemption; a bucket does not).

    workdir = as_path("gs://bucket/runs/coit_es")       # or "runs/coit_es"
    write_text_atomic(workdir / "config.json", text)

`pathlib.Path` would mangle such a URL (`Path("gs://b/run")` is `gs:/b/run`, and `.absolute()` of it
`/cwd/gs:/b/run`), and `open()` cannot reach it. Object stores cannot append to an object: `AppendFile`
rewrites it whole at each flush there (the appended files, metrics and predictions, stay small).
"""

from __future__ import annotations

import os

from etils import epath

PathLike = str | os.PathLike[str]


def as_path(path: PathLike) -> epath.Path:
    """`path` (local, or a `scheme://` URL that epath knows: gs, s3, az) as an epath Path."""
    return epath.Path(path)


def is_url(path: PathLike) -> bool:
    return "://" in os.fspath(path)


def absolute(path: PathLike) -> epath.Path:
    """A local path made absolute (Orbax wants one); a URL is absolute already (epath's `.absolute()` would
    prefix it with the working directory)."""
    path = as_path(path)
    return path if is_url(path) else path.absolute()


class AppendFile:
    """Bytes appended to a file, created if needed: in place on a local disk; on an object store, whose objects
    cannot grow, the whole object is rewritten at each `flush` (and at `close`)."""

    def __init__(self, path: PathLike):
        self.path = as_path(path)
        self._local = None if is_url(self.path) else self.path.open("ab")
        self._data = bytearray(self.path.read_bytes() if self._local is None and self.path.exists() else b"")
        self._unsaved = False
        self.closed = False

    def write(self, data: bytes) -> None:
        if self._local is not None:
            self._local.write(data)
        else:
            self._data += data
            self._unsaved = True

    def flush(self) -> None:
        if self._local is not None:
            self._local.flush()
        elif self._unsaved:
            self.path.write_bytes(bytes(self._data))
            self._unsaved = False

    def close(self) -> None:
        if not self.closed:
            self.flush()
            if self._local is not None:
                self._local.close()
            self.closed = True


def write_text_atomic(path: PathLike, text: str) -> None:
    """Replace `path` with `text` in one rename: a crash leaves the old file or the new one, never a mix. (On
    object stores the new object appears whole when its upload completes.)"""
    path = as_path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        if not is_url(path):
            f.flush()
            os.fsync(f.fileno())
    tmp.replace(path)
