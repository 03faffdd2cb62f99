"""Bar validation: great-expectations decides pass/fail, polars finds the rows to quarantine.

Every row rule is a great-expectations expectation (run on the pandas view of the bars through an
ephemeral context, since GX 1.x has no polars datasource) and the same rule as a polars mask, so we
can name and quarantine the failing rows. Rules that need context the row does not carry (session
hours, order, jumps) get a helper column computed in polars first, which GX then checks. A test
keeps the two views in agreement.

Blocking rules quarantine their rows (with the reason) and fail the check, which stops downstream
assets; warning rules report only (a real 10% jump or a feed gap is news, not garbage), except a
close more than MAX_JUMP times (or under 1/MAX_JUMP of) the one before: no market moves like that in one bar, a
split or a bad tick does, so it blocks unless a declared corporate action explains it
(`lake/corporate_actions.py`: a split's ratio adjusts the return before any jump rule sees it).
MAX_JUMP is the default; `validate_bars(max_jump=...)` takes the configured one (QUANTLAKE_MAX_JUMP).

Extended hours: a source that sends pre-market and after-hours bars by design (Alpaca) validates
with `extended_hours=True`; its bars on a session day between 04:00 and 20:00 New York but outside
the regular session are quarantined by `extended_hours`, a warning (expected, not bad data), instead
of failing the blocking `in_session`. Every other out-of-session bar still fails `in_session`.

Missing values: `not_null` is the one rule that fails a row for a null; every other rule, in polars
as in great-expectations, ignores a value that is not there (GX skips nulls in its column checks), so
the two engines agree on a row with too few fields and it is quarantined once, for its nulls.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl

from lake.calendar import EXCHANGE_TZ, get_calendar, sessions_frame
from lake.errors import ValidationFailed
from lake.schema import PRICE_COLUMNS, REQUIRED_COLUMNS, TIMEFRAMES, check_timeframe, conform_bars

EXAMPLES = 5
JUMP_Z = 12.0  # robust z-score of a close-to-close log return that counts as an outlier
JUMP_FLOOR = {"1m": 0.02, "5m": 0.03, "15m": 0.04, "1h": 0.06, "1d": 0.15}
MAX_JUMP = 10.0  # a close this many times the previous one (either way) blocks: a split or a bad tick
EXTENDED_HOURS = (4 * 60, 20 * 60)  # New York minutes of the day a vendor's extended-hours bars may lie in


@dataclass(frozen=True)
class Rule:
    name: str
    blocking: bool
    description: str
    failing: Callable[[], pl.Expr] | None  # row mask (True = fails); None for table-level rules
    reason: Callable[[], pl.Expr] | None = None
    quarantines: bool = False  # a warning whose rows are still set aside (blocking rules always are)


def _local(column: str, fmt: str) -> pl.Expr:
    """A UTC timestamp as exchange wall-clock text, for reasons people read."""
    return pl.col(column).dt.convert_time_zone(EXCHANGE_TZ).dt.strftime(fmt)


def _max_oc() -> pl.Expr:
    return pl.max_horizontal("open", "close")


def _min_oc() -> pl.Expr:
    return pl.min_horizontal("open", "close")


# Numbers that must be finite: pandas (so GX) reads a NaN as a missing value, polars does not; both
# engines fail a NaN or an infinity in any of these.
FINITE_COLUMNS = (*PRICE_COLUMNS, "volume")

RULES: tuple[Rule, ...] = (
    Rule(
        "not_null",
        True,
        "Required columns (ts, OHLC, volume) are present and prices and volume are finite.",
        lambda: (
            pl.any_horizontal([pl.col(c).is_null() for c in REQUIRED_COLUMNS])
            | pl.any_horizontal([~pl.col(c).is_finite() for c in FINITE_COLUMNS])
        ),
        lambda: pl.format(
            "null or non-finite value in {}",
            pl.concat_str(
                [
                    pl.when(pl.col(c).is_null() | (~pl.col(c).is_finite() if c in FINITE_COLUMNS else pl.lit(False))).then(pl.lit(c))
                    for c in REQUIRED_COLUMNS
                ],
                separator=", ",
                ignore_nulls=True,
            ),
        ),
    ),
    Rule(
        "ohlc_consistent",
        True,
        "low > 0 and low <= min(open, close) <= max(open, close) <= high.",
        lambda: (pl.col("high") < _max_oc()) | (pl.col("low") > _min_oc()) | (pl.col("low") <= 0),
        lambda: (
            pl.when(pl.col("high") < _max_oc())
            .then(pl.format("high {} < max(open, close) {}", pl.col("high"), _max_oc()))
            .when(pl.col("low") > _min_oc())
            .then(pl.format("low {} > min(open, close) {}", pl.col("low"), _min_oc()))
            .otherwise(pl.format("low {} is not positive", pl.col("low")))
        ),
    ),
    Rule(
        "volume_non_negative",
        True,
        "volume >= 0.",
        lambda: pl.col("volume") < 0,
        lambda: pl.format("volume {} < 0", pl.col("volume")),
    ),
    Rule(
        "ts_unique",
        True,
        "One bar per (symbol, ts); repeats after the first are quarantined.",
        lambda: ~pl.col("_first_of_ts"),
        lambda: pl.format("duplicate bar for {} at {}", pl.col("symbol"), pl.col("ts")),
    ),
    Rule(
        "ts_monotonic",
        False,
        "Timestamps arrive increasing per symbol (the lake stores them sorted either way).",
        lambda: ~pl.col("_increasing"),
    ),
    Rule(
        "in_session",
        True,
        "Intraday bars lie inside the exchange session (half days close early); daily bars fall on a session.",
        lambda: ~pl.col("_in_session") & ~pl.col("_extended"),
        lambda: (
            pl.when(pl.col("_open").is_null())  # a daily bar whose date is no session
            .then(pl.format("{} falls on no {} session (a weekend or holiday)", pl.col("ts").dt.convert_time_zone(EXCHANGE_TZ).dt.date(), pl.col("symbol")))
            .otherwise(
                pl.format(
                    "{} is outside the {} session hours ({} to {})",
                    _local("ts", "%Y-%m-%d %H:%M %Z"),
                    pl.col("symbol"),
                    _local("_open", "%Y-%m-%d %H:%M"),
                    _local("_close", "%H:%M %Z"),
                )
            )
        ),
    ),
    Rule(
        "extended_hours",
        False,
        "A source's pre-market / after-hours bars (04:00-20:00 New York on a session day, outside the session) are set aside in the quarantine.",
        lambda: pl.col("_extended"),
        lambda: pl.format(
            "{} is outside the {} regular session: an extended-hours (pre-market or after-hours) bar",
            _local("ts", "%Y-%m-%d %H:%M %Z"),
            pl.col("symbol"),
        ),
        quarantines=True,
    ),
    Rule(
        "price_jump",
        True,
        f"No close is more than {MAX_JUMP:g}x (or under 1/{MAX_JUMP:g}; QUANTLAKE_MAX_JUMP) the previous one unless a declared corporate action (split) explains it.",
        # NaN (after a non-finite close, which not_null already holds) sorts above every number in polars.
        lambda: (pl.col("_log_ret").abs() > pl.col("_max_log_jump")) & pl.col("_log_ret").is_not_nan(),
        lambda: pl.format(
            "close {} is {}x the previous close {}; a split? declare it in <lake>/reference/corporate_actions.csv",
            pl.col("close"),
            (pl.col("close") / pl.col("_prev_close")).round_sig_figs(3),
            pl.col("_prev_close"),
        ),
    ),
    Rule(
        "missing_bars",
        False,
        "Every bar the exchange calendar expects over the requested range (or the data's sessions) is present.",
        None,
    ),
    Rule(
        "outlier_jumps",
        False,
        f"Close-to-close moves above {JUMP_Z:g} robust standard deviations (and a per-timeframe floor).",
        lambda: pl.col("_jump_z") > JUMP_Z,
    ),
)
RULES_BY_NAME = {rule.name: rule for rule in RULES}


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    passed: bool
    blocking: bool
    failed_rows: int
    description: str
    examples: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class ValidationReport:
    results: list[CheckOutcome]
    clean: pl.DataFrame
    quarantine: pl.DataFrame  # the failing rows plus `check` and `reason`

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results if r.blocking)

    def outcome(self, name: str) -> CheckOutcome:
        return next(r for r in self.results if r.name == name)

    def raise_if_failed(self, where: str) -> None:
        failed = [r for r in self.results if r.blocking and not r.passed]
        if failed:
            detail = "; ".join(f"{r.name}: {r.failed_rows} row(s), e.g. {r.examples[:1]}" for r in failed)
            raise ValidationFailed(f"{where}: {detail}")


_SESSIONS_LOCK = threading.Lock()
_SESSIONS: dict[str, pl.DataFrame] = {}


def _sessions_between(first: date, last: date, exchange: str) -> pl.DataFrame:
    """`sessions_frame(first, last, exchange)`, sliced from the exchange's whole calendar built once."""
    with _SESSIONS_LOCK:
        table = _SESSIONS.get(exchange)
        if table is None:
            cal = get_calendar(exchange)
            table = _SESSIONS[exchange] = sessions_frame(cal.first_session.date(), cal.last_session.date(), exchange)
    if last < first:
        return sessions_frame(first, last, exchange)  # raises the calendar's own error
    return table.filter(pl.col("date").is_between(first, last))


