"""Model outputs kept by what was asked, so a past decision cycle can be replayed without the model.

The key is a hash of (agent, model, output schema, messages): the same point-in-time inputs give the
same key. `replay` mode only reads: a miss is reported, never sent to the model, so a backtest of an
LLM-driven strategy cannot quietly consult a model that knows the future.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from enum import StrEnum
from pathlib import Path
from typing import Any


class CacheMode(StrEnum):
    OFF = "off"
    RECORD = "record"  # read hits, write misses after calling the model
    REPLAY = "replay"  # read only; a miss is an error (no model call)


def cache_key(agent: str, model: str, schema: str, messages: list[dict[str, Any]]) -> str:
    blob = json.dumps({"agent": agent, "model": model, "schema": schema, "messages": messages}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class ResponseCache:
    """In memory, or one JSON file per key under `folder` (written atomically)."""

    def __init__(self, folder: Path | None = None, mode: CacheMode = CacheMode.RECORD) -> None:
        self.folder = folder
        self.mode = CacheMode(mode)
        self._memory: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)

    def get(self, key: str) -> dict[str, Any] | None:
        if self.mode == CacheMode.OFF:
            return None
        with self._lock:
            if key in self._memory:
                return self._memory[key]
        if self.folder is not None:
            path = self.folder / f"{key}.json"
            if path.exists():
                return dict(json.loads(path.read_text()))
        return None

    def put(self, key: str, value: dict[str, Any]) -> None:
        if self.mode != CacheMode.RECORD:
            return
        with self._lock:
            self._memory[key] = value
        if self.folder is not None:
            fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
            with os.fdopen(fd, "w") as fh:
                json.dump(value, fh, sort_keys=True, default=str)
            os.replace(tmp, self.folder / f"{key}.json")
