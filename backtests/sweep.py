"""Parameter sweeps: one entry point, `sweep(bars, strategy, grid, config)`, over full parameter objects.

Every field of every combination is honoured; the route depends only on what the strategy declares:
- a declared `fast_path` whose fields the fused kernel can all honour (`strategies.base.FastPath`: a
  `MovingAverageCross`, `sweep_fused_nb.py`, or `sweep_sma_nb.py` when its average is `sma`; a `ThresholdCross`, `sweep_threshold_nb.py`; a
  `ChannelBreakout` with its ATR brackets, `sweep_channel_nb.py`): each distinct indicator series
  and each distinct size column is computed once and the signals (and levels) are taken inside the
  compiled loop, which makes million-bar grids cheap;
- otherwise, one symbol: signals per combination with the strategy's own function, stacked into
  (bar x combination) arrays a chunk at a time and simulated together (`sweep_nb.py`), with the
  engine's bracket rules when the strategy sets stop/target levels;
- a declared `CrossSectionalRank` (cross-sectional momentum: the top of a ranking across the
  universe, sized to a volatility target; `sweep_rank_nb.py`): each distinct ranking and volatility
  is computed once and every combination simulates the whole universe with shared cash through the
  engine's own per-bar order step;
- other cross-sectional strategies (they rank symbols against each other, so they need the
  universe): the engine itself, once per combination, on every symbol with shared cash.
Each route equals `run_backtest` per combination (tests/backtests/test_sweep.py,
test_sweep_rank.py and the fused routes' own tests).

`expand_grid` builds the grid from fixed values and swept values, refusing unknown names and bad values.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any

import numba
import numpy as np
import polars as pl
from pydantic import TypeAdapter, ValidationError

from backtests.engine import (
    BacktestConfig,
    BacktestError,
    fee_fractions,
    fill_prices,
    has_levels,
    run_backtest,
    slippage_fractions,
    to_market,
)
from backtests.market import Market
from backtests.sweep_channel_fast_nb import breakout_bits_nb, channel_bits_nb, channel_fast_sweep_nb
from backtests.sweep_channel_nb import channel_sweep_nb
from backtests.sweep_fused_nb import ma_cross_sweep_nb
from backtests.sweep_nb import bracket_sweep_nb, signals_sweep_nb
from backtests.sweep_rank_nb import rank_across_nb, rank_sweep_nb
from backtests.sweep_sma_nb import sma_cross_sweep_nb
from backtests.sweep_threshold_fast_nb import crossing_bits_nb, rsi_sma_rows_nb, threshold_fast_sweep_nb
from backtests.sweep_threshold_nb import threshold_sweep_nb
from strategies.base import (
    ChannelBreakout,
    CrossSectionalRank,
    FastPath,
    MovingAverageCross,
    P,
    Strategy,
    StrategyError,
    StrategyParams,
    ThresholdCross,
    check_bars,
)
from strategies.indicators import rsi_sma, sma
from strategies.sizing import SizingParams

CHUNK = 64  # combinations per pass of the generic path: bounds memory at 4 x bars x CHUNK bytes
LINE_BYTES = 256 * 2**20  # crossing bits of the threshold route's lines held at once
INDICATOR_BATCH = 8  # indicator series computed together by the fused routes: 8 x bars x 8 bytes beside the rows
SIDES = ("entry_long", "exit_long", "entry_short", "exit_short")
Progress = Callable[[int, int], None]


def expand_grid(strategy: Strategy[P], fixed: Mapping[str, Any] | None = None, swept: Mapping[str, Sequence[Any]] | None = None) -> list[P]:
    """Every combination of `swept` (empty: the strategy's declared sweep ranges, minus the fixed
    fields) on top of `fixed`, as full parameter objects. Unknown names, a name both fixed and swept,
    an empty value list and a value its field rejects are errors naming them; combinations the model
    rejects as a whole (fast >= slow) are skipped, and none left is an error."""
    model = strategy.params_model
    fixed, swept = dict(fixed or {}), dict(swept or {})
    unknown = sorted((set(fixed) | set(swept)) - set(model.model_fields))
    if unknown:
        raise BacktestError(f"{strategy.name}: unknown parameter(s) {unknown}; its parameters are {sorted(model.model_fields)}")
    both = sorted(set(fixed) & set(swept))
    if both:
        raise BacktestError(f"{strategy.name}: {both} given both as fixed params and in the grid; give each once")
    empty = sorted(k for k, v in swept.items() if not v)
    if empty:
        raise BacktestError(f"{strategy.name}: no values to sweep for {empty}")
    if not swept:
        swept = {k: v for k, v in model.sweep_ranges().items() if k not in fixed}
    base = {k: _field_value(strategy, k, v) for k, v in fixed.items()}
    names = list(swept)
    values = [[_field_value(strategy, k, v) for v in swept[k]] for k in names]
    grid: list[P] = []
    first_error = ""
    for combo in itertools.product(*values):
        try:
            grid.append(model(**base, **dict(zip(names, combo, strict=True))))
        except ValidationError as exc:
            first_error = first_error or f"{dict(zip(names, combo, strict=True))}: {exc.errors()[0]['msg']}"
    if not grid:
        raise BacktestError(f"{strategy.name}: no valid combination of grid {swept} with params {fixed} (first: {first_error})")
    return grid


def _field_value(strategy: Strategy[Any], name: str, value: Any) -> Any:
    """`value` checked and converted by field `name`'s own type and bounds (so 5.0 is the int 5)."""
    field = strategy.params_model.model_fields[name]
    kind: Any = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
    try:
        return TypeAdapter(kind).validate_python(value)
    except ValidationError as exc:
        raise BacktestError(f"{strategy.name}: {name}={value!r} is invalid: {exc.errors()[0]['msg']}") from exc


