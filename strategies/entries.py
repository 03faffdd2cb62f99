"""How many shares an entry takes: one rule for the backtest, the sweeps and the brokers.

An entry never commits more than the cash there is. It commits at most `size` (the signal's share,
`strategies/base.py`) of the equity available to it, its own fees included, and never more than the
free cash:

    shares = min(available * size, free) / (price * (1 + fee) + fee_per_share)

rounded down to whole shares (unfloored with fractional shares; fewer than MIN_SHARES are none, as
in vectorbt's order processing). `price` is the fill price, slippage
included; `fee` the proportional fee, `fee_per_share` the fee per share (an executor that charges
per-share fees as a fraction of the price passes that fraction in `fee` and 0 here).

On a reversal (an entry against the position held, one order) the closing trade comes first:
`available` is the equity after it, its fee and slippage paid (`after_closing`). From flat it is
the equity itself; with one symbol that is the cash.

`free` (`free_cash`) is what is not tied up in the other symbols' positions when the entry fills:
the equity left after the entry's own closing trade less the gross value of the other positions
(a long's value is spent cash; a short's proceeds and an equal margin are held). So the gross
exposure never exceeds the equity: a short is capped like a long, not by the equity alone. With
one symbol, `free` equals `available` and never binds.

With the hard limits (the position and sector caps of `trading.risk.RiskLimits`), an entry is
capped twice on the same rule (`capped_quantity`): when it is decided, on the equity and prices at
the decision bar's close, and again AT ITS FILL (`capped_at_fill`): on its side it then holds at
most what it held plus `capped_quantity` at the fill, where the equity is the account's at the bar's
open marks just before the order (after its own closing trade: `after_closing`), the position is
valued at the fill price (slippage included), the sector's other positions at the open, and a buy's
cash is left to `entry_shares` and `free_cash`. So an entry sized at its fill (a share of the equity then)
or one whose decided quantity a gap made larger than the cap never fills past the cap, in the
simulated broker and the backtest with limits alike.

Plain Python on purpose: the backtest and the sweeps compile these very functions with numba
(`backtests/kernels.py`, `backtests/order_sim.py`); the reference loop and the simulated broker call
them as they are (`register_jitable` only lets compiled code call `capped_quantity` too).
"""

from __future__ import annotations

import math

from numba.extending import register_jitable

MIN_SHARES = 1e-8  # an entry for fewer shares takes none: float dust of a cash balance already spent


def after_closing(equity: float, position: float, side: int, fill_price: float, mark: float, fee: float, fee_per_share: float) -> float:
    """The equity an entry on `side` (1 long, -1 short) may use.

    `equity` values `position` at `mark`; a position held against `side` is closed first by the
    same order at `fill_price` (slippage included), which costs its slippage from `mark` and its
    fees. A flat or same-side position costs nothing to keep.
    """
    if position * side >= 0:
        return equity
    return equity + position * (fill_price - mark) - abs(position) * (fill_price * fee + fee_per_share)


def free_cash(equity_left: float, others_gross: float) -> float:
    """The cash an entry may commit: `equity_left` (`after_closing` of the equity now) less
    `others_gross`, the gross value (sum of |shares| x mark) of the positions in other symbols."""
    return equity_left - others_gross


def entry_shares(
    available: float, size: float, price: float, fee: float, fee_per_share: float, whole: bool, free: float = math.inf
) -> float:
    """Shares an entry takes: `size` of `available`, at most `free`, over the cost of one share with
    its fees, rounded down to whole shares if `whole`; 0 when nothing is available or free, or when
    it comes to less than MIN_SHARES."""
    if not available > 0.0 or not size > 0.0 or not free > 0.0:
        return 0.0
    shares = min(available * size, free) / (price * (1.0 + fee) + fee_per_share)
    shares = float(math.floor(shares)) if whole else shares
    return shares if shares >= MIN_SHARES else 0.0


# -- Hard sizing limits (the per-position and sector caps of `trading.risk.RiskLimits`): the rule the
# live risk check (`trading.risk.assess`) applies to each entry when it is decided, and the backtest
# with limits (`backtests.order_sim`) applies at the same point, on the same numbers.
LIMIT_REL_TOL = 1e-12  # slack for float noise only: a cap computed by division can land an ulp over
LIMIT_ROUND_EPS = 1e-9  # 199.9999999997 shares of room is 200 shares (re-checked against the caps)


def position_room(equity: float, max_position: float, price: float, held: float) -> float:
    """Shares that may be added to `held` (|position|) before its value at `price` exceeds
    `max_position` of `equity`."""
    return max_position * equity / price - held


def sector_room(equity: float, max_sector: float, others: float, price: float, held: float) -> float:
    """Shares that may be added to `held` before the sector's gross value (`others`: the gross value of
    the sector's other positions) exceeds `max_sector` of `equity`."""
    return (max_sector * equity - others) / price - held


@register_jitable
def capped_quantity(
    equity: float, price: float, held: float, others: float, max_position: float, max_sector: float, cash: float, buy: bool, step: float
) -> float:
    """The most an entry may add to `held` (|position|, valued at `price`) under the caps: the position
    within `max_position` (`position_room`), its sector (`others` besides it) within `max_sector`
    (`sector_room`) of `equity`, a buy's cost within `cash`; in multiples of `step` (1 for whole
    shares; float noise just under a lot still counts, re-checked against the caps). inf when a
    vanishing price leaves the caps unbounded (the caller refuses to size blindly). Self-contained
    (numba compiles it as it is)."""
    cash = cash if cash == cash else 0.0  # NaN cash counts as none
    pos_limit = max_position * equity
    sec_limit = max_sector * equity
    room = min(pos_limit / price - held, (sec_limit - others) / price - held)
    if buy:
        room = min(room, cash / price)
    if room == math.inf:
        return room
    if not room > 0.0:
        return 0.0
    if room / step >= 2.0**53:  # beyond float precision every value is already a whole lot
        return room
    lots = math.floor(room / step + LIMIT_ROUND_EPS)
    if lots > 0:
        q = lots * step
        fits = (held + q) * price <= pos_limit * (1.0 + LIMIT_REL_TOL) and others + (held + q) * price <= sec_limit * (1.0 + LIMIT_REL_TOL)
        if buy:
            fits = fits and q * price <= cash * (1.0 + LIMIT_REL_TOL)  # a buy here has 0 < room <= cash / price
        if not fits:
            lots = math.floor(room / step)
    return max(lots * step, 0.0)


def capped_at_fill(
    shares: float, held: float, equity: float, price: float, others: float, max_position: float, max_sector: float, step: float
) -> float:
    """The shares an entry holds on its side after its fill under the caps: `shares` (that total as
    sized: `entry_shares`, or a decided quantity plus `held`) cut to `held` (|position| on its side
    before the order, 0 after a closing part) plus `capped_quantity` at the fill (module docstring):
    the position at the fill `price` within `max_position` of `equity` and the sector (`others`: the
    gross value of its other positions at the open) within `max_sector`, in lots of `step`. A
    position already at or over a cap gets nothing added (nor sold: that is an exit's job)."""
    return min(shares, held + capped_quantity(equity, price, held, others, max_position, max_sector, 0.0, False, step))
