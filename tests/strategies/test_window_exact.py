"""Indicators are exact functions of their window, so the live path equals the backtest bit for bit.

A value at row t depends only on the bars of its window, not on how much history came before it:
checked against numpy sums taken from each window's oldest bar, against the indicator computed on
the window alone, and, for every built-in strategy, by comparing the full history's signals with
those of histories that start at many other bars and with trailing live windows (`lookback + 1`
bars, last row). Data: 10 years of daily bars, one year of minute bars, and series built so that
moving averages, RSI and volatility sit on exact mathematical ties, decided by the last ulp.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from lake.sources.synthetic import SyntheticSource
from strategies import indicators as ind
from strategies.base import SIGNAL_COLUMNS, Strategy
from strategies.builtin import DONCHIAN_BREAKOUT, MOMENTUM, RSI_REVERSION, SMA_CROSS
from strategies.live import SignalWindow, UniverseWindow

SYMBOLS = ["AAPL", "JPM", "MSFT", "XOM"]

CASES: list[tuple[Strategy[Any], dict[str, Any]]] = [
    (SMA_CROSS, {"fast": 5, "slow": 20, "allow_short": True, "sizing": "volatility"}),
    (SMA_CROSS, {"fast": 10, "slow": 40, "sizing": "risk", "atr_period": 10}),
    (RSI_REVERSION, {"period": 10, "lower": 35.0, "upper": 65.0, "allow_short": True, "sizing": "risk"}),
    (DONCHIAN_BREAKOUT, {"entry_window": 20, "exit_window": 10, "allow_short": True, "sizing": "volatility"}),
    (MOMENTUM, {"lookback": 20, "skip": 1, "top_k": 2, "vol_window": 10}),
]
IDS = ["sma_cross_5_20", "sma_cross_10_40", "rsi_reversion", "donchian_breakout", "cross_sectional_momentum"]


# ---------------------------------------------------------------------------------------------
# Data


@pytest.fixture(scope="module")
def daily() -> pl.DataFrame:
    """Ten years of daily bars (2014-2023) for four symbols."""
    return SyntheticSource(seed=7).fetch(SYMBOLS, "1d", datetime(2014, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC))


@pytest.fixture(scope="module")
def minute() -> pl.DataFrame:
    """One year of minute bars (2023) for three symbols."""
    return SyntheticSource(seed=7).fetch(SYMBOLS[:3], "1m", datetime(2023, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC))


def _near_tie_closes(rng: np.random.Generator, n: int) -> np.ndarray:
    """Closes in whole cents made of stretches where the indicators tie exactly in real numbers:
    - a block of 5 prices repeated: every SMA whose window is a multiple of 5 is the block's mean,
      so fast and slow SMAs are equal and only rounding decides `fast > slow`;
    - the same block's changes sum to 0 over each window of 10 changes: RSI(10) is exactly 50;
    - constant stretches (0.1, 0.3, 100.07 ...): SMAs equal, volatility exactly 0;
    - 0.1 / 0.2 alternation: the classic sums that drift;
    - random walks in cents between them, so there are real crossings too.
    """
    out: list[float] = []
    level = 100.0
    while len(out) < n:
        kind = int(rng.integers(0, 4))
        length = int(rng.integers(60, 240))
        if kind == 0:
            block = np.round(level + rng.normal(0.0, 0.8, 5), 2)
            out.extend(np.tile(block, length // 5 + 1)[:length].tolist())
        elif kind == 1:
            value = float(rng.choice([0.1, 0.3, 0.7, round(level, 2)]))
            out.extend([value] * length)
        elif kind == 2:
            out.extend(([0.1, 0.2] * length)[:length])
        else:
            walk = np.round(level + np.cumsum(rng.normal(0.0, 0.6, length)), 2)
            out.extend(np.maximum(walk, 0.05).tolist())
        level = max(5.0, float(np.round(level + rng.normal(0.0, 3.0), 2)))
    return np.asarray(out[:n])


@pytest.fixture(scope="module")
def near_ties() -> pl.DataFrame:
    """3,000 daily bars for three symbols built to sit on ties (see `_near_tie_closes`)."""
    n = 3000
    first = datetime(2000, 1, 3, tzinfo=UTC)
    ts = pl.datetime_range(first, first + timedelta(days=n - 1), "1d", eager=True, time_zone="UTC")
    frames = []
    for k, symbol in enumerate(SYMBOLS[:3]):
        rng = np.random.default_rng(100 + k)
        close = _near_tie_closes(rng, n)
        opens = np.concatenate(([close[0]], close[:-1]))
        spread = np.round(rng.choice([0.0, 0.01, 0.05, 0.1], n), 2)
        frames.append(
            pl.DataFrame(
                {
                    "ts": ts,
                    "symbol": symbol,
                    "open": opens,
                    "high": np.maximum(opens, close) + spread,
                    "low": np.maximum(np.minimum(opens, close) - spread, 0.01),
                    "close": close,
                    "volume": 1000.0,
                }
            )
        )
    return pl.concat(frames)


# ---------------------------------------------------------------------------------------------
# Helpers


def _differing_rows(got: pl.DataFrame, want: pl.DataFrame) -> int:
    """Rows whose signal columns differ in any bit (null vs value, 0.0 vs -0.0, NaN payloads)."""
    assert got.select("symbol", "ts").equals(want.select("symbol", "ts"))
    differ = np.zeros(got.height, dtype=np.bool_)
    for column in SIGNAL_COLUMNS:
        a, b = got[column], want[column]
        differ |= a.is_null().to_numpy() != b.is_null().to_numpy()
        if a.dtype == pl.Float64:
            differ |= a.fill_null(0.0).to_numpy().view(np.uint64) != b.fill_null(0.0).to_numpy().view(np.uint64)
        else:
            differ |= a.to_numpy() != b.to_numpy()
    return int(differ.sum())


def _step(frame: pl.DataFrame) -> pl.DataFrame:
    """Each row's position in its symbol's history (bars before it)."""
    return frame.with_columns(pl.int_range(pl.len()).over("symbol").alias("_k"))


def truncated_history_parity(strategy: Strategy[Any], params: Any, bars: pl.DataFrame, starts: int) -> tuple[int, int]:
    """Signals of histories starting at `starts` different bars against the full history's, on every
    row that has its `lookback` bars before it: (rows compared, rows differing)."""
    lookback = strategy.lookback(params)
    full = strategy.signals(bars, params)
    stamps = bars["ts"].unique().sort()
    offsets = np.unique(np.linspace(1, len(stamps) - lookback - 2, starts).astype(np.int64))
    compared = differing = 0
    for offset in offsets.tolist():
        part = _step(strategy.signals(bars.filter(pl.col("ts") >= stamps[offset]), params)).filter(pl.col("_k") >= lookback)
        want = full.join(part.select("symbol", "ts"), on=["symbol", "ts"], how="semi").sort("symbol", "ts")
        compared += part.height
        differing += _differing_rows(part.drop("_k"), want)
    return compared, differing


def trailing_window_parity(strategy: Strategy[Any], params: Any, bars: pl.DataFrame, samples: int) -> tuple[int, int]:
    """The live computation on `samples` rows: the signal function on the `lookback + 1` bars
    ending at the row (of every symbol, for a cross-sectional strategy), its last bar, against the
    full history's row. (rows compared, rows differing)."""
    size = strategy.lookback(params) + 1
    full = strategy.signals(bars, params)
    stamps = bars["ts"].unique().sort()
    rows = np.unique(np.linspace(size - 1, len(stamps) - 1, samples).astype(np.int64)).tolist()
    got = []
    for row in rows:
        window = bars.filter(pl.col("ts").is_between(stamps[row - size + 1], stamps[row]))
        got.append(strategy.signals(window, params).filter(pl.col("ts") == stamps[row]))
    live = pl.concat(got).sort("symbol", "ts")
    want = full.join(live.select("symbol", "ts"), on=["symbol", "ts"], how="semi").sort("symbol", "ts")
    return live.height, _differing_rows(live, want)


