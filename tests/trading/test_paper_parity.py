"""Paper = backtest: the simulated session over generated lake bars, with costs, against the backtest
with the same costs (`trading.session.backtest_config`), order for order, and, where the hard limits
bind, against the backtest with the same limits (`trading.session.sizing_limits`); with faults
switched on, the drift report puts every unit of shortfall down to its cause."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import polars as pl
import pytest

from backtests.engine import BacktestResult, run_backtest
from backtests.reports import equity_drawdown_png
from lake.sources.synthetic import SyntheticSource
from strategies.base import Strategy
from strategies.builtin import DONCHIAN_BREAKOUT, SMA_CROSS
from trading.analytics import CAUSES, DriftReport, drift_report, fills_frame
from trading.brokers.simulated import SimConfig
from trading.ledger import Ledger
from trading.pipeline import PipelineConfig
from trading.risk import RiskLimits
from trading.session import SessionReport, backtest_config, run_simulated_session, sizing_limits

COSTS = SimConfig(slippage_bps=2.0, commission_per_share=0.005)  # the paper_session asset's defaults
# Limits that never bind: the session must then be the backtest.
OPEN = RiskLimits(max_position_pct=1.0, max_sector_pct=1.0, daily_loss_limit_pct=1.0, max_drawdown_pct=1.0)


def _bars(symbols: list[str]) -> pl.DataFrame:
    return SyntheticSource(seed=7).fetch(symbols, "1d", datetime(2023, 1, 1, tzinfo=UTC), datetime(2024, 7, 1, tzinfo=UTC))


def _run(
    bars: pl.DataFrame, strategy: Strategy[Any], params: Any, sim: SimConfig, limits: RiskLimits, *, backtest_limits: bool = False
) -> tuple[SessionReport, BacktestResult, DriftReport]:
    pipeline = PipelineConfig(limits=limits, fractional=sim.fractional)
    with Ledger("sqlite:///:memory:") as ledger:
        session = run_simulated_session(bars=bars, ledger=ledger, strategy=strategy, params=params, pipeline=pipeline, sim=sim)
    sizing = sizing_limits(limits, sorted(bars["symbol"].unique().to_list())) if backtest_limits else None
    expected = run_backtest(bars, strategy, params, backtest_config(sim, 100_000.0), limits=sizing)
    return session, expected, drift_report(fills_frame(session.broker.fills), expected.orders, orders=session.order_log)


def _assert_same_orders_fills_and_equity(session: SessionReport, expected: BacktestResult, drift: DriftReport) -> pl.DataFrame:
    paper = fills_frame(session.broker.fills).sort("ts", "symbol", "side").select("ts", "symbol", "side", "quantity", "price", "commission")
    backtest = expected.orders.sort("ts", "symbol", "side").rename({"size": "quantity", "fees": "commission"})
    assert paper.height == backtest.height > 5
    assert paper.select("ts", "symbol", "side", "quantity").rows() == backtest.select("ts", "symbol", "side", "quantity").rows()
    np.testing.assert_allclose(paper["price"].to_numpy(), backtest["price"].to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(paper["commission"].to_numpy(), backtest["commission"].to_numpy(), rtol=1e-9)
    np.testing.assert_allclose(session.equity["equity"].to_numpy(), expected.equity["equity"].to_numpy(), rtol=1e-9)
    assert drift.summary["matched"] == backtest.height and drift.summary["missing"] == drift.summary["extra"] == 0
    for cause in CAUSES:
        assert drift.summary[cause] == pytest.approx(0.0, abs=1e-6), cause
    assert drift.rows["cause"].null_count() == drift.rows.height
    return paper


CASES: dict[str, tuple[Strategy[Any], dict[str, Any], list[str]]] = {
    "sma_cross, 3 symbols, 30 % each": (SMA_CROSS, {"fast": 5, "slow": 20, "fraction": 0.3}, ["AAPL", "JPM", "MSFT"]),
    "sma_cross, 1 symbol, all in": (SMA_CROSS, {"fast": 5, "slow": 20}, ["AAPL"]),
    "donchian_breakout (brackets), 1 symbol, all in": (DONCHIAN_BREAKOUT, {"entry_window": 15, "exit_window": 8}, ["AAPL"]),
    "donchian_breakout (brackets), 1 other symbol, half in": (DONCHIAN_BREAKOUT, {"entry_window": 15, "exit_window": 8, "fraction": 0.5}, ["MSFT"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_session_is_the_backtest_order_for_order_when_no_limit_binds(case: str) -> None:
    strategy, raw, symbols = CASES[case]
    session, expected, drift = _run(_bars(symbols), strategy, strategy.params(**raw), COSTS, OPEN)
    paper = _assert_same_orders_fills_and_equity(session, expected, drift)
    if strategy is DONCHIAN_BREAKOUT:  # the brackets' exits are among the orders (a half out at target 1)
        assert session.fills > 2 * session.orders * 0.5 and (paper["quantity"] != paper["quantity"].shift(1)).any()


# Limits that bind: the session must then be the backtest with the same limits.
LIMITED: dict[str, tuple[Strategy[Any], dict[str, Any], list[str], RiskLimits, str] | tuple[Strategy[Any], dict[str, Any], list[str], RiskLimits, str, SimConfig]] = {
    "position cap (default limits), 1 symbol all in": (SMA_CROSS, {"fast": 5, "slow": 20}, ["AAPL"], RiskLimits(), "max_position_pct"),
    "position cap (default limits), 3 sectors, brackets": (
        DONCHIAN_BREAKOUT, {"entry_window": 15, "exit_window": 8}, ["AAPL", "JPM", "XOM"], RiskLimits(), "max_position_pct"
    ),
    "sector cap (default map), 3 tech names": (
        DONCHIAN_BREAKOUT, {"entry_window": 15, "exit_window": 8}, ["AAPL", "MSFT", "NVDA"], RiskLimits(max_position_pct=0.25), "max_sector_pct"
    ),
    "open positions, 3 symbols at 30 %": (
        SMA_CROSS, {"fast": 5, "slow": 20, "fraction": 0.3}, ["AAPL", "JPM", "XOM"], RiskLimits(max_position_pct=0.5, max_open_positions=1), "max_open_positions"
    ),
    "drawdown breaker (halts for good)": (
        SMA_CROSS, {"fast": 5, "slow": 20, "fraction": 0.5}, ["AAPL", "JPM"], RiskLimits(max_position_pct=0.5, max_sector_pct=0.5, max_drawdown_pct=0.05), "max_drawdown_pct"
    ),
    # A reversal is an exit on the live path (exits are reduce-only); the backtest with limits does the same.
    "position cap, long-short": (
        SMA_CROSS, {"fast": 5, "slow": 20, "allow_short": True}, ["AAPL", "MSFT"], RiskLimits(allow_short=True), "max_position_pct",
        COSTS.model_copy(update={"allow_short": True}),
    ),
    "sector cap (default map), fractional shares": (
        DONCHIAN_BREAKOUT, {"entry_window": 15, "exit_window": 8}, ["AAPL", "MSFT"], RiskLimits(max_position_pct=0.25), "max_sector_pct",
        COSTS.model_copy(update={"fractional": True}),
    ),
}


@pytest.mark.parametrize("case", list(LIMITED))
def test_where_limits_bind_the_session_is_the_backtest_with_the_same_limits(case: str) -> None:
    strategy, raw, symbols, limits, binding, *more = LIMITED[case]
    sim = more[0] if more else COSTS
    bars, params = _bars(symbols), strategy.params(**raw)
    session, expected, drift = _run(bars, strategy, params, sim, limits, backtest_limits=True)
    _assert_same_orders_fills_and_equity(session, expected, drift)
    # The limit binds: the session's log has entries it cut or held, and lifting that one limit in
    # the backtest changes its orders.
    assert session.order_log["limited"].sum() > 0
    lifted = limits.model_copy(update={binding: 1.0 if binding.endswith("pct") else 1_000})
    unbound = run_backtest(bars, strategy, params, backtest_config(sim, 100_000.0), limits=sizing_limits(lifted, symbols))
    assert unbound.orders.select("ts", "symbol", "size").rows() != expected.orders.select("ts", "symbol", "size").rows()


FAULTS = {  # the paper broker's config; the backtest is always the configured COSTS'
    "partial fills": COSTS.model_copy(update={"partial_fill_prob": 0.4}),
    "rejections": COSTS.model_copy(update={"reject_prob": 0.3}),
    "extra slippage": COSTS.model_copy(update={"slippage_bps": 10.0}),  # paper pays 8 bps more than expected
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_with_faults_each_unit_of_shortfall_has_its_cause_and_each_row_its_own_order(fault: str) -> None:
    bars = _bars(["AAPL"])
    params = SMA_CROSS.params(fast=5, slow=20)
    sim = FAULTS[fault]
    with Ledger("sqlite:///:memory:") as ledger:
        session = run_simulated_session(bars=bars, ledger=ledger, strategy=SMA_CROSS, params=params, pipeline=PipelineConfig(limits=OPEN), sim=sim)
    expected = run_backtest(bars, SMA_CROSS, params, backtest_config(COSTS, 100_000.0))
    fills = fills_frame(session.broker.fills)
    drift = drift_report(fills, expected.orders, orders=session.order_log, marks={"AAPL": float(bars["close"][-1])})
    s = drift.summary
    # The causes add up to the equity difference at the end.
    difference = float(expected.equity["equity"][-1] - session.equity["equity"][-1])
    assert s["shortfall"] == pytest.approx(difference, rel=1e-9, abs=1e-6)
    assert sum(s[c] for c in CAUSES) == pytest.approx(difference, rel=1e-9, abs=1e-6)
    assert s["residual"] == pytest.approx(0.0, abs=1e-6)
    main = {"partial fills": "partial_fills", "rejections": "rejections", "extra slippage": "slippage"}[fault]
    assert s[main] != 0
    if fault == "extra slippage":
        assert all(abs(s[c]) < 1e-6 for c in CAUSES if c not in ("slippage", "commission", "quantity"))
        bps = drift.rows.filter(pl.col("status") == "matched")["price_diff_bps"].to_numpy()
        assert np.all(bps > 7.9) and np.all(bps < 8.1)  # 10 bps paid against the 2 expected: never 1,034
    # Every matched row is an order with its own fills: one client order id, and every fill it counts is that order's.
    by_order = dict(fills.group_by("client_order_id").agg(pl.col("quantity").sum()).iter_rows())
    matched = drift.rows.filter(pl.col("status") == "matched")
    assert matched.height > 0
    for row in matched.iter_rows(named=True):
        [cid] = row["client_order_ids"].split(",")
        assert row["filled_qty"] == pytest.approx(by_order[cid])
        assert fills.filter(pl.col("client_order_id") == cid)["symbol"].unique().to_list() == [row["symbol"]]
    if fault == "rejections":
        missing = drift.rows.filter(pl.col("status") == "missing")
        assert missing.height > 0 and set(missing["cause"].drop_nulls()) <= {"rejections", "quantity", "missed_trades"}


def test_with_faults_and_the_same_limits_in_the_backtest_a_cut_entry_is_not_put_down_to_the_limits() -> None:
    bars = _bars(["AAPL"])
    params = SMA_CROSS.params(fast=5, slow=20)
    with Ledger("sqlite:///:memory:") as ledger:  # default limits (20 % a position) bind every all-in entry
        session = run_simulated_session(bars=bars, ledger=ledger, strategy=SMA_CROSS, params=params, pipeline=PipelineConfig(), sim=FAULTS["partial fills"])
    expected = run_backtest(bars, SMA_CROSS, params, backtest_config(COSTS, 100_000.0), limits=sizing_limits(RiskLimits(), ["AAPL"]))
    fills, marks = fills_frame(session.broker.fills), {"AAPL": float(bars["close"][-1])}
    drift = drift_report(fills, expected.orders, orders=session.order_log, marks=marks, limits_in_backtest=True)
    s = drift.summary
    difference = float(expected.equity["equity"][-1] - session.equity["equity"][-1])
    assert sum(s[c] for c in CAUSES) == pytest.approx(difference, rel=1e-9, abs=1e-6) and s["residual"] == pytest.approx(0.0, abs=1e-6)
    assert s["partial_fills"] != 0 and s["risk_limits"] == pytest.approx(0.0, abs=1e-6)
    # Read as if the backtest had no limits, the cuts that differ (sized from a drifted equity) would be blamed on them.
    blamed = drift_report(fills, expected.orders, orders=session.order_log, marks=marks).summary
    assert blamed["risk_limits"] != 0 and blamed["risk_limits"] + blamed["quantity"] == pytest.approx(s["quantity"], abs=1e-6)


def test_limits_that_bind_are_reported_as_the_cause() -> None:
    bars = _bars(["AAPL"])
    params = SMA_CROSS.params(fast=5, slow=20)
    session, expected, drift = _run(bars, SMA_CROSS, params, COSTS, RiskLimits())  # 20 % a position against all in
    s = drift.summary
    # A capped entry makes a smaller exit: both legs are the limit's, nothing is left to "quantity".
    assert s["risk_limits"] > 0 and s["quantity"] == pytest.approx(0.0, abs=1e-6)
    assert sum(s[c] for c in CAUSES) == pytest.approx(s["shortfall"], abs=1e-6)
    entries = drift.rows.filter((pl.col("side") == "buy") & (pl.col("status") == "matched"))
    assert (entries["cause"] == "risk_limits").all()
    assert session.order_log.filter(pl.col("side") == "buy")["limited"].all()


def test_the_paper_plot_names_its_curves(monkeypatch: pytest.MonkeyPatch) -> None:
    import backtests.reports as reports

    seen: list[list[str]] = []

    def capture(fig: Any) -> bytes:
        seen.append([t.get_text() for t in fig.axes[0].get_legend().get_texts()])
        return b""

    monkeypatch.setattr(reports, "_to_png", capture)
    ts = [datetime(2024, 1, d + 1, tzinfo=UTC) for d in range(5)]
    equity_drawdown_png(ts, np.arange(5.0) + 100, np.arange(5.0) + 99, "Paper session (solid) vs backtest (dashed)", labels=("paper", "backtest"))
    assert seen == [["paper", "backtest"]]
