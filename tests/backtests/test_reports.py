"""Report plots: valid 900x500 PNGs that depend on their input, NaN sweep cells, drawdown data, report files."""

from __future__ import annotations

import io
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import polars as pl
import pytest

from backtests.reports import (
    drawdown_series,
    equity_drawdown_png,
    fan_chart_png,
    heatmap_png,
    pivot_grid,
    save_report,
    walk_forward_png,
)

N = 120
TS = [datetime(2023, 1, 2, tzinfo=UTC) + timedelta(days=i) for i in range(N)]


def _equity(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 10_000.0 * np.cumprod(1.0 + rng.normal(0.0005, 0.01, N))


def _sweep(*, drop: tuple[int, int] | None = None) -> pl.DataFrame:
    rows = [
        {"fast": f, "slow": s, "sharpe": (s - f) / 10.0}
        for f in (5, 10, 20, 50)
        for s in (10, 20, 50, 100)
        if f < s and (f, s) != drop
    ]
    return pl.DataFrame(rows)


def _fan(shift: float = 0.0) -> dict[int, np.ndarray]:
    steps = np.arange(60, dtype=float)
    return {p: 100.0 + steps * (0.1 + shift) + (p - 50) * 0.02 * np.sqrt(steps) for p in (5, 25, 50, 75, 95)}


def _image(png: bytes) -> np.ndarray:
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    return np.asarray(mpimg.imread(io.BytesIO(png), format="png"))


def _assert_figure_size(png: bytes) -> None:
    assert _image(png).shape == (500, 900, 4)


def test_drawdown_series_hand_computed() -> None:
    equity = np.array([100.0, 110.0, 99.0, 121.0, 110.0])
    # peaks 100, 110, 110, 121, 121 -> 1 - E/peak = 0, 0, 0.1, 0, 1/11
    expected = np.array([0.0, 0.0, -10.0, 0.0, -100.0 / 11.0])
    np.testing.assert_allclose(drawdown_series(equity), expected)
    assert drawdown_series(np.array([1.0, 2.0, 3.0])).tolist() == [0.0, 0.0, 0.0]


def test_equity_drawdown_png() -> None:
    png = equity_drawdown_png(TS, _equity(1))
    _assert_figure_size(png)
    with_bench = equity_drawdown_png(TS, _equity(1), benchmark=_equity(7))
    _assert_figure_size(with_bench)
    assert png == equity_drawdown_png(TS, _equity(1))  # deterministic
    assert png != equity_drawdown_png(TS, _equity(2))
    assert png != with_bench
    # numpy datetime64 timestamps work too
    _assert_figure_size(equity_drawdown_png(np.array(TS, dtype="datetime64[ns]"), _equity(1)))


def test_equity_drawdown_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="ts has"):
        equity_drawdown_png(TS[:-1], _equity(1))
    with pytest.raises(ValueError, match="benchmark"):
        equity_drawdown_png(TS, _equity(1), benchmark=_equity(2)[:-1])


def test_pivot_grid_leaves_missing_combinations_nan() -> None:
    xs, ys, grid = pivot_grid(_sweep(), "fast", "slow", "sharpe")
    assert xs == [5, 10, 20, 50]
    assert ys == [10, 20, 50, 100]
    for i, s in enumerate(ys):
        for j, f in enumerate(xs):
            if f >= s:
                assert np.isnan(grid[i, j]), (f, s)
            else:
                assert grid[i, j] == pytest.approx((s - f) / 10.0)


def test_heatmap_png_renders_missing_cell_blank() -> None:
    full = heatmap_png(_sweep(), "fast", "slow", "sharpe", title="Sweep")
    _assert_figure_size(full)
    # (10, 50) is an interior value, so the colour scale and all ticks stay the same without it.
    holed = heatmap_png(_sweep(drop=(10, 50)), "fast", "slow", "sharpe", title="Sweep")
    a, b = _image(full), _image(holed)
    changed = np.any(np.abs(a - b) > 1e-6, axis=-1)
    assert changed.sum() > 1_000  # a whole cell, not a few anti-aliased pixels
    assert np.allclose(b[changed], 1.0)  # ... and it is blank (white) where the value was
    assert not np.allclose(a[changed], 1.0)


