"""Built-in strategies: moving-average crossover, RSI mean reversion, Donchian breakout.

Every indicator here has a finite memory (rolling windows, not exponential means), so the live path
that sees only `lookback` bars computes exactly what the backtest computed on the full history.
"""

from __future__ import annotations

import math

import polars as pl
from pydantic import Field, model_validator

from strategies import indicators as ind
from strategies.base import (
    ChannelBreakout,
    CrossSectionalRank,
    MovingAverageCross,
    Strategy,
    StrategyParams,
    ThresholdCross,
    crossed_above,
    crossed_below,
    no_levels,
    no_shorts,
    rank_across,
)
from strategies.sizing import SizingParams, size_per_symbol


class SmaCrossParams(StrategyParams, SizingParams):
    fast: int = Field(10, ge=1, le=500, json_schema_extra={"sweep": [5, 50, 5]})
    slow: int = Field(30, ge=2, le=2000, json_schema_extra={"sweep": [20, 200, 20]})
    allow_short: bool = False

    @model_validator(mode="after")
    def _fast_below_slow(self) -> SmaCrossParams:
        if self.fast >= self.slow:
            raise ValueError(f"fast ({self.fast}) must be below slow ({self.slow})")
        return self


def _sma_cross(bars: pl.DataFrame, p: SmaCrossParams) -> pl.DataFrame:
    # The averages once, as columns: polars does not share a UDF-backed expression used four times.
    with_means = bars.with_columns(ind.sma(p.fast).over("symbol").alias("_fast"), ind.sma(p.slow).over("symbol").alias("_slow"))
    fast, slow = pl.col("_fast"), pl.col("_slow")
    up = crossed_above(fast, slow).over("symbol")
    down = crossed_below(fast, slow).over("symbol")
    shorts = [down.alias("entry_short"), up.alias("exit_short")] if p.allow_short else no_shorts()
    return with_means.with_columns(
        up.alias("entry_long"), down.alias("exit_long"), *shorts, size_per_symbol(p).alias("size"), *no_levels()
    ).drop("_fast", "_slow")


SMA_CROSS = Strategy(
    name="sma_cross",
    params_model=SmaCrossParams,
    compute=_sma_cross,
    lookback=lambda p: max(p.slow, p.atr_period) + 1,
    description="Long when the fast SMA crosses above the slow one; out (or short) on the cross back.",
    fast_path=MovingAverageCross(average=ind.sma, fast="fast", slow="slow", short="allow_short"),
)


class RsiReversionParams(StrategyParams, SizingParams):
    period: int = Field(14, ge=2, le=200, json_schema_extra={"sweep": [5, 30, 5]})
    lower: float = Field(30.0, gt=0, lt=50, json_schema_extra={"sweep": [15.0, 35.0, 5.0]})
    upper: float = Field(70.0, gt=50, lt=100)
    exit_level: float = Field(50.0, gt=0, lt=100)
    allow_short: bool = False


def _rsi_reversion(bars: pl.DataFrame, p: RsiReversionParams) -> pl.DataFrame:
    bars = bars.with_columns(ind.rsi_sma(p.period).over("symbol").alias("_rsi"))  # once, read four times
    rsi = pl.col("_rsi")
    oversold = crossed_below(rsi, p.lower).over("symbol")
    overbought = crossed_above(rsi, p.upper).over("symbol")
    back_up = crossed_above(rsi, p.exit_level).over("symbol")
    back_down = crossed_below(rsi, p.exit_level).over("symbol")
    shorts = [overbought.alias("entry_short"), back_down.alias("exit_short")] if p.allow_short else no_shorts()
    return bars.with_columns(
        oversold.alias("entry_long"), back_up.alias("exit_long"), *shorts, size_per_symbol(p).alias("size"), *no_levels()
    ).drop("_rsi")


RSI_REVERSION = Strategy(
    name="rsi_reversion",
    params_model=RsiReversionParams,
    compute=_rsi_reversion,
    lookback=lambda p: max(p.period, p.atr_period) + 2,
    description="Buy when RSI falls below `lower`, sell when it recovers above `exit_level` (mirror for shorts).",
    fast_path=ThresholdCross(indicator=ind.rsi_sma, window="period", lower="lower", upper="upper", exit="exit_level", short="allow_short"),
)


class DonchianParams(StrategyParams, SizingParams):
    entry_window: int = Field(20, ge=2, le=1000, json_schema_extra={"sweep": [10, 60, 10]})
    exit_window: int = Field(10, ge=2, le=1000, json_schema_extra={"sweep": [5, 30, 5]})
    stop_atr: float = Field(2.0, gt=0, le=20)
    target1_atr: float = Field(2.0, gt=0, le=50)
    target2_atr: float = Field(4.0, gt=0, le=100)
    allow_short: bool = False