def _session_flags(bars: pl.DataFrame, timeframe: str, exchange: str) -> pl.DataFrame:
    """Adds the session each bar falls in (`_date`, `_open`, `_close`) and `_in_session`.

    Intraday: the last session opening at or before the bar, found by binary search (much cheaper
    than a timezone conversion and a join on millions of rows); a bar before the calendar's first
    session has none. Daily: the bar's exchange-local date must be a session, whatever time of day
    the vendor stamps daily bars with. A bar without a timestamp has no session and `_in_session`
    null: not_null fails it, no other rule does.
    """
    empty = {"date": pl.Date(), "open": pl.Datetime("us", "UTC"), "close": pl.Datetime("us", "UTC")}
    if bars["ts"].null_count() == bars.height:
        return bars.with_columns(
            *[pl.lit(None, dtype).alias(f"_{name}") for name, dtype in empty.items()], pl.lit(None, pl.Boolean).alias("_in_session")
        )
    has_ts = pl.col("ts").is_not_null()
    local_date = pl.col("ts").dt.convert_time_zone(EXCHANGE_TZ).dt.date()
    first, last = (t.astimezone(ZoneInfo(EXCHANGE_TZ)).date() for t in (bars["ts"].min(), bars["ts"].max()))  # type: ignore[union-attr]
    sessions = _sessions_between(first - timedelta(days=7), last, exchange)
    if timeframe == "1d":
        joined = bars.with_columns(local_date.alias("_date")).join(
            sessions.rename({"date": "_date", "open": "_open", "close": "_close"}), on="_date", how="left", maintain_order="left"
        )
        return joined.with_columns(pl.when(has_ts).then(pl.col("_open").is_not_null()).alias("_in_session"))
    # Signed: search_sorted's index is unsigned, and 0 - 1 would wrap around to an index out of bounds.
    at = sessions["open"].search_sorted(bars["ts"], side="right").cast(pl.Int64) - 1
    found = sessions.select(pl.all().gather(pl.select(pl.when((at >= 0) & bars["ts"].is_not_null()).then(at)).to_series()))
    inside = (pl.col("ts") >= pl.col("_open")) & (pl.col("ts") < pl.col("_close"))
    return bars.with_columns(found["date"].alias("_date"), found["open"].alias("_open"), found["close"].alias("_close")).with_columns(
        pl.when(has_ts).then(inside.fill_null(False)).alias("_in_session")
    )


