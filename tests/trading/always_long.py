"""A test strategy that wants to be long every symbol on every bar (a fifth of the cash an entry):
the controls, not the signals, decide what is sent."""

from __future__ import annotations

import polars as pl

from strategies.base import Strategy, StrategyParams, no_levels, no_shorts


class AlwaysLongParams(StrategyParams):
    pass


def _always_long(bars: pl.DataFrame, p: AlwaysLongParams) -> pl.DataFrame:
    return bars.with_columns(
        pl.lit(True).alias("entry_long"), pl.lit(False).alias("exit_long"), *no_shorts(), pl.lit(0.2).alias("size"), *no_levels()
    )


ALWAYS_LONG = Strategy(name="always_long", params_model=AlwaysLongParams, compute=_always_long, lookback=lambda p: 1)
