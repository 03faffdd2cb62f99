"""The one interface every bar source implements."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

import polars as pl


@runtime_checkable
class BarSource(Protocol):
    """Bars for `symbols` whose bar-open `ts` lies in [start, end), in the bar schema.

    `start`/`end` are timezone-aware datetimes. A source raises `SourceError` (never returns partial
    data) when it cannot deliver, and `UnknownSymbolError` for a symbol it does not know.
    """

    name: str

    def fetch(self, symbols: Sequence[str], timeframe: str, start: datetime, end: datetime) -> pl.DataFrame: ...