def _sorted_unique(bars: pl.DataFrame) -> bool:
    """Whether rows already run in strictly increasing (symbol, ts) order with neither null: the
    usual case (sources emit per-symbol sorted bars), where the sorts below would change nothing."""
    if bars["symbol"].null_count() or bars["ts"].null_count():
        return False
    sym, ts = pl.col("symbol"), pl.col("ts")
    ordered = (sym.shift(1) < sym) | ((sym.shift(1) == sym) & (ts.shift(1) < ts))
    return bool(bars.select(ordered.slice(1).all()).item())


SCALE_SAMPLE = 16_384  # returns per symbol the robust scale is estimated from, at most


def _robust_scales(symbol: pl.Series, log_ret: pl.Series) -> pl.Series:
    """Per row, its symbol's robust standard deviation of returns: 1.4826 x the median absolute
    deviation of its finite returns. Rows come grouped by symbol, so each symbol is one contiguous
    run. A long run is estimated from evenly spaced returns (at most SCALE_SAMPLE): the MAD's
    sampling error at that size is about 1 %, far inside the JUMP_Z threshold, and the medians
    stop dominating validation time on years of minute bars."""
    starts = symbol.ne_missing(symbol.shift(1)).fill_null(True).arg_true().to_numpy()
    values = log_ret.cast(pl.Float64).to_numpy()
    out = np.full(len(values), np.nan)
    for a, b in zip(starts, [*starts[1:], len(values)], strict=True):
        seg = values[a:b : max(1, (b - a) // SCALE_SAMPLE)]
        seg = seg[np.isfinite(seg)]
        if seg.size:
            out[a:b] = np.median(np.abs(seg - np.median(seg))) * 1.4826
    return pl.Series("_scale", out, nan_to_null=True)


def _split_factor(actions: pl.DataFrame | None, symbols: pl.Series) -> pl.Expr:
    """Per row, the log of the product of the split ratios in effect at its session (`_date`): a
    return across an ex-date, scaled by the ratio, is the move a holder saw."""
    terms = [pl.lit(0.0)]
    if actions is not None and not actions.is_empty():
        wanted = actions.filter(pl.col("symbol").is_in(symbols.drop_nulls().unique().to_list()))
        for row in wanted.iter_rows(named=True):
            at = (pl.col("symbol") == row["symbol"]) & (pl.col("_date") >= row["ex_date"])
            terms.append(pl.when(at).then(pl.lit(float(np.log(row["ratio"])))).otherwise(0.0))
    return pl.sum_horizontal(terms)


def _helper_columns(bars: pl.DataFrame, timeframe: str, exchange: str, actions: pl.DataFrame | None = None) -> pl.DataFrame:
    """Session flags, order, duplicates and jump scores; returned sorted by (symbol, ts, arrival).

    Shifts with a same-symbol guard instead of window expressions: sorting once is much cheaper
    than grouping several times on millions of rows. Input that is already in (symbol, ts) order
    with no repeats (what sources produce) skips the sorts: every bar is then increasing and the
    first of its timestamp by construction.
    """
    same = pl.col("symbol") == pl.col("symbol").shift(1)
    if _sorted_unique(bars):
        ordered = bars.with_row_index("_row").with_columns(pl.lit(True).alias("_increasing"))
        df = _session_flags(ordered, timeframe, exchange).with_columns(pl.lit(True).alias("_first_of_ts"))
    else:
        arrival = bars.with_row_index("_row").sort("symbol", maintain_order=True)
        arrival = arrival.with_columns((~same | (pl.col("ts") > pl.col("ts").shift(1))).fill_null(True).alias("_increasing"))
        df = _session_flags(arrival.sort("symbol", "ts", "_row"), timeframe, exchange)
        df = df.with_columns((~(same & (pl.col("ts") == pl.col("ts").shift(1)))).fill_null(True).alias("_first_of_ts"))
    factor = _split_factor(actions, df["symbol"])
    # A return is measured from the symbol's previous bar with a time: rows without one sort first and
    # are not_null's alone (their close is no price to measure the first bar against).
    after = same & pl.col("ts").shift(1).is_not_null()
    df = df.with_columns(pl.when(after).then(pl.col("close").shift(1)).alias("_prev_close"), factor.alias("_split")).with_columns(
        pl.when(after).then((pl.col("close") / pl.col("_prev_close")).log() + pl.col("_split") - pl.col("_split").shift(1)).alias("_log_ret")
    )
    row_scale = _robust_scales(df["symbol"], df["_log_ret"])
    floor = JUMP_FLOOR[timeframe] / JUMP_Z
    return df.with_columns(
        pl.when(pl.col("symbol").is_not_null()).then(row_scale).alias("_scale"),
    ).with_columns(
        (pl.col("_log_ret").abs() / pl.max_horizontal(pl.col("_scale"), pl.lit(floor))).fill_nan(None).fill_null(0.0).alias("_jump_z")
    )


def _extended_flags(frame: pl.DataFrame, timeframe: str, exchange: str) -> pl.Expr:
    """`_extended`: an intraday bar outside the session, on a session day, within EXTENDED_HOURS."""
    outside = ~pl.col("_in_session") & pl.col("ts").is_not_null()
    if timeframe == "1d" or not frame.select(outside.any()).item():
        return pl.lit(False).alias("_extended")
    local = pl.col("ts").dt.convert_time_zone(EXCHANGE_TZ)
    first, last = (t.astimezone(ZoneInfo(EXCHANGE_TZ)).date() for t in (frame["ts"].min(), frame["ts"].max()))  # type: ignore[union-attr]
    days = _sessions_between(first, last, exchange)["date"]
    minute = local.dt.hour().cast(pl.Int32) * 60 + local.dt.minute().cast(pl.Int32)
    lo, hi = EXTENDED_HOURS
    return (outside & local.dt.date().is_in(days.implode()) & (minute >= lo) & (minute < hi)).fill_null(False).alias("_extended")


def _requested_sessions(frm: datetime, until: datetime, exchange: str) -> pl.DataFrame:
    """Sessions opening in [frm, until): the ones a request over that range should have bars for."""
    local = ZoneInfo(EXCHANGE_TZ)
    sessions = _sessions_between(frm.astimezone(local).date(), until.astimezone(local).date(), exchange)
    return sessions.filter((pl.col("open") >= frm) & (pl.col("open") < until)).select(pl.col("open").alias("_open"), pl.col("close").alias("_close"))


def _missing_bars(
    bars: pl.DataFrame,
    timeframe: str,
    expected_until: datetime | None,
    expected_from: datetime | None = None,
    exchange: str = "XNYS",
) -> pl.DataFrame:
    """Expected bar timestamps absent from the data, per symbol: over the requested range when
    `expected_from` is given (a session with no bar at all is missing whole), else over the sessions
    the data touches.

    `bars` comes sorted by (symbol, ts), so a (symbol, session) is one run of in-session rows and
    its distinct timestamps are the rows whose ts differs from the previous row's. Only the sessions
    with fewer distinct on-grid bars than expected are listed bar by bar.
    """
    none = pl.DataFrame(schema={"symbol": pl.String(), "ts": pl.Datetime("us", "UTC")})
    present = bars.select("symbol", "ts", "_date", "_open", "_close", "_in_session").filter(pl.col("_in_session"))
    symbols = bars.select(pl.col("symbol").drop_nulls().unique().sort())
    requested = None
    if expected_from is not None and not symbols.is_empty():
        until = expected_until or (present["_close"].max() if not present.is_empty() else expected_from)
        requested = symbols.join(_requested_sessions(expected_from, until, exchange), how="cross")  # type: ignore[arg-type]
    if present.is_empty() and requested is None:
        return none
    if timeframe == "1d":
        if requested is None:
            span = sessions_frame(present["_date"].min(), present["_date"].max(), exchange)  # type: ignore[arg-type]
            requested = present.select("symbol").unique().join(span.select(pl.col("open").alias("_open")), how="cross")
        expected = requested.select("symbol", pl.col("_open").alias("ts"))
        return expected.join(present.select("symbol", "ts"), on=["symbol", "ts"], how="anti").sort("symbol", "ts")
    step = TIMEFRAMES[timeframe]
    end = pl.col("_close") if expected_until is None else pl.min_horizontal(pl.col("_close"), pl.lit(expected_until))
    schema = {"symbol": pl.String(), "_open": pl.Datetime("us", "UTC"), "_close": pl.Datetime("us", "UTC"), "_have": pl.Int64()}
    sessions = pl.DataFrame(schema=schema)
    if not present.is_empty():
        first_row = pl.int_range(pl.len()) == 0
        new_run = first_row | pl.col("symbol").ne_missing(pl.col("symbol").shift(1)) | pl.col("_open").ne_missing(pl.col("_open").shift(1))
        # Counted: distinct bars on the session's step grid before its end, the only ones the listing below
        # can find present (a bar off the grid, or past `expected_until`, stands in for no missing one).
        on_grid = ((pl.col("ts") - pl.col("_open")).dt.total_microseconds() % (step // timedelta(microseconds=1)) == 0) & (pl.col("ts") < end)
        flags = present.select(new_run.alias("new"), ((new_run | (pl.col("ts") != pl.col("ts").shift(1))) & on_grid).alias("distinct"))
        starts = flags["new"].arg_true()
        have = np.add.reduceat(flags["distinct"].to_numpy().astype(np.int64), starts.to_numpy())
        sessions = present.select("symbol", "_open", "_close").gather(starts).with_columns(pl.Series("_have", have, dtype=pl.Int64))
    if requested is not None:  # requested sessions with no bar at all: every bar of them is missing
        absent = requested.join(sessions.select("symbol", "_open"), on=["symbol", "_open"], how="anti")
        sessions = pl.concat([sessions, absent.with_columns(pl.lit(0, pl.Int64).alias("_have")).select(list(schema))])
    sessions = sessions.with_columns(((end - pl.col("_open")).dt.total_microseconds() / step.total_seconds() / 1e6).ceil().alias("_want"))
    short = sessions.filter(pl.col("_have") < pl.col("_want"))  # only these are enumerated, minute by minute
    if short.is_empty():
        return none
    expected = (
        short.with_columns(pl.datetime_ranges(pl.col("_open"), end, interval=step, closed="left").alias("ts"))
        .explode("ts")
        .drop_nulls("ts")
        .select("symbol", pl.col("ts").cast(pl.Datetime("us", "UTC")))
    )
    return expected.join(present.select("symbol", "ts"), on=["symbol", "ts"], how="anti").sort("symbol", "ts")


def expectation_specs() -> list[tuple[str, str, dict[str, Any]]]:
    """The suite, as data: (rule, great-expectations expectation class, its arguments), in order.

    Read at every validation: the suite in use is always the one these rules and constants describe
    now (a changed threshold or column builds its own suite, never reuses a stale one). No suite
    parameters ($PARAMETER): each expectation's configuration is computed once (_memo_class)."""
    specs: list[tuple[str, str, dict[str, Any]]] = [
        ("not_null", "ExpectColumnValuesToNotBeNull", {"column": column}) for column in REQUIRED_COLUMNS
    ]
    specs.append(("not_null", "ExpectColumnValuesToBeInSet", {"column": "_finite", "value_set": [True]}))
    for a, b in (("high", "open"), ("high", "close"), ("open", "low"), ("close", "low")):
        # nulls: not_null's job
        pair = {"column_A": a, "column_B": b, "or_equal": True, "ignore_row_if": "either_value_is_missing"}
        specs.append(("ohlc_consistent", "ExpectColumnPairValuesAToBeGreaterThanB", pair))
    specs += [
        ("ohlc_consistent", "ExpectColumnValuesToBeBetween", {"column": "low", "min_value": 0, "strict_min": True}),
        ("volume_non_negative", "ExpectColumnValuesToBeBetween", {"column": "volume", "min_value": 0}),
        # A key with a null is not_null's row (polars' duplicate test never matches a null either).
        ("ts_unique", "ExpectCompoundColumnsToBeUnique", {"column_list": ["symbol", "ts"], "ignore_row_if": "any_value_is_missing"}),
        ("ts_monotonic", "ExpectColumnValuesToBeInSet", {"column": "_increasing", "value_set": [True]}),
        ("in_session", "ExpectColumnValuesToBeInSet", {"column": "_in_session", "value_set": [True]}),
        ("extended_hours", "ExpectColumnValuesToBeInSet", {"column": "_extended", "value_set": [False]}),
        ("outlier_jumps", "ExpectColumnValuesToBeBetween", {"column": "_jump_z", "max_value": JUMP_Z}),
        # The threshold is per call (max_jump), so the suite checks the return relative to it.
        ("price_jump", "ExpectColumnValuesToBeBetween", {"column": "_jump_ratio", "max_value": 1.0}),
    ]
    return specs


_MEMO_CLASSES: dict[str, type] = {}


def _memo_class(name: str) -> type:
    """great-expectations' `name` with its `configuration` computed once per instance.

    GX rebuilds an expectation's configuration from its pydantic fields at every access (a `.dict()`
    and a regex), about 80 times per expectation and validation: half of GX's time on a partition.
    The subclass keeps the first one until a field is assigned. Registered with GX under its own
    type (`quantlake_<gx type>`), so the domain objects GX makes from the configurations are of it
    too; GX's own class is left as it is. Made once per process."""
    with _GreatExpectations._lock:
        if name not in _MEMO_CLASSES:
            import great_expectations as gx
            from great_expectations.compatibility import pydantic

            base: Any = getattr(gx.expectations, name)

            def configuration(self: Any) -> Any:
                memo = self._configuration_memo
                if memo is None:
                    memo = base.configuration.fget(self)
                    object.__setattr__(self, "_configuration_memo", memo)
                return memo

            def __setattr__(self: Any, key: str, value: Any) -> None:  # noqa: N807  (the model's own hook)
                base.__setattr__(self, key, value)
                object.__setattr__(self, "_configuration_memo", None)

            namespace = {
                "__module__": __name__,
                "__doc__": base.__doc__,
                "_configuration_memo": pydantic.PrivateAttr(default=None),
                "configuration": property(configuration),
                "__setattr__": __setattr__,
            }
            _MEMO_CLASSES[name] = type(base)(f"Quantlake{name}", (base,), namespace)
        return _MEMO_CLASSES[name]


@dataclass(frozen=True)
class _Suite:
    batch: Any  # the ephemeral context's whole-dataframe batch definition
    suite: Any  # the expectation suite, each expectation tagged with its rule in `meta`


class _GreatExpectations:
    """One ephemeral GX context, batch definition and suite per suite spec, built once per process."""

    _lock = threading.RLock()
    _suites: dict[str, _Suite] = {}

    @classmethod
    def suite(cls, specs: list[tuple[str, str, dict[str, Any]]]) -> _Suite:
        key = json.dumps(specs, sort_keys=True)
        with cls._lock:
            if key not in cls._suites:
                cls._suites[key] = cls.build(specs, memo=True)
            return cls._suites[key]

    @staticmethod
    def build(specs: list[tuple[str, str, dict[str, Any]]], memo: bool) -> _Suite:
        """A fresh context and suite; `memo=False`: GX's own expectation classes (the reference)."""
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        batch = (
            context.data_sources.add_pandas("quantlake")
            .add_dataframe_asset("bars")
            .add_batch_definition_whole_dataframe("partition")
        )
        suite = context.suites.add(gx.ExpectationSuite(name="bars"))
        for rule, name, kwargs in specs:
            expectation = (_memo_class(name) if memo else getattr(gx.expectations, name))(**kwargs)
            expectation.meta = {"rule": rule}
            suite.add_expectation(expectation)
        return _Suite(batch, suite)


def great_expectations_view(frame: pl.DataFrame) -> Any:
    """The pandas frame the suite checks: the bars plus the helper columns its rules read."""
    return frame.select(
        *REQUIRED_COLUMNS,
        pl.all_horizontal([pl.col(c).is_finite() for c in FINITE_COLUMNS]).fill_null(False).alias("_finite"),
        "_increasing",
        (pl.col("_in_session") | pl.col("_extended")).alias("_in_session"),  # extended bars are extended_hours' rows
        "_extended",
        "_jump_z",
        (pl.col("_log_ret").abs() / pl.col("_max_log_jump")).alias("_jump_ratio"),
    ).to_pandas()


def run_suite(suite: _Suite, view: Any) -> Any:
    """GX's validator (the one ValidationDefinition.run calls) on one batch. Without that wrapper's
    freshness check against the context's stores and its results store, which keeps every result in
    memory for the life of the process (a long-lived process validates thousands of partitions).
    Only each expectation's success is read (the failing rows come from the polars masks):
    BOOLEAN_ONLY skips GX's unexpected-value summaries."""
    from great_expectations.validator.v1_validator import Validator

    validator = Validator(batch_definition=suite.batch, batch_parameters={"dataframe": view}, result_format="BOOLEAN_ONLY")
    return validator.validate_expectation_suite(suite.suite)


def run_great_expectations(frame: pl.DataFrame) -> dict[str, bool]:
    """Runs the suite on the bars plus helper columns; returns pass/fail per rule."""
    result = run_suite(_GreatExpectations.suite(expectation_specs()), great_expectations_view(frame))
    passed: dict[str, bool] = {}
    for item in result.results:
        rule = item.expectation_config.meta["rule"]
        passed[rule] = passed.get(rule, True) and bool(item.success)
    return passed


def validate_bars(
    bars: pl.DataFrame,
    *,
    timeframe: str,
    exchange: str = "XNYS",
    expected_until: datetime | None = None,
    expected_from: datetime | None = None,
    corporate_actions: pl.DataFrame | None = None,
    previous: pl.DataFrame | None = None,
    engine: str = "great_expectations",
    max_jump: float = MAX_JUMP,
    extended_hours: bool = False,
) -> ValidationReport:
    """Checks `bars` against every rule; returns outcomes, the clean rows and the quarantined rows.

    `expected_from`/`expected_until` are the range that was requested: the missing-bar rule expects
    every bar the calendar has in it (not only in the sessions the data happens to touch);
    `expected_until` alone bounds a session still in progress. `corporate_actions` (symbol, ex_date,
    ratio; `lake.corporate_actions`) explain price jumps. `previous` (the last stored bar of each
    symbol before these) is context only: the first bar's return is measured from it, so a partition
    whose every price is 100x the day before (cents for dollars) is caught; it is not checked again,
    written or counted. `engine="polars"` skips great-expectations (same masks, same outcomes; used
    where GX's overhead dominates). `max_jump` is the close ratio beyond which a bar blocks (> 1; exactly it passes; QUANTLAKE_MAX_JUMP);
    `extended_hours` says the source sends extended-hours bars by design (see the module doc).
    """
    check_timeframe(timeframe)
    if not (isinstance(max_jump, int | float) and np.isfinite(max_jump) and max_jump > 1):
        raise ValueError(f"validate {timeframe}: max_jump must be a number > 1 (a close ratio), got {max_jump!r}")
    bars = conform_bars(bars, where=f"validate {timeframe}")
    context = conform_bars(previous, where=f"validate {timeframe} (previous bars)") if previous is not None else bars.clear()
    frame = _helper_columns(pl.concat([context, bars]) if context.height else bars, timeframe, exchange, corporate_actions)
    if context.height:  # arrival rows 0..n-1 were the context: their work (a return) is done
        frame = frame.filter(pl.col("_row") >= context.height)
    frame = frame.with_columns(
        pl.lit(float(np.log(max_jump))).alias("_max_log_jump"),
        _extended_flags(frame, timeframe, exchange) if extended_hours else pl.lit(False).alias("_extended"),
    )
    gx_passed = run_great_expectations(frame) if engine == "great_expectations" else None
    missing = _missing_bars(frame, timeframe, expected_until, expected_from, exchange)

    # Every row rule's mask in one pass, kept as columns so the failing rows are only ever
    # gathered (for examples and the quarantine) when a rule actually fails.
    row_rules = [rule for rule in RULES if rule.failing is not None]
    mask = {rule.name: pl.col(f"_fails_{rule.name}") for rule in row_rules}
    # A null fails `not_null` only; to every other rule (as to GX) a missing value is no evidence.
    frame = frame.with_columns(
        rule.failing().fill_null(rule.name == "not_null").alias(f"_fails_{rule.name}") for rule in row_rules  # type: ignore[misc]
    )
    counts = frame.select(m.sum() for m in mask.values()).row(0)
    failed_by_rule = dict(zip(mask, counts, strict=True))

    results: list[CheckOutcome] = []
    for rule in RULES:
        if rule.failing is None:
            failed_rows, examples = missing.height, missing.head(EXAMPLES).to_dicts()
        else:
            failed_rows = failed_by_rule[rule.name]
            reason = [rule.reason().alias("reason")] if rule.reason is not None else []
            examples = (
                frame.filter(mask[rule.name]).head(EXAMPLES).rechunk().select("symbol", "ts", *PRICE_COLUMNS, "volume", *reason).to_dicts()
                if failed_rows
                else []
            )
        passed = failed_rows == 0
        if gx_passed is not None and rule.name in gx_passed and gx_passed[rule.name] != passed:
            raise AssertionError(
                f"great-expectations and polars disagree on {rule.name}: {gx_passed[rule.name]} vs {passed}"
            )
        results.append(
            CheckOutcome(rule.name, passed, rule.blocking, failed_rows, rule.description, examples)
        )

    blocking = [rule for rule in row_rules if rule.blocking or rule.quarantines]  # the rules whose rows are set aside
    reasons = pl.concat_str(
        [pl.when(mask[rule.name]).then(rule.reason()) for rule in blocking if rule.reason is not None],  # type: ignore[misc]
        separator="; ",
        ignore_nulls=True,
    )
    checks = pl.concat_str(
        [pl.when(mask[rule.name]).then(pl.lit(rule.name)) for rule in blocking],
        separator=",",
        ignore_nulls=True,
    )
    bad = pl.any_horizontal([mask[rule.name] for rule in blocking])
    # Both come out in (symbol, ts) order: the frame is sorted by (symbol, ts, arrival), and clean
    # rows have neither a null key nor a repeated one. The failing rows are gathered into one chunk
    # before formatting reasons: polars' string formatting can panic on a filter's empty chunks.
    if any(failed_by_rule[rule.name] for rule in blocking):
        quarantine = frame.filter(bad).rechunk().select(*bars.columns, checks.alias("check"), reasons.alias("reason"))
        clean = frame.filter(~bad).select(bars.columns)
    else:
        quarantine = frame.clear().select(*bars.columns, checks.alias("check"), reasons.alias("reason"))
        clean = frame.select(bars.columns)
    return ValidationReport(results, clean, quarantine)
