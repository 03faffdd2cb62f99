"""Paper-trading analytics from fills: round trips, equity, performance, breakdowns, drift vs the backtest.

Pure functions over polars frames; the only I/O is reading a `Ledger` handed in. Timestamps are UTC
(naive ones are taken to be UTC); calendar breakdowns use New York time, the exchange's clock.

Round trips are matched FIFO per symbol: each closing fill closes the oldest open lots first, and a
partial close splits a lot. The ledger's `Portfolio` realizes P&L against the *average* cost
instead; the two differ only in how the result is split between trades (and, while a position is
open, between realized and unrealized). Once flat, the total realized P&L is the same either way.
FIFO is used here because it gives each trade its own entry, exit and holding time.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import numpy as np
import polars as pl

from backtests.metrics import compute_metrics
from trading.brokers.base import Fill
from trading.events import Event, EventType
from trading.ledger.portfolio import Portfolio
from trading.ledger.store import Ledger

NEW_YORK = "America/New_York"
UTC_TS = pl.Datetime("us", "UTC")
_EPS = 1e-9  # quantities below this fraction of the quantities involved are float residue

FILL_SCHEMA = pl.Schema(
    {
        "fill_id": pl.String(),
        "client_order_id": pl.String(),
        "symbol": pl.String(),
        "side": pl.String(),
        "quantity": pl.Float64(),
        "price": pl.Float64(),
        "commission": pl.Float64(),
        "ts": UTC_TS,
    }
)
TRIP_SCHEMA = pl.Schema(
    {
        "symbol": pl.String(),
        "side": pl.String(),  # long / short
        "entry_ts": UTC_TS,
        "exit_ts": UTC_TS,
        "quantity": pl.Float64(),
        "entry_price": pl.Float64(),
        "exit_price": pl.Float64(),
        "commission": pl.Float64(),  # entry and exit commissions, pro rata to the matched quantity
        "pnl": pl.Float64(),  # after commission
        "return_pct": pl.Float64(),  # pnl / (entry_price * quantity), in percent
        "holding_time": pl.Duration("us"),
    }
)
ORDER_COLUMNS = ("ts", "symbol", "side", "size", "price", "fees")  # BacktestResult.orders
CAUSES = ("slippage", "commission", "missed_trades", "extra_trades", "quantity", "residual")
DRIFT_SCHEMA = pl.Schema(
    {
        "symbol": pl.String(),
        "side": pl.String(),
        "ts": UTC_TS,  # the backtest order's bar; the fill's time for extra fills
        "fill_ts": UTC_TS,  # first matched fill
        "expected_qty": pl.Float64(),
        "filled_qty": pl.Float64(),
        "expected_price": pl.Float64(),
        "fill_price": pl.Float64(),  # volume-weighted over the matched fills
        "price_diff_bps": pl.Float64(),  # positive = worse for the paper account
        "qty_diff": pl.Float64(),  # filled - expected
        "fees": pl.Float64(),  # the backtest's
        "commission": pl.Float64(),  # the paper fills' (pro rata to the matched quantity)
        "slippage_cost": pl.Float64(),  # (fill - expected price) * signed filled qty
        # (expected - filled signed qty) * (mark - expected price), or -(the paper P&L) of an extra fill.
        # Marked to the end, so an entry's and its exit's values offset: read it summed, not per row.
        "quantity_cost": pl.Float64(),
        "status": pl.String(),  # matched / missing / extra
    }
)


# -- fills -------------------------------------------------------------------------------------------


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _utc_column(frame: pl.DataFrame, column: str) -> pl.DataFrame:
    dtype = frame.schema[column]
    if not isinstance(dtype, pl.Datetime):
        raise ValueError(f"column {column!r} must be a datetime, not {dtype}")
    col = pl.col(column)
    col = col.dt.replace_time_zone("UTC") if dtype.time_zone is None else col.dt.convert_time_zone("UTC")
    return frame.with_columns(col.cast(UTC_TS))


def _require(frame: pl.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} lacks columns {missing} (has {frame.columns})")


def _signed(qty: str = "quantity") -> pl.Expr:
    return pl.when(pl.col("side") == "buy").then(pl.col(qty)).otherwise(-pl.col(qty))


def fills_frame(fills: Iterable[Fill]) -> pl.DataFrame:
    """One row per fill (FILL_SCHEMA), in time order; fills at the same time keep their order."""
    rows = [
        (f.fill_id, f.client_order_id, f.symbol, f.side.value, f.quantity, f.price, f.commission, _utc(f.ts))
        for f in fills
    ]
    return pl.DataFrame(rows, schema=FILL_SCHEMA, orient="row").sort("ts", maintain_order=True)


def fills_from_ledger(source: Ledger | Iterable[Event], *, run_id: str | None = None) -> pl.DataFrame:
    """The FILL events of a ledger (or of a list of events), optionally of one run, as `fills_frame`."""
    if isinstance(source, Ledger):
        payloads: Iterable[Mapping[str, Any]] = (p for _type, p in source.payloads([EventType.FILL], run_id=run_id))
    else:
        payloads = (e.payload for e in source if e.type == EventType.FILL and (run_id is None or e.run_id == run_id))
    return fills_frame(Fill.model_validate(p) for p in payloads)


def _fills(fills: pl.DataFrame) -> pl.DataFrame:
    """A fills frame normalised to FILL_SCHEMA (so hand-built frames work too), in time order."""
    _require(fills, ("symbol", "side", "quantity", "price", "ts"), "fills")
    frame = fills.with_columns(
        *(pl.lit(None, pl.String).alias(c) for c in ("fill_id", "client_order_id") if c not in fills.columns),
        *([pl.lit(0.0).alias("commission")] if "commission" not in fills.columns else []),
    )
    frame = _utc_column(frame, "ts").select(pl.col(name).cast(dtype) for name, dtype in FILL_SCHEMA.items())
    return frame.sort("ts", maintain_order=True)


def _marks(marks: pl.DataFrame) -> pl.DataFrame:
    _require(marks, ("ts", "symbol", "close"), "marks")
    frame = _utc_column(marks.select("ts", "symbol", pl.col("close").cast(pl.Float64)), "ts")
    return frame.sort("ts", "symbol")


# -- round trips -------------------------------------------------------------------------------------


@dataclass
class _Lot:
    sign: float  # +1 long, -1 short
    qty: float  # still open
    size: float  # when opened: the scale for float residue
    price: float
    ts: datetime
    commission_per_unit: float


def round_trips(fills: pl.DataFrame) -> pl.DataFrame:
    """Closed trades, FIFO per symbol, long and short (TRIP_SCHEMA), in the order they closed.

    A fill against the open lots closes the oldest first; what is left of it opens a new lot (a fill
    through zero). Each fill's commission is spread over its quantity, so a trip carries the entry
    and exit commissions of exactly the quantity it matched.
    """
    books: dict[str, deque[_Lot]] = {}
    rows: list[dict[str, Any]] = []
    for f in _fills(fills).iter_rows(named=True):
        sign = 1.0 if f["side"] == "buy" else -1.0
        per_unit = f["commission"] / f["quantity"]
        book = books.setdefault(f["symbol"], deque())
        left = f["quantity"]
        while book and book[0].sign != sign and left > _EPS * f["quantity"]:
            lot = book[0]
            qty = min(lot.qty, left)
            rows.append(_trip(f["symbol"], lot, qty, f["price"], f["ts"], per_unit))
            lot.qty -= qty
            left -= qty
            if lot.qty <= _EPS * lot.size:
                book.popleft()
        if left > _EPS * f["quantity"]:
            book.append(_Lot(sign, left, left, f["price"], f["ts"], per_unit))
    return pl.DataFrame(rows, schema=TRIP_SCHEMA)


def _trip(symbol: str, lot: _Lot, qty: float, price: float, ts: datetime, exit_per_unit: float) -> dict[str, Any]:
    commission = (lot.commission_per_unit + exit_per_unit) * qty
    pnl = (price - lot.price) * qty * lot.sign - commission
    return {
        "symbol": symbol,
        "side": "long" if lot.sign > 0 else "short",
        "entry_ts": lot.ts,
        "exit_ts": ts,
        "quantity": qty,
        "entry_price": lot.price,
        "exit_price": price,
        "commission": commission,
        "pnl": pnl,
        "return_pct": 100.0 * pnl / (lot.price * qty),
        "holding_time": ts - lot.ts,
    }


# -- equity and performance --------------------------------------------------------------------------


def equity_curve(fills: pl.DataFrame, marks: pl.DataFrame, initial_cash: float) -> pl.DataFrame:
    """(ts, cash, positions_value, equity) at every mark time.

    A mark at `ts` sees every fill at or before `ts` (a bar's fills happen at its open, its close is
    the mark). Positions are valued at their symbol's latest close so far, or, before the symbol's
    first mark, at its latest fill price.
    """
    f = _fills(fills)
    times = _marks(marks).select("ts").unique().sort("ts")
    flows = (
        f.group_by("ts", maintain_order=True)
        .agg((-_signed() * pl.col("price") - pl.col("commission")).sum().alias("flow"))
        .select("ts", (initial_cash + pl.col("flow").cum_sum()).alias("cash"))
    )
    cash = times.join_asof(flows, on="ts").select("ts", pl.col("cash").fill_null(initial_cash))
    held = (
        f.with_columns(_signed().cum_sum().over("symbol").alias("position"))
        .group_by("symbol", "ts", maintain_order=True)
        .agg(pl.col("position").last(), pl.col("price").last().alias("last_fill"))
        .sort("ts")
    )
    grid = times.join(held.select("symbol").unique(), how="cross").sort("ts")
    valued = (
        grid.join_asof(held, on="ts", by="symbol", check_sortedness=False)
        .join_asof(_marks(marks), on="ts", by="symbol", check_sortedness=False)
        .group_by("ts")
        .agg((pl.col("position").fill_null(0.0) * pl.coalesce("close", "last_fill")).fill_null(0.0).sum().alias("positions_value"))
    )
    return (
        cash.join(valued, on="ts", how="left")
        .with_columns(pl.col("positions_value").fill_null(0.0))
        .with_columns((pl.col("cash") + pl.col("positions_value")).alias("equity"))
        .sort("ts")
    )


def _last_prices(fills: pl.DataFrame, marks: pl.DataFrame) -> dict[str, float]:
    """Latest close per symbol, else latest fill price: the same valuation as `equity_curve`'s end."""
    last: dict[str, float] = dict(fills.group_by("symbol").agg(pl.col("price").last()).iter_rows())
    last.update(marks.group_by("symbol").agg(pl.col("close").last()).iter_rows())
    return last