# ---------------------------------------------------------------------------------------------
# Hand-computed values


def test_sma_by_hand() -> None:
    bars = pl.DataFrame({"close": [1.0, 2.0, 3.0, 4.0, 6.0]})
    assert bars.select(ind.sma(3)).to_series().to_list() == [None, None, 2.0, 3.0, 13.0 / 3.0]


def test_rsi_sma_by_hand() -> None:
    # changes: -, +1, -1, +2, 0, -1; each value uses the means of gains and losses over 2 changes.
    bars = pl.DataFrame({"close": [10.0, 11.0, 10.0, 12.0, 12.0, 11.0]})
    got = bars.select(ind.rsi_sma(2)).to_series().to_list()
    # row 2: gain (1+0)/2, loss (0+1)/2 -> 50; row 3: gain 1, loss .5 -> 100 - 100/3;
    # row 4: gain 1, loss 0 -> 100; row 5: gain 0, loss .5 -> 0.
    assert got == [None, None, 50.0, 100.0 - 100.0 / 3.0, 100.0, 0.0]


def test_atr_sma_by_hand() -> None:
    # true range: row 0 has no previous close (high - low = 2); row 1 max(3, |14-10|, |11-10|) = 4;
    # row 2 max(1, |13-13|, |12-13|) = 1; row 3 max(2, |15-12.5|, |13-12.5|) = 2.5.
    bars = pl.DataFrame({"high": [11.0, 14.0, 13.0, 15.0], "low": [9.0, 11.0, 12.0, 13.0], "close": [10.0, 13.0, 12.5, 14.0]})
    assert bars.select(ind.true_range()).to_series().to_list() == [2.0, 4.0, 1.0, 2.5]
    assert bars.select(ind.atr_sma(2)).to_series().to_list() == [None, 3.0, 2.5, 1.75]


