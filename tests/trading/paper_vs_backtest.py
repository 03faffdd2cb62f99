"""The simulated paper session (the live step per bar) and `run_backtest(..., limits=...)` with the
same limits on the same minute bars: the runs the session controls' parity tests compare
(test_limits_parity, test_one_rule_controls)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import polars as pl

from backtests.engine import BacktestResult, SizingLimits, run_backtest
from lake.sources.synthetic import SyntheticSource
from strategies.base import Strategy
from strategies.builtin import SMA_CROSS
from trading.brokers.simulated import SimConfig
from trading.ledger import Ledger
from trading.pipeline import PipelineConfig
from trading.risk import RiskLimits
from trading.session import SessionReport, backtest_config, run_simulated_session

COSTS = SimConfig(slippage_bps=2.0, commission_per_share=0.005)
SYMBOLS = ["AAPL", "MSFT"]
INIT_CASH = 100_000.0
# Only the control under test may bind: the sizing caps, the breakers and the count are lifted.
OPEN: dict[str, Any] = {
    "max_position_pct": 1.0,
    "max_sector_pct": 1.0,
    "daily_loss_limit_pct": 1.0,
    "max_drawdown_pct": 1.0,
    "max_trades_per_day": 1_000,
}


def minute_bars(*spans: tuple[datetime, datetime]) -> pl.DataFrame:
    """The generator's 1-minute bars of `SYMBOLS` (seed 7) over each (start, end) span."""
    source = SyntheticSource(seed=7)
    return pl.concat([source.fetch(SYMBOLS, "1m", start, end) for start, end in spans])


@dataclass(frozen=True)
class Both:
    session: SessionReport
    backtest: BacktestResult
    interventions: list[str]  # the session's intervention kinds, in order
    first_at: dict[str, datetime]  # each kind's first intervention: when the session recorded it


@dataclass(frozen=True)
class Setup:
    """What both runs share: the bars, the first bar that may trade, the limits, the strategy and its
    params, the simulated broker's costs (the backtest pays the same) and fractional shares."""

    bars: pl.DataFrame
    trade_from: datetime
    limits: RiskLimits
    params: Any
    strategy: Strategy[Any] = SMA_CROSS
    sim: SimConfig = COSTS
    fractional: bool = False

    def backtest(self, limits: RiskLimits | None = None) -> BacktestResult:
        """The backtest the session is held to, with `limits` in place of the setup's if given."""
        config = backtest_config(self.sim, INIT_CASH, "1m")
        sizing = SizingLimits.from_limits(limits or self.limits, SYMBOLS)
        return run_backtest(
            self.bars, self.strategy, self.params, config, trade_from=self.trade_from, limits=sizing
        )

    def both(self) -> Both:
        """The simulated session on its own in-memory ledger, and the backtest with the same limits."""
        with Ledger("sqlite:///:memory:") as ledger:
            session = run_simulated_session(
                bars=self.bars,
                ledger=ledger,
                strategy=self.strategy,
                params=self.params,
                pipeline=PipelineConfig(limits=self.limits, fractional=self.fractional),
                sim=self.sim,
                initial_cash=INIT_CASH,
                trade_from=self.trade_from,
            )
            events = list(ledger.events(types=["intervention"]))
        kinds = [str(e.payload["kind"]) for e in events]
        first_at: dict[str, datetime] = {}
        for kind, event in zip(kinds, events, strict=True):
            if event.as_of is not None:
                first_at.setdefault(kind, event.as_of)
        return Both(session, self.backtest(), kinds, first_at)


def order_rows(frame: pl.DataFrame, size: str) -> list[tuple[Any, ...]]:
    """(ts, symbol, side, quantity) per order, sorted: `size` names the quantity's column (the
    session's fills: "quantity", the backtest's orders: "size")."""
    return frame.sort("ts", "symbol", "side").select("ts", "symbol", "side", size).rows()
