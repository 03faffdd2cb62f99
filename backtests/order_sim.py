"""Every backtest's orders: signals to fills in one compiled loop, around vectorbt's order processing.

Per bar, for every symbol (one shared cash balance):
1. its order: the one decided on the bar before (an entry to side x size, or an exit to flat), else,
   with brackets, `strategies.brackets` on the bar (from the bar after an entry from flat filled):
   half the position actually held (whole shares: rounded down) or all of it, at the level's price;
2. the bar's equity, once, before any order: cash plus every position at the bar's fill price (the
   open, or the close with `next_close`), never at a bracket's level, which is only reached later
   in the bar;
3. exits first (signal exits and bracket exits, sells before buys by value), so the cash they free
   pays for the bar's entries; then entries (reversals included), sells before buys by value, ties by
   column. Each entry is sized by `strategies.entries` when it executes: `size` of the equity left
   after its own closing trade (the bar's equity), at most the free cash then (`free_cash`: the equity
   less the gross value of the other positions), so several entries competing for cash on one bar
   take it in that order and the gross exposure never exceeds the equity;
4. the signals of the bar decide the next bar's orders (`strategies.positions.next_direction`) from
   the side the fills left (the position's sign), not the side earlier signals asked for: an entry
   that sized to 0 shares leaves the symbol flat, free to enter on a later signal, as the live path is.
   With the live path's sizing limits (`backtests.engine.SizingLimits`), they are decided as the live
   step decides them at the bar's close (`_decide_nb`): an entry the position or sector cap cuts
   (`strategies.entries.capped_quantity`) fills the quantity left, at most what size 1 takes then.
   Every entry is capped again at its fill (`strategies.entries.capped_at_fill`, step 3: the equity
   then, its fill price), as the simulated broker caps it, so a share of the equity sized at the
   fill, or a gap at the open, never takes a position past the caps. The session controls act first,
   on the close's mark, as the live step's (`strategies.controls`, `backtests.window`): the drawdown
   breaker, the daily loss limit and the trades per day hold entries (an order reduces a position
   only against it: a sell from flat is a new short), outside the trading window no entry is sent, and
   from the window's end every position is closed once a session (the flatten's orders count as
   trades) while the strategy's own exits wait for it.

vectorbt's own `process_order_nb` executes each order (slippage, fees, whole shares, a buy capped by
the cash there is), and the records make an ordinary vectorbt Portfolio. (`from_order_func` could do
the same but compiles its simulator anew in every process, ~4 s; this loop is cached like the other
kernels.)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from numba import njit
from vectorbt.portfolio import nb as vnb
from vectorbt.portfolio.enums import Direction, ProcessOrderState, SizeType, log_dt, order_dt

from backtests.kernels import (
    after_closing_nb,
    bracket_step_nb,
    entry_shares_nb,
    free_cash_nb,
    half_exit_nb,
    next_order_nb,
    side_of_nb,
)
from strategies.controls import daily_loss_hit, drawdown_hit, may_send, reduces
from strategies.entries import capped_at_fill, capped_quantity

capped_quantity_nb = njit(cache=True)(capped_quantity)
capped_at_fill_nb = njit(cache=True)(capped_at_fill)
daily_loss_hit_nb = njit(cache=True)(daily_loss_hit)
drawdown_hit_nb = njit(cache=True)(drawdown_hit)
may_send_nb = njit(cache=True)(may_send)
reduces_nb = njit(cache=True)(reduces)

MIN_SIZE = 1e-8  # from_orders' default (vectorbt settings): smaller fills, e.g. 0 whole shares, are ignored
NONE, EXIT, HALF, ENTRY = 0, 1, 2, 3  # a bar's order per column
FRACTION_STEP = 1e-9  # the live limits' smallest fractional lot (trading.risk.FRACTION_STEP)


class LimitArrays(NamedTuple):
    """The live path's limits as the compiled loop reads them (`backtests.engine.SizingLimits`)."""

    max_position: float
    max_sector: float
    max_open: int
    sector: np.ndarray  # sector id per column
    max_drawdown: float
    daily_loss: float
    max_trades: int
    session: np.ndarray  # per bar: its session (a new value starts the daily counts)
    entry_ok: np.ndarray  # per bar: inside the trading window
    flatten: np.ndarray  # per bar: the window's flatten is due


