"""The simulated broker adds up the equity as the backtest does, to the last bit: at the closes the
positions' values in symbol order, then the cash (vectorbt's value, the backtest's marks); at the
open, for sizing, from the cash, position by position in symbol order (`backtests.order_sim`'s bar
equity, the reference loop's `worth`). Values chosen so the order of the additions shows: 1e16 + 1
is 1e16 in floating point."""

from __future__ import annotations

from datetime import UTC, datetime

from trading.brokers.simulated import SimConfig, SimulatedBroker

# Opened in this order (not the symbols'): MSFT long 1e16, NVDA short 1e16, AAPL long 1.0.
POSITIONS = {"MSFT": 1e14, "NVDA": -1e14, "AAPL": 0.01}
CASH = 0.5


def _broker() -> SimulatedBroker:
    state = {
        "config": SimConfig(allow_short=True).model_dump(),
        "cash": CASH,
        "now": None,
        "positions": POSITIONS,
        "marks": dict.fromkeys(POSITIONS, 100.0),
        "orders": [],
        "brackets": {},
    }
    return SimulatedBroker.from_state(state)


def test_the_account_equity_adds_the_positions_in_symbol_order_then_the_cash() -> None:
    values = {s: q * 100.0 for s, q in POSITIONS.items()}
    in_symbol_order = 0.0
    for s in sorted(values):
        in_symbol_order += values[s]
    opened_order = sum(values.values())
    assert CASH + in_symbol_order != CASH + opened_order  # the values make the order matter
    assert _broker().account().equity == CASH + in_symbol_order


def test_the_bar_equity_an_entry_is_sized_on_adds_from_the_cash_in_symbol_order() -> None:
    broker = _broker()
    ts = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
    broker.on_bar({s: {"ts": ts, "open": 100.0, "high": 100.0, "low": 100.0, "close": 100.0} for s in POSITIONS})
    expected = CASH
    for s in sorted(POSITIONS):
        expected += POSITIONS[s] * 100.0
    assert expected != broker.account().equity  # from the cash or to it: a different last bit here
    assert broker._bar_equity == expected
