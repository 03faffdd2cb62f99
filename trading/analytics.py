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
# What a shortfall is put down to, in the order the report lists them (see `drift_report`).
CAUSES = (
    "slippage",
    "commission",
    "risk_limits",
    "rejections",
    "partial_fills",
    "missed_trades",
    "extra_trades",
    "quantity",
    "residual",
)
# The paper orders behind the fills, one row per signal the live step acted on (`trading.session`
# writes it): what was meant to fill on which bar, and what became of it.
ORDER_LOG_SCHEMA = pl.Schema(
    {
        "client_order_id": pl.String(),  # null: no order was sent (held or blocked)
        "symbol": pl.String(),
        "side": pl.String(),
        "ts": UTC_TS,  # the bar it was meant to fill on (the decision's next bar): the backtest's order bar
        "quantity": pl.Float64(),  # ordered (an entry sized at the fill: what it sized to); 0 if not sent
        "status": pl.String(),  # the broker's order status, or "held" / "blocked"
        "limited": pl.Boolean(),  # a hard limit, the risk review or a breaker held or cut it
        "reason": pl.String(),
    }
)
DRIFT_SCHEMA = pl.Schema(
    {
        "symbol": pl.String(),
        "side": pl.String(),
        "ts": UTC_TS,  # the backtest order's bar; the first fill's time for extra orders
        "fill_ts": UTC_TS,  # first fill of the paper order(s) paired with it
        "expected_qty": pl.Float64(),
        "filled_qty": pl.Float64(),
        "expected_price": pl.Float64(),
        "fill_price": pl.Float64(),  # volume-weighted over the paired orders' fills
        "price_diff_bps": pl.Float64(),  # positive = worse for the paper account
        "qty_diff": pl.Float64(),  # filled - expected
        "fees": pl.Float64(),  # the backtest's
        "commission": pl.Float64(),  # the paper fills'
        "slippage_cost": pl.Float64(),  # (fill - expected price) * signed qty, over the fills on the order's bar
        # Everything else the row costs the paper account: (expected - filled signed qty) * (mark -
        # expected price), plus later fills' price difference; -(the paper P&L) of an extra order.
        # Marked to the end, so an entry's and its exit's values offset: read it summed, not per row.
        "quantity_cost": pl.Float64(),
        "ordered_qty": pl.Float64(),  # the paper order's quantity (from the order log; else the filled)
        "cause": pl.String(),  # what quantity_cost is put down to (the larger part when two)
        "client_order_ids": pl.String(),  # the paper orders paired with the row, comma-separated
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


WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def breakdown(trips: pl.DataFrame, by: Literal["symbol", "weekday", "hour"]) -> pl.DataFrame:
    """Trades, win rate, P&L and mean return (percent) per symbol, or per weekday (named, Monday
    first) or hour of the exit in New York time."""
    exit_ny = pl.col("exit_ts").dt.convert_time_zone(NEW_YORK)
    keys = {"symbol": pl.col("symbol"), "weekday": exit_ny.dt.weekday(), "hour": exit_ny.dt.hour()}
    if by not in keys:
        raise ValueError(f"breakdown by {by!r}: use one of {sorted(keys)}")
    frame = _utc_column(trips, "exit_ts")
    table = (
        frame.group_by(keys[by].alias(by))
        .agg(
            pl.len().cast(pl.Int64).alias("trades"),
            (pl.col("pnl") > 0).mean().alias("win_rate"),
            pl.col("pnl").sum(),
            pl.col("return_pct").mean().alias("mean_return_pct"),
        )
        .sort(by)
    )
    if by == "weekday":  # ISO numbers (1 = Monday) sort the days; the table shows their names
        table = table.with_columns(pl.col(by).map_elements(lambda d: WEEKDAYS[d - 1], return_dtype=pl.String))
    return table


# -- drift: paper vs backtest ------------------------------------------------------------------------


@dataclass(frozen=True)
class DriftReport:
    """Per-order comparison (`rows`, DRIFT_SCHEMA) and the shortfall by cause (`summary`).

    Sign convention: amounts are costs to the paper account, positive = paper did worse.
    `summary["shortfall"] = backtest_pnl - paper_pnl` and the causes (CAUSES, with the residual)
    add up to it exactly, i.e. paper_pnl - backtest_pnl = -(sum of the causes). `summary` also
    counts the rows: `matched`, `missing`, `extra`.
    """

    rows: pl.DataFrame
    summary: dict[str, float]

    def markdown(self, top: int = 5) -> str:
        s = self.summary
        counts = {status: int(s[status]) for status in ("matched", "missing", "extra")}
        lines = [
            f"Paper P&L {_money(s['paper_pnl'])} vs backtest {_money(s['backtest_pnl'])}: "
            f"shortfall {_money(s['shortfall'])} (positive = paper did worse).",
            "",
            "| cause | amount |",
            "|---|---:|",
            *(f"| {cause.replace('_', ' ')} | {_money(s[cause])} |" for cause in CAUSES),
            f"| **shortfall** | **{_money(s['shortfall'])}** |",
            "",
            f"Orders: {counts['matched']} matched, {counts['missing']} missing, {counts['extra']} extra paper orders.",
        ]
        # Unmatched and short-filled orders first, then the costliest fills.
        worst = self.rows.sort(
            (pl.col("status") == "matched") & (pl.col("qty_diff").abs() <= _EPS * pl.col("expected_qty")),
            pl.col("slippage_cost").abs(),
            descending=[False, True],
        ).head(top)
        if worst.height:
            lines += ["", "| ts | symbol | side | status | cause | expected | filled | diff bps | slippage |", "|---|---|---|---|---|---:|---:|---:|---:|"]
            for r in worst.iter_rows(named=True):
                bps = "" if r["price_diff_bps"] is None else f"{r['price_diff_bps']:.1f}"
                lines.append(
                    f"| {r['ts']:%Y-%m-%d %H:%M} | {r['symbol']} | {r['side']} | {r['status']} | {r['cause'] or ''} | "
                    f"{r['expected_qty']:g} | {r['filled_qty']:g} | {bps} | {_money(r['slippage_cost'])} |"
                )
        return "\n".join(lines)


def _money(value: float) -> str:
    return f"{round(value, 2) + 0.0:,.2f}"  # + 0.0: no "-0.00" for float dust


@dataclass
class _Execution:
    """One paper order as its fills show it: all fills with its client order id."""

    key: str
    fills: list[dict[str, Any]]

    @property
    def symbol(self) -> str:
        return str(self.fills[0]["symbol"])

    @property
    def side(self) -> str:
        return str(self.fills[0]["side"])

    @property
    def first_ts(self) -> datetime:
        return min(f["ts"] for f in self.fills)  # type: ignore[no-any-return]


def drift_report(
    paper_fills: pl.DataFrame,
    backtest_orders: pl.DataFrame,
    *,
    orders: pl.DataFrame | None = None,
    match_on: Sequence[str] = ("symbol", "side"),
    marks: Mapping[str, float] | None = None,
    tolerance: timedelta | None = None,
    limits_in_backtest: bool = False,
) -> DriftReport:
    """What paper trading did against what the backtest of the same strategy on the same bars expected.

    Pairing, order with order: a paper order is its fills with one client order id. A backtest
    order at bar T pairs with the paper orders meant to fill at T (`orders`, the session's order
    log, ORDER_LOG_SCHEMA), else with those whose first fill is at T, with the same `match_on`
    values; it takes all of those orders' fills (a partial fill completing on a later bar included;
    with `tolerance`, only fills up to T + tolerance) and never a fill of another order. Backtest
    orders without one are missing; paper orders (or fills past the tolerance) left over are extra.

    Both sides are valued the same way, linearly per fill: P&L = sum(signed_qty * (mark - price)) -
    costs, with open positions at `marks` (a symbol not in it: its latest backtest order price, else
    its latest paper fill price; flat books do not depend on it). That makes the attribution exact:
    - slippage: over fills on the order's own bar, (fill_price - expected_price) * signed qty
    - commission: paper commissions - backtest fees (all of them, missed and extra trades included)
    - risk_limits: the backtest's P&L on the size a hard limit, the risk review or a breaker kept
      paper from ordering (expected - ordered), and on orders they held or blocked
    - rejections: the backtest's P&L on orders the broker rejected
    - partial_fills: on the size ordered but not filled (partial fills, cuts at the fill), plus the
      price difference of fills that came on a later bar than the order's
    - missed_trades: the backtest's P&L on orders paper has no order or reason for
    - extra_trades: -(the paper P&L of extra orders): negative when they made money
    - quantity: on the rest of (expected - ordered) size: paper sized from an equity that had
      already drifted, or (without an order log) any size difference
    - residual: shortfall - the above (float rounding only)
    With `limits_in_backtest` (the backtest applied the same sizing caps, `run_backtest(...,
    limits=...)`), an order a cap cut is no longer the limits' doing but the drifted equity's: its
    size difference goes to quantity; orders held or blocked stay risk_limits (the daily loss limit,
    trades per day and the window are not in the backtest).
    """
    keys = tuple(match_on)
    if "symbol" not in keys or not set(keys) <= {"symbol", "side"}:
        raise ValueError(f"match_on must be ('symbol',) or ('symbol', 'side'), not {match_on!r}")
    _require(backtest_orders, ORDER_COLUMNS, "backtest orders")
    expected = _utc_column(backtest_orders.select(ORDER_COLUMNS), "ts").sort("ts", maintain_order=True).to_dicts()
    fills = _fills(paper_fills).to_dicts()
    log = _order_log(orders)
    executions = _executions(fills)
    mark = _default_marks(expected, fills) | dict(marks or {})

    paired = _pair(expected, executions, log, keys)
    rows: list[dict[str, Any]] = []
    parts = dict.fromkeys(CAUSES, 0.0)
    taken: set[str] = set()
    held: dict[str, float] = {}  # the backtest's position per symbol
    opened_by: dict[str, str] = {}  # the size cause of the order that opened it: its exit's size follows from it
    for order, execs in zip(expected, paired, strict=True):
        own = [f for e in execs for f in e.fills if tolerance is None or f["ts"] <= order["ts"] + tolerance]
        taken.update(f["fill_id"] for f in own)
        symbol, signed = order["symbol"], _sign(order["side"]) * float(order["size"])
        closing = held.get(symbol, 0.0) * signed < 0
        row, row_parts = _order_row(
            order, own, [e.key for e in execs], _log_for(order, execs, log, keys), mark[symbol], opened_by.get(symbol) if closing else None, limits_in_backtest
        )
        if not closing:
            opened_by[symbol] = "risk_limits" if row_parts["risk_limits"] else "quantity"
        held[symbol] = held.get(symbol, 0.0) + signed
        rows.append(row)
        for cause, amount in row_parts.items():
            parts[cause] += amount
    for execution in executions:
        left = [f for f in execution.fills if f["fill_id"] not in taken]
        if left:
            row = _extra_row(execution.key, left, mark[execution.symbol])
            rows.append(row)
            parts["extra_trades"] += row["quantity_cost"]
    frame = pl.DataFrame(rows, schema=DRIFT_SCHEMA).sort("ts", "symbol", maintain_order=True)

    paper_commission = sum(float(f["commission"]) for f in fills)
    fees = sum(float(o["fees"]) for o in expected)
    paper_pnl = sum(_sign(f["side"]) * f["quantity"] * (mark[f["symbol"]] - f["price"]) for f in fills) - paper_commission
    backtest_pnl = sum(_sign(o["side"]) * o["size"] * (mark[o["symbol"]] - o["price"]) for o in expected) - fees
    summary = {"paper_pnl": paper_pnl, "backtest_pnl": backtest_pnl, "shortfall": backtest_pnl - paper_pnl}
    summary |= {c: float(parts[c]) for c in CAUSES if c != "residual"}
    summary["commission"] = paper_commission - fees
    summary["residual"] = summary["shortfall"] - sum(summary[c] for c in CAUSES if c != "residual")
    statuses = frame["status"].to_list()
    summary |= {status: float(statuses.count(status)) for status in ("matched", "missing", "extra")}
    return DriftReport(frame, summary)


def _sign(side: str) -> float:
    return 1.0 if side == "buy" else -1.0


def _order_log(orders: pl.DataFrame | None) -> list[dict[str, Any]]:
    if orders is None:
        return []
    _require(orders, ORDER_LOG_SCHEMA.names(), "order log")
    frame = _utc_column(orders, "ts").select(pl.col(name).cast(dtype) for name, dtype in ORDER_LOG_SCHEMA.items())
    return frame.to_dicts()


def _executions(fills: list[dict[str, Any]]) -> list[_Execution]:
    """Fills grouped by client order id (a fill without one is its own order), in first-fill order."""
    by_key: dict[str, _Execution] = {}
    for f in fills:
        key = f["client_order_id"] or f"fill:{f['fill_id']}:{len(by_key)}"
        by_key.setdefault(key, _Execution(key, [])).fills.append(f)
    return sorted(by_key.values(), key=lambda e: e.first_ts)


def _pair(
    expected: list[dict[str, Any]], executions: list[_Execution], log: list[dict[str, Any]], keys: tuple[str, ...]
) -> list[list[_Execution]]:
    """Per backtest order, the paper orders paired with it (see `drift_report`); each at most once."""
    by_id = {e.key: e for e in executions}
    meant = {row["client_order_id"]: row for row in log if row["client_order_id"]}
    free = [e for e in executions if e.key not in meant]  # orders the log does not place (brackets' exits, no log)
    used: set[str] = set()
    out: list[list[_Execution]] = []
    for order in expected:
        key = tuple(order[k] for k in keys)
        mine = [by_id[cid] for cid, row in meant.items() if cid in by_id and row["ts"] == order["ts"] and tuple(row[k] for k in keys) == key]
        mine += [e for e in free if e.first_ts == order["ts"] and tuple(getattr(e, k) for k in keys) == key]
        mine = [e for e in mine if e.key not in used]
        used.update(e.key for e in mine)
        out.append(mine)
    return out


def _log_for(order: dict[str, Any], execs: list[_Execution], log: list[dict[str, Any]], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """The log rows of the paired orders, or of what was held, blocked or rejected for the order's bar."""
    ids = {e.key for e in execs}
    if ids:
        return [row for row in log if row["client_order_id"] in ids]
    return [row for row in log if row["ts"] == order["ts"] and all(row[k] == order[k] for k in keys)]


def _default_marks(orders: list[dict[str, Any]], fills: list[dict[str, Any]]) -> dict[str, float]:
    # Backtest prices win: they are the unslipped reference for the same bars.
    mark = {f["symbol"]: float(f["price"]) for f in fills}
    mark.update({o["symbol"]: float(o["price"]) for o in orders})
    return mark


def _order_row(
    order: dict[str, Any], fills: list[dict[str, Any]], ids: list[str], log: list[dict[str, Any]], mark: float, inherited: str | None = None,
    cuts_expected: bool = False,
) -> tuple[dict[str, Any], dict[str, float]]:
    """The row of one backtest order and its costs by cause; an exit's size difference goes to
    `inherited`, the cause of its entry's (a capped entry makes a smaller exit)."""
    sign, size, price, ts = _sign(order["side"]), float(order["size"]), float(order["price"]), order["ts"]
    filled = sum(float(f["quantity"]) for f in fills)
    signed_filled = sum(_sign(f["side"]) * float(f["quantity"]) for f in fills)
    vwap = sum(float(f["quantity"]) * float(f["price"]) for f in fills) / filled if fills else None
    slippage = sum((float(f["price"]) - price) * _sign(f["side"]) * float(f["quantity"]) for f in fills if f["ts"] == ts)
    late = sum((float(f["price"]) - price) * _sign(f["side"]) * float(f["quantity"]) for f in fills if f["ts"] != ts)
    unit = mark - price  # the backtest's P&L per share of this order on its side
    sent = [row for row in log if row["client_order_id"]]
    ordered = sum(float(row["quantity"]) for row in sent) if sent else filled
    parts = dict.fromkeys(CAUSES, 0.0)
    parts["slippage"] = slippage
    if not fills and not sent:
        # Nothing was ordered: a limit or breaker held it (the log says so), or paper simply has no such trade.
        cause = "risk_limits" if any(row["limited"] for row in log) else "missed_trades"
        parts[cause] = sign * size * unit
    else:
        limited = not cuts_expected and any(row["limited"] for row in sent)
        rejected = bool(sent) and all(row["status"] == "rejected" for row in sent)
        parts["risk_limits" if limited else inherited or "quantity"] += sign * (size - ordered) * unit
        parts["rejections" if rejected else "partial_fills"] += (sign * ordered - signed_filled) * unit + late
    costs = {c: a for c, a in parts.items() if c != "slippage" and abs(a) > _EPS * size * price}  # float dust is no cause
    row = {
        "symbol": order["symbol"],
        "side": order["side"],
        "ts": ts,
        "fill_ts": min((f["ts"] for f in fills), default=None),
        "expected_qty": size,
        "filled_qty": filled,
        "expected_price": price,
        "fill_price": vwap,
        "price_diff_bps": None if vwap is None else sign * (vwap - price) / price * 1e4,
        "qty_diff": filled - size,
        "fees": float(order["fees"]),
        "commission": sum(float(f["commission"]) for f in fills),
        "slippage_cost": slippage,
        "quantity_cost": sum(costs.values()),
        "ordered_qty": ordered,
        "cause": max(costs, key=lambda c: abs(costs[c])) if costs else None,
        "client_order_ids": ",".join(ids) or None,
        "status": "matched" if fills else "missing",
    }
    return row, parts


def _extra_row(key: str, fills: list[dict[str, Any]], mark: float) -> dict[str, Any]:
    qty = sum(float(f["quantity"]) for f in fills)
    return {
        "symbol": fills[0]["symbol"],
        "side": fills[0]["side"],
        "ts": fills[0]["ts"],
        "fill_ts": fills[0]["ts"],
        "expected_qty": 0.0,
        "filled_qty": qty,
        "expected_price": None,
        "fill_price": sum(float(f["quantity"]) * float(f["price"]) for f in fills) / qty,
        "price_diff_bps": None,
        "qty_diff": qty,
        "fees": 0.0,
        "commission": sum(float(f["commission"]) for f in fills),
        "slippage_cost": 0.0,
        "quantity_cost": -sum(_sign(f["side"]) * float(f["quantity"]) * (mark - float(f["price"])) for f in fills),
        "ordered_qty": qty,
        "cause": "extra_trades",
        "client_order_ids": None if key.startswith("fill:") else key,
        "status": "extra",
    }