@njit(cache=True)
def _execute_nb(
    i: int, col: int, amount: float, price: float, fee: float, slip: float, granularity: float,
    state: ProcessOrderState, order_records: np.ndarray, log_records: np.ndarray,
) -> ProcessOrderState:
    order = vnb.order_nb(
        size=amount,
        price=price,
        size_type=SizeType.Amount,
        direction=Direction.Both,
        fees=fee,
        slippage=slip,
        min_size=MIN_SIZE,
        size_granularity=granularity,
    )
    _, state = vnb.process_order_nb(i, col, 0, state, False, order, order_records, log_records)  # pragma: no mutate (logs off: no effect on orders)
    return state


@njit(cache=True)
def _orders_of_bar_nb(
    i: int, kind: np.ndarray, amount: np.ndarray, price: np.ndarray, pending: np.ndarray, fixed: np.ndarray, value: float,
    position: np.ndarray, debt: np.ndarray, fill_price: np.ndarray, fee_rate: float, fee_per_share: float,
    slippage: np.ndarray, granularity: float, whole_shares: bool, cash: float, free: float, oidx: int, lidx: int,
    order_values: np.ndarray, call_seq: np.ndarray, order_records: np.ndarray, log_records: np.ndarray,
    limited: bool, max_position: float, max_sector: float, sector: np.ndarray,
) -> tuple[float, float, int, int]:
    """Executes bar `i`'s orders (`kind`, `amount`, `price` per column; entries sized here) in the
    module's order; updates `position` and `debt` in place, returns cash, free cash and record counts.
    With `limited`, each entry is also capped at its fill (`strategies.entries.capped_at_fill`)."""
    m = kind.shape[0]
    # 3. Exits by value (sells first), then entries by value (an entry's before costs: the
    # weight of the bar's equity less what is held; equal weights tie and go by column).
    for col in range(m):
        call_seq[col] = col
        if kind[col] == ENTRY and not np.isnan(fixed[col]):  # a quantity the limits cut: its value
            order_values[col] = np.sign(pending[col]) * fixed[col] * fill_price[i, col] - position[col] * fill_price[i, col]
        elif kind[col] == ENTRY:
            order_values[col] = pending[col] * value - position[col] * fill_price[i, col]
        else:
            order_values[col] = amount[col] * price[col] if kind[col] != NONE else np.inf
    vnb.insert_argsort_nb(order_values, call_seq)
    for entries in (False, True):
        for k in range(m):
            col = call_seq[k]
            if kind[col] == NONE or (kind[col] == ENTRY) != entries:
                continue
            delta = amount[col]
            if entries:
                side = 1 if pending[col] > 0 else -1
                mark = fill_price[i, col]
                fill = mark * (1.0 + side * slippage[i, col])
                fee = fee_rate + fee_per_share / mark
                equity_now, others_gross, peers = cash, 0.0, 0.0
                for j in range(m):
                    value_j = position[j] * fill_price[i, j]
                    equity_now += value_j
                    if j != col:
                        others_gross += abs(value_j)
                        if sector[j] == sector[col]:
                            peers += abs(value_j)
                left = after_closing_nb(equity_now, position[col], side, fill, mark, fee, 0.0)
                room = free_cash_nb(left, others_gross)
                available = after_closing_nb(value, position[col], side, fill, mark, fee, 0.0)
                if np.isnan(fixed[col]):
                    shares = entry_shares_nb(available, abs(pending[col]), fill, fee, 0.0, whole_shares, room)
                else:  # cut by the limits when decided: that quantity, at most what size 1 takes now
                    shares = min(fixed[col], entry_shares_nb(available, 1.0, fill, fee, 0.0, whole_shares, room))
                if limited:  # and the caps again at the fill, on the equity and prices then
                    on_side = max(side * position[col], 0.0)
                    step = 1.0 if whole_shares else FRACTION_STEP
                    shares = capped_at_fill_nb(shares, on_side, left, fill, peers, max_position, max_sector, step)
                delta = side * shares - position[col]
            if delta == 0 or np.isnan(delta):
                continue
            state = ProcessOrderState(cash, position[col], debt[col], free, price[col], value, oidx, lidx)
            fee = fee_rate + fee_per_share / price[col]
            state = _execute_nb(i, col, delta, price[col], fee, slippage[i, col], granularity, state, order_records, log_records)
            cash, position[col], debt[col], free = state.cash, state.position, state.debt, state.free_cash
            oidx, lidx = state.oidx, state.lidx
    return cash, free, oidx, lidx


