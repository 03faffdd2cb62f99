"""Parameters, registry, plugins, sizing and bad input."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from backtests.engine import BacktestError, run_backtest
from lake.sources.synthetic import SyntheticSource
from strategies.base import StrategyError
from strategies.builtin import DONCHIAN_BREAKOUT, SMA_CROSS, SmaCrossParams
from strategies.positions import next_direction
from strategies.registry import available, load_strategy


@pytest.fixture(scope="module")
def daily() -> pl.DataFrame:
    return SyntheticSource(seed=2).fetch(["AAPL"], "1d", datetime(2023, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC))


def test_bad_parameters_name_the_field() -> None:
    with pytest.raises(StrategyError, match=r"fast \(30\) must be below slow \(20\)"):
        SMA_CROSS.params(fast=30, slow=20)
    with pytest.raises(StrategyError, match="fraction"):
        SMA_CROSS.params(fraction=1.5)
    with pytest.raises(StrategyError, match="bogus"):
        SMA_CROSS.params(bogus=1)


def test_grid_spans_the_declared_ranges_and_skips_invalid_combinations() -> None:
    grid = list(SmaCrossParams.grid())
    assert all(p.fast < p.slow for p in grid)
    assert len(grid) == sum(1 for f in range(5, 55, 5) for s in range(20, 220, 20) if f < s)
    assert len(list(SmaCrossParams.grid(fast=[5], slow=[10, 20]))) == 2


@pytest.mark.parametrize(
    ("held", "signals", "after"),
    [
        (0, (True, False, False, False), 1),
        (1, (False, True, False, False), 0),
        (1, (False, True, True, False), -1),  # exit long and enter short: reverse
        (0, (True, False, True, False), 0),  # both sides at once: ambiguous, stay
        (0, (True, True, False, False), 0),  # entry and exit of one side: ignore the entry
        (-1, (False, True, False, False), -1),  # a long exit does not close a short
    ],
)
def test_signal_to_side_rule(held: int, signals: tuple[bool, bool, bool, bool], after: int) -> None:
    assert next_direction(held, *signals) == after


def test_registry_finds_builtins_and_user_strategies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert {"sma_cross", "rsi_reversion", "donchian_breakout"} <= set(available())
    (tmp_path / "my_strats.py").write_text(
        "from strategies.builtin import SMA_CROSS\n"
        "from dataclasses import replace\n"
        "SLOW_CROSS = replace(SMA_CROSS, name='slow_cross')\n"
        "NOT_ONE = 3\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_strategy("my_strats:SLOW_CROSS").name == "slow_cross"
    with pytest.raises(StrategyError, match="unknown strategy 'nope'"):
        load_strategy("nope")
    with pytest.raises(StrategyError, match="is a int, not a strategies.base.Strategy"):
        load_strategy("my_strats:NOT_ONE")
    with pytest.raises(StrategyError, match="has no 'MISSING'"):
        load_strategy("my_strats:MISSING")


def test_sizing_modes(daily: pl.DataFrame) -> None:
    fixed = SMA_CROSS.signals(daily, SMA_CROSS.params(fraction=0.5))["size"]
    assert set(fixed.to_list()) == {0.5}
    high, low, close = (daily[c].to_numpy() for c in ("high", "low", "close"))
    true_range = np.maximum.reduce([high[1:] - low[1:], np.abs(high[1:] - close[:-1]), np.abs(low[1:] - close[:-1])])
    atr_share = true_range[-14:].mean() / close[-1]
    vol = SMA_CROSS.signals(daily, SMA_CROSS.params(sizing="volatility", vol_target=0.01, fraction=1.0))["size"]
    assert vol[-1] == pytest.approx(min(1.0, 0.01 / atr_share))
    risk = SMA_CROSS.signals(daily, SMA_CROSS.params(sizing="risk", risk_per_trade=0.005, risk_stop_atr=2.0, fraction=0.8))["size"]
    assert risk[-1] == pytest.approx(min(0.8, 0.005 / (2.0 * atr_share)))
    assert vol.head(14).null_count() == 13  # no size until ATR(14) has 14 true ranges (the first is high - low)


def test_bad_input_is_named(daily: pl.DataFrame) -> None:
    p = SMA_CROSS.params()
    with pytest.raises(BacktestError, match="no bars"):
        run_backtest(daily.head(0), SMA_CROSS, p)
    nan_bar = daily.with_columns(pl.when(pl.int_range(pl.len()) == 40).then(float("nan")).otherwise(pl.col("close")).alias("close"))
    with pytest.raises(BacktestError, match="1 bar\\(s\\) with NaN/null prices, first AAPL at 2023-03-02"):
        run_backtest(nan_bar, SMA_CROSS, p)
    two = pl.concat([daily, SyntheticSource().fetch(["JPM"], "1d", datetime(2023, 6, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC))])
    with pytest.raises(BacktestError, match="JPM has 147 bars but the others have 250"):
        run_backtest(two, SMA_CROSS, p)


def test_bracket_levels_bracket_the_close(daily: pl.DataFrame) -> None:
    s = DONCHIAN_BREAKOUT.signals(daily, DONCHIAN_BREAKOUT.params()).drop_nulls("stop")
    assert ((s["stop"] < s["close"]) & (s["close"] < s["target1"]) & (s["target1"] < s["target2"])).all()
    assert not math.isnan(s["target2"][0])