_TRADE_KEYS = ("trade_count", "win_rate", "profit_factor", "expectancy")


def performance(fills: pl.DataFrame, marks: pl.DataFrame, initial_cash: float, timeframe: str = "1d") -> dict[str, float]:
    """Paper-trading performance as of the last mark (later fills are left out).

    The P&L split follows the ledger's `Portfolio` (average cost): `realized_pnl` and
    `unrealized_pnl` are before commissions and `total_pnl = realized + unrealized - commissions`
    = final equity - initial cash. Return and risk metrics are `backtests.metrics.compute_metrics` on
    the equity curve (the same formulas as every backtest); win rate, profit factor and expectancy
    are over the FIFO round trips' P&L after commissions.
    """
    m = _marks(marks)
    f = _fills(fills)
    if m.height:
        f = f.filter(pl.col("ts") <= m["ts"].max())
    curve = equity_curve(f, m, initial_cash)
    trips = round_trips(f)
    portfolio = Portfolio(cash=initial_cash)
    for symbol, side, qty, price, commission in f.select("symbol", "side", "quantity", "price", "commission").iter_rows():
        portfolio.apply_fill(symbol, qty if side == "buy" else -qty, price, commission)
    prices = _last_prices(f, m)
    equity = curve["equity"].to_numpy()
    traded = float((f["quantity"] * f["price"]).sum())
    exposure = float(np.mean(curve["positions_value"].to_numpy() != 0)) if curve.height else math.nan
    turnover = traded / float(equity.mean()) if equity.size else math.nan
    metrics = _metrics(equity, timeframe, trips["pnl"].to_numpy(), exposure, turnover)
    realized, unrealized = portfolio.realized_pnl, portfolio.unrealized_pnl(prices)
    return {
        "total_pnl": realized + unrealized - portfolio.commissions,
        "realized_pnl": realized,
        "unrealized_pnl": unrealized,
        "commissions": portfolio.commissions,
        "final_equity": portfolio.equity(prices),
        **metrics,
    }