def test_rolling_volatility_by_hand() -> None:
    # log returns: -, ln 2, 2 ln 2, 0; sample std of two values a, b is |a - b| / sqrt(2).
    bars = pl.DataFrame({"close": [1.0, 2.0, 8.0, 8.0]})
    got = bars.select(ind.rolling_volatility(2)).to_series().to_list()
    assert got[:2] == [None, None]
    assert got[2:] == pytest.approx([math.log(2) / math.sqrt(2), 2 * math.log(2) / math.sqrt(2)], rel=1e-15)


def test_windows_restart_per_symbol_and_keep_polars_null_rules() -> None:
    bars = pl.DataFrame(
        {
            "symbol": ["A"] * 5 + ["B"] * 4,
            "close": [1.0, 2.0, None, 4.0, 5.0, 10.0, float("nan"), 30.0, 40.0],
        }
    )
    got = bars.select(ind.sma(2).over("symbol")).to_series().to_list()
    # a window holding a null is null (as rolling_mean); a NaN propagates as NaN.
    assert got[:5] == [None, 1.5, None, None, 4.5]
    assert got[5] is None and math.isnan(got[6]) and math.isnan(got[7]) and got[8] == 35.0
    assert bars.select(ind.rolling_volatility(5).over("symbol")).to_series().null_count() == bars.height
    assert pl.DataFrame({"close": [1.0, 2.0]}).select(ind.sma(3)).to_series().to_list() == [None, None]


def test_constant_prices_have_exactly_zero_volatility() -> None:
    bars = pl.DataFrame({"close": [0.1] * 50 + [0.3] * 50})
    vol = bars.select(ind.rolling_volatility(10)).to_series()
    assert vol.null_count() == 10
    # Only the windows holding the step's return (rows 50..59) move; the rest is exactly 0.
    assert (vol[10:50] == 0.0).all() and (vol[50:60] > 0.0).all() and (vol[60:] == 0.0).all()


# ---------------------------------------------------------------------------------------------
# Exact per window


def _sequential_window_sums(x: np.ndarray, window: int) -> np.ndarray:
    """Each window added from its oldest value (numpy's accumulate is sequential)."""
    out = np.full(x.shape[0], np.nan)
    view = sliding_window_view(x, window)
    for lo in range(0, view.shape[0], 20_000):
        out[window - 1 + lo : window - 1 + lo + view[lo : lo + 20_000].shape[0]] = np.cumsum(view[lo : lo + 20_000], axis=1)[:, -1]
    return out


def _sequential_window_stds(x: np.ndarray, window: int) -> np.ndarray:
    mean = _sequential_window_sums(x, window) / window
    out = np.full(x.shape[0], np.nan)
    view = sliding_window_view(x, window)
    for lo in range(0, view.shape[0], 20_000):
        dev = view[lo : lo + 20_000] - mean[window - 1 + lo : window - 1 + lo + 20_000, None]
        out[window - 1 + lo : window - 1 + lo + dev.shape[0]] = np.sqrt(np.cumsum(dev * dev, axis=1)[:, -1] / (window - 1))
    return out


def _reference(name: str, window: int, frame: pl.DataFrame) -> np.ndarray:
    """The indicator from numpy alone, one symbol's frame, NaN during warm-up."""
    close, high, low = (frame[c].to_numpy() for c in ("close", "high", "low"))
    prev = np.concatenate(([np.nan], close[:-1]))
    change = close - prev
    with np.errstate(divide="ignore", invalid="ignore"):
        if name == "sma":
            return _sequential_window_sums(close, window) / window
        if name == "atr_sma":
            tr = np.fmax(high - low, np.fmax(np.abs(high - prev), np.abs(low - prev)))
            return _sequential_window_sums(tr, window) / window
        if name == "rsi_sma":
            gain = np.concatenate(([np.nan], _sequential_window_sums(np.maximum(change[1:], 0.0), window) / window))
            loss = np.concatenate(([np.nan], _sequential_window_sums(np.maximum(-change[1:], 0.0), window) / window))
            return np.where(loss == 0, 100.0, 100.0 - 100.0 / (1.0 + gain / loss))
        assert name == "rolling_volatility"
        # The log returns themselves from polars: numpy's log may round differently from Rust's,
        # and the question here is the window's reduction.
        returns = frame.select(ind.log_return()).to_series().to_numpy()
        return np.concatenate(([np.nan], _sequential_window_stds(returns[1:], window)))


