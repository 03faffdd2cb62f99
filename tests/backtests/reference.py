"""A plain event-loop backtester, to check the vectorbt engine against. Read it top to bottom.

Same rules as the engine, written independently: a signal on bar t sets a target weight (share of
portfolio value, signed) that is filled on bar t+1 at the open; orders of one bar go sells-first;
the slipped price pays fees; whole shares round the traded amount toward zero; a buy that cash
cannot cover buys as many shares as the cash covers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import polars as pl


@dataclass
class Fill:
    ts: object
    symbol: str
    side: str
    size: float
    price: float
    fees: float


def _side_after(held: int, el: bool, xl: bool, es: bool, xs: bool) -> int:
    long_entry = el and not xl
    short_entry = es and not xs
    if long_entry and short_entry:
        return held
    if long_entry:
        return 1
    if short_entry:
        return -1
    if held == 1 and xl:
        return 0
    if held == -1 and xs:
        return 0
    return held


def reference_backtest(
    signals: pl.DataFrame,
    *,
    init_cash: float,
    fees_bps: float = 0.0,
    fee_per_share: float = 0.0,
    slippage_bps: float = 0.0,
    fractional: bool = False,
    allow_short: bool = False,
) -> tuple[list[float], list[Fill]]:
    symbols = sorted(signals["symbol"].unique().to_list())
    by_ts = signals.sort("ts", "symbol").partition_by("ts", maintain_order=True)
    cash = init_cash
    position = dict.fromkeys(symbols, 0.0)
    held = dict.fromkeys(symbols, 0)
    pending: dict[str, float] = {}
    equity: list[float] = []
    fills: list[Fill] = []
    slip = slippage_bps / 1e4

    for bar in by_ts:
        rows = {r["symbol"]: r for r in bar.iter_rows(named=True)}
        ts = bar["ts"][0]

        # 1. Fill yesterday's decisions at this bar's open.
        if pending:
            value = cash + sum(position[s] * rows[s]["open"] for s in symbols)
            orders = []
            for column, s in enumerate(symbols):
                if s in pending:
                    target_value = pending[s] * value
                    orders.append((target_value - position[s] * rows[s]["open"], column, s))
            for _, _, s in sorted(orders, key=lambda o: o[0]):  # sells first; ties by column
                price = rows[s]["open"]
                fee_rate = fees_bps / 1e4 + fee_per_share / price
                delta = pending[s] * value / price - position[s]
                if delta > 0:
                    fill_price = price * (1 + slip)
                    shares = delta if fractional else math.floor(delta)
                    cost = shares * fill_price * (1 + fee_rate)
                    if cost > cash and not math.isclose(cost, cash):
                        affordable = cash / (1 + fee_rate) / fill_price
                        shares = affordable if fractional else math.floor(affordable)
                    if shares <= 0:
                        continue
                    fee = shares * fill_price * fee_rate
                    cash -= shares * fill_price + fee
                    position[s] += shares
                    fills.append(Fill(ts, s, "buy", shares, fill_price, fee))
                elif delta < 0:
                    fill_price = price * (1 - slip)
                    shares = -delta if fractional else math.floor(-delta)
                    if shares <= 0:
                        continue
                    fee = shares * fill_price * fee_rate
                    cash += shares * fill_price - fee
                    position[s] -= shares
                    fills.append(Fill(ts, s, "sell", shares, fill_price, fee))
            pending = {}

        # 2. Mark to the close.
        equity.append(cash + sum(position[s] * rows[s]["close"] for s in symbols))

        # 3. Decide on this bar's signals, for the next bar.
        for s in symbols:
            r = rows[s]
            side = _side_after(
                held[s], r["entry_long"], r["exit_long"], r["entry_short"] and allow_short, r["exit_short"] and allow_short
            )
            if side == held[s]:
                continue
            if side != 0 and (r["size"] is None or not math.isfinite(r["size"])):
                continue
            pending[s] = side * r["size"] if side else 0.0
            held[s] = side
    return equity, fills