def _metrics(equity: np.ndarray, timeframe: str, pnl: np.ndarray, exposure: float, turnover: float) -> dict[str, float]:
    if equity.size >= 2:
        return compute_metrics(equity, timeframe, trades=pnl, exposure=exposure, turnover=turnover)
    # Too few marks for returns: keep the trade statistics (same formulas, on a flat stand-in curve).
    flat = compute_metrics(np.ones(2), timeframe, trades=pnl)
    return {k: v if k in _TRADE_KEYS else math.nan for k, v in flat.items()}


def breakdown(trips: pl.DataFrame, by: Literal["symbol", "weekday", "hour"]) -> pl.DataFrame:
    """Trades, win rate, P&L and mean return (percent) per symbol, or per weekday (1 = Monday) or
    hour of the exit in New York time."""
    exit_ny = pl.col("exit_ts").dt.convert_time_zone(NEW_YORK)
    keys = {"symbol": pl.col("symbol"), "weekday": exit_ny.dt.weekday(), "hour": exit_ny.dt.hour()}
    if by not in keys:
        raise ValueError(f"breakdown by {by!r}: use one of {sorted(keys)}")
    frame = _utc_column(trips, "exit_ts")
    return (
        frame.group_by(keys[by].alias(by))
        .agg(
            pl.len().cast(pl.Int64).alias("trades"),
            (pl.col("pnl") > 0).mean().alias("win_rate"),
            pl.col("pnl").sum(),
            pl.col("return_pct").mean().alias("mean_return_pct"),
        )
        .sort(by)
    )


