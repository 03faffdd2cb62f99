"""The long-to-wide step every backtest starts from: (bar x symbol) arrays on one time index.

A long frame (symbol, ts, OHLC, signal columns) becomes one array per column, rows the sorted
timestamps and columns the sorted symbols. Every symbol must have every bar once: a missing or
duplicated bar is an error naming it. Built from integer indices (symbol code, position of the
timestamp) in numpy, not by pivoting each column; the frame `Strategy.signals` returns, sorted by
(symbol, ts), is a column-major block per symbol and needs no index at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

SIGNAL_COLUMNS = ("entry_long", "exit_long", "entry_short", "exit_short", "size", "stop", "target1", "target2")


class BacktestError(ValueError):
    """Bad input to a backtest; the message names what is wrong."""


@dataclass(frozen=True)
class Market:
    """Bars and signals as (bar x symbol) arrays, aligned on one time index. Inputs, never written:
    columns that are all NaN may share one array."""

    ts: pl.Series
    symbols: list[str]
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    signals: dict[str, np.ndarray]


def to_market(signals: pl.DataFrame, *, copy: bool = True) -> Market:
    """Aligned wide arrays from a long frame of bars and signals, in any row order.

    With `copy=False` (the engine's), a frame sorted by (symbol, ts) on shared timestamps gives
    views of its own buffers where polars hands them out without a copy (float columns without
    nulls): (bar x symbol) in Fortran order, each symbol's column as it stands, and every absent or
    all-null column one read-only NaN broadcast to the shape; the same values, no second copy of
    the bars. Otherwise (the default) every array is C-contiguous and its own."""
    stamps = signals["ts"].to_physical().to_numpy()
    runs = signals["symbol"].rle().struct.unnest()  # one row per run of equal symbols
    block = _block_length(runs, stamps)
    if block is not None:
        n = block
        symbols: list[str] = runs["value"].to_list()
        ts = signals["ts"].slice(0, n).set_sorted()

        def wide(values: np.ndarray) -> np.ndarray:
            by_symbol = values.reshape(len(symbols), n).T  # a view, Fortran order
            return by_symbol if not copy else _like(values, np.ascontiguousarray(by_symbol))

    else:
        symbols = sorted(signals["symbol"].unique().to_list())
        codes = signals["symbol"].cast(pl.Enum(symbols)).to_physical().to_numpy().astype(np.int64)
        ts, cell = _cells(signals, codes, stamps, symbols)
        n = ts.len()

        def wide(values: np.ndarray) -> np.ndarray:
            out = np.empty(values.shape, dtype=values.dtype)
            out[cell] = values
            return _like(values, out.reshape(n, len(symbols)))

    absent: list[np.ndarray] = []  # one NaN array shared by every absent or all-null column

    def column(name: str) -> np.ndarray:
        # Levels are optional for callers that build signals by hand, and all null without a bracket.
        if name not in signals.columns or (signals[name].dtype == pl.Float64 and signals[name].null_count() == signals.height):
            if not copy and block is not None:
                return np.broadcast_to(np.float64(np.nan), (n, len(symbols)))  # read-only, no memory
            absent.append(absent[0] if absent else np.full((n, len(symbols)), np.nan))
            return absent[-1]
        return wide(signals[name].to_numpy())

    return Market(ts, symbols, column("open"), column("high"), column("low"), column("close"), {c: column(c) for c in SIGNAL_COLUMNS})


def _like(source: np.ndarray, wide: np.ndarray) -> np.ndarray:
    """Read-only where polars handed out a read-only view, as the arrays always were: numba compiles
    (and caches) one specialization per array type, read-only or not."""
    wide.flags.writeable = wide.flags.writeable and source.flags.writeable
    return wide


def _block_length(runs: pl.DataFrame, stamps: np.ndarray) -> int | None:
    """Bars per symbol when the frame is sorted by (symbol, ts) with every symbol on the same
    strictly increasing timestamps (then each symbol's rows are one column as they stand); else None."""
    if runs.is_empty():
        return 0
    if runs["len"].n_unique() > 1 or not runs["value"].is_sorted() or runs["value"].n_unique() < runs.height:
        return None
    n = int(runs["len"][0])
    per_symbol = stamps.reshape(runs.height, n)
    first = per_symbol[0]
    if np.any(first[1:] <= first[:-1]) or not (per_symbol[1:] == first).all():
        return None
    return n


def _cells(signals: pl.DataFrame, codes: np.ndarray, stamps: np.ndarray, symbols: list[str]) -> tuple[pl.Series, np.ndarray]:
    """The sorted unique timestamps and each row's flat (bar x symbol) cell; raises on a missing or
    duplicated bar."""
    unique, first_row, row = np.unique(stamps, return_index=True, return_inverse=True)
    ts = signals["ts"].gather(first_row)
    n, k = unique.size, len(symbols)
    counts = np.bincount(codes, minlength=k)
    short = np.flatnonzero(counts != n)
    if short.size:
        j = int(short[0])
        present = np.zeros(n, dtype=bool)
        present[row[codes == j]] = True
        missing = np.flatnonzero(~present)
        first_missing = ts[int(missing[0])] if missing.size else "?"
        raise BacktestError(f"{symbols[j]} has {counts[j]} bars but the others have {n}; first missing bar {first_missing}")
    cell = row.astype(np.int64) * k + codes
    taken = np.bincount(cell, minlength=n * k)
    if taken.max() > 1:
        i = int(np.flatnonzero(taken[cell] > 1)[0])
        raise BacktestError(f"{signals['symbol'][i]} has two bars at {signals['ts'][i]}")
    return ts, cell
