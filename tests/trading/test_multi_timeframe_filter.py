"""The trend filter: a new long only with the higher timeframe's trend; a pipeline reads frames only when a node does."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from lake.calendar import sessions_frame
from lake.schema import conform_bars
from tests.trading.always_long import ALWAYS_LONG
from trading.agents.base import AgentRun
from trading.agents.trend_filter import TrendFilter, TrendFilterConfig
from trading.context import FrameView, SymbolContext
from trading.cost import CostTracker, PriceTable
from trading.events import MemorySink
from trading.ledger import Ledger
from trading.models import Action, Mode, RiskAssessment, TradeProposal, Verdict
from trading.pipeline import DecisionPipeline, PipelineConfig
from trading.step import StepReport, trading_step

LIMITS = {"max_open_positions": 20, "max_sector_pct": 1.0, "max_position_pct": 0.2}


def with_filter(window: int = 5) -> dict[str, Any]:
    """analyst -> hard limits -> trend filter on the daily frame -> validator."""
    nodes = [
        {"id": "analyst", "type": "rules_analyst"},
        {"id": "hard_limits", "type": "hard_limits", "when": "trade"},
        {"id": "trend", "type": "trend_filter", "when": "approved", "config": {"timeframe": "1d", "window": window}},
        {"id": "validator", "type": "rules_validator", "when": "approved"},
    ]
    return {"graph": {"nodes": nodes}, "limits": LIMITS}


WITHOUT_FILTER = {"limits": LIMITS}


def context(closes: list[float], position: float = 0.0) -> SymbolContext:
    start = datetime(2026, 11, 2, 14, 30, tzinfo=UTC)
    bars = [{"ts": start + timedelta(days=i), "open": c, "high": c, "low": c, "close": c, "volume": 1.0} for i, c in enumerate(closes)]
    return SymbolContext(symbol="AAPL", as_of=start + timedelta(days=len(closes)), strategy="t", close=closes[-1], signal={}, features={},
                         position=position, frames={"1d": FrameView(timeframe="1d", bars=bars)})  # fmt: skip


def review(ctx: SymbolContext, action: Action = Action.BUY, window: int = 3) -> RiskAssessment:
    hard = RiskAssessment(symbol="AAPL", approved=True, quantity=10.0)
    proposal = TradeProposal(symbol="AAPL", action=action, confidence=0.9, quantity=10.0, rationale="test")
    run = AgentRun(run_id="r", mode=Mode.VALIDATION, sink=MemorySink(), costs=CostTracker(PriceTable()))
    return TrendFilter("trend", TrendFilterConfig(window=window)).review(ctx, proposal, hard, run)


def test_a_close_exactly_at_its_mean_is_not_below_it() -> None:
    """The boundary: `<` blocks, `<=` would refuse a flat trend."""
    assert review(context([10.0, 10.0, 10.0])).approved
    assert review(context([7.0, 11.0, 12.0, 10.0, 11.0])).approved  # mean of the last 3 is 11.0, the close 11.0


def test_a_close_below_its_mean_blocks_a_new_long_with_the_reason() -> None:
    blocked = review(context([12.0, 11.0, 10.0]))
    assert not blocked.approved and blocked.quantity == 0.0
    assert "below its 3-bar mean 11" in blocked.reasons[-1]


def test_exits_covers_and_shorts_pass_whatever_the_trend() -> None:
    falling = [12.0, 11.0, 10.0]
    assert review(context(falling, position=-5.0)).approved  # a BUY that covers a short reduces risk
    assert review(context(falling, position=5.0), Action.SELL).approved


def test_too_few_closed_bars_is_no_trend_to_follow() -> None:
    blocked = review(context([12.0, 13.0]), window=3)
    assert not blocked.approved and "2 closed 1d bars, 3 needed" in blocked.reasons[-1]


def daily_bars(paths: Mapping[str, list[float]], first: str = "2026-10-01", last: str = "2026-11-30") -> pl.DataFrame:
    """Flat daily bars (open = high = low = close) of each path, ending at the last session up to `last`."""
    opens = sessions_frame(first, last)["open"].to_list()
    rows = [
        {"symbol": s, "timeframe": "1d", "ts": ts, "open": c, "high": c, "low": c, "close": c, "volume": 1_000.0}
        for s, closes in paths.items()
        for ts, c in zip(opens[-len(closes):], closes, strict=True)
    ]  # fmt: skip
    return conform_bars(pl.DataFrame(rows), where="test daily bars")


RISING, FALLING = [100.0 + i for i in range(10)], [110.0 - i for i in range(10)]


def step(tmp_path: Path, config: Mapping[str, Any], bars: pl.DataFrame, frames: Mapping[str, pl.DataFrame] | None = None) -> StepReport:
    as_of: datetime = bars["ts"].max()  # type: ignore[assignment]
    with Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}") as ledger:
        return trading_step(ledger=ledger, broker=None, decider=DecisionPipeline(PipelineConfig.model_validate(config)), strategy=ALWAYS_LONG,
                            params=ALWAYS_LONG.params(), bars=bars, as_of=as_of, now=as_of + timedelta(days=1), mode=Mode.VALIDATION,
                            run_id="r", frames=frames)  # fmt: skip


def verdicts(report: StepReport) -> dict[str, Verdict]:
    return {d.symbol: d.verdict for d in report.result.decisions}


def test_the_trend_filter_changes_a_decision_in_a_step(tmp_path: Path) -> None:
    bars = daily_bars({"UP": RISING, "DOWN": FALLING})
    assert verdicts(step(tmp_path / "a", WITHOUT_FILTER, bars)) == {"UP": Verdict.EXECUTE, "DOWN": Verdict.EXECUTE}
    filtered = step(tmp_path / "b", with_filter(), bars)
    assert verdicts(filtered) == {"UP": Verdict.EXECUTE, "DOWN": Verdict.HOLD}
    assert [len(c.frames["1d"].bars) for c in filtered.contexts] == [5, 5]  # the window, from the step's own daily bars


class Untouchable(Mapping[str, pl.DataFrame]):
    """Frames a caller offers; reading any fails the test."""

    def __getitem__(self, key: str) -> pl.DataFrame:
        raise AssertionError(f"read the {key} frame")

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("listed the frames")

    def __len__(self) -> int:
        raise AssertionError("counted the frames")

    def __contains__(self, key: object) -> bool:
        raise AssertionError(f"asked for the {key} frame")


def test_a_pipeline_without_frame_nodes_reads_and_builds_no_other_timeframe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_resample(*args: Any) -> None:
        raise AssertionError("built a frame")

    monkeypatch.setattr("trading.step.frames_from", no_resample)
    report = step(tmp_path, WITHOUT_FILTER, daily_bars({"UP": RISING}), frames=Untouchable())
    assert [c.frames for c in report.contexts] == [{}]


def test_frames_the_caller_read_are_used_and_cut_at_the_decision_bar(tmp_path: Path) -> None:
    """A lake read may hold later bars: a falling future never blocks today's rising trend."""
    bars = daily_bars({"UP": RISING})
    later = daily_bars({"UP": [*RISING, 50.0]}).tail(1).with_columns(pl.col("ts") + timedelta(days=7))
    report = step(tmp_path, with_filter(), bars, frames={"1d": pl.concat([bars, later])})
    assert verdicts(report) == {"UP": Verdict.EXECUTE} and report.contexts[0].frames["1d"].closes[-1] == RISING[-1]


def test_on_minute_bars_the_daily_trend_is_yesterdays_until_the_session_closes(tmp_path: Path) -> None:
    """A step on 1m bars resamples the daily frame itself: intraday only Monday has closed (too few
    for a two-day mean: held); at the session's last minute Tuesday's bar is known and rising: executed."""
    from tests.trading.test_multi_timeframe import MONDAY, TUESDAY, minutes

    config = with_filter(window=2)
    bars = minutes(MONDAY, TUESDAY)
    last = bars["ts"].max()
    intraday = step(tmp_path / "a", config, bars.filter(pl.col("ts") < last))
    assert verdicts(intraday) == {"AAPL": Verdict.HOLD} and [b["ts"].date().isoformat() for b in intraday.contexts[0].frames["1d"].bars] == [MONDAY]
    closing = step(tmp_path / "b", config, bars)
    assert verdicts(closing) == {"AAPL": Verdict.EXECUTE} and len(closing.contexts[0].frames["1d"].bars) == 2