# -- drift: paper vs backtest ------------------------------------------------------------------------


@dataclass(frozen=True)
class DriftReport:
    """Per-order comparison (`rows`, DRIFT_SCHEMA) and the shortfall by cause (`summary`).

    Sign convention: amounts are costs to the paper account, positive = paper did worse.
    `summary["shortfall"] = backtest_pnl - paper_pnl` and the causes (CAUSES, with the residual)
    add up to it exactly, i.e. paper_pnl - backtest_pnl = -(sum of the causes).
    """

    rows: pl.DataFrame
    summary: dict[str, float]

    def markdown(self, top: int = 5) -> str:
        s = self.summary
        counts = {status: self.rows.filter(pl.col("status") == status).height for status in ("matched", "missing", "extra")}
        lines = [
            f"Paper P&L {_money(s['paper_pnl'])} vs backtest {_money(s['backtest_pnl'])}: "
            f"shortfall {_money(s['shortfall'])} (positive = paper did worse).",
            "",
            "| cause | amount |",
            "|---|---:|",
            *(f"| {cause.replace('_', ' ')} | {_money(s[cause])} |" for cause in CAUSES),
            f"| **shortfall** | **{_money(s['shortfall'])}** |",
            "",
            f"Orders: {counts['matched']} matched, {counts['missing']} missing, {counts['extra']} extra fills.",
        ]
        # Unmatched and short-filled orders first, then the costliest fills.
        worst = self.rows.sort(
            (pl.col("status") == "matched") & (pl.col("qty_diff").abs() <= _EPS * pl.col("expected_qty")),
            pl.col("slippage_cost").abs(),
            descending=[False, True],
        ).head(top)
        if worst.height:
            lines += ["", "| ts | symbol | side | status | expected | filled | diff bps | slippage |", "|---|---|---|---|---:|---:|---:|---:|"]
            for r in worst.iter_rows(named=True):
                bps = "" if r["price_diff_bps"] is None else f"{r['price_diff_bps']:.1f}"
                lines.append(
                    f"| {r['ts']:%Y-%m-%d %H:%M} | {r['symbol']} | {r['side']} | {r['status']} | "
                    f"{r['expected_qty']:g} | {r['filled_qty']:g} | {bps} | {_money(r['slippage_cost'])} |"
                )
        return "\n".join(lines)


