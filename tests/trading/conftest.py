"""Trading fixtures: daily bars of a small universe, a decision bar where several symbols signal."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import polars as pl
import pytest

from lake.sources.synthetic import SyntheticSource
from strategies.builtin import SMA_CROSS
from tests.fakes.openai_server import Reply
from trading.context import SymbolContext, build_contexts
from trading.models import PortfolioSnapshot

UNIVERSE = ["AAPL", "AMZN", "GOOG", "JPM", "META", "MSFT", "NVDA", "TSLA", "UNH", "XOM"]
PARAMS = SMA_CROSS.params(fast=5, slow=20)


@dataclass(frozen=True)
class Market:
    bars: pl.DataFrame
    as_of: datetime  # a bar where at least two symbols have an entry signal
    snapshot: PortfolioSnapshot

    def contexts(self, snapshot: PortfolioSnapshot | None = None) -> list[SymbolContext]:
        contexts, skipped = build_contexts(self.bars, SMA_CROSS, PARAMS, self.as_of, snapshot or self.snapshot)
        assert not skipped
        return contexts


def busiest_entry_bar(bars: pl.DataFrame, params: Any = PARAMS, *, at_least: int = 2) -> datetime:
    """The bar where the most symbols get an entry signal (the earliest of equals), found in the data
    rather than pinned as a date, so the fixtures hold whatever bars the generator makes."""
    signals = SMA_CROSS.signals(bars, params)
    counts = signals.filter(pl.col("entry_long")).group_by("ts").len().sort(["len", "ts"], descending=[True, False])
    assert counts.height and counts["len"][0] >= at_least, f"no bar with {at_least} entry signals in the fixture's bars"
    return counts["ts"][0]  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def market() -> Market:
    bars = SyntheticSource(seed=7).fetch(UNIVERSE, "1d", datetime(2023, 1, 1, tzinfo=UTC), datetime(2024, 6, 1, tzinfo=UTC))
    snapshot = PortfolioSnapshot(cash=100_000.0, equity=100_000.0, start_of_day_equity=100_000.0, peak_equity=100_000.0)
    return Market(bars=bars, as_of=busiest_entry_bar(bars), snapshot=snapshot)


def schema_name(body: dict[str, Any]) -> str:
    return str(body["response_format"]["json_schema"]["name"])


def good_answers(body: dict[str, Any]) -> Reply:
    """A well-behaved model: buys at the close with sane levels, approves, validates."""
    payload = json.loads(next(m["content"] for m in body["messages"] if m["role"] == "user"))
    name = schema_name(body)
    if name == "ProposalOut":
        close = payload["close"]
        answer: dict[str, Any] = {
            "action": "BUY",
            "confidence": 0.8,
            "rationale": f"model likes {payload['symbol']}",
            "entry": close,
            "stop": close * 0.95,
            "target1": close * 1.05,
            "target2": close * 1.10,
        }
    elif name == "RiskOut":
        answer = {"approve": True, "keep_fraction": 0.5, "reasons": ["half size: model is cautious"]}
    else:
        answer = {"valid": True, "issues": []}
    return Reply(content=json.dumps(answer), prompt_tokens=1000, completion_tokens=100)
