"""Tries sources in order; a fallback is logged and counted, never silent."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

import polars as pl

from lake.errors import SourceError, TransientSourceError, UnknownSymbolError
from lake.sources.base import BarSource

log = logging.getLogger(__name__)


class FallbackSource:
    """The first source that answers wins; `fallbacks` counts how often a later one had to."""

    def __init__(self, sources: Sequence[BarSource]) -> None:
        if not sources:
            raise ValueError("FallbackSource needs at least one source")
        self.sources = list(sources)
        self.name = "+".join(s.name for s in self.sources)
        self.fallbacks = 0
        self.last_used: str | None = None

    def fetch(self, symbols: Sequence[str], timeframe: str, start: datetime, end: datetime) -> pl.DataFrame:
        errors: list[str] = []
        transient = False
        for index, source in enumerate(self.sources):
            try:
                bars = source.fetch(symbols, timeframe, start, end)
            except UnknownSymbolError:
                raise  # another source inventing bars for a symbol the primary rejects would hide a typo
            except SourceError as exc:
                errors.append(f"{source.name}: {exc}")
                transient = transient or isinstance(exc, TransientSourceError)
                log.warning("bar source %s failed (%s); trying the next one", source.name, exc)
                continue
            if index:
                self.fallbacks += 1
                log.warning("served %s %s from fallback source %s", list(symbols), timeframe, source.name)
            self.last_used = source.name
            return bars
        # Worth a retry only if some source might answer next time.
        raise (TransientSourceError if transient else SourceError)("every bar source failed: " + " | ".join(errors))
