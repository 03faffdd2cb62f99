"""The compiled sweep of a declared `CrossSectionalRank` (cross-sectional momentum): every
combination equals the engine's own backtest of it on the whole universe, with shared cash."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import polars as pl
import pytest
from pydantic import Field

from backtests import sweep as sweep_module
from backtests.engine import BacktestConfig, BacktestError, run_backtest
from backtests.sweep import expand_grid, sweep
from lake.sources.synthetic import SyntheticSource
from strategies.base import rank_across
from strategies.builtin import MOMENTUM, MomentumParams
from tests.backtests.sweep_checks import assert_rows_equal_engine

SYMBOLS = ["AAPL", "JPM", "MSFT", "XOM"]
# The strategy's one sizing rule in both regimes: the cap binds (each entry asks for 0.7 of the
# equity, so two on one bar compete for the cash), or the volatility target does.
SIZINGS: dict[str, dict[str, Any]] = {
    "capped": {"vol_target": 2.0, "max_weight": 0.7},
    "vol_target": {"vol_target": 0.08, "max_weight": 1.0},
}
GRID: dict[str, list[Any]] = {"lookback": [10, 30], "skip": [0, 2], "top_k": [1, 2, 4], "vol_window": [5, 20]}
CASES = {
    "fees_whole_shares": (3, BacktestConfig(fees_bps=3.0, fee_per_share=0.005, slippage_bps=5.0)),
    "fractional_next_close": (11, BacktestConfig(fees_bps=10.0, fractional=True, fill="next_close")),
    "atr_slippage_short_on": (23, BacktestConfig(fees_bps=1.0, slippage_bps=2.0, slippage_atr=0.5, allow_short=True)),
}


def universe(seed: int) -> pl.DataFrame:
    """A year and a half of daily bars for four symbols plus `TWIN`, a copy of AAPL's bars: the two
    always score the same, so the ranking's tie rule (symbol order) decides between them."""
    bars = SyntheticSource(seed=seed).fetch(SYMBOLS, "1d", datetime(2022, 6, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC))
    return pl.concat([bars, bars.filter(pl.col("symbol") == "AAPL").with_columns(pl.lit("TWIN").alias("symbol"))])


def entries_cut_by_cash(bars: pl.DataFrame, params: MomentumParams, config: BacktestConfig) -> int:
    """Bars where the engine filled two or more buys and one of them got well under its 0.7 share
    of the equity before the bar: entries that competed for the cash."""
    result = run_backtest(bars, MOMENTUM, params, config)
    before = result.equity.with_columns(pl.col("equity").shift(1).alias("before")).select("ts", "before")
    buys = result.orders.filter(pl.col("side") == "buy").join(before, on="ts")
    per_bar = buys.group_by("ts").agg(pl.len().alias("n"), (pl.col("size") * pl.col("price") / pl.col("before")).min().alias("least"))
    return per_bar.filter((pl.col("n") >= 2) & (pl.col("least") < 0.6)).height


