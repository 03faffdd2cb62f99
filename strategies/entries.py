"""How many shares an entry takes: one rule for the backtest, the sweeps and the brokers.

An entry never commits more than the cash there is. It commits at most `size` (the signal's share,
`strategies/base.py`) of the equity available to it, its own fees included:

    shares = available * size / (price * (1 + fee) + fee_per_share)

rounded down to whole shares (unfloored with fractional shares). `price` is the fill price, slippage
included; `fee` the proportional fee, `fee_per_share` the fee per share (an executor that charges
per-share fees as a fraction of the price passes that fraction in `fee` and 0 here).

On a reversal (an entry against the position held, one order) the closing trade comes first:
`available` is the equity after it, its fee and slippage paid (`after_closing`). From flat it is
the equity itself; with one symbol that is the cash.

Plain Python on purpose: the backtest and the sweeps compile these very functions with numba
(`backtests/kernels.py`); the reference loop and the simulated broker call them as they are.
"""

from __future__ import annotations

import math


def after_closing(equity: float, position: float, side: int, fill_price: float, mark: float, fee: float, fee_per_share: float) -> float:
    """The equity an entry on `side` (1 long, -1 short) may use.

    `equity` values `position` at `mark`; a position held against `side` is closed first by the
    same order at `fill_price` (slippage included), which costs its slippage from `mark` and its
    fees. A flat or same-side position costs nothing to keep.
    """
    if position * side >= 0:
        return equity
    return equity + position * (fill_price - mark) - abs(position) * (fill_price * fee + fee_per_share)


def entry_shares(available: float, size: float, price: float, fee: float, fee_per_share: float, whole: bool) -> float:
    """Shares an entry takes: `size` of `available` over the cost of one share with its fees, rounded
    down to whole shares if `whole`; 0 when nothing is available."""
    if not available > 0.0 or not size > 0.0:
        return 0.0
    shares = available * size / (price * (1.0 + fee) + fee_per_share)
    return float(math.floor(shares)) if whole else shares
