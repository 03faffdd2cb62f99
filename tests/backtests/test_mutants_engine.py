"""The engine's own rules (backtests/engine.py) by hand: configuration defaults and bounds, fill
prices, fee and slippage fractions, the sizing limits' mapping, the benchmark, turnover, the order
and trade tables of a scripted run (sides, directions, open vs closed), warm-up bars, and bad input.
Written for the survivors of mutation testing (issue 18): each case pins one rule."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl
import pytest
from pydantic import BaseModel, ValidationError

from backtests.engine import (
    BacktestConfig,
    BacktestError,
    SizingLimits,
    _pandas_freq,
    _turnover,
    buy_and_hold,
    fee_fractions,
    fill_prices,
    has_levels,
    run_backtest,
    slippage_fractions,
    trade_returns_on_equity,
)
from backtests.market import Market
from strategies.base import SIGNAL_COLUMNS, Strategy, StrategyError, StrategyParams


def _market(open_: list[list[float]], close: list[list[float]], signals: dict[str, np.ndarray] | None = None) -> Market:
    o, c = np.array(open_), np.array(close)
    n = o.shape[0]
    ts = pl.Series("ts", [datetime(2024, 1, 2, 14, 30, tzinfo=UTC) + timedelta(days=k) for k in range(n)])
    nan = np.full(o.shape, np.nan)
    sig = {name: nan for name in ("stop", "target1", "target2")} | (signals or {})
    return Market(ts, [f"S{j}" for j in range(o.shape[1])], o, np.maximum(o, c) + 1.0, np.minimum(o, c) - 1.0, c, sig)


# -- configuration ---------------------------------------------------------------------------------


def test_backtest_config_defaults() -> None:
    c = BacktestConfig()
    assert (c.init_cash, c.fill, c.fees_bps, c.fee_per_share, c.slippage_bps, c.slippage_atr) == (100_000.0, "next_open", 0.0, 0.0, 0.0, 0.0)
    assert (c.fractional, c.allow_short, c.brackets, c.timeframe) == (False, False, True, "1d")


@pytest.mark.parametrize(
    ("field", "ok", "bad"),
    [
        ("init_cash", 0.01, 0.0),
        ("fees_bps", 1000.0, 1000.01),
        ("fees_bps", 0.0, -0.01),
        ("fee_per_share", 0.0, -0.01),
        ("slippage_bps", 1000.0, 1000.01),
        ("slippage_bps", 0.0, -0.01),
        ("slippage_atr", 10.0, 10.01),
        ("slippage_atr", 0.0, -0.01),
    ],
)
def test_backtest_config_bounds(field: str, ok: float, bad: float) -> None:
    assert getattr(BacktestConfig(**{field: ok}), field) == ok  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=field):
        BacktestConfig(**{field: bad})  # type: ignore[arg-type]


def test_backtest_config_is_frozen_and_strict() -> None:
    with pytest.raises(ValidationError):
        BacktestConfig(unknown=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        BacktestConfig().init_cash = 5.0  # type: ignore[misc]


def test_sizing_limits_defaults_and_bounds() -> None:
    s = SizingLimits()
    assert (s.max_position_pct, s.max_sector_pct, s.max_open_positions, s.allow_short) == (1.0, 1.0, 1_000_000, True)
    assert (s.max_drawdown_pct, s.daily_loss_limit_pct, s.max_trades_per_day) == (1.0, 1.0, 1_000_000_000)
    assert (s.exchange, s.trading_window, s.window_open_delay_min, s.flatten_before_close_min, s.flatten_at_close) == ("XNYS", False, 0, 5, True)
    for field, ok, bad in [
        ("max_position_pct", 1.0, 1.01), ("max_position_pct", 0.01, 0.0), ("max_sector_pct", 1.0, 1.01), ("max_sector_pct", 0.01, 0.0),
        ("max_open_positions", 1, 0), ("max_drawdown_pct", 1.0, 1.01), ("max_drawdown_pct", 0.01, 0.0),
        ("daily_loss_limit_pct", 1.0, 1.01), ("daily_loss_limit_pct", 0.01, 0.0), ("max_trades_per_day", 1, 0),
        ("window_open_delay_min", 390, 391), ("window_open_delay_min", 0, -1), ("flatten_before_close_min", 390, 391),
        ("flatten_before_close_min", 0, -1),
    ]:  # fmt: skip
        assert getattr(SizingLimits(**{field: ok}), field) == ok  # type: ignore[arg-type]
        with pytest.raises(ValidationError, match=field):
            SizingLimits(**{field: bad})  # type: ignore[arg-type]


class _LiveLimits(BaseModel):
    max_position_pct: float = 0.2
    max_sector_pct: float = 0.3
    max_open_positions: int = 4
    max_drawdown_pct: float = 0.1
    trading_window: bool = False  # not taken: a backtest from live limits always has the window
    sector_map: dict[str, str] = {"IGNORED": "x"}  # noqa: RUF012 - taken from sector_of instead

    def sector_of(self, symbol: str) -> str:
        return {"AAA": "tech", "BBB": "tech"}.get(symbol, "other")


def test_sizing_limits_from_the_live_limits() -> None:
    s = SizingLimits.from_limits(_LiveLimits(), ["AAA", "BBB", "CCC"])
    assert (s.max_position_pct, s.max_sector_pct, s.max_open_positions, s.max_drawdown_pct) == (0.2, 0.3, 4, 0.1)
    assert s.daily_loss_limit_pct == 1.0  # a field the live model lacks keeps its default
    assert s.sector_map == {"AAA": "tech", "BBB": "tech", "CCC": "other"} and s.trading_window is True
    assert s.sector_ids(["AAA", "BBB", "CCC"]).tolist() == [0, 0, 1]


def test_unmapped_symbols_are_their_own_sector() -> None:
    s = SizingLimits(sector_map={"B": "tech", "C": "tech"})
    assert s.sector_ids(["A", "B", "C", "D"]).tolist() == [0, 1, 1, 2]
    assert s.sector_ids(["A", "B", "C", "D"]).dtype == np.int64


# -- prices and costs --------------------------------------------------------------------------------


def test_fill_prices_and_fees() -> None:
    m = _market([[10.0, 20.0], [11.0, 40.0]], [[12.0, 25.0], [13.0, 50.0]])
    assert fill_prices(m, BacktestConfig()) is m.open
    assert fill_prices(m, BacktestConfig(fill="next_close")) is m.close
    fees = fee_fractions(m, BacktestConfig(fees_bps=20.0, fee_per_share=0.5))
    np.testing.assert_allclose(fees, 0.002 + 0.5 / m.open, rtol=1e-15)
    fees = fee_fractions(m, BacktestConfig(fees_bps=20.0, fee_per_share=0.5, fill="next_close"))
    np.testing.assert_allclose(fees, 0.002 + 0.5 / m.close, rtol=1e-15)
    np.testing.assert_allclose(fee_fractions(m, BacktestConfig(fee_per_share=1.0), price=np.full((2, 2), 4.0)), 0.25, rtol=1e-15)


def test_slippage_fractions_take_the_atr_known_at_the_previous_close() -> None:
    n = 20
    # Two symbols: ranges 2 and 4 on a close of 100 (ATR/close 2 % and 4 % once ATR(14) exists).
    o = [[100.0, 100.0]] * n
    m = _market(o, o)
    m = Market(m.ts, m.symbols, m.open, m.open + np.array([1.0, 2.0]), m.open - np.array([1.0, 2.0]), m.close, m.signals)
    np.testing.assert_allclose(slippage_fractions(m, BacktestConfig(slippage_bps=10.0)), 0.001, rtol=1e-15)
    slip = slippage_fractions(m, BacktestConfig(slippage_bps=10.0, slippage_atr=0.5))
    first = int(np.argmax(slip[:, 0] > 0.001))  # the first bar that pays ATR slippage
    assert 0 < first < n
    np.testing.assert_allclose(slip[first:, 0], 0.001 + 0.5 * 0.02, rtol=1e-12)
    np.testing.assert_allclose(slip[first:, 1], 0.001 + 0.5 * 0.04, rtol=1e-12)
    np.testing.assert_allclose(slip[:first], 0.001, rtol=1e-15)  # no ATR yet: none of it
    # The fill bar's own range does not count: a wide bar changes the slippage of the bar after it.
    wide = m.high.copy()
    wide[first + 2, 0] = 150.0
    bumped = slippage_fractions(Market(m.ts, m.symbols, m.open, wide, m.low, m.close, m.signals), BacktestConfig(slippage_atr=0.5))
    assert bumped[first + 2, 0] == pytest.approx(0.5 * 0.02, rel=1e-12)
    assert bumped[first + 3, 0] > 0.5 * 0.02 and bumped[first + 3, 1] == pytest.approx(0.5 * 0.04, rel=1e-12)


def test_has_levels() -> None:
    o = [[10.0], [11.0]]
    assert not has_levels(_market(o, o))
    for column in ("stop", "target1", "target2"):
        assert has_levels(_market(o, o, {column: np.array([[np.nan], [9.0]])})), column
    assert not has_levels(_market(o, o, {"stop": np.array([[np.inf], [np.nan]])}))


def test_pandas_frequencies() -> None:
    assert [_pandas_freq(t) for t in ("1m", "5m", "15m", "1h", "1d", "1w")] == ["1min", "5min", "15min", "1h", "1D", "1D"]


def test_buy_and_hold_is_equal_weight_from_the_first_close() -> None:
    m = _market([[1.0, 1.0]] * 3, [[10.0, 50.0], [20.0, 50.0], [5.0, 100.0]])
    np.testing.assert_allclose(buy_and_hold(m, 1_000.0), [1_000.0, 1_500.0, 1_250.0], rtol=1e-15)


def test_turnover_is_traded_value_over_mean_equity() -> None:
    orders = pl.DataFrame({"size": [10.0, 5.0], "price": [100.0, 120.0]})
    assert _turnover(orders, np.array([1_000.0, 3_000.0])) == pytest.approx(1_600 / 2_000, rel=1e-15)
    assert _turnover(orders.clear(), np.array([1_000.0])) == 0.0


# -- a scripted run ----------------------------------------------------------------------------------


class ScriptParams(StrategyParams):
    script: str  # per bar: L enter long, S enter short, X exit either side, . nothing
    size: float = 1.0


def _scripted(bars: pl.DataFrame, p: ScriptParams) -> pl.DataFrame:
    if "!" in p.script:
        raise StrategyError("the script is broken")
    codes = list(p.script.ljust(bars.height, "."))
    return bars.with_columns(
        pl.Series("entry_long", [c == "L" for c in codes]),
        pl.Series("exit_long", [c == "X" for c in codes]),
        pl.Series("entry_short", [c == "S" for c in codes]),
        pl.Series("exit_short", [c == "X" for c in codes]),
        pl.lit(p.size).alias("size"),
        *(pl.lit(None, pl.Float64).alias(c) for c in ("stop", "target1", "target2")),
    ).select([*bars.columns, *SIGNAL_COLUMNS])


SCRIPTED = Strategy(name="scripted", params_model=ScriptParams, compute=_scripted, lookback=lambda p: 1)
START = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)


def _bars(prices: list[float]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "symbol": "AAA",
            "timeframe": "1d",
            "ts": [START + timedelta(days=i) for i in range(len(prices))],
            **{c: prices for c in ("open", "high", "low", "close")},
            "volume": 1000.0,
        }
    )


def _run(script: str, prices: list[float], **config: Any) -> Any:
    return run_backtest(_bars(prices), SCRIPTED, ScriptParams(script=script), BacktestConfig(init_cash=1_000, **config))


def test_orders_and_trades_of_a_long_then_a_short() -> None:
    result = _run("L.XS..", [10.0, 10.0, 12.0, 12.0, 8.0, 8.0], allow_short=True)
    assert result.orders.select("side", "size", "price").rows() == [("buy", 100.0, 10.0), ("sell", 100.0, 12.0), ("sell", 150.0, 8.0)]
    assert result.orders["ts"].to_list() == [START + timedelta(days=d) for d in (1, 3, 4)]
    trades = result.trades
    assert trades["direction"].to_list() == ["long", "short"] and trades["closed"].to_list() == [True, False]
    assert trades["entry_ts"].to_list() == [START + timedelta(days=1), START + timedelta(days=4)]
    assert trades["pnl"][0] == pytest.approx(200.0) and trades["symbol"].to_list() == ["AAA", "AAA"]
    assert result.equity["equity"].to_list() == pytest.approx([1_000.0, 1_000.0, 1_200.0, 1_200.0, 1_200.0, 1_200.0])
    # Monte Carlo's trade returns: closed trades only, as a share of the equity at their entry bar.
    assert trade_returns_on_equity(result).tolist() == pytest.approx([0.2])


def test_short_signals_are_ignored_unless_allowed() -> None:
    assert _run("S..", [10.0, 10.0, 8.0]).orders.is_empty()
    assert _run("S..", [10.0, 10.0, 8.0]).trades.is_empty()
    assert trade_returns_on_equity(_run("S..", [10.0, 10.0, 8.0])).size == 0
    assert _run("S..", [10.0, 10.0, 8.0], allow_short=True).orders["side"].to_list() == ["sell"]


def test_a_short_is_refused_by_limits_that_forbid_it() -> None:
    bars = _bars([10.0, 10.0, 8.0])
    config = BacktestConfig(init_cash=1_000, allow_short=True)
    assert run_backtest(bars, SCRIPTED, ScriptParams(script="S"), config, limits=SizingLimits()).orders.height == 1
    assert run_backtest(bars, SCRIPTED, ScriptParams(script="S"), config, limits=SizingLimits(allow_short=False)).orders.is_empty()


def test_warm_up_bars_do_not_trade() -> None:
    bars = _bars([10.0] * 5)
    p = ScriptParams(script="L.X.L")
    trade_from = START + timedelta(days=2)
    orders = run_backtest(bars, SCRIPTED, p, BacktestConfig(init_cash=1_000), trade_from=trade_from).orders
    assert orders.is_empty()  # the entry on bar 0 is warm-up; the exit on bar 2 has nothing to exit; bar 4's entry has no bar to fill
    p = ScriptParams(script="..L..")
    orders = run_backtest(bars, SCRIPTED, p, BacktestConfig(init_cash=1_000), trade_from=trade_from).orders
    assert orders["ts"].to_list() == [START + timedelta(days=3)]  # a signal at trade_from itself acts


def test_metrics_name_the_benchmark() -> None:
    result = _run("L....", [10.0, 10.0, 11.0, 12.0, 13.0])
    assert result.metrics["total_return"] == pytest.approx(0.3)
    assert math.isfinite(result.metrics["turnover"]) and result.metrics["turnover"] == pytest.approx(1_000 / np.mean([1_000, 1_000, 1_100, 1_200, 1_300]))


def test_bad_input_is_named() -> None:
    with pytest.raises(BacktestError, match="no bars to backtest"):
        run_backtest(_bars([10.0]).clear(), SCRIPTED, ScriptParams(script=""))
    with pytest.raises(BacktestError, match="the script is broken"):
        run_backtest(_bars([10.0, 11.0]), SCRIPTED, ScriptParams(script="!"))


def test_limits_trade_in_the_window_only_when_asked() -> None:
    """Sizing limits alone (trading_window False) let every bar enter and flatten none; with the
    window, the book is flattened from `flatten_before_close_min` before the close."""
    close = datetime(2024, 11, 27, 21, 0, tzinfo=UTC)  # 16:00 New York
    prices = [10.0] * 10
    bars = _bars(prices).with_columns(
        pl.lit("1m").alias("timeframe"), pl.Series("ts", [close - timedelta(minutes=10 - k) for k in range(10)])
    )
    config = BacktestConfig(init_cash=1_000, timeframe="1m")
    p = ScriptParams(script="L")
    plain = run_backtest(bars, SCRIPTED, p, config, limits=SizingLimits())
    assert plain.orders["side"].to_list() == ["buy"]
    windowed = run_backtest(bars, SCRIPTED, p, config, limits=SizingLimits(trading_window=True))
    assert windowed.orders["side"].to_list() == ["buy", "sell"]
    assert windowed.orders["ts"][1] > close - timedelta(minutes=5)


def test_a_trade_s_fees_are_its_entry_and_exit_fees() -> None:
    result = _run("L.X..", [10.0, 10.0, 12.0, 12.0, 12.0], fees_bps=10.0)
    shares = 99.0  # floor(1,000 / (10 x 1.001))
    assert result.orders["fees"].to_list() == pytest.approx([shares * 10 * 0.001, shares * 12 * 0.001])
    assert result.trades["fees"].to_list() == pytest.approx([shares * 10 * 0.001 + shares * 12 * 0.001])
    assert result.trades["pnl"].to_list() == pytest.approx([shares * 2 - shares * 22 * 0.001])


def test_trade_metrics_count_the_closed_trades_only() -> None:
    # A long closed at 12 (100 shares from 10: +200), then one still open at the end (80 shares from 15, marked at 16: +80).
    result = _run("L.X.L..", [10.0, 10.0, 12.0, 12.0, 12.0, 15.0, 16.0])
    assert result.trades["closed"].to_list() == [True, False] and result.trades["pnl"].to_list() == pytest.approx([200.0, 80.0])
    m = result.metrics
    assert (m["trade_count"], m["win_rate"], m["expectancy"]) == (1.0, 1.0, pytest.approx(200.0))
    assert math.isnan(m["profit_factor"])  # no losing closed trade
    # No trade at all: no trade metrics, not an error.
    assert _run("...", [10.0, 10.0, 10.0]).metrics["trade_count"] == 0.0


def test_run_backtest_takes_its_inputs_by_name_and_its_options_by_name_only() -> None:
    bars, p = _bars([10.0, 10.0, 11.0]), ScriptParams(script="L")
    result = run_backtest(bars=bars, strategy=SCRIPTED, params=p, config=BacktestConfig(init_cash=1_000))
    assert result.orders["size"].to_list() == [100.0]
    with pytest.raises(TypeError):
        run_backtest(bars, SCRIPTED, p, BacktestConfig(init_cash=1_000), START)  # type: ignore[misc]


def test_a_result_and_the_sizing_limits_are_frozen() -> None:
    import dataclasses

    result = _run("L..", [10.0, 10.0, 11.0])
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.metrics = {}  # type: ignore[misc]
    with pytest.raises(ValidationError):
        SizingLimits().max_position_pct = 0.5  # type: ignore[misc]
    with pytest.raises(ValidationError):
        SizingLimits(unknown=1)  # type: ignore[call-arg]


def test_the_backtest_simulates_on_views_of_the_bars_not_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    """A portfolio's memory (issue 14: 10 M bars under 2 GB) rests on the engine reading the bars' own
    buffers: the wide prices handed to the simulation, and the close frame handed to vectorbt, are views."""
    from backtests import engine
    from strategies.builtin import SMA_CROSS, SmaCrossParams

    start = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
    rows = [(symbol, start + timedelta(minutes=k), 100.0 + k % 7 + j, 101.0 + k % 7 + j, 99.0 + k % 7 + j, 100.5 + k % 7 + j, 1e3)
            for j, symbol in enumerate(["AAA", "BBB"]) for k in range(120)]  # fmt: skip
    bars = pl.DataFrame(rows, schema=["symbol", "ts", "open", "high", "low", "close", "volume"], orient="row")
    seen: dict[str, Any] = {}
    real_simulate, real_frame = engine.simulate, engine._frame

    def simulate(market: Market, *args: Any, **kwargs: Any) -> Any:
        seen["market"] = market
        return real_simulate(market, *args, **kwargs)

    def frame(values: np.ndarray, index: Any, symbols: list[str]) -> Any:
        out = real_frame(values, index, symbols)
        seen["frame_is_view"] = np.shares_memory(out.to_numpy(copy=False), values)
        return out

    monkeypatch.setattr(engine, "simulate", simulate)
    monkeypatch.setattr(engine, "_frame", frame)
    run_backtest(bars, SMA_CROSS, SmaCrossParams(fast=3, slow=8, fraction=0.5), BacktestConfig(timeframe="1m"))
    market = seen["market"]
    assert np.shares_memory(market.close, bars["close"].to_numpy()) and np.shares_memory(market.open, bars["open"].to_numpy())
    assert seen["frame_is_view"]