def engine_runs(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The engine runs the sweep makes from now on (each still runs): one per combination on the
    engine route, none on the compiled one."""
    calls: list[Any] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return run_backtest(*args, **kwargs)

    monkeypatch.setattr(sweep_module, "run_backtest", counted)
    return calls


@pytest.mark.parametrize("sizing", list(SIZINGS))
@pytest.mark.parametrize("case", list(CASES))
def test_every_combination_equals_the_engine_on_the_universe(case: str, sizing: str, monkeypatch: pytest.MonkeyPatch) -> None:
    seed, config = CASES[case]
    bars = universe(seed)
    grid = expand_grid(MOMENTUM, SIZINGS[sizing], GRID)
    assert len(grid) == 24
    calls = engine_runs(monkeypatch)
    table = sweep(bars, MOMENTUM, grid, config)
    assert calls == []  # the declared route: the engine is not run per combination
    assert_rows_equal_engine(table, bars, MOMENTUM, grid, config)
    if sizing == "capped":  # the grid has bars where entries compete for the cash
        assert entries_cut_by_cash(bars, next(p for p in grid if p.top_k == 4), config) > 0


def test_the_tie_between_twins_goes_to_the_first_symbol() -> None:
    frame = pl.DataFrame(
        {"symbol": ["A", "B", "C", "A", "B", "C"], "ts": [1, 1, 1, 2, 2, 2], "score": [0.5, 0.5, None, 0.1, 0.3, 0.3]}
    ).sort("symbol", "ts")
    ranked = frame.with_columns(rank_across(pl.col("score")).alias("rank")).sort("ts", "symbol")
    assert ranked["rank"].to_list() == [1, 2, None, 3, 1, 2]


def test_the_first_twin_is_held_and_the_second_never_with_one_slot() -> None:
    # With TWIN a copy of AAPL, AAPL wins every tie: TWIN is never bought when only one is held.
    bars = universe(3)
    params = MOMENTUM.params(lookback=10, skip=0, top_k=1, vol_window=5, vol_target=2.0, max_weight=0.7)
    bought = set(run_backtest(bars, MOMENTUM, params, CASES["fees_whole_shares"][1]).orders["symbol"].to_list())
    assert "AAPL" in bought and "TWIN" not in bought


class WiderParams(MomentumParams):
    note: int = Field(0, description="a field the declaration does not name")


def test_an_undeclared_field_takes_the_engine_route_and_still_equals_it(monkeypatch: pytest.MonkeyPatch) -> None:
    wider = replace(MOMENTUM, params_model=WiderParams)
    config = CASES["fees_whole_shares"][1]
    grid = expand_grid(wider, {"note": 1}, {"lookback": [10, 30]})
    bars = universe(3)
    calls = engine_runs(monkeypatch)
    table = sweep(bars, wider, grid, config)
    assert len(calls) == 2
    assert_rows_equal_engine(table, bars, wider, grid, config)


class LooserParams(MomentumParams):
    max_weight: float = Field(0.5, ge=-1, le=1, description="a cap that lets a weight be zero or short")


def test_a_weight_that_is_not_positive_takes_the_engine_route_and_still_equals_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # The kernel simulates long-only weights; a declaration whose bounds allow others is the engine's.
    looser = replace(MOMENTUM, params_model=LooserParams)
    config = BacktestConfig(fees_bps=3.0, allow_short=True)
    grid = expand_grid(looser, {"top_k": 2}, {"max_weight": [0.5, -0.5]})
    bars = universe(3)
    calls = engine_runs(monkeypatch)
    table = sweep(bars, looser, grid, config)
    assert len(calls) == 2
    assert_rows_equal_engine(table, bars, looser, grid, config)
    nothing = expand_grid(looser, {"top_k": 2}, {"max_weight": [0.0]})  # no weight: the engine's too, and no trade
    assert sweep(bars, looser, nothing, config)["orders"].to_list() == [0] and len(calls) == 3


def test_without_the_declaration_the_engine_route_gives_the_same_rows() -> None:
    bars = universe(11)
    config = CASES["fractional_next_close"][1]
    # Ten distinct scores and nine windows: more than one batch of each (sweep.INDICATOR_BATCH).
    swept = {"lookback": [5, 10, 15, 20, 25], "skip": [0, 1], "vol_window": [4, 6, 8, 10, 12, 14, 16, 18, 20]}
    assert len(swept["lookback"]) * len(swept["skip"]) > sweep_module.INDICATOR_BATCH < len(swept["vol_window"])
    grid = [p for i, p in enumerate(expand_grid(MOMENTUM, SIZINGS["capped"] | {"top_k": 2}, swept)) if i % 7 == 0 or p.vol_window == 20]
    assert {(p.lookback, p.skip) for p in grid} == {(lb, s) for lb in swept["lookback"] for s in swept["skip"]}
    assert {p.vol_window for p in grid} == set(swept["vol_window"])
    compiled = sweep(bars, MOMENTUM, grid, config)
    engine = sweep(bars, replace(MOMENTUM, fast_path=None), grid, config)
    assert compiled["orders"].to_list() == engine["orders"].to_list()
    np.testing.assert_allclose(compiled["final_equity"].to_numpy(), engine["final_equity"].to_numpy(), rtol=1e-9)
    np.testing.assert_allclose(compiled["max_drawdown"].to_numpy(), engine["max_drawdown"].to_numpy(), rtol=1e-9, atol=1e-12)


def test_a_universe_with_a_missing_bar_is_refused_by_name() -> None:
    bars = universe(3)
    gap = bars.filter(~((pl.col("symbol") == "XOM") & (pl.col("ts") == bars["ts"].sort()[40])))
    grid = expand_grid(MOMENTUM, {}, {"lookback": [10]})
    with pytest.raises(BacktestError, match="XOM has .* bars but the others have .*; first missing bar"):
        sweep(gap, MOMENTUM, grid, BacktestConfig())


def test_progress_is_told_once_the_grid_is_done() -> None:
    seen: list[tuple[int, int]] = []
    grid = expand_grid(MOMENTUM, {}, {"lookback": [10, 20, 30]})
    sweep(universe(3), MOMENTUM, grid, BacktestConfig(), progress=lambda done, total: seen.append((done, total)))
    assert seen == [(3, 3)]


def test_a_close_at_zero_goes_to_the_engine_which_the_sweep_then_equals(monkeypatch: pytest.MonkeyPatch) -> None:
    # A zero close makes a log return infinite; polars ranks and sizes its NaNs its own way, so
    # those bars are left to the engine rather than to a kernel that would have to copy that.
    bars = universe(3)
    stamp = bars["ts"].sort()[200]
    zero = bars.with_columns(pl.when((pl.col("symbol") == "JPM") & (pl.col("ts") == stamp)).then(0.0).otherwise(pl.col("close")).alias("close"))
    calls = engine_runs(monkeypatch)
    grid = expand_grid(MOMENTUM, {}, {"lookback": [10, 30]})
    table = sweep(zero, MOMENTUM, grid, BacktestConfig())
    assert len(calls) == 2
    assert_rows_equal_engine(table, zero, MOMENTUM, grid, BacktestConfig())


def test_a_universe_wider_than_one_word_of_bits_equals_the_engine() -> None:
    # The kernel keeps the top as one bit per symbol, 64 to a word: 70 symbols take two words, and
    # a top of 40 moves symbols in both on one bar.
    names = [f"S{i:02d}" for i in range(70)]
    bars = SyntheticSource(seed=7).fetch(names, "1d", datetime(2023, 1, 1, tzinfo=UTC), datetime(2023, 5, 1, tzinfo=UTC))
    config = CASES["fees_whole_shares"][1]
    grid = expand_grid(MOMENTUM, SIZINGS["capped"], {"lookback": [5, 10], "skip": [0], "top_k": [3, 40], "vol_window": [5]})
    table = sweep(bars, MOMENTUM, grid, config)
    assert bars["symbol"].n_unique() > 64
    assert_rows_equal_engine(table, bars, MOMENTUM, grid, config)


def _state_cases(rng: np.random.Generator) -> list[tuple[float, float, float, float, float, float, float]]:
    """(cash, position, delta, price, fee, slippage, granularity) for the fills the rank kernel makes:
    exits of a long position, buys from flat or long of any size, ones the cash caps (at the edge too),
    ones too small to fill, with and without cash, fees, slippage and whole shares."""
    cases = []
    for _ in range(4000):
        price, whole = float(rng.uniform(1.0, 500.0)), bool(rng.integers(2))
        fee = float(rng.choice([0.0, rng.uniform(0.0, 0.01), 0.001]))
        slip = float(rng.choice([0.0, rng.uniform(0.0, 0.01)]))
        cash = float(rng.choice([0.0, 1e-13, rng.uniform(0.0, 1e5), rng.uniform(0.0, 1e3)]))
        held = float(rng.integers(1, 500)) if whole else float(rng.uniform(1e-9, 500.0))
        position = float(rng.choice([0.0, held, 1e-13]))
        edge = cash / (price * (1.0 + slip) * (1.0 + fee))  # what the cash buys: the capped branch's edge
        buy = float(rng.choice([rng.uniform(0.0, 2.0) * edge, edge, edge * (1 + 1e-12), rng.uniform(0.0, 1e-8), 0.5, rng.uniform(1.0, 300.0)]))
        for delta in (buy, -position):
            if delta != 0:
                cases.append((cash, position, delta, price, fee, slip, 1.0 if whole else np.nan))
    return cases


def test_a_fill_is_the_engines_order_step_to_the_bit() -> None:
    """The kernel's fill (vectorbt's `buy_nb` / `sell_nb` arithmetic without the branches the engine's
    arguments never take) against the engine's own step (`order_sim._execute_nb`: vectorbt's
    `process_order_nb`): the same cash and position bits, and filled exactly when a record is written."""
    from vectorbt.portfolio.enums import ProcessOrderState, log_dt, order_dt

    from backtests.order_sim import _execute_nb
    from backtests.sweep_rank_nb import _trade_nb

    records, logs = np.empty(1, dtype=order_dt), np.empty(1, dtype=log_dt)
    filled = 0
    for cash, position, delta, price, fee, slip, granularity in _state_cases(np.random.default_rng(5)):
        state = ProcessOrderState(cash, position, 0.0, cash, price, cash + position * price, 0, 0)
        want = _execute_nb(0, 0, delta, price, fee, slip, granularity, state, records, logs)
        got = _trade_nb(cash, position, delta, price, fee, slip, granularity)
        case = (cash, position, delta, price, fee, slip, granularity)
        assert np.array([got[0], got[1]]).tobytes() == np.array([want.cash, want.position]).tobytes(), case
        assert got[2] == (want.oidx == 1), case
        filled += got[2]
    assert 0 < filled < 8000  # both outcomes were tried


@pytest.mark.parametrize("symbols", [1, 5, 33, 200])
def test_the_compiled_ranking_is_polars_rank_across(symbols: int) -> None:
    """`sweep_rank_nb.rank_across_nb` against `strategies.base.rank_across` on scores with ties, nulls,
    NaN, infinities and both zeros, a few symbols (the insertion sort) or many (the merges)."""
    from backtests.sweep_rank_nb import rank_across_nb

    rng = np.random.default_rng(symbols)
    n = 300
    pool = np.array([0.0, -0.0, 1.5, -2.0, np.inf, -np.inf, np.nan, 0.25])
    values = np.where(rng.random((symbols, n)) < 0.5, rng.choice(pool, (symbols, n)), rng.normal(size=(symbols, n)))
    known = rng.random((symbols, n)) > 0.15
    frame = pl.DataFrame(
        {
            "symbol": np.repeat([f"S{i:03d}" for i in range(symbols)], n),
            "ts": np.tile(np.arange(n), symbols),
            "score": pl.Series(values.ravel()).set(pl.Series(~known.ravel()), None),
        }
    )
    want = frame.select(rank_across(pl.col("score")).fill_null(0))["score"].to_numpy().reshape(symbols, n).T
    got = np.empty((n, symbols), dtype=np.int32)
    rank_across_nb(values, known, got)
    np.testing.assert_array_equal(got, want)
