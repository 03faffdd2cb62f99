"""The hard limits' position and sector caps hold AT THE FILL (`strategies.entries.capped_at_fill`),
in the simulated broker and the backtest with limits alike.

The case that found the hole: three symbols at size 0.3 and no sector map. The first two entries are
cut to 20 % at the decision bar's close; the third asks for 30 % of the cash left (18 %) and is sent
uncut, with its size, and used to fill as 30 % of the equity at the next open."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backtests.engine import run_backtest
from lake.sources.synthetic import SyntheticSource
from strategies.builtin import SMA_CROSS
from trading.analytics import drift_report, fills_frame
from trading.brokers.base import Fill, FillCaps, OrderRequest, OrderStatus
from trading.brokers.simulated import CAPPED_AT_FILL, SimConfig, SimulatedBroker
from trading.ledger import Ledger
from trading.models import Side
from trading.pipeline import PipelineConfig
from trading.risk import RiskLimits
from trading.session import SessionReport, backtest_config, run_simulated_session, sizing_limits

SYMBOLS = ["AAPL", "JPM", "MSFT"]
NO_SECTORS = RiskLimits(sector_map={})  # the default 20 % position cap; each symbol its own sector
COSTS = SimConfig(slippage_bps=2.0, commission_per_share=0.005)
REL = 1e-12  # float noise only (the caps' own slack, strategies.entries.LIMIT_REL_TOL)


def _bars() -> pl.DataFrame:
    return SyntheticSource(seed=7).fetch(SYMBOLS, "1d", datetime(2023, 1, 1, tzinfo=UTC), datetime(2024, 7, 1, tzinfo=UTC))


def _session(bars: pl.DataFrame, sim: SimConfig, limits: RiskLimits) -> SessionReport:
    pipeline = PipelineConfig(limits=limits, fractional=sim.fractional)
    with Ledger("sqlite:///:memory:") as ledger:
        return run_simulated_session(bars=bars, ledger=ledger, strategy=SMA_CROSS, params=SMA_CROSS.params(fast=5, slow=20, fraction=0.3), pipeline=pipeline, sim=sim)


def _entries_at_their_fills(
    fills: list[Fill], opens: dict[tuple[datetime, str], float], cash: float, sectors: dict[str, str] | None = None
) -> list[dict[str, float]]:
    """Replays `fills` in the order the broker made them. For each fill that adds to a position: its
    value at the fill price and at the bar's open, the gross value of its sector's other positions at
    the open (`sectors`: symbol -> sector), and the equity just before it (cash plus every position
    at the bar's opens: what the rule caps on) and just after it."""
    held: dict[str, float] = defaultdict(float)
    sectors = sectors or {}
    out = []
    for fill in fills:
        at_open = {s: q * opens[(fill.ts, s)] for s, q in held.items()}
        before = cash + sum(at_open.values())
        grows = abs(held[fill.symbol] + fill.signed_quantity) > abs(held[fill.symbol])
        cash -= fill.signed_quantity * fill.price + fill.commission
        held[fill.symbol] += fill.signed_quantity
        if grows:
            q = abs(held[fill.symbol])
            after = cash + sum(v for s, v in at_open.items() if s != fill.symbol) + held[fill.symbol] * opens[(fill.ts, fill.symbol)]
            peers = sum(abs(v) for s, v in at_open.items() if s != fill.symbol and s in sectors and sectors[s] == sectors.get(fill.symbol))
            out.append({"at_fill": q * fill.price, "at_open": q * opens[(fill.ts, fill.symbol)], "peers": peers, "before": before, "after": after})
    return out


def _opens(bars: pl.DataFrame) -> dict[tuple[datetime, str], float]:
    return {(r["ts"], r["symbol"]): r["open"] for r in bars.select("ts", "symbol", "open").iter_rows(named=True)}


@pytest.mark.parametrize("sim", [SimConfig(), COSTS], ids=["no costs", "costs"])
def test_three_symbols_at_30_percent_never_fill_past_the_20_percent_cap(sim: SimConfig) -> None:
    bars = _bars()
    session = _session(bars, sim, NO_SECTORS)
    entries = _entries_at_their_fills(session.broker.fills, _opens(bars), 100_000.0)
    assert len(entries) >= 6
    for e in entries:  # the rule: the position at its fill price, within 20 % of the equity just before
        assert e["at_fill"] <= 0.2 * e["before"] * (1 + REL), e
    if sim == SimConfig():  # no costs: the equity after the fill is the same, and the open is the fill price
        assert all(e["at_open"] <= 0.2 * e["after"] * (1 + REL) for e in entries)
    # The cap binds at the fill: some entry fills at the cap's last whole share, not at its 30 %.
    assert max(e["at_fill"] / e["before"] for e in entries) > 0.199
    # The same session through the backtest with the same limits: the same fills and equity.
    expected = run_backtest(bars, SMA_CROSS, SMA_CROSS.params(fast=5, slow=20, fraction=0.3), backtest_config(sim, 100_000.0), limits=sizing_limits(NO_SECTORS, SYMBOLS))
    paper = fills_frame(session.broker.fills).sort("ts", "symbol", "side")
    backtest = expected.orders.sort("ts", "symbol", "side").rename({"size": "quantity", "fees": "commission"})
    assert paper.select("ts", "symbol", "side", "quantity").rows() == backtest.select("ts", "symbol", "side", "quantity").rows()
    np.testing.assert_allclose(paper["price"].to_numpy(), backtest["price"].to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(paper["commission"].to_numpy(), backtest["commission"].to_numpy(), rtol=1e-9)
    np.testing.assert_allclose(session.equity["equity"].to_numpy(), expected.equity["equity"].to_numpy(), rtol=1e-9)


def test_the_sector_cap_holds_at_the_fill_too() -> None:
    """Three names of one sector at 30 % each, position cap 25 %, sector cap 30 %: every entry's
    sector (its position and the others') stays within 30 % of the equity at its fill."""
    bars = _bars()
    limits = RiskLimits(max_position_pct=0.25, sector_map=dict.fromkeys(SYMBOLS, "one"))
    session = _session(bars, SimConfig(), limits)
    entries = _entries_at_their_fills(session.broker.fills, _opens(bars), 100_000.0, limits.sector_map)
    assert len(entries) >= 3
    for e in entries:
        assert e["at_fill"] <= 0.25 * e["before"] * (1 + REL), e
        assert e["peers"] + e["at_fill"] <= 0.30 * e["before"] * (1 + REL), e
    assert any(e["peers"] > 0 for e in entries)  # entries do share the sector
    expected = run_backtest(bars, SMA_CROSS, SMA_CROSS.params(fast=5, slow=20, fraction=0.3), backtest_config(SimConfig(), 100_000.0), limits=sizing_limits(limits, SYMBOLS))
    np.testing.assert_allclose(session.equity["equity"].to_numpy(), expected.equity["equity"].to_numpy(), rtol=1e-9)


# -- the broker on its own: any sizes and prices ------------------------------------------------------


def _bar(ts: datetime, price: float) -> dict[str, Any]:
    return {"ts": ts, "open": price, "high": price * 1.01, "low": price * 0.99, "close": price}


@settings(max_examples=60, derandomize=True, deadline=None)
@given(
    sizes=st.lists(st.floats(0.05, 1.0), min_size=3, max_size=3),
    fixed=st.lists(st.one_of(st.none(), st.integers(1, 3_000)), min_size=3, max_size=3),
    paths=st.lists(st.lists(st.floats(5.0, 500.0), min_size=4, max_size=4), min_size=3, max_size=3),
    cap=st.floats(0.05, 0.6),
    sector_cap=st.floats(0.1, 1.0),
    fractional=st.booleans(),
    costs=st.booleans(),
)
def test_no_fill_breaks_the_caps(
    sizes: list[float], fixed: list[int | None], paths: list[list[float]], cap: float, sector_cap: float, fractional: bool, costs: bool
) -> None:
    """Entries sized at the fill (`size`) or sent for a fixed quantity, each carrying the caps; two
    symbols share a sector. Prices move between the bars, so each later entry fills on an equity
    and prices the decision never saw. No entry's fill takes its position or its sector past the caps."""
    sim = SimConfig(fractional=fractional, slippage_bps=5.0 if costs else 0.0, commission_bps=3.0 if costs else 0.0)
    broker = SimulatedBroker(sim, cash=100_000.0)
    symbols = ["A", "B", "C"]
    sectors = {"A": ("B",), "B": ("A",), "C": ()}
    t0 = datetime(2024, 1, 2, tzinfo=UTC)
    for k in range(4):
        ts = t0 + timedelta(days=k)
        if k < 3:  # one entry per bar, each on a new symbol; it fills at the next bar's open
            s = symbols[k]
            caps = FillCaps(max_position_pct=cap, max_sector_pct=sector_cap, sector=sectors[s])
            n = fixed[k]
            qty, size = (float(n), None) if n is not None else (1.0, sizes[k])
            broker.submit(OrderRequest(client_order_id=f"e{k}", symbol=s, side=Side.BUY, quantity=qty, size=size, caps=caps))
        bars = {s: _bar(ts, paths[j][k]) for j, s in enumerate(symbols)}
        before = broker.cash + sum(q * bars[s]["open"] for s, q in broker.positions().items())
        for fill in broker.on_bar(bars):
            q = broker.positions()[fill.symbol]
            others = sum(abs(broker.positions().get(p, 0.0)) * bars[p]["open"] for p in sectors[fill.symbol])
            assert q * fill.price <= cap * before * (1 + REL)
            assert others + q * fill.price <= sector_cap * before * (1 + REL)
    for k in range(3):
        state = broker.get_order(f"e{k}")
        assert state is not None and state.status in {OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED}


def test_an_order_without_caps_is_sized_as_before() -> None:
    """Caps travel with the order: a broker order without them (not from the executor) is not cut."""
    broker = SimulatedBroker(SimConfig(), cash=100_000.0)
    broker.submit(OrderRequest(client_order_id="x", symbol="A", side=Side.BUY, quantity=1.0, size=0.5))
    broker.submit(OrderRequest(client_order_id="y", symbol="B", side=Side.BUY, quantity=1.0, size=0.5, caps=FillCaps(max_position_pct=0.2, max_sector_pct=0.3)))
    broker.on_bar({"A": _bar(datetime(2024, 1, 2, tzinfo=UTC), 100.0), "B": _bar(datetime(2024, 1, 2, tzinfo=UTC), 100.0)})
    assert broker.positions() == {"A": 500.0, "B": 200.0}


def test_a_cut_at_the_fill_is_put_down_to_the_limits_against_the_backtest_without_them() -> None:
    """Against the backtest without limits, the entry the caps cut only at its fill (sent uncut,
    with its size) is the limits' doing in the order log and the drift report, not "quantity"."""
    bars = _bars()
    session = _session(bars, COSTS, NO_SECTORS)
    cut = session.order_log.filter(pl.col("reason") == CAPPED_AT_FILL)
    assert cut.height > 0 and cut["limited"].all()
    expected = run_backtest(bars, SMA_CROSS, SMA_CROSS.params(fast=5, slow=20, fraction=0.3), backtest_config(COSTS, 100_000.0))
    drift = drift_report(fills_frame(session.broker.fills), expected.orders, orders=session.order_log)
    keys = set(cut.select("symbol", "ts").rows())
    rows = drift.rows.filter(pl.struct("symbol", "ts").map_elements(lambda r: (r["symbol"], r["ts"]) in keys, return_dtype=pl.Boolean))
    assert rows.height == cut.height and (rows["cause"] == "risk_limits").all()
