"""The simulated broker, driven by the strategies' signals as the live path drives it (signals on
the side the fills left; entries carry the signal's size and are sized at the fill; exits close the
position; entries from flat carry their bracket levels), makes the engine's orders and equity on
four symbols sharing one cash balance: all-in entries competing for the cash, shorts capped by the
free cash, same-bar rotations, brackets. One rule (strategies/entries.py, strategies/brackets.py) in
both executors; this checks they apply it alike over a grid."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from backtests.engine import BacktestConfig, run_backtest
from strategies.base import Strategy
from strategies.positions import next_direction
from tests.backtests.test_parity_grid import COSTS, GRIDS, _bars
from trading.brokers.base import OrderRequest
from trading.brokers.simulated import SimConfig, SimulatedBroker
from trading.models import Side


def _finite(value: Any) -> bool:
    return value is not None and math.isfinite(value)


def _paper(signals: list[dict[str, Any]], symbols: list[str], costs: dict[str, Any], short: bool) -> tuple[SimulatedBroker, list[float]]:
    config = SimConfig(
        commission_bps=costs.get("fees_bps", 0.0),
        commission_per_share=costs.get("fee_per_share", 0.0),
        slippage_bps=costs.get("slippage_bps", 0.0),
        fractional=costs.get("fractional", False),
        allow_short=short,
    )
    broker = SimulatedBroker(config=config, cash=100_000)
    by_ts: dict[Any, dict[str, dict[str, Any]]] = {}
    for row in signals:
        by_ts.setdefault(row["ts"], {})[row["symbol"]] = row
    equity = []
    stamps = sorted(by_ts)
    for t, ts in enumerate(stamps):
        rows = by_ts[ts]
        broker.on_bar(rows)
        equity.append(broker.account().equity)
        if t == len(stamps) - 1:
            break
        for symbol in symbols:
            r = rows[symbol]
            position = broker.positions().get(symbol, 0.0)
            held = (position > 0) - (position < 0)
            nxt = next_direction(held, r["entry_long"], r["exit_long"], r["entry_short"] and short, r["exit_short"] and short)
            if nxt == held or (nxt != 0 and not _finite(r["size"])):
                continue
            cid = f"{symbol}-{t}"
            if nxt == 0:
                side = Side.SELL if held > 0 else Side.BUY
                broker.submit(OrderRequest(client_order_id=cid, symbol=symbol, side=side, quantity=abs(position), reduce_only=True))
                continue
            levels = {k: r[k] for k in ("stop", "target1", "target2") if held == 0 and _finite(r[k])}
            side = Side.BUY if nxt > 0 else Side.SELL
            broker.submit(OrderRequest(client_order_id=cid, symbol=symbol, side=side, quantity=1.0, size=r["size"], **levels))
    return broker, equity


@pytest.mark.parametrize("name", list(GRIDS))
def test_simulated_broker_makes_the_engines_orders_over_a_grid(name: str) -> None:
    strategy: Strategy[Any]
    strategy, grid = GRIDS[name]
    bars = _bars(11)
    symbols = sorted(bars["symbol"].unique().to_list())
    compared = 0
    for costs in COSTS.values():
        for short in (False, True):
            for values in grid[:2]:
                p = strategy.params(**values, allow_short=short)
                engine = run_backtest(bars, strategy, p, BacktestConfig(init_cash=100_000, allow_short=short, **costs))
                broker, equity = _paper(strategy.signals(bars, p).to_dicts(), symbols, costs, short)
                want = sorted(engine.orders.select("ts", "symbol", "side", "size", "price").rows(), key=lambda o: o[:3])
                got = sorted(((f.ts, f.symbol, f.side.value, f.quantity, f.price) for f in broker.fills), key=lambda o: o[:3])
                assert [o[:3] for o in got] == [o[:3] for o in want], (costs, short, values)
                np.testing.assert_allclose([o[3] for o in got], [o[3] for o in want], rtol=1e-9)
                np.testing.assert_allclose([o[4] for o in got], [o[4] for o in want], rtol=1e-12)
                np.testing.assert_allclose(equity, engine.equity["equity"].to_numpy(), rtol=1e-9)
                compared += len(want)
    assert compared > 200
