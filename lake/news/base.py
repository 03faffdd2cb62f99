"""The one interface every news source implements."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

import polars as pl


@runtime_checkable
class NewsSource(Protocol):
    """Headlines about `symbols` created in [start, end), in the news schema, one row per
    (article, symbol). `start`/`end` are timezone-aware. A source raises `SourceError` (never
    returns part of an answer) when it cannot deliver; `TransientSourceError` when asking later may help."""

    name: str

    def fetch_news(self, symbols: Sequence[str], start: datetime, end: datetime) -> pl.DataFrame: ...