@njit(cache=True)
def _decide_nb(
    col: int, order: float, reducing: bool, close: np.ndarray, equity: float, cash: float, book: np.ndarray,
    sector: np.ndarray, max_position: float, max_sector: float, max_open: int, whole_shares: bool,
) -> tuple[float, float, float]:
    """One symbol's order as the live step decides it at the bar's close (`trading.pipeline`, its
    hard limits `trading.risk.assess`): (order, quantity it was cut to or NaN, the book's cash after).

    An order that reduces the position held (`reducing`: `strategies.controls.reduces`) only closes
    it (the live path's exits are reduce-only). An
    entry from flat asks for floor(size x cash / close) shares; the caps of
    `strategies.entries.capped_quantity` (position and sector share of `equity`, a buy's cost within
    the book's cash) may cut it, a full book (`max_open` positions) holds it. A cut entry is sent for
    the quantity left (NaN order: none); an uncut one keeps its size and is sized at the fill."""
    px = close[col]
    if reducing:
        cash += book[col] * px
        book[col] = 0.0
        return 0.0, np.nan, cash
    side = 1.0 if order > 0 else -1.0
    others, open_ = 0.0, 0
    for j in range(book.shape[0]):
        if j != col and book[j] != 0:
            open_ += 1
            if sector[j] == sector[col]:
                others += abs(book[j]) * close[j]
    requested = abs(order) * max(cash, 0.0) / px
    requested = np.floor(requested) if whole_shares else requested
    cap = capped_quantity_nb(equity, px, 0.0, others, max_position, max_sector, cash, side > 0, 1.0 if whole_shares else FRACTION_STEP)
    qty = min(requested, cap)
    if open_ >= max_open or not equity > 0 or cap == np.inf or not qty > 0:
        return np.nan, np.nan, cash
    book[col] = side * qty
    cash -= side * qty * px
    return order, qty if qty < requested else np.nan, cash


