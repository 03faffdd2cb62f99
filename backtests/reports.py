"""Backtest report plots as PNG bytes: equity/drawdown, sweep heatmap, walk-forward, Monte Carlo fan.

Every plot is drawn on its own ``matplotlib.figure.Figure`` with an explicit ``FigureCanvasAgg``, so
nothing here touches pyplot or the global backend: it is safe to call from worker threads and never
opens a window. Figures are 9 x 5 inches at 100 dpi, i.e. 900 x 500 pixel PNGs.

``save_report`` writes a set of PNGs plus an ``index.html`` that shows them, each file atomically
through the lake's writers, so a report lands in a local folder or an object store's prefix alike.
"""

from __future__ import annotations

import html
import io
import re
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any, overload
from urllib.parse import quote

import matplotlib.dates as mdates
import numpy as np
import polars as pl
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from backtests.metrics import drawdown
from lake.filesystem import ObjectPath
from lake.store import write_bytes_atomic

FIGSIZE = (9.0, 5.0)
DPI = 100
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_ANNOTATED_CELLS = 15  # annotate heatmap cells when both grid sides are at most this long
_MAX_TICK_LABELS = 20
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

Timestamps = Sequence[datetime] | Sequence[date] | np.ndarray


# --------------------------------------------------------------------------------------------- helpers


