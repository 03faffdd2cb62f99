"""A plain event-loop backtester, to check the vectorbt engine against. Read it top to bottom.

Same rules as the engine, written independently: a signal on bar t sets an entry (a side and a size)
or an exit, filled on bar t+1 at the open (`fill="next_open"`) or at its close (`fill="next_close"`);
"the fill price" below is that open or close. Signals act on the side the fills left (an entry that got
no shares leaves the symbol flat). The bar's portfolio value is taken once, before its orders, with
every position at the fill price. A bar's exits go first (sells first, then by traded value), then its
entries (the same order), so the cash an exit frees pays for the bar's entries. The slipped price
pays fees; whole shares round the traded amount toward zero; a buy that cash cannot cover buys as
many shares as the cash covers. An entry is sized by the shared rule (`strategies/entries.py`,
called as it is) when it executes: a reversal first pays for closing the position held (fee and
slippage), then takes floor(min(available x size, free) / (fill price x (1 + fee))) shares,
available being the bar's value less that closing cost, free the value now (after the bar's
earlier orders) less that closing cost and the gross value of the other symbols' positions.

Brackets (entries from flat, long or short, whose signal bar has stop/target levels and that got
shares), from the bar after the entry fill (the entry price is its fill price), for a long: the stop (low at or below it) exits
everything at the stop, or at the open if the bar opened below it; otherwise target 1 (high at or
above it) sells half the shares held (rounded down) at the target or a higher open, and the stop
moves to the entry price; then target 2 sells the rest the same way. A short's bracket is the
mirror: stop above, targets below, half of the short bought back. One bracket exit per bar, none on
a bar that fills a signal's order. Bracket exits are the bar's exits; a bracket ends with its
position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import polars as pl

from strategies.entries import after_closing, entry_shares, free_cash

MIN_SHARES = 1e-8  # an order for less (float dust, e.g. an entry with no free cash left) trades nothing


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
    brackets: bool = True,
    fill: str = "next_open",
    stats: dict[str, int] | None = None,
) -> tuple[list[float], list[Fill]]:
    """Equity per bar and fills. `stats`, if given, counts `entries`, `capped` (entries the free cash
    cut below their size of the available equity) and `zero` (entries that got no shares)."""
    stats = stats if stats is not None else {}
    fill_column = {"next_open": "open", "next_close": "close"}[fill]
    symbols = sorted(signals["symbol"].unique().to_list())
    by_ts = signals.sort("ts", "symbol").partition_by("ts", maintain_order=True)
    cash = init_cash
    position = dict.fromkeys(symbols, 0.0)
    pending: dict[str, float] = {}
    pending_levels: dict[str, tuple[float, float, float]] = {}
    # symbol -> [side (1 long, -1 short), phase (1 whole, 2 half left), entry price, stop, target1, target2, bar index of the fill]
    bracket: dict[str, list] = {}
    equity: list[float] = []
    fills: list[Fill] = []
    slip = slippage_bps / 1e4

    def fee_rate_at(price: float) -> float:
        return fees_bps / 1e4 + fee_per_share / price

    def worth(prices: dict[str, float]) -> float:
        total = cash  # added up symbol by symbol, in the engine's order, to the same last bit
        for s in symbols:
            total += position[s] * prices[s]
        return total

    for index, bar in enumerate(by_ts):
        rows = {r["symbol"]: r for r in bar.iter_rows(named=True)}
        ts = bar["ts"][0]
        at = {s: rows[s][fill_column] for s in symbols}  # the fill prices

        # 0. Bracket exits of symbols with no order at this open: (symbol, shares to trade (signed), price).
        exits = []
        for s, (side, phase, entry, stop, target1, target2, fill_index) in list(bracket.items()):
            if s in pending or index <= fill_index:
                continue
            o, h, lo = rows[s]["open"], rows[s]["high"], rows[s]["low"]
            live_stop = stop if phase == 1 else entry
            # A short's bracket: stop above (hit when the high reaches it), targets below.
            stop_hit = not math.isnan(live_stop) and (lo <= live_stop if side > 0 else h >= live_stop)
            worse = min if side > 0 else max  # a gap through the stop fills at the (worse) open
            better = max if side > 0 else min  # a gap through a target fills at the (better) open
            if stop_hit:
                exits.append((s, -position[s], worse(o, live_stop)))
                del bracket[s]
            elif phase == 1 and not math.isnan(target1):
                if (h >= target1) if side > 0 else (lo <= target1):
                    half = abs(position[s]) / 2 if fractional else math.floor(abs(position[s]) / 2)
                    exits.append((s, -side * half, better(o, target1)))
                    bracket[s][1] = 2
            elif not math.isnan(target2) and ((h >= target2) if side > 0 else (lo <= target2)):
                exits.append((s, -position[s], better(o, target2)))
                del bracket[s]
        # The bar's portfolio value is taken once, before any of its orders, every position at the
        # fill price (never at a bracket's level).
        value = worth(at)

        # 1. This bar's orders: bracket exits at their levels, yesterday's exits at the fill price,
        # then yesterday's entries at the fill price. Key: (entry?, traded value (an entry's before costs), column).
        orders = [(False, shares * price, symbols.index(s), s, shares, price) for s, shares, price in exits]
        for column, s in enumerate(symbols):
            if s in pending:
                price = at[s]
                if pending[s] == 0:  # an exit: to flat
                    orders.append((False, -position[s] * price, column, s, -position[s], price))
                else:  # an entry: sized when it executes, below
                    orders.append((True, pending[s] * value - position[s] * price, column, s, math.nan, price))
        for is_entry, _, _, s, delta, price in sorted(orders, key=lambda o: o[:3]):
            fee_rate = fee_rate_at(price)
            if is_entry:  # close what is held against it, then size it on what is left and what is free
                side = 1 if pending[s] > 0 else -1
                fill_price = price * (1 + side * slip)
                available = after_closing(value, position[s], side, fill_price, price, fee_rate, 0.0)
                now = worth(at)
                others = sum(abs(position[x]) * at[x] for x in symbols if x != s)
                free = free_cash(after_closing(now, position[s], side, fill_price, price, fee_rate, 0.0), others)
                delta = side * entry_shares(available, abs(pending[s]), fill_price, fee_rate, 0.0, not fractional, free) - position[s]
                stats["entries"] = stats.get("entries", 0) + 1
                stats["capped"] = stats.get("capped", 0) + (free < available * abs(pending[s]))
                stats["zero"] = stats.get("zero", 0) + (abs(delta + position[s]) < MIN_SHARES)
            if delta > 0:
                fill_price = price * (1 + slip)
                shares = delta if fractional else math.floor(delta)
                cost = shares * fill_price * (1 + fee_rate)
                if cost > cash and not math.isclose(cost, cash):
                    affordable = cash / (1 + fee_rate) / fill_price
                    shares = affordable if fractional else math.floor(affordable)
                if shares < MIN_SHARES:  # float dust of cash buys nothing
                    continue
                fee = shares * fill_price * fee_rate
                cash -= shares * fill_price + fee
                position[s] += shares
                fills.append(Fill(ts, s, "buy", shares, fill_price, fee))
            elif delta < 0:
                fill_price = price * (1 - slip)
                shares = -delta if fractional else math.floor(-delta)
                if shares < MIN_SHARES:
                    continue
                fee = shares * fill_price * fee_rate
                cash += shares * fill_price - fee
                position[s] -= shares
                fills.append(Fill(ts, s, "sell", shares, fill_price, fee))
        for s, weight in pending.items():
            bracket.pop(s, None)
            stop, target1, target2 = pending_levels.get(s, (math.nan, math.nan, math.nan))
            got_shares = weight * position[s] > 0
            if got_shares and brackets and not all(math.isnan(x) for x in (stop, target1, target2)):
                bracket[s] = [1 if weight > 0 else -1, 1, at[s], stop, target1, target2, index]
        for s in list(bracket):
            if position[s] == 0:  # the bracket ends with its position
                del bracket[s]
        pending = {}
        pending_levels = {}

        # 2. Mark to the close.
        equity.append(cash + sum(position[s] * rows[s]["close"] for s in symbols))

        # 3. Decide on this bar's signals, for the next bar, from the side the fills left.
        for s in symbols:
            r = rows[s]
            held = 1 if position[s] > 0 else -1 if position[s] < 0 else 0
            side = _side_after(held, r["entry_long"], r["exit_long"], r["entry_short"] and allow_short, r["exit_short"] and allow_short)
            if side == held:
                continue
            if side != 0 and (r["size"] is None or not math.isfinite(r["size"])):
                continue
            pending[s] = side * r["size"] if side else 0.0
            if held == 0:  # brackets only on entries from flat, not on reversals
                pending_levels[s] = tuple(math.nan if r.get(c) is None else r[c] for c in ("stop", "target1", "target2"))
    return equity, fills