def test_heatmap_png_depends_on_values_and_handles_large_grids() -> None:
    base = heatmap_png(_sweep(), "fast", "slow", "sharpe")
    scaled = heatmap_png(_sweep().with_columns(pl.col("sharpe").pow(2)), "fast", "slow", "sharpe")
    assert base != scaled
    big = pl.DataFrame(
        [{"a": a, "b": b, "v": float(np.sin(a) + np.cos(b))} for a in range(30) for b in range(25)]
    )
    _assert_figure_size(heatmap_png(big, "a", "b", "v"))


def test_heatmap_png_names_missing_column() -> None:
    with pytest.raises(ValueError, match="'sortino'"):
        heatmap_png(_sweep(), "fast", "slow", "sortino")
    with pytest.raises(ValueError, match="'medium'"):
        heatmap_png(_sweep(), "medium", "slow", "sharpe")


def test_walk_forward_png() -> None:
    folds = [(0, 40), (40, 80), (80, 120)]
    png = walk_forward_png(TS, _equity(3), folds)
    _assert_figure_size(png)
    assert png != walk_forward_png(TS, _equity(4), folds)
    assert png != walk_forward_png(TS, _equity(3), [(0, 60), (60, 120)])
    with pytest.raises(ValueError, match="fold 1"):
        walk_forward_png(TS, _equity(3), [(0, 60), (60, 121)])


def test_fan_chart_png() -> None:
    png = fan_chart_png(_fan())
    _assert_figure_size(png)
    assert png != fan_chart_png(_fan(shift=0.05))
    only_median = fan_chart_png({50: _fan()[50]})
    _assert_figure_size(only_median)
    assert png != only_median
    with pytest.raises(ValueError, match="length"):
        fan_chart_png({5: np.ones(10), 95: np.ones(11)})


def test_plots_render_concurrently() -> None:
    expected = equity_drawdown_png(TS, _equity(5))
    results: list[bytes] = []
    lock = threading.Lock()

    def work() -> None:
        png = equity_drawdown_png(TS, _equity(5))
        with lock:
            results.append(png)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [expected] * 4


def test_save_report_writes_pngs_and_index(tmp_path: Path) -> None:
    pngs = {
        "equity": equity_drawdown_png(TS, _equity(1)),
        "sweep": heatmap_png(_sweep(), "fast", "slow", "sharpe"),
        "fan": fan_chart_png(_fan()),
    }
    out = tmp_path / "report"
    written = save_report(out, pngs)
    assert written == [out / "equity.png", out / "sweep.png", out / "fan.png", out / "index.html"]
    assert sorted(p.name for p in out.iterdir()) == ["equity.png", "fan.png", "index.html", "sweep.png"]
    for name, data in pngs.items():
        assert (out / f"{name}.png").read_bytes() == data
    index = (out / "index.html").read_text()
    for name in pngs:
        assert f'src="{name}.png"' in index
        assert f"<h2>{name}</h2>" in index
    # Rewriting replaces in place and still leaves no temporary files behind.
    save_report(out, {"equity": pngs["fan"]})
    assert (out / "equity.png").read_bytes() == pngs["fan"]
    assert not [p for p in out.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]


def test_save_report_rejects_bad_names_and_data(tmp_path: Path) -> None:
    png = fan_chart_png(_fan())
    with pytest.raises(ValueError, match="plain file name"):
        save_report(tmp_path, {"../escape": png})
    with pytest.raises(ValueError, match="not PNG"):
        save_report(tmp_path, {"x": b"GIF89a"})
    assert list(tmp_path.iterdir()) == []