INDICATORS: dict[str, tuple[Callable[[int], pl.Expr], int, int]] = {
    # name: (expression, warm-up rows beyond window - 1, bars a value needs beyond its window).
    # The ATR's first true range has no previous close, so a value from the window alone needs the
    # bar before the window too, as the RSI and the volatility do for their first change.
    "sma": (ind.sma, 0, 0),
    "atr_sma": (ind.atr_sma, 0, 1),
    "rsi_sma": (ind.rsi_sma, 1, 1),
    "rolling_volatility": (ind.rolling_volatility, 1, 1),
}


@pytest.mark.parametrize("dataset", ["daily", "minute", "near_ties"])
@pytest.mark.parametrize("window", [2, 10, 50, 200])
@pytest.mark.parametrize("name", sorted(INDICATORS))
def test_indicator_at_t_is_its_window_alone(name: str, window: int, dataset: str, request: pytest.FixtureRequest) -> None:
    bars: pl.DataFrame = request.getfixturevalue(dataset)
    expr, warmup, extra = INDICATORS[name]
    frame = bars.filter(pl.col("symbol") == bars["symbol"][0]).sort("ts")
    full = frame.select(expr(window)).to_series()
    want = _reference(name, window, frame)
    first = window - 1 + warmup
    assert full.null_count() == first
    got = full.fill_null(np.nan).to_numpy()
    assert np.array_equal(got.view(np.uint64)[first:], want.view(np.uint64)[first:])
    # The expression on the window alone (the bars it needs and nothing before) gives the same bits.
    size = window + extra
    for t in np.linspace(size - 1, frame.height - 1, 40).astype(np.int64).tolist():
        alone = frame.slice(t - size + 1, size).select(expr(window)).to_series()[-1]
        assert np.float64(alone).view(np.uint64) == got[t : t + 1].view(np.uint64)[0], (name, window, t)


# ---------------------------------------------------------------------------------------------
# Live path = backtest, for every built-in strategy


@pytest.mark.parametrize(("dataset", "starts", "samples"), [("daily", 24, 40), ("minute", 6, 24), ("near_ties", 24, 40)])
@pytest.mark.parametrize(("strategy", "params"), CASES, ids=IDS)
def test_live_window_gives_the_backtest_signal_on_long_histories(
    strategy: Strategy[Any], params: dict[str, Any], dataset: str, starts: int, samples: int, request: pytest.FixtureRequest
) -> None:
    bars: pl.DataFrame = request.getfixturevalue(dataset)
    p = strategy.params(**params)
    compared, differing = truncated_history_parity(strategy, p, bars, starts)
    assert compared > 100 * starts and differing == 0, (compared, differing)
    compared, differing = trailing_window_parity(strategy, p, bars, samples)
    assert compared >= samples and differing == 0, (compared, differing)


@pytest.mark.parametrize(("strategy", "params"), CASES, ids=IDS)
def test_the_live_classes_replay_a_near_tie_stretch(strategy: Strategy[Any], params: dict[str, Any], near_ties: pl.DataFrame) -> None:
    """`SignalWindow` / `UniverseWindow` themselves, pushed bar by bar through 150 bars of ties
    that start deep into the history, against the signals of the whole history."""
    p = strategy.params(**params)
    stamps = near_ties["ts"].unique().sort()
    stretch = near_ties.filter(pl.col("ts").is_between(stamps[1200], stamps[1349])).sort("ts", "symbol")
    if strategy.cross_sectional:
        universe = UniverseWindow(strategy, p)
        replayed = [row for step in stretch.partition_by("ts", maintain_order=True) for row in universe.push(step.to_dicts())]
    else:
        window = SignalWindow(strategy, p)
        replayed = [window.push(row) for row in stretch.iter_rows(named=True)]
    full = strategy.signals(near_ties, p)
    live = _step(pl.DataFrame(replayed, schema=full.schema).sort("symbol", "ts")).filter(pl.col("_k") >= strategy.lookback(p)).drop("_k")
    want = full.join(live.select("symbol", "ts"), on=["symbol", "ts"], how="semi").sort("symbol", "ts")
    assert live.height > 3 * 100
    assert _differing_rows(live, want) == 0
    assert full.select(pl.any_horizontal("entry_long", "exit_long").sum()).item() > 20, "the strategy must act"