def sweep(
    bars: pl.DataFrame,
    strategy: Strategy[Any],
    grid: Sequence[StrategyParams],
    config: BacktestConfig | None = None,
    progress: Progress | None = None,
) -> pl.DataFrame:
    """Final equity, return, max drawdown and order count per combination, in grid order, with the
    parameters that vary across the grid; `progress(done, total)` as combinations finish."""
    config = config or BacktestConfig()
    grid = list(grid)
    if not grid:
        raise BacktestError("sweep: empty parameter grid")
    wrong = next((p for p in grid if not isinstance(p, strategy.params_model)), None)
    if wrong is not None:
        raise BacktestError(f"sweep: {strategy.name} takes {strategy.params_model.__name__}, got a {type(wrong).__name__} in the grid")
    if bars.is_empty():
        raise BacktestError("sweep: no bars (empty range or unknown symbol?)")
    shape = strategy.fast_path
    if isinstance(shape, CrossSectionalRank) and _fusable(strategy, shape):
        table = _rank_sweep(bars, strategy, shape, grid, config)
        if table is not None:
            if progress:
                progress(len(grid), len(grid))
            return table
    if strategy.cross_sectional:
        return _engine_sweep(bars, strategy, grid, config, progress)
    if bars["symbol"].n_unique() != 1:
        raise BacktestError(f"sweep: {strategy.name} runs on one symbol at a time, got {sorted(bars['symbol'].unique().to_list())}")
    if config.slippage_atr:
        raise BacktestError("sweep: slippage_atr is not supported; use slippage_bps")
    ordered = bars.sort("ts")
    if shape is not None and not isinstance(shape, CrossSectionalRank) and _fusable(strategy, shape):
        table = _fused_sweep(ordered, strategy, shape, grid, config)
        if table is not None:
            if progress:
                progress(len(grid), len(grid))
            return table
    base = to_market(strategy.signals(ordered, grid[0]))
    if config.brackets and has_levels(base):
        return _bracket_sweep(ordered, strategy, grid, config, progress)
    fill = np.ascontiguousarray((base.open if config.fill == "next_open" else base.close)[:, 0])
    close = np.ascontiguousarray(base.close[:, 0])
    fee = np.ascontiguousarray(fee_fractions(base, config)[:, 0])

    def run(signals: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
        *sides, size = signals
        return _kernel(signals_sweep_nb)(
            fill, close, *sides, size, fee, config.slippage_bps / 1e4, config.init_cash, not config.fractional
        )

    return _in_chunks(ordered, strategy, grid, config, progress, run, levels=False)


def _fusable(strategy: Strategy[Any], shape: FastPath) -> bool:
    """The fused kernels honour the shape's own fields, its short switch and the sizing fields
    (through the strategy's own size column); the rank kernel its own fields and the ones declared
    inert. A model with any other field goes the generic way (or the engine's)."""
    fields = set(strategy.params_model.model_fields)
    own = _shape_fields(shape)
    if isinstance(shape, CrossSectionalRank):
        return own <= fields and not fields - own - set(shape.inert)
    return own <= fields and not fields - own - {shape.short} - set(SizingParams.model_fields)


def _shape_fields(shape: FastPath) -> set[str]:
    """The parameter fields a shape's kernel reads itself (the short switch apart)."""
    if isinstance(shape, MovingAverageCross):
        return {shape.fast, shape.slow}
    if isinstance(shape, ThresholdCross):
        return {shape.window, shape.lower, shape.upper, shape.exit}
    if isinstance(shape, CrossSectionalRank):
        return {shape.lookback, shape.skip, shape.top_k, shape.vol_window, shape.vol_target, shape.max_weight}
    return {shape.entry, shape.exit, shape.stop, shape.target1, shape.target2}


def _fused_sweep(
    bars: pl.DataFrame,
    strategy: Strategy[Any],
    shape: MovingAverageCross | ThresholdCross | ChannelBreakout,
    grid: list[StrategyParams],
    config: BacktestConfig,
) -> pl.DataFrame | None:
    """The fused route for the declared shape; None when the strategy's own frame breaks its
    declaration (levels set)."""
    sized = _size_columns(bars, strategy, grid, _shape_fields(shape), levels=isinstance(shape, ChannelBreakout))
    if sized is None:
        return None
    market, sizes, size_row = sized
    if isinstance(shape, ChannelBreakout):
        return _channel_sweep(bars, market, shape, grid, config, sizes, size_row)
    prices = (
        np.ascontiguousarray((market.open if config.fill == "next_open" else market.close)[:, 0]),
        np.ascontiguousarray(market.close[:, 0]),
    )
    costs = (np.ascontiguousarray(fee_fractions(market, config)[:, 0]), config.slippage_bps / 1e4, config.init_cash, not config.fractional)
    short = np.array([bool(getattr(p, shape.short, False)) and config.allow_short for p in grid], dtype=np.bool_)
    if isinstance(shape, MovingAverageCross):
        windows = sorted({int(getattr(p, f)) for p in grid for f in (shape.fast, shape.slow)})
        close = bars["close"]
        if shape.average is sma and close.null_count() == 0 and np.isfinite(prices[1]).all():
            # The exact windowed mean of the close: the kernel computes every window itself, a block of
            # bars at a time, in `sma`'s own summation order (no (window x bar) array).
            row = {w: i for i, w in enumerate(windows)}
            final, max_dd, orders = _kernel(sma_cross_sweep_nb)(
                np.ascontiguousarray(close.to_numpy(), dtype=np.float64),
                np.array(windows, dtype=np.int64),
                *prices,
                np.array([row[int(getattr(p, shape.fast))] for p in grid], dtype=np.int64),
                np.array([row[int(getattr(p, shape.slow))] for p in grid], dtype=np.int64),
                sizes,
                size_row,
                short,
                *costs,
                min(len(grid), numba.get_num_threads()),
            )
            return _table(grid, final, max_dd, orders, config)
        means, row = _indicator_rows(bars, shape.average, windows)
        final, max_dd, orders = _kernel(ma_cross_sweep_nb)(
            *prices,
            means,
            np.array([row[int(getattr(p, shape.fast))] for p in grid], dtype=np.int64),
            np.array([row[int(getattr(p, shape.slow))] for p in grid], dtype=np.int64),
            sizes,
            size_row,
            short,
            *costs,
        )
    else:  # ThresholdCross
        windows = sorted({int(getattr(p, shape.window)) for p in grid})
        if shape.indicator is rsi_sma and np.isfinite(prices[1]).all():
            # Cutler's RSI of every window from one fold of the gains and losses (the same bytes).
            values, row = rsi_sma_rows_nb(prices[1], np.array(windows, dtype=np.int64)), {w: i for i, w in enumerate(windows)}
        else:
            values, row = _indicator_rows(bars, shape.indicator, windows)

        def levels(name: str) -> np.ndarray:
            return np.array([float(getattr(p, name)) for p in grid], dtype=np.float64)

        value_row = np.array([row[int(getattr(p, shape.window))] for p in grid], dtype=np.int64)
        levels_of = (levels(shape.lower), levels(shape.upper), levels(shape.exit))
        if np.isfinite(prices[1]).all():
            final, max_dd, orders = _threshold_fast(prices, values, value_row, levels_of, sizes, size_row, short, costs)
        else:
            final, max_dd, orders = _kernel(threshold_sweep_nb)(*prices, values, value_row, *levels_of, sizes, size_row, short, *costs)
    return _table(grid, final, max_dd, orders, config)


def _threshold_fast(
    prices: tuple[np.ndarray, np.ndarray],
    values: np.ndarray,
    value_row: np.ndarray,
    levels: tuple[np.ndarray, np.ndarray, np.ndarray],
    sizes: np.ndarray,
    size_row: np.ndarray,
    short: np.ndarray,
    costs: tuple[Any, ...],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`threshold_sweep_nb`'s numbers from event to event (`sweep_threshold_fast_nb.py`): the
    combinations of a few indicator rows at a time, so the crossing bits of their distinct
    (row, level) lines stay under LINE_BYTES."""
    final, max_dd, orders = np.empty(len(value_row)), np.empty(len(value_row)), np.zeros(len(value_row), dtype=np.int64)
    line_bytes = 2 * 8 * ((values.shape[1] + 63) // 64)
    batches: list[list[int]] = [[]]
    lines: set[tuple[int, float]] = set()
    for r in np.unique(value_row):
        mine = {(int(r), float(level[k])) for level in levels for k in np.flatnonzero(value_row == r)}
        if batches[-1] and len(lines | mine) * line_bytes > LINE_BYTES:
            batches.append([])
            lines = set()
        batches[-1].append(int(r))
        lines |= mine
    for rows in batches:
        ks = np.flatnonzero(np.isin(value_row, rows))
        keys = sorted({(int(value_row[k]), float(level[k])) for level in levels for k in ks})
        line = {key: i for i, key in enumerate(keys)}
        below, above = _kernel(crossing_bits_nb)(
            values, np.array([r for r, _ in keys], dtype=np.int64), np.array([v for _, v in keys], dtype=np.float64)
        )
        line_rows = [np.array([line[(int(value_row[k]), float(level[k]))] for k in ks], dtype=np.int64) for level in levels]
        got = _kernel(threshold_fast_sweep_nb)(
            *prices, values, below, above, *line_rows, value_row[ks], *(level[ks] for level in levels), sizes, size_row[ks], short[ks], *costs,
            min(len(ks), numba.get_num_threads()),
        )
        final[ks], max_dd[ks], orders[ks] = got
    return final, max_dd, orders


def _channel_sweep(
    bars: pl.DataFrame,
    market: Market,
    shape: ChannelBreakout,
    grid: list[StrategyParams],
    config: BacktestConfig,
    sizes: np.ndarray,
    size_row: np.ndarray,
) -> pl.DataFrame:
    """The fused route of a channel breakout, with the engine's bracket rules when `config.brackets`:
    from event to event on its breakout bits when the prices are finite (and the bits can stand for
    the channels), else bar by bar on the channel rows."""
    windows = sorted({int(getattr(p, f)) for p in grid for f in (shape.entry, shape.exit)})
    periods = sorted({int(getattr(p, shape.atr_period)) for p in grid})
    atrs, atr_row = _indicator_rows(bars, shape.atr, periods)

    def col(values: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(values[:, 0], dtype=np.float64)

    def of(name: str, kind: type = float) -> np.ndarray:
        return np.array([kind(getattr(p, name)) for p in grid])

    mirrored = np.array([bool(getattr(p, shape.short, False)) for p in grid], dtype=np.bool_)
    ohlc = (col(market.open), col(market.high), col(market.low), col(market.close))
    row = {w: i for i, w in enumerate(windows)}
    bits = _breakout_bits(bars, shape, windows, ohlc) if _finite(ohlc) else None
    rows = (
        (atrs, np.array([atr_row[w] for w in of(shape.atr_period, int)], dtype=np.int64)),
        (np.array([row[w] for w in of(shape.entry, int)], dtype=np.int64), np.array([row[w] for w in of(shape.exit, int)], dtype=np.int64)),
    )
    rest = (
        of(shape.stop),
        of(shape.target1),
        of(shape.target2),
        sizes,
        size_row,
        mirrored,
        mirrored & config.allow_short,
        config.brackets,
        np.ascontiguousarray(fee_fractions(market, config)[:, 0]),
        config.fees_bps / 1e4,
        config.fee_per_share,
        config.slippage_bps / 1e4,
        config.init_cash,
        not config.fractional,
    )
    fill = col(market.open if config.fill == "next_open" else market.close)
    if bits is not None:
        chunks = min(len(grid), numba.get_num_threads())
        final, max_dd, orders = _kernel(channel_fast_sweep_nb)(fill, *ohlc, *bits, *rows[0], *rows[1], *rest, chunks)
    else:
        highs, _ = _indicator_rows(bars, shape.upper, windows)
        lows, _ = _indicator_rows(bars, shape.lower, windows)
        final, max_dd, orders = _kernel(channel_sweep_nb)(fill, *ohlc, highs, lows, *rows[1], *rows[0], *rest)
    return _table(grid, final, max_dd, orders, config)


def _finite(columns: tuple[np.ndarray, ...]) -> bool:
    """Whether every price is finite (the event-to-event kernels' range tables need it)."""
    return all(np.isfinite(x).all() for x in columns)


def _breakout_bits(
    bars: pl.DataFrame, shape: ChannelBreakout, windows: list[int], ohlc: tuple[np.ndarray, ...]
) -> tuple[np.ndarray, np.ndarray] | None:
    """Each window's (up, down) breakout bits: compiled from the highs and lows when the channels
    are the Donchian ones (the declared expressions equal `high.rolling_max(w).shift(1)` and
    `low.rolling_min(w).shift(1)`), else from the declared channels' rows; None when a low is
    broken where the high channel is null (only the rows can mirror that bar's levels)."""
    _, high, low, close = ohlc
    if all(
        shape.upper(w).meta.eq(pl.col("high").rolling_max(w).shift(1)) and shape.lower(w).meta.eq(pl.col("low").rolling_min(w).shift(1))
        for w in windows
    ):
        up, down = _kernel(channel_bits_nb)(high, low, close, np.array(windows, dtype=np.int64))
        return up, down
    highs, _ = _indicator_rows(bars, shape.upper, windows)
    lows, _ = _indicator_rows(bars, shape.lower, windows)
    up, down, mirrors = _kernel(breakout_bits_nb)(close, highs, lows)
    return (up, down) if mirrors else None


def _indicator_rows(bars: pl.DataFrame, indicator: Callable[[int], pl.Expr], windows: list[int]) -> tuple[np.ndarray, dict[int, int]]:
    """indicator(w) for each window as a (window x bar) array, and each window's row."""
    # A few at a time (the kernels release the GIL, polars runs them side by side), copied row by row
    # into one (window x bar) array: no transposed copy, and no frame of every window beside it.
    rows = np.empty((len(windows), bars.height))
    for start in range(0, len(windows), INDICATOR_BATCH):
        frame = bars.select(indicator(w).alias(str(w)) for w in windows[start : start + INDICATOR_BATCH])
        for i, w in enumerate(windows[start : start + INDICATOR_BATCH], start):
            rows[i] = frame[str(w)].to_numpy()
    return rows, {w: i for i, w in enumerate(windows)}


def _size_columns(
    bars: pl.DataFrame, strategy: Strategy[Any], grid: list[StrategyParams], shape_fields: set[str], *, levels: bool
) -> tuple[Market, np.ndarray, np.ndarray] | None:
    """One size column per distinct setting of every field but the shape's own, from the strategy
    itself, and each combination's column; None when the strategy's frame sets bracket levels and
    its shape has none (`levels` False)."""
    keys = [tuple(sorted(p.model_dump(exclude=shape_fields).items())) for p in grid]
    sizes_of: dict[tuple[Any, ...], int] = {}
    columns: list[np.ndarray] = []
    market = None
    for key, p in zip(keys, grid, strict=True):
        if key in sizes_of:
            continue
        market = to_market(strategy.signals(bars, p))
        if has_levels(market) and not levels:
            return None
        sizes_of[key] = len(columns)
        columns.append(np.asarray(market.signals["size"][:, 0], dtype=np.float64))
    assert market is not None
    return market, np.ascontiguousarray(np.vstack(columns)), np.array([sizes_of[k] for k in keys], dtype=np.int64)


def _rank_sweep(
    bars: pl.DataFrame, strategy: Strategy[Any], shape: CrossSectionalRank, grid: list[StrategyParams], config: BacktestConfig
) -> pl.DataFrame | None:
    """The compiled route of a cross-sectional ranking over the whole universe (`sweep_rank_nb.py`);
    None when a close is not positive (a log return's NaN would rank and size as polars' NaN does,
    which the kernel does not copy: the engine takes those bars); None too for a grid with a weight
    that is not positive (the kernel simulates long-only weights: the engine takes any other)."""
    try:
        check_bars(bars, strategy.name)
    except StrategyError as exc:
        raise BacktestError(str(exc)) from exc
    if any(not float(getattr(p, name)) > 0 for p in grid for name in (shape.vol_target, shape.max_weight)):
        return None
    ordered = bars.sort("symbol", "ts")
    if not (ordered["close"] > 0).all():
        return None
    market = to_market(ordered)  # also refuses a universe whose symbols do not share every bar
    n, m = market.close.shape
    scores = sorted({(int(getattr(p, shape.lookback)), int(getattr(p, shape.skip))) for p in grid})
    windows = sorted({int(getattr(p, shape.vol_window)) for p in grid})
    ranks = np.empty((len(scores), n, m), dtype=np.int32)
    vols = np.empty((len(windows), n, m))
    # A batch at a time (polars runs a batch's columns side by side); scored, then ranked across the
    # universe by `rank_across_nb` (`strategies.base.rank_across` compiled: the same ranks, without
    # polars' window over ts per score, which took most of the route's time).
    for start in range(0, len(scores), INDICATOR_BATCH):
        batch = scores[start : start + INDICATOR_BATCH]
        scored = ordered.select(shape.score(*key).over("symbol").cast(pl.Float64).alias(str(i)) for i, key in enumerate(batch))
        for i, column in enumerate(scored.iter_columns(), start):  # symbol-major: one row of n bars per symbol
            rank_across_nb(column.to_numpy().reshape(m, n), column.is_not_null().to_numpy().reshape(m, n), ranks[i])
    for start in range(0, len(windows), INDICATOR_BATCH):
        _into_wide(ordered.select(shape.volatility(w).over("symbol").alias(str(w)) for w in windows[start : start + INDICATOR_BATCH]), vols, start)

    def of(name: str, kind: type = float) -> np.ndarray:
        return np.array([kind(getattr(p, name)) for p in grid])

    score_row = {key: i for i, key in enumerate(scores)}
    window_row = {w: i for i, w in enumerate(windows)}
    final, max_dd, orders = _kernel(rank_sweep_nb)(
        np.ascontiguousarray(fill_prices(market, config), dtype=np.float64),
        np.ascontiguousarray(market.close, dtype=np.float64),
        ranks,
        np.array([score_row[(int(getattr(p, shape.lookback)), int(getattr(p, shape.skip)))] for p in grid], dtype=np.int64),
        of(shape.top_k, int),
        vols,
        np.array([window_row[int(getattr(p, shape.vol_window))] for p in grid], dtype=np.int64),
        of(shape.vol_target),
        of(shape.max_weight),
        config.fees_bps / 1e4,
        config.fee_per_share,
        np.ascontiguousarray(slippage_fractions(market, config), dtype=np.float64),
        config.init_cash,
        not config.fractional,
    )
    return _table(grid, final, max_dd, orders, config)


def _into_wide(frame: pl.DataFrame, out: np.ndarray, start: int) -> None:
    """Each column of `frame` (a universe's rows sorted by symbol and ts, every symbol on every bar)
    into out[start], out[start + 1], ... as a (bar x symbol) array."""
    _, n, m = out.shape
    for i, column in enumerate(frame.iter_columns(), start):
        out[i] = column.to_numpy().reshape(m, n).T


def _engine_sweep(
    bars: pl.DataFrame, strategy: Strategy[Any], grid: list[StrategyParams], config: BacktestConfig, progress: Progress | None
) -> pl.DataFrame:
    """Cross-sectional strategies: the engine (vectorbt's compiled simulation, shared cash across
    symbols) once per combination."""
    final, max_dd, orders = np.empty(len(grid)), np.empty(len(grid)), np.zeros(len(grid), dtype=np.int64)
    for i, p in enumerate(grid):
        result = run_backtest(bars, strategy, p, config)
        final[i], max_dd[i], orders[i] = result.equity["equity"][-1], result.metrics["max_drawdown"], result.orders.height
        if progress:
            progress(i + 1, len(grid))
    return _table(grid, final, max_dd, orders, config)


def _table(grid: Sequence[StrategyParams], final: np.ndarray, max_dd: np.ndarray, orders: np.ndarray, config: BacktestConfig) -> pl.DataFrame:
    params = pl.DataFrame([p.model_dump() for p in grid])
    varying = [c for c in params.columns if params[c].n_unique() > 1] or params.columns[:1]
    return params.select(varying).with_columns(
        pl.Series("final_equity", final),
        pl.Series("total_return", final / config.init_cash - 1.0),
        pl.Series("max_drawdown", max_dd),
        pl.Series("orders", orders),
    )


def _kernel(fn: Any) -> Callable[..., tuple[np.ndarray, ...]]:
    """A numba kernel as a plain callable for the type checker (its stubs reject star arguments)."""
    return fn  # type: ignore[no-any-return]


def _in_chunks(
    bars: pl.DataFrame,
    strategy: Strategy[Any],
    grid: Sequence[StrategyParams],
    config: BacktestConfig,
    progress: Progress | None,
    run: Callable[[tuple[np.ndarray, ...]], tuple[np.ndarray, ...]],
    *,
    levels: bool,
) -> pl.DataFrame:
    """Signals of CHUNK combinations at a time, stacked (bar x combination) and handed to `run`:
    entry/exit long, entry/exit short (all False unless the run allows shorts), size, and with
    `levels` stop, target 1, target 2."""
    results = []
    for start in range(0, len(grid), CHUNK):
        chunk = grid[start : start + CHUNK]
        frames = [strategy.signals(bars, p) for p in chunk]

        def stack(column: str, dtype: type, frames: list[pl.DataFrame] = frames) -> np.ndarray:
            return np.ascontiguousarray(np.column_stack([f[column].to_numpy() for f in frames]), dtype=dtype)

        no_short = np.zeros((bars.height, len(chunk)), dtype=np.bool_)
        sides = [stack(c, np.bool_) if config.allow_short or "short" not in c else no_short for c in SIDES]
        extra = [stack(c, np.float64) for c in ("size", *(("stop", "target1", "target2") if levels else ()))]
        results.append(run((*sides, *extra)))
        if progress:
            progress(min(start + CHUNK, len(grid)), len(grid))
    final, max_dd, orders = (np.concatenate([r[i] for r in results]) for i in range(3))
    return _table(grid, final, max_dd, orders, config)


def _bracket_sweep(
    bars: pl.DataFrame,
    strategy: Strategy[Any],
    grid: Sequence[StrategyParams],
    config: BacktestConfig,
    progress: Progress | None,
) -> pl.DataFrame:
    """Strategies with bracket levels: the compiled loop with the engine's bracket rules."""
    base = to_market(strategy.signals(bars, grid[0]))

    def col(values: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(values[:, 0], dtype=np.float64)

    prices = (col(base.open if config.fill == "next_open" else base.close), col(base.open), col(base.high), col(base.low), col(base.close))
    fee = np.ascontiguousarray(fee_fractions(base, config)[:, 0])

    def run(signals: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
        return _kernel(bracket_sweep_nb)(
            *prices, *signals, fee, config.fees_bps / 1e4, config.fee_per_share, config.slippage_bps / 1e4,
            config.init_cash, not config.fractional,
        )

    return _in_chunks(bars, strategy, grid, config, progress, run, levels=True)
