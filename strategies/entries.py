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

Plain Python on purpose: the backtest and the sweeps compile these very functions with numba
(`backtests/kernels.py`); the reference loop and the simulated broker call them as they are.
"""

from __future__ import annotations

import math

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
