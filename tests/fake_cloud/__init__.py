"""A fake Google Cloud for the launcher tests: `gcloud` and `xpk` executables (Python scripts) put first on PATH,
recording every call and playing a scenario (see the `gcloud` script's docstring).

    cloud = FakeCloud(tmp_path, monkeypatch, nodes={"run1": ["READY"]})
    ...
    cloud.calls()   # the argv of every call, in order
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


class FakeCloud:
    def __init__(self, tmp_path: Path, monkeypatch: Any, **scenario: Any):
        self.log = tmp_path / "cloud_calls.jsonl"
        self.state = tmp_path / "cloud_state.json"
        self.remote = tmp_path / "remote_home"
        self.remote.mkdir()
        self.set(**scenario)
        monkeypatch.setenv("PATH", f"{HERE}{os.pathsep}{os.environ['PATH']}")
        monkeypatch.setenv("FAKE_CLOUD_LOG", str(self.log))
        monkeypatch.setenv("FAKE_CLOUD_STATE", str(self.state))
        monkeypatch.setenv("FAKE_CLOUD_REMOTE", str(self.remote))

    def set(self, **scenario: Any) -> None:
        self.state.write_text(json.dumps(scenario))

    def entries(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def calls(self) -> list[list[str]]:
        return [e["argv"] for e in self.entries() if "argv" in e]

    def events(self, kind: str) -> list[dict]:
        return [e for e in self.entries() if e.get("event") == kind]

    def resources(self) -> dict:
        return json.loads(self.state.read_text())