def _money(value: float) -> str:
    return f"{round(value, 2) + 0.0:,.2f}"  # + 0.0: no "-0.00" for float dust


@dataclass
class _Piece:
    """The part of one paper fill matched to one order (or left over as extra)."""

    fill: dict[str, Any]
    qty: float

    @property
    def signed(self) -> float:
        return self.qty if self.fill["side"] == "buy" else -self.qty

    @property
    def commission(self) -> float:
        return float(self.fill["commission"]) * self.qty / float(self.fill["quantity"])


def drift_report(
    paper_fills: pl.DataFrame,
    backtest_orders: pl.DataFrame,
    *,
    match_on: Sequence[str] = ("symbol", "side"),
    marks: Mapping[str, float] | None = None,
    tolerance: timedelta | None = None,
) -> DriftReport:
    """What paper trading did against what the backtest of the same strategy on the same bars expected.

    Matching: each backtest order takes the paper fills with the same `match_on` values at or after
    its time (and before the next such order; within `tolerance` if given), earliest first, up to
    its size; a fill that overshoots is split. Orders with no fill are missing; fills (or parts)
    left over are extra.

    Both sides are valued the same way, linearly per fill: P&L = sum(signed_qty * (mark - price)) -
    costs, with open positions at `marks` (a symbol not in it: its latest backtest order price, else
    its latest paper fill price; flat books do not depend on it). That makes the attribution exact:
    - slippage = sum over matched fills of (fill_price - expected_price) * signed filled qty
    - commission = paper commissions - backtest fees (all of them, missed and extra trades included)
    - missed_trades = the backtest's P&L on missing orders (its round trips' when both legs are missing)
    - extra_trades = -(the paper P&L of extra fills): negative when the extra trades made money
    - quantity = sum over matched orders of (expected - filled signed qty) * (mark - expected_price):
      what the backtest made on the size paper did not trade (partial fills, other sizing)
    - residual = shortfall - the above (float rounding only)
    """
    keys = tuple(match_on)
    if "symbol" not in keys or not set(keys) <= {"symbol", "side"}:
        raise ValueError(f"match_on must be ('symbol',) or ('symbol', 'side'), not {match_on!r}")
    _require(backtest_orders, ORDER_COLUMNS, "backtest orders")
    orders = _utc_column(backtest_orders.select(ORDER_COLUMNS), "ts").sort("ts", maintain_order=True).to_dicts()
    fills = _fills(paper_fills).to_dicts()
    matched, extra = _match(orders, fills, keys, tolerance)
    mark = _default_marks(orders, fills) | dict(marks or {})

    order_rows = [_order_row(o, pieces, mark[o["symbol"]]) for o, pieces in zip(orders, matched, strict=True)]
    extra_rows = [_extra_row(p, mark[p.fill["symbol"]]) for p in extra]
    rows = order_rows + extra_rows
    frame = pl.DataFrame(rows, schema=DRIFT_SCHEMA).sort("ts", "symbol", maintain_order=True)

    paper_commission = sum(float(f["commission"]) for f in fills)
    fees = sum(float(o["fees"]) for o in orders)
    paper_pnl = sum(_sign(f["side"]) * f["quantity"] * (mark[f["symbol"]] - f["price"]) for f in fills) - paper_commission
    backtest_pnl = sum(_sign(o["side"]) * o["size"] * (mark[o["symbol"]] - o["price"]) for o in orders) - fees
    summary = {
        "paper_pnl": paper_pnl,
        "backtest_pnl": backtest_pnl,
        "shortfall": backtest_pnl - paper_pnl,
        "slippage": _total(order_rows, "slippage_cost"),
        "commission": paper_commission - fees,
        # A missing order's quantity term (nothing filled) is what the backtest made on it.
        "missed_trades": _total(order_rows, "quantity_cost", "missing"),
        "extra_trades": _total(extra_rows, "quantity_cost"),
        "quantity": _total(order_rows, "quantity_cost", "matched"),
    }
    summary["residual"] = summary["shortfall"] - sum(summary[c] for c in CAUSES if c != "residual")
    return DriftReport(frame, summary)


def _total(rows: list[dict[str, Any]], column: str, status: str | None = None) -> float:
    return float(sum(r[column] for r in rows if status is None or r["status"] == status))