def _donchian(bars: pl.DataFrame, p: DonchianParams) -> pl.DataFrame:
    upper = pl.col("high").rolling_max(p.entry_window).shift(1)  # the channel of the bars before this one
    lower = pl.col("low").rolling_min(p.entry_window).shift(1)
    exit_low = pl.col("low").rolling_min(p.exit_window).shift(1)
    exit_high = pl.col("high").rolling_max(p.exit_window).shift(1)
    bars = bars.with_columns(ind.atr_sma(p.atr_period).over("symbol").alias("_atr"))  # once, read three times
    atr = pl.col("_atr")
    breakout_up = (pl.col("close") > upper).over("symbol")
    breakout_down = (pl.col("close") < lower).over("symbol")
    shorts = (
        [breakout_down.alias("entry_short"), (pl.col("close") > exit_high).over("symbol").alias("exit_short")]
        if p.allow_short
        else no_shorts()
    )
    # The levels face the bar's entry: below/above for a long, mirrored for a short.
    side = pl.when(breakout_down & ~breakout_up).then(-1.0).otherwise(1.0) if p.allow_short else pl.lit(1.0)
    return bars.with_columns(
        breakout_up.alias("entry_long"),
        (pl.col("close") < exit_low).over("symbol").alias("exit_long"),
        *shorts,
        size_per_symbol(p).alias("size"),
        (pl.col("close") - side * p.stop_atr * atr).over("symbol").alias("stop"),
        (pl.col("close") + side * p.target1_atr * atr).over("symbol").alias("target1"),
        (pl.col("close") + side * p.target2_atr * atr).over("symbol").alias("target2"),
    ).drop("_atr")


DONCHIAN_BREAKOUT = Strategy(
    name="donchian_breakout",
    params_model=DonchianParams,
    compute=_donchian,
    lookback=lambda p: max(p.entry_window, p.exit_window, p.atr_period) + 2,
    description="Long on a close above the prior N-bar high, out below the prior M-bar low (mirror for shorts); ATR bracket levels.",
    fast_path=ChannelBreakout(
        upper=lambda w: pl.col("high").rolling_max(w).shift(1),
        lower=lambda w: pl.col("low").rolling_min(w).shift(1),
        atr=ind.atr_sma,
        entry="entry_window",
        exit="exit_window",
        stop="stop_atr",
        target1="target1_atr",
        target2="target2_atr",
        atr_period="atr_period",
        short="allow_short",
    ),
)

class MomentumParams(StrategyParams):
    lookback: int = Field(60, ge=2, le=1000, json_schema_extra={"sweep": [20, 120, 20]})
    skip: int = Field(1, ge=0, le=100, description="Most recent bars left out of the momentum return (short-term reversal).")
    top_k: int = Field(3, ge=1, le=500, json_schema_extra={"sweep": [1, 5, 1]})
    vol_window: int = Field(20, ge=2, le=500)
    vol_target: float = Field(0.15, gt=0, le=2, description="Annualized volatility target per position (252 bars a year).")
    max_weight: float = Field(0.5, gt=0, le=1, description="Cap on one position's share of equity.")
    allow_short: bool = False  # long-only: the weakest names are simply not held


def _past_return(lookback: int, skip: int) -> pl.Expr:
    """The return over `lookback` bars ending `skip` bars ago (per symbol: use `.over("symbol")`)."""
    return pl.col("close").shift(skip) / pl.col("close").shift(skip + lookback) - 1


def _annual_volatility(window: int) -> pl.Expr:
    """Rolling volatility of log returns, annualized on 252 bars a year (per symbol)."""
    return ind.rolling_volatility(window) * math.sqrt(252)


def _momentum(bars: pl.DataFrame, p: MomentumParams) -> pl.DataFrame:
    past_return = _past_return(p.lookback, p.skip).over("symbol")
    ranked = bars.sort("symbol", "ts").with_columns(past_return.alias("_momentum"))
    # Rank across the universe at each bar (ties by symbol order); a symbol without a return yet is out.
    rank = rank_across(pl.col("_momentum"))
    in_top = (pl.col("_momentum").is_not_null() & (rank <= p.top_k)).alias("_in_top")
    ranked = ranked.with_columns(in_top)
    was_in = pl.col("_in_top").shift(1).over("symbol").fill_null(False)
    vol = _annual_volatility(p.vol_window).over("symbol")
    weight = pl.min_horizontal(p.vol_target / vol / p.top_k, pl.lit(p.max_weight))
    return ranked.with_columns(
        (pl.col("_in_top") & ~was_in).alias("entry_long"),
        (~pl.col("_in_top") & was_in).alias("exit_long"),
        *no_shorts(),
        pl.when(vol > 0).then(weight).alias("size"),
        *no_levels(),
    ).drop("_momentum", "_in_top")


MOMENTUM = Strategy(
    name="cross_sectional_momentum",
    params_model=MomentumParams,
    compute=_momentum,
    lookback=lambda p: max(p.lookback + p.skip, p.vol_window + 1) + 1,
    cross_sectional=True,
    description="Holds the top-K symbols by past return (skipping the last bars), each sized to a volatility target.",
    fast_path=CrossSectionalRank(score=_past_return, volatility=_annual_volatility, inert=("allow_short",)),
)

BUILTINS: dict[str, Strategy] = {s.name: s for s in (SMA_CROSS, RSI_REVERSION, DONCHIAN_BREAKOUT, MOMENTUM)}
