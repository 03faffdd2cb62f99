"""Bar sources behind one interface: the offline generator, a user's files, Alpaca, and a fallback chain.

Imported lazily so the offline path never pays for importing alpaca-py.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_HOMES = {
    "AlpacaSource": "lake.sources.alpaca",
    "BarSource": "lake.sources.base",
    "FallbackSource": "lake.sources.fallback",
    "FileSource": "lake.sources.files",
    "SyntheticSource": "lake.sources.synthetic",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'lake.sources' has no attribute {name!r}")
    return getattr(import_module(_HOMES[name]), name)
