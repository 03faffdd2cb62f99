"""The backtest engine on vectorbt.

Signals decided on bar t become orders filled on bar t+1 at its open by default: an entry to a side
with the signal's `size`, an exit to flat. Signals act on the side the fills left (an entry that
got no shares leaves the symbol flat). Every run executes in `backtests/order_sim.py`, vectorbt's
own order processing in a compiled loop (the records make a vectorbt Portfolio), with fees,
slippage, whole or fractional shares, and one shared cash balance across symbols (a bar's exits
before its entries, so a rotation's entry is paid by its exit). Strategies with stop/target levels
add bracket exits (`strategies/brackets.py`, long and short).

Entry sizing (`strategies/entries.py`, the rule the sweeps, the reference loop and the simulated
broker share): an entry never commits more than the cash there is. On a reversal the closing trade
is paid first (its fee and slippage); the entry then takes floor(min(available x size, free) /
(price x (1 + fee))) shares (unfloored when fractional), where available is the bar's equity
(positions at the bar's fill price, once before the bar's orders) less that closing trade's costs,
free the same less the gross value of the other symbols' positions when the entry executes, price
the slipped fill price and fee the proportional fee below. From flat, available is the equity; with
one symbol, the cash, and free never binds.

Costs: `fees_bps` of traded value plus `fee_per_share`, both charged on the slipped fill price
(the per-share fee is converted to a fraction of the bar's unslipped price, so it is exact without
slippage and off by the slippage fraction with it; the entry size divides by the same fee).
Slippage is `slippage_bps`, or, with `slippage_atr`, a fraction of the bar's ATR/close on top.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from backtests.market import BacktestError, Market, to_market
from backtests.market_values import book_values
from backtests.metrics import compute_metrics
from backtests.order_sim import LimitArrays, simulate_signals
from backtests.window import BarControls, bar_controls
from strategies.base import Strategy, StrategyError
from strategies.indicators import atr_sma


class BacktestConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    init_cash: float = Field(100_000.0, gt=0)
    fill: Literal["next_open", "next_close"] = "next_open"
    fees_bps: float = Field(0.0, ge=0, le=1000)
    fee_per_share: float = Field(0.0, ge=0)
    slippage_bps: float = Field(0.0, ge=0, le=1000)
    slippage_atr: float = Field(0.0, ge=0, le=10, description="extra slippage as a fraction of ATR(14)/close")
    fractional: bool = False
    allow_short: bool = Field(False, description="long-short; otherwise short signals are ignored")
    brackets: bool = Field(
        True, description="act on the strategy's stop/target levels, long and short, see strategies/brackets.py"
    )
    timeframe: str = "1d"


class SizingLimits(BaseModel):
    """The live path's hard sizing limits, for a backtest that trades as the live step does
    (`SizingLimits.from_limits` maps a `trading.risk.RiskLimits` to it). With them, each bar's
    orders are decided at its close on a running book in symbol order: an exit closes, an entry
    against a position only closes it (the live path's exits are reduce-only), an entry from flat
    asks for floor(size x cash / close) shares, cut by `strategies.entries.capped_quantity` (position
    and sector share of the equity at the closes, a buy's cost within the cash) and held when the
    book already has `max_open_positions` or once the equity at a close has fallen `max_drawdown_pct`
    from its peak (the drawdown breaker: the live path halts until a person resumes). A cut entry
    fills that quantity (at most what size 1 takes at the fill), an uncut one is sized at the fill
    as without limits; either is capped again at the fill (`strategies.entries.capped_at_fill`).

    The session controls act as the live step's (`strategies.controls`): from the first close at or
    below the session's first close less `daily_loss_limit_pct`, no entry until the next session; an
    entry is held once `max_trades_per_day` orders were sent in the session (every order counts,
    exits and the flatten's closes too; sessions on the `exchange` calendar); with `trading_window`,
    the window (`backtests.window`): entries only inside it, and from `flatten_before_close_min`
    before the close (half days included) every position is closed at the next bar once a session
    (`flatten_at_close`), the strategy's own exits then left to that flatten. `from_limits` takes
    them all from the live path's `trading.risk.RiskLimits`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_position_pct: float = Field(1.0, gt=0, le=1)
    max_sector_pct: float = Field(1.0, gt=0, le=1)
    sector_map: dict[str, str] = Field(default_factory=dict, description="symbol -> sector; a symbol not in it is its own sector")
    max_open_positions: int = Field(1_000_000, ge=1)
    allow_short: bool = True
    max_drawdown_pct: float = Field(1.0, gt=0, le=1, description="no new risk from the first close this far below the peak (the live breaker)")
    daily_loss_limit_pct: float = Field(1.0, gt=0, le=1, description="no new risk for the rest of the session from the first close this far below its first")
    max_trades_per_day: int = Field(1_000_000_000, ge=1, description="orders a session may send before entries are held")
    exchange: str = Field("XNYS", description="the calendar of the sessions (daily counts) and of the trading window")
    trading_window: bool = Field(False, description="entries only inside the window, the flatten before the close")
    window_open_delay_min: int = Field(0, ge=0, le=390)
    flatten_before_close_min: int = Field(5, ge=0, le=390)
    flatten_at_close: bool = True

    @classmethod
    def from_limits(cls, limits: BaseModel, symbols: list[str]) -> SizingLimits:
        """The backtest's limits from the live path's `trading.risk.RiskLimits` (any model with its
        field names: backtests do not import trading): every field of the same name, each symbol's
        sector as `sector_of` gives it, and the trading window on its `exchange`."""
        values = {name: getattr(limits, name) for name in cls.model_fields if name not in ("sector_map", "trading_window") and hasattr(limits, name)}
        sector_of = getattr(limits, "sector_of")  # noqa: B009 (typed as any model on purpose)
        return cls(**values, sector_map={s: sector_of(s) for s in symbols}, trading_window=True)

    def sector_ids(self, symbols: list[str]) -> np.ndarray:
        names = [self.sector_map.get(s, f"unmapped {s}") for s in symbols]
        ids = {name: k for k, name in enumerate(dict.fromkeys(names))}
        return np.array([ids[name] for name in names], dtype=np.int64)


@dataclass(frozen=True)
class BacktestResult:
    equity: pl.DataFrame  # ts, equity, cash
    orders: pl.DataFrame  # ts, symbol, side, size, price, fees
    trades: pl.DataFrame  # vectorbt's closed and open trades, one row each
    metrics: dict[str, float]
    portfolio: Any  # the vectorbt Portfolio, for anything else


def fill_prices(market: Market, config: BacktestConfig) -> np.ndarray:
    return market.open if config.fill == "next_open" else market.close


def fee_fractions(market: Market, config: BacktestConfig, price: np.ndarray | None = None) -> np.ndarray:
    price = fill_prices(market, config) if price is None else price
    return config.fees_bps / 1e4 + config.fee_per_share / price


def slippage_fractions(market: Market, config: BacktestConfig) -> np.ndarray:
    if not config.slippage_atr:  # one value for every cell: read-only, no memory
        return np.broadcast_to(np.float64(config.slippage_bps / 1e4), market.close.shape)
    slip = np.full(market.close.shape, config.slippage_bps / 1e4)
    if config.slippage_atr:
        frame = pl.DataFrame({"high": market.high.ravel("F"), "low": market.low.ravel("F"), "close": market.close.ravel("F")})
        n = market.close.shape[0]
        groups = np.repeat(np.arange(market.close.shape[1]), n)
        atr = frame.with_columns(pl.Series("g", groups)).select((atr_sma(14) / pl.col("close")).over("g")).to_series().to_numpy()
        # The ATR known at the previous bar's close: the fill bar's own range is not known yet.
        prev = np.vstack([np.full((1, market.close.shape[1]), np.nan), atr.reshape(market.close.shape, order="F")[:-1]])
        slip = slip + config.slippage_atr * np.nan_to_num(prev, nan=0.0)
    return slip


def has_levels(market: Market) -> bool:
    return any(bool(np.isfinite(np.asarray(market.signals[c], dtype=np.float64)).any()) for c in ("stop", "target1", "target2"))


def simulate(market: Market, config: BacktestConfig, limits: SizingLimits | None = None) -> Any:
    """The signals' orders, with the brackets' exits among them when `config.brackets`, simulated by
    backtests/order_sim.py, decided under `limits` if given. Returns the vectorbt Portfolio."""
    index = market.ts.dt.replace_time_zone(None).to_pandas()
    prices = fill_prices(market, config)
    return simulate_signals(
        _frame(market.close, index, market.symbols),
        market.signals,
        prices,
        market.open,
        market.high,
        market.low,
        slippage_fractions(market, config),
        fee_rate=config.fees_bps / 1e4,
        fee_per_share=config.fee_per_share,
        init_cash=config.init_cash,
        fractional=config.fractional,
        allow_short=config.allow_short and (limits is None or limits.allow_short),
        brackets=config.brackets and has_levels(market),
        freq=_pandas_freq(config.timeframe),
        limits=None if limits is None else _limit_arrays(market, limits),
    )


def _limit_arrays(market: Market, limits: SizingLimits) -> LimitArrays:
    controls = bar_controls(market.ts, limits.exchange, limits.window_open_delay_min, limits.flatten_before_close_min, limits.flatten_at_close)
    if not limits.trading_window:  # the sessions only: every bar may enter, none flattens
        controls = BarControls(controls.session, np.ones_like(controls.entry_ok), np.zeros_like(controls.flatten))
    return LimitArrays(
        limits.max_position_pct, limits.max_sector_pct, limits.max_open_positions, limits.sector_ids(market.symbols), limits.max_drawdown_pct,
        limits.daily_loss_limit_pct, limits.max_trades_per_day, controls.session, controls.entry_ok, controls.flatten,
    )  # fmt: skip


def _frame(values: np.ndarray, index: Any, symbols: list[str]) -> Any:
    import pandas as pd

    return pd.DataFrame(values, index=index, columns=symbols, copy=False)  # a view: pandas 3 copies by default


def _pandas_freq(timeframe: str) -> str:
    return {"1m": "1min", "5m": "5min", "15m": "15min", "1h": "1h", "1d": "1D"}.get(timeframe, "1D")


def run_backtest(
    bars: pl.DataFrame,
    strategy: Strategy[Any],
    params: Any,
    config: BacktestConfig | None = None,
    *,
    trade_from: datetime | None = None,
    limits: SizingLimits | None = None,
) -> BacktestResult:
    """Signals from `strategy` on `bars`, executed on vectorbt; metrics against equal-weight buy-and-hold.

    With `trade_from`, the bars before it only warm the indicators up: no signal acts before it.
    With `limits`, orders are decided under the live path's hard sizing limits (`SizingLimits`).
    """
    config = config or BacktestConfig()
    if bars.is_empty():
        raise BacktestError("no bars to backtest (empty range or unknown symbol?)")
    try:
        signals = strategy.signals(bars, params)
    except StrategyError as exc:
        raise BacktestError(str(exc)) from exc
    if trade_from is not None:
        warm = pl.col("ts") < trade_from
        signals = signals.with_columns(
            pl.when(warm).then(False).otherwise(pl.col(c)).alias(c) for c in ("entry_long", "exit_long", "entry_short", "exit_short")
        )
    market = to_market(signals, copy=False)  # views of the bars' own buffers where it can
    del signals  # the long frame is done with: on a portfolio it is the size of the bars again
    pf = simulate(market, config, limits)
    market = replace(market, signals={})  # the result reads prices and times only: free the signals
    return _result(market, pf, config)


def _result(market: Market, pf: Any, config: BacktestConfig) -> BacktestResult:
    book = book_values(pf)  # vectorbt's value() and cash(), without its pandas wrapping
    frame = pl.DataFrame({"ts": market.ts, "equity": book.equity, "cash": book.cash})
    orders = _orders(pf, market)
    trades = _trades(pf, market)
    benchmark = buy_and_hold(market, config.init_cash)
    metrics = compute_metrics(book.equity, config.timeframe, benchmark=benchmark, trades=_trade_pnls(pf), exposure=book.exposure, turnover=_turnover(orders, book.equity))
    return BacktestResult(frame, orders, trades, metrics, pf)


def _orders(pf: Any, market: Market) -> pl.DataFrame:
    rec = pf.orders.values
    return pl.DataFrame(
        {
            "ts": market.ts.gather(rec["idx"]),
            "symbol": _symbols(market, rec["col"]),
            "side": _labels(rec["side"] == 0, "buy", "sell"),
            "size": rec["size"],
            "price": rec["price"],
            "fees": rec["fees"],
        }
    )


def _trades(pf: Any, market: Market) -> pl.DataFrame:
    """vectorbt's trade records, with timestamps and symbols (records_readable is slow on long runs)."""
    rec = pf.trades.values
    return pl.DataFrame(
        {
            "symbol": _symbols(market, rec["col"]),
            "entry_ts": market.ts.gather(rec["entry_idx"]),
            "exit_ts": market.ts.gather(rec["exit_idx"]),
            "direction": _labels(rec["direction"] == 0, "long", "short"),
            "size": rec["size"],
            "entry_price": rec["entry_price"],
            "exit_price": rec["exit_price"],
            "fees": rec["entry_fees"] + rec["exit_fees"],
            "pnl": rec["pnl"],
            "return": rec["return"],
            "closed": rec["status"] == 1,
        }
    )


def _symbols(market: Market, columns: np.ndarray) -> pl.Series:
    """Each record's symbol (text, also when there are no records)."""
    return pl.Series(market.symbols, dtype=pl.String).gather(columns)


def _labels(is_first: np.ndarray, first: str, other: str) -> pl.Series:
    """`first` where true, else `other`: in polars, not through a numpy string array."""
    return pl.select(pl.when(pl.Series(is_first, dtype=pl.Boolean)).then(pl.lit(first)).otherwise(pl.lit(other))).to_series()


def _trade_pnls(pf: Any) -> np.ndarray:
    trades = pf.trades
    closed = trades.values[trades.values["status"] == 1] if trades.count() else np.array([])
    return np.asarray(closed["pnl"]) if len(closed) else np.array([])


def _turnover(orders: pl.DataFrame, equity: np.ndarray) -> float:
    """Traded value over average equity (one-way, whole period)."""
    traded = float((orders["size"] * orders["price"]).sum()) if orders.height else 0.0
    return traded / float(np.mean(equity))


def buy_and_hold(market: Market, init_cash: float) -> np.ndarray:
    """Equal-weight buy-and-hold equity from the first close, no costs: the alpha/beta benchmark."""
    growth = market.close / market.close[0]
    return init_cash * growth.mean(axis=1)


def trade_returns_on_equity(result: BacktestResult) -> np.ndarray:
    """Each closed trade's PnL as a share of portfolio equity at its entry bar (for Monte Carlo)."""
    trades = result.portfolio.trades
    if not trades.count():
        return np.array([])
    rec = trades.values[trades.values["status"] == 1]
    equity = result.equity["equity"].to_numpy()
    return np.asarray(rec["pnl"] / equity[rec["entry_idx"]], dtype=np.float64)