def _sign(side: str) -> float:
    return 1.0 if side == "buy" else -1.0


def _match(
    orders: list[dict[str, Any]], fills: list[dict[str, Any]], keys: tuple[str, ...], tolerance: timedelta | None
) -> tuple[list[list[_Piece]], list[_Piece]]:
    """Per order (in `orders`' order) its matched pieces of fills, and the pieces left over."""
    pieces: list[list[_Piece]] = [[] for _ in orders]
    left = [float(f["quantity"]) for f in fills]
    fills_by_key: dict[tuple[Any, ...], list[int]] = {}
    for j, f in enumerate(fills):
        fills_by_key.setdefault(tuple(f[k] for k in keys), []).append(j)
    orders_by_key: dict[tuple[Any, ...], list[int]] = {}
    for i, o in enumerate(orders):
        orders_by_key.setdefault(tuple(o[k] for k in keys), []).append(i)
    for key, order_ids in orders_by_key.items():
        candidates = fills_by_key.get(key, [])
        times = [orders[i]["ts"] for i in order_ids]
        for n, i in enumerate(order_ids):
            start, size = times[n], float(orders[i]["size"])
            # The window closes at the next later order of the same key: fills from then on are its.
            end = next((t for t in times[n + 1 :] if t > start), None)
            need = size
            for j in candidates:
                ts = fills[j]["ts"]
                if (end is not None and ts >= end) or (tolerance is not None and ts > start + tolerance):
                    break
                if ts < start or left[j] <= 0:
                    continue
                take = min(left[j], need)
                pieces[i].append(_Piece(fills[j], take))
                left[j] -= take
                need -= take
                if left[j] <= _EPS * float(fills[j]["quantity"]):
                    left[j] = 0.0
                if need <= _EPS * size:
                    break
    extra = [_Piece(f, left[j]) for j, f in enumerate(fills) if left[j] > 0]
    return pieces, extra


def _default_marks(orders: list[dict[str, Any]], fills: list[dict[str, Any]]) -> dict[str, float]:
    # Backtest prices win: they are the unslipped reference for the same bars.
    mark = {f["symbol"]: float(f["price"]) for f in fills}
    mark.update({o["symbol"]: float(o["price"]) for o in orders})
    return mark


def _order_row(order: dict[str, Any], pieces: list[_Piece], mark: float) -> dict[str, Any]:
    sign, size, price = _sign(order["side"]), float(order["size"]), float(order["price"])
    filled = sum(p.qty for p in pieces)
    signed_filled = sum(p.signed for p in pieces)
    vwap = sum(p.qty * float(p.fill["price"]) for p in pieces) / filled if pieces else None
    slippage = sum((float(p.fill["price"]) - price) * p.signed for p in pieces)
    quantity = (sign * size - signed_filled) * (mark - price)
    return {
        "symbol": order["symbol"],
        "side": order["side"],
        "ts": order["ts"],
        "fill_ts": min((p.fill["ts"] for p in pieces), default=None),
        "expected_qty": size,
        "filled_qty": filled,
        "expected_price": price,
        "fill_price": vwap,
        "price_diff_bps": None if vwap is None else sign * (vwap - price) / price * 1e4,
        "qty_diff": filled - size,
        "fees": float(order["fees"]),
        "commission": sum(p.commission for p in pieces),
        "slippage_cost": slippage,
        "quantity_cost": quantity,  # the backtest's P&L on the size not filled
        "status": "matched" if pieces else "missing",
    }


def _extra_row(piece: _Piece, mark: float) -> dict[str, Any]:
    price = float(piece.fill["price"])
    return {
        "symbol": piece.fill["symbol"],
        "side": piece.fill["side"],
        "ts": piece.fill["ts"],
        "fill_ts": piece.fill["ts"],
        "expected_qty": 0.0,
        "filled_qty": piece.qty,
        "expected_price": None,
        "fill_price": price,
        "price_diff_bps": None,
        "qty_diff": piece.qty,
        "fees": 0.0,
        "commission": piece.commission,
        "slippage_cost": 0.0,
        "quantity_cost": -piece.signed * (mark - price),
        "status": "extra",
    }
