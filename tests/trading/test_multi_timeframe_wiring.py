"""The decide cycle and the paper session read the other timeframes a graph's nodes need from the lake
(`trading.context.read_frames`), not from the window of bars they load for the strategy: a 1h frame on a
1d cycle, a daily mean longer than the strategy's warm-up."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from lake.store import replace_partitions
from tests.trading.always_long import ALWAYS_LONG
from tests.trading.test_multi_timeframe import MONDAY, TUESDAY, minutes
from tests.trading.test_multi_timeframe_filter import daily_bars
from trading.context import frames_from, read_frames
from trading.cycle import run_decision_cycle
from trading.events import EventType
from trading.ledger import Ledger
from trading.models import Mode, Verdict
from trading.pipeline import DecisionPipeline, PipelineConfig
from trading.session import run_simulated_session
from trading.step import trading_step

LIMITS = {"max_open_positions": 20, "max_sector_pct": 1.0, "max_position_pct": 0.2}


def filtered(timeframe: str, window: int) -> PipelineConfig:
    """analyst -> hard limits -> trend filter on `timeframe` -> validator."""
    nodes = [
        {"id": "analyst", "type": "rules_analyst"},
        {"id": "hard_limits", "type": "hard_limits", "when": "trade"},
        {"id": "trend", "type": "trend_filter", "when": "approved", "config": {"timeframe": timeframe, "window": window}},
        {"id": "validator", "type": "rules_validator", "when": "approved"},
    ]
    return PipelineConfig.model_validate({"graph": {"nodes": nodes}, "limits": LIMITS})


def cycle(lake: Path, tmp_path: Path, pipeline: PipelineConfig, as_of: datetime) -> dict[str, tuple[Verdict, str]]:
    with Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}") as ledger:
        report = run_decision_cycle(lake_root=lake, ledger=ledger, strategy=ALWAYS_LONG, params=ALWAYS_LONG.params(), symbols=["DOWN", "UP"],
                                    timeframe="1d", pipeline=pipeline, as_of=as_of, now=as_of + timedelta(days=2))  # fmt: skip
    return {d.symbol: (d.verdict, d.rationale) for d in report.result.decisions}


def test_a_daily_cycle_reads_its_hourly_frame_resampled_from_the_lakes_minutes(tmp_path: Path) -> None:
    """The lake has daily bars and minutes, no hours: the 1h trend comes from the minutes (without the
    wiring the step fails: it has only 1d bars)."""
    rising = minutes(MONDAY, TUESDAY, symbol="UP")
    falling = minutes(MONDAY, TUESDAY, symbol="DOWN").with_columns((2000.0 - pl.col(c)).alias(c) for c in ("open", "high", "low", "close"))
    lake = tmp_path / "lake"
    both = pl.concat([rising, falling])
    replace_partitions(lake, "bars", "1m", both, period="date")
    daily = frames_from(both, ["1d"])["1d"]
    replace_partitions(lake, "bars", "1d", daily, period="year")
    as_of: datetime = daily["ts"].max()  # type: ignore[assignment]  # Tuesday's session
    verdicts = cycle(lake, tmp_path, filtered("1h", 3), as_of)
    assert verdicts["UP"][0] == Verdict.EXECUTE
    assert verdicts["DOWN"][0] == Verdict.HOLD and "1h close" in verdicts["DOWN"][1]


def daily(paths: dict[str, list[float]], last: str = "2026-11-27") -> pl.DataFrame:
    return daily_bars(paths, first="2026-03-02", last=last)


# 100 sessions: UP rises all along; DOWN rises, then falls for its last 20 sessions under its 60-day mean
# (its last 9 sessions, the cycle's window for a one-bar warm-up, are all it would see without the lake).
UP = [100.0 + i for i in range(100)]
DOWN = [100.0 + i for i in range(80)] + [180.0 - 3 * i for i in range(20)]


def test_a_daily_mean_longer_than_the_cycles_window_is_read_from_the_lake(tmp_path: Path) -> None:
    bars = daily({"UP": UP, "DOWN": DOWN})
    lake = tmp_path / "lake"
    replace_partitions(lake, "bars", "1d", bars, period="year")
    verdicts = cycle(lake, tmp_path, filtered("1d", 60), bars["ts"].max())  # type: ignore[arg-type]
    assert verdicts["UP"][0] == Verdict.EXECUTE, verdicts["UP"][1]
    assert verdicts["DOWN"][0] == Verdict.HOLD and "below its 60-bar mean" in verdicts["DOWN"][1]


def _session_verdicts(ledger: Ledger, as_of: datetime) -> dict[str, Verdict]:
    return {str(e.symbol): Verdict(e.payload["verdict"]) for e in ledger.events(types=[EventType.DECISION.value]) if e.as_of == as_of}


def test_a_paper_session_holds_the_entries_below_the_daily_mean_as_a_step_given_the_frames(tmp_path: Path) -> None:
    """The session walks only its last few days of bars; the 60-day mean comes from the lake, read once."""
    everything = daily({"UP": UP, "DOWN": DOWN})
    lake = tmp_path / "lake"
    replace_partitions(lake, "bars", "1d", everything, period="year")
    stamps = everything["ts"].unique().sort().to_list()
    walked = everything.filter(pl.col("ts") >= stamps[-4])
    decided = stamps[-2]  # the last bar whose order would still fill
    pipeline = filtered("1d", 60)
    with Ledger(f"sqlite:///{tmp_path / 'session.sqlite'}") as ledger:
        run_simulated_session(bars=walked, ledger=ledger, strategy=ALWAYS_LONG, params=ALWAYS_LONG.params(), pipeline=pipeline,
                              trade_from=decided, lake_root=lake)  # fmt: skip
        session = _session_verdicts(ledger, decided)
    frames = read_frames(lake, ["DOWN", "UP"], {"1d": 60}, decided + timedelta(days=1))
    with Ledger(f"sqlite:///{tmp_path / 'step.sqlite'}") as ledger:
        step: Any = trading_step(ledger=ledger, broker=None, decider=DecisionPipeline(pipeline), strategy=ALWAYS_LONG, params=ALWAYS_LONG.params(),
                                 bars=walked.filter(pl.col("ts") <= decided), as_of=decided, now=decided + timedelta(days=1), mode=Mode.VALIDATION,
                                 run_id="r", frames=frames)  # fmt: skip
    assert session == {"UP": Verdict.EXECUTE, "DOWN": Verdict.HOLD}
    assert session == {d.symbol: d.verdict for d in step.result.decisions}