def _new_figure() -> Figure:
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _to_png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    # No "Software" metadata: identical input gives identical bytes across matplotlib builds.
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _as_1d(name: str, values: np.ndarray | Sequence[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    return arr


def _as_x(ts: Timestamps, n: int) -> tuple[np.ndarray, bool]:
    """The x values for ``n`` points and whether they are dates (then the axis gets date ticks)."""
    x = np.asarray(ts)
    if x.ndim != 1 or len(x) != n:
        raise ValueError(f"ts has {len(x)} entries but the series has {n}")
    is_dates = x.dtype.kind == "M" or (x.dtype == object and isinstance(x[0], date))
    return x, is_dates


def _date_axis(ax: Axes) -> None:
    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def drawdown_series(equity: np.ndarray) -> np.ndarray:
    """Drawdown as a negative percent: ``-100 * (1 - E_t / max_{s<=t} E_s)`` (0 at new highs).

    Same formula as ``backtests.metrics.drawdown`` (whose maximum is ``max_drawdown``), sign-flipped
    and in percent as the drawdown panel plots it.
    """
    return -100.0 * drawdown(_as_1d("equity", equity))


def pivot_grid(table: pl.DataFrame, x: str, y: str, value: str) -> tuple[list[Any], list[Any], np.ndarray]:
    """Pivot a sweep table into ``(x_values, y_values, grid)`` with ``grid[i, j]`` = value at (y_i, x_j).

    Axis values are the sorted distinct values of the columns. Combinations absent from the table
    (or with a null value) are NaN; duplicated (x, y) rows, e.g. from a further swept parameter, are
    averaged.
    """
    missing = [c for c in (x, y, value) if c not in table.columns]
    if missing:
        raise ValueError(f"column(s) {missing} not in table; available: {table.columns}")
    if len({x, y, value}) != 3:
        raise ValueError(f"x, y and value must be three different columns, got {x!r}, {y!r}, {value!r}")
    if table.height == 0:
        raise ValueError("table is empty")
    cells = (
        table.select(x, y, pl.col(value).cast(pl.Float64))
        .drop_nulls([x, y])
        .group_by(x, y)
        .agg(pl.col(value).mean())
    )
    xs = cells.get_column(x).unique().sort().to_list()
    ys = cells.get_column(y).unique().sort().to_list()
    x_pos = {v: j for j, v in enumerate(xs)}
    y_pos = {v: i for i, v in enumerate(ys)}
    grid = np.full((len(ys), len(xs)), np.nan)
    for xv, yv, val in cells.iter_rows():
        grid[y_pos[yv], x_pos[xv]] = np.nan if val is None else val
    return xs, ys, grid


def _tick_positions(n: int) -> np.ndarray:
    step = max(1, -(-n // _MAX_TICK_LABELS))
    return np.arange(0, n, step)


# ----------------------------------------------------------------------------------------------- plots


def equity_drawdown_png(
    ts: Timestamps,
    equity: np.ndarray,
    benchmark: np.ndarray | None = None,
    title: str = "Equity and drawdown",
    labels: tuple[str, str] = ("Strategy", "Benchmark"),
) -> bytes:
    """Equity (and a dashed benchmark, in the same units) on top, named in the legend by `labels`;
    drawdown in percent below."""
    eq = _as_1d("equity", equity)
    x, is_dates = _as_x(ts, len(eq))
    fig = _new_figure()
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[2, 1])
    top.plot(x, eq, color="tab:blue", linewidth=1.4, label=labels[0])
    if benchmark is not None:
        bench = _as_1d("benchmark", benchmark)
        if len(bench) != len(eq):
            raise ValueError(f"benchmark has {len(bench)} points but equity has {len(eq)}")
        top.plot(x, bench, color="tab:gray", linestyle="--", linewidth=1.2, label=labels[1])
        top.legend(loc="upper left")
    top.set_ylabel("Equity")
    top.set_title(title)
    top.grid(True, alpha=0.3)

    dd = drawdown_series(eq)
    bottom.fill_between(x, dd, 0.0, color="tab:red", alpha=0.35, linewidth=0)
    bottom.plot(x, dd, color="tab:red", linewidth=0.8)
    bottom.set_ylabel("Drawdown (%)")
    bottom.set_xlabel("Date" if is_dates else "Bar")
    bottom.set_ylim(top=0.0)
    bottom.grid(True, alpha=0.3)
    if is_dates:
        _date_axis(bottom)
    return _to_png(fig)


def heatmap_png(table: pl.DataFrame, x: str, y: str, value: str, title: str | None = None) -> bytes:
    """Parameter-sweep heatmap: ``x`` across, ``y`` up, colour = ``value``; missing cells blank."""
    xs, ys, grid = pivot_grid(table, x, y, value)
    fig = _new_figure()
    ax = fig.subplots()
    finite = grid[np.isfinite(grid)]
    norm = Normalize(float(finite.min()), float(finite.max())) if finite.size else Normalize(0.0, 1.0)
    colormap = colormaps["viridis"].with_extremes(bad=(1.0, 1.0, 1.0, 0.0))
    image = ax.imshow(
        np.ma.masked_invalid(grid),
        cmap=colormap,
        norm=norm,
        origin="lower",
        aspect="auto",
        interpolation="nearest",
    )
    colorbar = fig.colorbar(image, ax=ax)
    colorbar.set_label(value)

    xt, yt = _tick_positions(len(xs)), _tick_positions(len(ys))
    ax.set_xticks(xt, [_fmt(xs[j]) for j in xt])
    ax.set_yticks(yt, [_fmt(ys[i]) for i in yt])
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(title if title is not None else f"{value} by {x} and {y}")

    if len(xs) <= MAX_ANNOTATED_CELLS and len(ys) <= MAX_ANNOTATED_CELLS:
        for i in range(len(ys)):
            for j in range(len(xs)):
                v = grid[i, j]
                if not np.isfinite(v):
                    continue
                r, g, b, _ = colormap(norm(v))
                dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
                ax.text(
                    j, i, f"{v:.3g}", ha="center", va="center", fontsize=8, color="white" if dark else "black"
                )
    return _to_png(fig)


def walk_forward_png(
    ts: Timestamps,
    oos_equity: np.ndarray,
    fold_bounds: list[tuple[int, int]],
    title: str = "Walk-forward out-of-sample equity",
) -> bytes:
    """Stitched out-of-sample equity with alternately shaded ``[start, end)`` fold spans."""
    eq = _as_1d("oos_equity", oos_equity)
    n = len(eq)
    x, is_dates = _as_x(ts, n)
    for k, (start, end) in enumerate(fold_bounds):
        if not 0 <= start < end <= n:
            raise ValueError(f"fold {k} bounds ({start}, {end}) are not a non-empty range within [0, {n}]")
    fig = _new_figure()
    ax = fig.subplots()
    for k, (start, end) in enumerate(fold_bounds):
        # Span to the next fold's first bar so adjacent folds meet; the last one stops at its last bar.
        right = x[end] if end < n else x[end - 1]
        ax.axvspan(x[start], right, color="tab:blue" if k % 2 == 0 else "tab:orange", alpha=0.12, linewidth=0)
    ax.plot(x, eq, color="black", linewidth=1.3, label="Out-of-sample equity")
    if fold_bounds:
        ax.plot([], [], color="tab:blue", alpha=0.3, linewidth=8, label=f"Test folds ({len(fold_bounds)})")
    ax.legend(loc="upper left")
    ax.set_title(title)
    ax.set_ylabel("Equity")
    ax.set_xlabel("Date" if is_dates else "Bar")
    ax.grid(True, alpha=0.3)
    if is_dates:
        _date_axis(ax)
    return _to_png(fig)


def fan_chart_png(percentiles: dict[int, np.ndarray], title: str = "Monte Carlo equity percentiles") -> bytes:
    """Bands between symmetric percentiles (p, 100 - p), the median line, and any unpaired percentile."""
    if not percentiles:
        raise ValueError("percentiles is empty")
    paths = {int(p): _as_1d(f"percentile {p}", v) for p, v in percentiles.items()}
    lengths = {len(v) for v in paths.values()}
    if len(lengths) != 1:
        raise ValueError(f"percentile paths differ in length: {sorted(lengths)}")
    if any(not 0 <= p <= 100 for p in paths):
        raise ValueError(f"percentiles must be within [0, 100], got {sorted(paths)}")
    steps = np.arange(lengths.pop())
    fig = _new_figure()
    ax = fig.subplots()
    lows = sorted(p for p in paths if p < 50 and 100 - p in paths)
    paired = set(lows) | {100 - p for p in lows}
    for rank, p in enumerate(lows):  # widest band first, inner bands darker on top
        alpha = 0.15 + 0.35 * rank / max(1, len(lows) - 1) if len(lows) > 1 else 0.3
        ax.fill_between(
            steps,
            paths[p],
            paths[100 - p],
            color="tab:blue",
            alpha=alpha,
            linewidth=0,
            label=f"{p}–{100 - p}th",
        )
    for p in sorted(set(paths) - paired - {50}):
        ax.plot(steps, paths[p], color="tab:gray", linestyle=":", linewidth=1.0, label=f"{p}th")
    if 50 in paths:
        ax.plot(steps, paths[50], color="tab:blue", linewidth=1.8, label="Median")
    ax.legend(loc="upper left")
    ax.set_title(title)
    ax.set_xlabel("Step")
    ax.set_ylabel("Equity")
    ax.grid(True, alpha=0.3)
    return _to_png(fig)


# ---------------------------------------------------------------------------------------------- output


def _index_html(names: list[str]) -> str:
    sections = "\n".join(
        f'<section>\n  <h2>{html.escape(name)}</h2>\n  <img src="{html.escape(quote(name + ".png"))}" '
        f'alt="{html.escape(name)}" width="{int(FIGSIZE[0] * DPI)}" height="{int(FIGSIZE[1] * DPI)}">\n</section>'
        for name in names
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>Backtest report</title>\n'
        "<style>body{font-family:sans-serif;margin:2em}img{max-width:100%;height:auto}</style>\n"
        f"</head>\n<body>\n<h1>Backtest report</h1>\n{sections}\n</body>\n</html>\n"
    )


@overload
def save_report(path: Path, pngs: dict[str, bytes]) -> list[Path]: ...
@overload
def save_report(path: ObjectPath, pngs: dict[str, bytes]) -> list[ObjectPath]: ...
def save_report(path: Path | ObjectPath, pngs: dict[str, bytes]) -> list[Path] | list[ObjectPath]:
    """Write ``<path>/<name>.png`` for each image and ``<path>/index.html`` showing them, atomically.

    Names must be plain file stems (letters, digits, ``_.-``, not starting with a dot). Returns the
    PNG paths in ``pngs`` order followed by the index path.
    """
    for name, data in pngs.items():
        if not _SAFE_NAME.fullmatch(name):
            raise ValueError(
                f"report image name {name!r} is not a plain file name ([A-Za-z0-9_.-], no leading dot)"
            )
        if not data.startswith(PNG_SIGNATURE):
            raise ValueError(f"report image {name!r} is not PNG data")
    files = {f"{name}.png": data for name, data in pngs.items()} | {"index.html": _index_html(list(pngs)).encode("utf-8")}
    if isinstance(path, ObjectPath):
        return [write_bytes_atomic(path / name, data) for name, data in files.items()]
    return [write_bytes_atomic(path / name, data) for name, data in files.items()]