@njit(cache=True)
def simulate_signals_nb(
    entry_long: np.ndarray,
    exit_long: np.ndarray,
    entry_short: np.ndarray,
    exit_short: np.ndarray,
    size: np.ndarray,
    stop: np.ndarray,
    target1: np.ndarray,
    target2: np.ndarray,
    fill_price: np.ndarray,
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    fee_rate: float,
    fee_per_share: float,
    slippage: np.ndarray,
    init_cash: float,
    whole_shares: bool,
    brackets: bool,
    close: np.ndarray,
    limited: bool,
    max_position: float,
    max_sector: float,
    max_open: int,
    sector: np.ndarray,
    max_drawdown: float,
    daily_loss: float,
    max_trades: int,
    session: np.ndarray,
    entry_ok: np.ndarray,
    flatten: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Order and log records (vectorbt's) for one cash-sharing group, from (bar x symbol) signals.
    An order's fee is `fee_rate` of its value plus `fee_per_share` as a fraction of its unslipped price.
    With `limited`, each bar's orders are decided as the live step decides them (`_decide_nb`), under
    its session controls (`strategies.controls`: daily loss, trades per day, the trading window)."""
    n, m = size.shape
    order_records = np.empty(n * m, dtype=order_dt)
    log_records = np.empty(1, dtype=log_dt)
    granularity = 1.0 if whole_shares else np.nan
    position = np.zeros(m)
    debt = np.zeros(m)
    # Decided on the bar before: the signed weight (NaN: none), from flat or not, the signal's levels.
    pending = np.full(m, np.nan)
    fixed = np.full(m, np.nan)  # with limits: the quantity an entry was cut to when decided (NaN: sized at the fill)
    book = np.zeros(m)
    from_flat = np.zeros(m, dtype=np.bool_)
    p_levels = np.full((m, 3), np.nan)
    # A live bracket: phase (0 none), the bar its entry filled, the entry price, the levels.
    phase = np.zeros(m, dtype=np.int64)
    fill_bar = np.full(m, -1)
    entry_px = np.full(m, np.nan)
    levels = np.full((m, 3), np.nan)
    kind = np.zeros(m, dtype=np.int64)
    amount = np.empty(m)
    price = np.empty(m)
    order_values = np.empty(m)
    call_seq = np.empty(m, dtype=np.int64)
    cash, free, oidx, lidx = init_cash, init_cash, 0, 0
    peak, halted = -np.inf, False
    # The session controls: the session's first close, the daily loss tripped, orders sent, flattened.
    day, opening, lost, trades, flattened = -1, np.nan, False, 0, False
    for i in range(n):
        # 1. Each symbol's order on this bar.
        value = cash
        orders_now = False  # pragma: no mutate (True only costs time: a bar with no order changes nothing)
        for col in range(m):
            kind[col], amount[col], price[col] = NONE, np.nan, fill_price[i, col]
            value += position[col] * fill_price[i, col]  # 2. the bar's equity, at its fill prices
            if not np.isnan(pending[col]):
                kind[col] = ENTRY if pending[col] != 0 else EXIT
                amount[col] = -position[col]
            elif phase[col] > 0 and i > fill_bar[col] and position[col] != 0:
                side = side_of_nb(position[col])
                phase[col], action, level = bracket_step_nb(
                    phase[col], entry_px[col], levels[col, 0], levels[col, 1], levels[col, 2], open_[i, col], high[i, col], low[i, col], side
                )
                if action > 0:
                    kind[col], price[col] = (HALF if action == 1 else EXIT), level
                    amount[col] = half_exit_nb(position[col], side, whole_shares) if action == 1 else -position[col]
            orders_now = orders_now or kind[col] != NONE
        if orders_now:
            cash, free, oidx, lidx = _orders_of_bar_nb(
                i, kind, amount, price, pending, fixed, value, position, debt, fill_price, fee_rate, fee_per_share, slippage,
                granularity, whole_shares, cash, free, oidx, lidx, order_values, call_seq, order_records, log_records,
                limited, max_position, max_sector, sector,
            )  # fmt: skip
            # Brackets follow the fills: armed by an entry from flat that got shares, gone with the position.
            for col in range(m):
                if not np.isnan(pending[col]):
                    if brackets and pending[col] * position[col] > 0 and from_flat[col]:
                        phase[col], fill_bar[col], entry_px[col] = 1, i, fill_price[i, col]
                        levels[col] = p_levels[col]
                    else:
                        phase[col] = 0
                    pending[col] = np.nan
                elif position[col] == 0:
                    phase[col] = 0
        # 4. This bar's signals decide the next bar's orders, from the side the fills left.
        if i == n - 1:
            break
        # With limits, the live step's running book: equity and cash at the bar's closes, the
        # positions as this bar's decisions (in symbol order) leave them.
        marked = 0.0
        for col in range(m):
            book[col] = position[col]
            marked += position[col] * close[i, col]
        book_cash = cash
        # The drawdown breaker on this mark (`strategies.controls.drawdown_hit`): from the first mark
        # at or below the peak less `max_drawdown`, no new risk (the live path halts until resumed).
        equity = cash + marked
        peak = max(peak, equity)
        halted = halted or drawdown_hit_nb(equity, peak, max_drawdown)
        closing, blocked = False, False
        if limited:  # the session controls on this mark, before any decision (`trading.step`'s order)
            if session[i] != day:  # a new session: this close is its opening mark
                day, opening, lost, trades, flattened = session[i], equity, False, 0, False
            lost = lost or daily_loss_hit_nb(equity, opening, daily_loss)
            closing = flatten[i]
            if closing and not flattened and np.any(position != 0):  # once a session: close every position
                flattened = True
                for col in range(m):
                    if position[col] != 0:
                        pending[col], fixed[col], from_flat[col] = 0.0, np.nan, False
                        trades += 1
            blocked = halted or lost or not entry_ok[i]
        for col in range(m):
            held = side_of_nb(position[col])
            _, order = next_order_nb(held, entry_long[i, col], exit_long[i, col], entry_short[i, col], exit_short[i, col], size[i, col])
            if not np.isnan(order):
                qty = np.nan
                if limited:
                    # The side it trades: an exit (to flat) against the position, else the order's.
                    reducing = reduces_nb(book[col], order if order != 0 else -book[col])
                    if not may_send_nb(reducing, closing, blocked, trades, max_trades):
                        continue  # held by the controls: nothing is sent
                    order, qty, book_cash = _decide_nb(
                        col, order, reducing, close[i], equity, book_cash, book, sector, max_position, max_sector, max_open, whole_shares
                    )
                    if np.isnan(order):
                        continue  # held by the limits: nothing is sent
                    trades += 1
                pending[col], fixed[col], from_flat[col] = order, qty, held == 0
                p_levels[col, 0], p_levels[col, 1], p_levels[col, 2] = stop[i, col], target1[i, col], target2[i, col]
    return order_records[:oidx], log_records[:lidx]


def simulate_signals(
    close: Any,
    signals: dict[str, np.ndarray],
    fill_price: np.ndarray,
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    slippage: np.ndarray,
    *,
    fee_rate: float,
    fee_per_share: float,
    init_cash: float,
    fractional: bool,
    allow_short: bool,
    brackets: bool,
    freq: str,
    limits: LimitArrays | None = None,
) -> Any:
    """A vectorbt Portfolio (shared cash, one group) from (bar x symbol) signal arrays: entry/exit
    long and short, size, stop, target1, target2 (`backtests.engine.Market.signals`). `limits`: the
    live path's, decided on `close` as the live step decides (`_decide_nb`); None: no limits."""
    import vectorbt as vbt
    from vectorbt.base.array_wrapper import ArrayWrapper

    def f64(a: np.ndarray) -> np.ndarray:  # as given when float64 (views of the bars stay views)
        return np.asarray(a, dtype=np.float64)

    def flags(name: str) -> np.ndarray:
        if "short" in name and not allow_short:
            return np.zeros(signals[name].shape, dtype=np.bool_)
        return np.ascontiguousarray(signals[name], dtype=np.bool_)

    orders, logs = simulate_signals_nb(
        flags("entry_long"), flags("exit_long"), flags("entry_short"), flags("exit_short"),
        f64(signals["size"]), f64(signals["stop"]), f64(signals["target1"]), f64(signals["target2"]),
        f64(fill_price), f64(open_), f64(high), f64(low), fee_rate, fee_per_share, f64(slippage),
        init_cash, not fractional, brackets, f64(close), limits is not None,
        *_limit_args(limits, *close.shape),
    )  # fmt: skip
    wrapper = ArrayWrapper.from_obj(close, freq=freq, group_by=True)
    return vbt.Portfolio(wrapper, close, orders, logs, np.array([init_cash]), True)


def _limit_args(limits: LimitArrays | None, n: int, m: int) -> tuple[Any, ...]:
    """The compiled loop's limit arguments; without limits, ones that never act."""
    if limits is None:
        limits = LimitArrays(1.0, 1.0, 0, np.zeros(m), 1.0, 1.0, 0, np.zeros(n), np.ones(n), np.zeros(n))
    return (
        limits.max_position, limits.max_sector, int(limits.max_open), np.ascontiguousarray(limits.sector, dtype=np.int64), limits.max_drawdown,
        limits.daily_loss, int(limits.max_trades), np.ascontiguousarray(limits.session, dtype=np.int64),
        np.ascontiguousarray(limits.entry_ok, dtype=np.bool_), np.ascontiguousarray(limits.flatten, dtype=np.bool_),
    )  # fmt: skip
