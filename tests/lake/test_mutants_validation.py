"""Validation rules at their exact edges, on the polars engine first (cheap), then the few cases only
great-expectations can get wrong: the reasons people read, the extended-hours window's bounds, the
jump rules' thresholds and scale, declared splits, missing bars over a requested range, duplicates
next to each other, and the report's shape. Written for the survivors of mutation testing (issue 18);
each case pins one rule of lake/validation.py."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, date, datetime, timedelta

import numpy as np
import polars as pl
import pytest

import lake.validation as validation
from lake.calendar import session_bounds
from lake.errors import LakeError, ValidationFailed
from lake.schema import TIMEFRAMES, conform_bars
from lake.validation import (
    EXAMPLES,
    JUMP_FLOOR,
    JUMP_Z,
    MAX_JUMP,
    RULES,
    SCALE_SAMPLE,
    ValidationReport,
    _GreatExpectations,
    _helper_columns,
    _robust_scales,
    expectation_specs,
    run_great_expectations,
    validate_bars,
)

DAY = "2024-11-27"  # a full session, 09:30-16:00 New York (14:30-21:00 UTC)


def _bars(ts: list[datetime], closes: list[float] | None = None, symbol: str = "AAPL", timeframe: str = "1m") -> pl.DataFrame:
    """Flat bars (open = high = low = close) at `ts`: every OHLC bound holds with equality."""
    closes = closes if closes is not None else [100.0] * len(ts)
    frame = pl.DataFrame(
        {
            "symbol": symbol,
            "timeframe": timeframe,
            "ts": pl.Series(ts, dtype=pl.Datetime("us", "UTC")),
            **{c: closes for c in ("open", "high", "low", "close")},
            "volume": [1_000.0] * len(ts),
        }
    )
    return conform_bars(frame, where="test bars")


def _session(timeframe: str = "1m", day: str = DAY, symbol: str = "AAPL", closes: list[float] | None = None) -> pl.DataFrame:
    """The session's bars, or its first len(closes) bars at `closes`."""
    open_, close = session_bounds(day)
    step = TIMEFRAMES[timeframe]
    n = math.ceil((close - open_) / step) if closes is None else len(closes)
    return _bars([open_ + k * step for k in range(n)], closes, symbol, timeframe)


def _polars(bars: pl.DataFrame, **kwargs: object) -> ValidationReport:
    return validate_bars(bars, timeframe=str(bars["timeframe"][0]), engine="polars", **kwargs)  # type: ignore[arg-type]


def _set(bars: pl.DataFrame, row: int, **values: object) -> pl.DataFrame:
    return bars.with_columns(pl.when(pl.int_range(pl.len()) == row).then(pl.lit(v)).otherwise(pl.col(c)).alias(c) for c, v in values.items())


# -- a clean session, and the report's shape ---------------------------------------------------


def test_a_clean_session_passes_every_rule_and_keeps_every_row() -> None:
    bars = _session()
    report = validate_bars(bars, timeframe="1m", engine="polars")
    assert report.passed
    assert all(r.passed and r.failed_rows == 0 and r.examples == [] for r in report.results)
    assert report.clean.equals(bars)
    assert report.quarantine.is_empty() and report.quarantine.columns == [*bars.columns, "check", "reason"]
    report.raise_if_failed("nothing to raise")


def test_a_bad_row_is_quarantined_with_every_rule_it_breaks() -> None:
    bars = _set(_session(), 5, high=99.0, volume=-1.0)  # high under open/close, and a negative volume
    report = validate_bars(bars, timeframe="1m", engine="polars")
    assert report.quarantine.height == 1
    assert report.quarantine["check"][0] == "ohlc_consistent,volume_non_negative"
    assert report.quarantine["reason"][0] == "high 99.0 < max(open, close) 100.0; volume -1.0 < 0"
    assert report.clean.height == bars.height - 1 and report.clean["ts"].is_sorted()
    with pytest.raises(ValidationFailed, match=r"^bars 1m: ohlc_consistent: 1 row\(s\), e\.g\. .*; volume_non_negative: 1 row\(s\)"):
        report.raise_if_failed("bars 1m")


def test_examples_are_capped() -> None:
    bars = _session()
    for row in range(EXAMPLES + 2):
        bars = _set(bars, 10 + row, volume=-1.0)
    outcome = validate_bars(bars, timeframe="1m", engine="polars").outcome("volume_non_negative")
    assert outcome.failed_rows == 7 and len(outcome.examples) == 5 == EXAMPLES


def test_zero_volume_is_a_volume() -> None:
    assert validate_bars(_set(_session(), 3, volume=0.0), timeframe="1m", engine="polars").passed
    assert not validate_bars(_set(_session(), 3, volume=-1e-9), timeframe="1m", engine="polars").passed


# -- not_null: nulls and non-finite numbers, named -------------------------------------------------


@pytest.mark.parametrize(
    ("values", "named", "checks"),
    [
        ({"close": float("nan")}, "close", "not_null"),
        ({"open": float("inf")}, "open", "not_null,ohlc_consistent"),  # an infinity is a value: above high
        ({"volume": float("-inf")}, "volume", "not_null,volume_non_negative"),
        ({"close": None}, "close", "not_null"),
        ({"high": float("nan"), "volume": None}, "high, volume", "not_null"),
    ],
)
def test_null_or_non_finite_values_are_named(values: dict[str, float | None], named: str, checks: str) -> None:
    bars = _session().with_columns(
        pl.when(pl.int_range(pl.len()) == 7).then(pl.lit(v, pl.Float64)).otherwise(pl.col(c)).alias(c) for c, v in values.items()
    )
    report = validate_bars(bars, timeframe="1m", engine="polars")
    assert report.quarantine["check"].to_list() == [checks]  # a missing price is no evidence for another rule
    assert report.quarantine["reason"][0].split("; ")[0] == f"null or non-finite value in {named}"
    assert report.outcome("price_jump").passed


# -- ts_unique / ts_monotonic --------------------------------------------------------------------


def test_a_duplicate_next_to_its_first_is_found() -> None:
    bars = _session()
    twice = pl.concat([bars.head(4), bars.slice(3, 1), bars.slice(4)])  # rows 3 and 4 share a ts
    report = validate_bars(twice, timeframe="1m", engine="polars")
    assert report.outcome("ts_unique").failed_rows == 1
    assert report.outcome("ts_monotonic").failed_rows == 1  # strictly increasing: a repeat is not
    assert report.quarantine["reason"][0].startswith("duplicate bar for AAPL at 2024-11-27 14:33:00")
    assert report.clean.equals(bars)


def test_a_late_bar_is_reported_not_quarantined() -> None:
    bars = _session()
    late = pl.concat([bars.head(3), bars.slice(4, 5), bars.slice(3, 1), bars.slice(9)])
    report = validate_bars(late, timeframe="1m", engine="polars")
    assert report.outcome("ts_monotonic").failed_rows == 1 and not report.outcome("ts_monotonic").blocking
    assert report.passed and report.quarantine.is_empty() and report.clean.equals(bars)


def test_a_row_without_a_symbol_does_not_hide_a_duplicate() -> None:
    """Rows are only taken as already sorted and unique when no key is null: a null symbol between
    two copies of a bar makes every neighbour comparison null, which must not read as "sorted"."""
    open_, _ = session_bounds(DAY)
    bars = _bars([open_ + timedelta(minutes=1), open_ + timedelta(minutes=2), open_ + timedelta(minutes=1)])
    bars = bars.with_columns(pl.when(pl.int_range(pl.len()) == 1).then(None).otherwise(pl.col("symbol")).alias("symbol"))
    report = validate_bars(bars, timeframe="1m", engine="polars")
    assert report.outcome("ts_unique").failed_rows == 1 and report.outcome("not_null").failed_rows == 1


def test_symbols_in_any_order_are_not_out_of_order() -> None:
    both = pl.concat([_session(symbol="MSFT"), _session(symbol="AAPL")])
    report = validate_bars(both, timeframe="1m", engine="polars")
    assert report.outcome("ts_monotonic").passed and report.outcome("ts_unique").passed
    assert report.clean["symbol"].to_list() == ["AAPL"] * 390 + ["MSFT"] * 390


# -- in_session and extended hours ------------------------------------------------------------------


def test_in_session_reasons_name_the_hours() -> None:
    open_, close = session_bounds(DAY)
    report = validate_bars(_set(_session(), 20, ts=close + timedelta(minutes=5)), timeframe="1m", engine="polars")
    assert report.quarantine["reason"][0] == "2024-11-27 16:05 EST is outside the AAPL session hours (2024-11-27 09:30 to 16:00 EST)"


def test_a_daily_bar_on_a_weekend_is_named() -> None:
    daily = _bars([datetime(2024, 2, 29, 14, 30, tzinfo=UTC), datetime(2024, 3, 1, 14, 30, tzinfo=UTC), datetime(2024, 3, 2, 14, 30, tzinfo=UTC)], timeframe="1d")
    report = validate_bars(daily, timeframe="1d", engine="polars")
    assert report.quarantine["reason"].to_list() == ["2024-03-02 falls on no AAPL session (a weekend or holiday)"]
    # A daily bar is in session by its New York date, whatever its time of day.
    late = daily.head(2).with_columns(pl.col("ts") + timedelta(hours=9))  # 23:30 UTC, 18:30 New York
    assert validate_bars(late, timeframe="1d", engine="polars").outcome("in_session").passed
    assert validate_bars(late, timeframe="1d", engine="polars", extended_hours=True).outcome("extended_hours").passed


@pytest.mark.parametrize(
    ("new_york", "extended"),
    [((4, 0), True), ((4, 1), True), ((3, 59), False), ((9, 29), True), ((16, 0), True), ((19, 59), True), ((20, 0), False)],
)
def test_extended_hours_window_bounds(new_york: tuple[int, int], extended: bool) -> None:
    ts = datetime(2024, 11, 27, *new_york, tzinfo=UTC) + timedelta(hours=5)  # EST: UTC-5
    bars = pl.concat([_session(), _bars([ts])]).sort("ts")
    report = validate_bars(bars, timeframe="1m", engine="polars", extended_hours=True)
    assert report.outcome("extended_hours").failed_rows == int(extended)
    assert report.outcome("in_session").failed_rows == int(not extended)
    assert report.quarantine["check"].to_list() == ["extended_hours" if extended else "in_session"]
    assert report.passed is extended  # extended_hours warns, in_session blocks
    if extended:
        when = f"2024-11-27 {new_york[0]:02d}:{new_york[1]:02d} EST"
        assert report.quarantine["reason"][0] == f"{when} is outside the AAPL regular session: an extended-hours (pre-market or after-hours) bar"


def test_extended_hours_need_a_session_day() -> None:
    saturday = _bars([datetime(2024, 11, 30, 15, 0, tzinfo=UTC)])  # 10:00 New York on a Saturday
    report = validate_bars(pl.concat([_session(), saturday]), timeframe="1m", engine="polars", extended_hours=True)
    assert report.outcome("in_session").failed_rows == 1 and report.outcome("extended_hours").passed
    thanksgiving = _bars([datetime(2024, 11, 28, 15, 0, tzinfo=UTC)])
    report = validate_bars(pl.concat([_session(), thanksgiving]), timeframe="1m", engine="polars", extended_hours=True)
    assert report.outcome("in_session").failed_rows == 1


def test_without_the_flag_extended_bars_block() -> None:
    early = _bars([datetime(2024, 11, 27, 13, 0, tzinfo=UTC)])  # 08:00 New York
    report = validate_bars(pl.concat([early, _session()]), timeframe="1m", engine="polars")
    assert report.outcome("in_session").failed_rows == 1 and report.outcome("extended_hours").passed


# -- price_jump: the default threshold, both ways, and declared splits ------------------------------


@pytest.mark.parametrize(("factor", "blocks"), [(MAX_JUMP * 0.99, False), (MAX_JUMP * 1.01, True), (1 / (MAX_JUMP * 0.99), False), (1 / (MAX_JUMP * 1.01), True)])
def test_the_default_jump_threshold(factor: float, blocks: bool) -> None:
    closes = [100.0] * 20 + [100.0 * factor] * 20  # a level shift: one jump
    report = validate_bars(_session(closes=closes), timeframe="1m", engine="polars")
    assert MAX_JUMP == 10.0
    assert report.outcome("price_jump").failed_rows == int(blocks)
    if blocks:
        ratio = f"{factor:.3g}"
        assert report.quarantine["reason"][0].startswith(f"close {100.0 * factor} is {float(ratio)}x the previous close 100.0")


@pytest.mark.parametrize(("max_jump", "blocks"), [(1.5, True), (2.5, False)])
def test_a_custom_jump_threshold(max_jump: float, blocks: bool) -> None:
    closes = [100.0] * 20 + [200.0] * 20
    report = validate_bars(_session(closes=closes), timeframe="1m", engine="polars", max_jump=max_jump)
    assert report.outcome("price_jump").failed_rows == int(blocks)


def test_max_jump_must_be_a_number_above_one() -> None:
    assert validate_bars(_session(), timeframe="1m", engine="polars", max_jump=1.0001).passed
    for bad in ("5", None, -2.0, 1.0, 0.5, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="max_jump must be a number > 1"):
            validate_bars(_session(), timeframe="1m", engine="polars", max_jump=bad)  # type: ignore[arg-type]


def _split_days(ratio_move: float) -> pl.DataFrame:
    ts = [datetime(2024, 6, d, 13, 30, tzinfo=UTC) for d in (3, 4, 5, 6, 7, 10, 11, 12)]
    return _bars(ts, [100.0] * 4 + [100.0 * ratio_move] * 4, timeframe="1d")


def _actions(*rows: tuple[str, date, float]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"symbol": pl.String(), "ex_date": pl.Date(), "ratio": pl.Float64()}, orient="row")


def test_a_declared_split_explains_its_jump() -> None:
    bars = _split_days(1 / 20)  # a 20-for-1 split on 2024-06-07
    assert _polars(bars).outcome("price_jump").failed_rows == 1
    declared = _polars(bars, corporate_actions=_actions(("AAPL", date(2024, 6, 7), 20.0)))
    assert declared.passed and declared.outcome("outlier_jumps").passed
    for wrong in (("MSFT", date(2024, 6, 7), 20.0), ("AAPL", date(2024, 6, 10), 20.0), ("AAPL", date(2024, 6, 7), 1 / 20)):
        assert not _polars(bars, corporate_actions=_actions(wrong)).passed, wrong
    # An action declared before the data only shifts every row alike: nothing to explain.
    earlier = _polars(_split_days(1.0), corporate_actions=_actions(("AAPL", date(2024, 1, 2), 20.0)))
    assert earlier.passed and earlier.outcome("outlier_jumps").passed


# -- outlier_jumps: the robust scale and the threshold ------------------------------------------------


def test_robust_scale_is_the_mad_per_symbol() -> None:
    symbol = pl.Series(["A"] * 5 + ["B"] * 3 + ["C"] * 4)
    log_ret = pl.Series([None, 1.0, 2.0, 3.0, 10.0, None, None, None, None, -1.0, float("nan"), 3.0], dtype=pl.Float64)
    scales = _robust_scales(symbol, log_ret).to_list()
    # A: median 2.5, deviations 1.5, 0.5, 0.5, 7.5 -> median 1.0; B: no return; C: -1 and 3 -> deviations 2, 2.
    assert scales == pytest.approx([1.4826] * 5 + [None] * 3 + [2 * 1.4826] * 4, nan_ok=True)  # type: ignore[arg-type]


@pytest.mark.parametrize(("z", "flagged"), [(JUMP_Z * 0.95, False), (JUMP_Z * 1.05, True)])
def test_outliers_are_measured_in_robust_deviations(z: float, flagged: bool) -> None:
    """Returns of +-1 % (scale well above the 1m floor), then one move of `z` robust deviations."""
    s = 0.01
    steps = [s if k % 2 == 0 else -s for k in range(388)]
    returns = np.array([math.nan, *steps[:100], 0.0, *steps[100:]])  # the 0.0 is replaced by the jump
    finite = returns[np.isfinite(returns)]
    finite[100] = 1.0  # any large move: the median and MAD only see its rank
    scale = 1.4826 * np.median(np.abs(finite - np.median(finite)))
    returns[101] = z * scale
    closes = list(100.0 * np.exp(np.nancumsum(returns)))
    report = validate_bars(_session(closes=closes), timeframe="1m", engine="polars")
    assert JUMP_Z == 12.0 and scale > JUMP_FLOOR["1m"] / JUMP_Z
    assert report.outcome("outlier_jumps").failed_rows == int(flagged)


@pytest.mark.parametrize("timeframe", ["5m", "15m", "1h", "1d"])
def test_jump_floor_of_each_timeframe(timeframe: str) -> None:
    """On flat bars (robust scale 0) a move is an outlier exactly past the timeframe's floor."""
    floors = {"1m": 0.02, "5m": 0.03, "15m": 0.04, "1h": 0.06, "1d": 0.15}
    assert floors == JUMP_FLOOR
    if timeframe == "1d":
        base = _bars([datetime(2024, 6, d, 13, 30, tzinfo=UTC) for d in (3, 4, 5, 6, 7, 10, 11)], timeframe="1d")
    else:
        base = _session(timeframe)
    for factor, flagged in ((0.99, 0), (1.01, 2)):
        price = pl.when(pl.int_range(pl.len()) == 3).then(100.0 * math.exp(floors[timeframe] * factor)).otherwise(100.0)
        report = _polars(base.with_columns(price.alias(c) for c in ("open", "high", "low", "close")))
        assert report.outcome("outlier_jumps").failed_rows == flagged, (timeframe, factor)


def test_jump_scores_use_the_scale_or_the_floor_whichever_is_larger() -> None:
    closes = [100.0, 101.0, 100.0, 101.0, 100.0, 101.0, 100.0]
    frame = _helper_columns(_session(closes=closes).head(7), "1m", "XNYS")
    r = math.log(1.01)
    assert frame["_log_ret"].to_list()[1:] == pytest.approx([r, -r] * 3)
    scale = 1.4826 * r  # median of +-r (3 each) is 0, every deviation r
    assert frame["_scale"].to_list() == pytest.approx([scale] * 7)
    assert frame["_jump_z"].to_list() == pytest.approx([0.0] + [r / scale] * 6)


# -- missing_bars ------------------------------------------------------------------------------------


def test_missing_bars_in_the_data_s_session() -> None:
    bars = _session().filter(~pl.int_range(pl.len()).is_in([0, 200, 389]))  # the first, one inside, the last
    outcome = validate_bars(bars, timeframe="1m", engine="polars").outcome("missing_bars")
    open_, _ = session_bounds(DAY)
    assert outcome.failed_rows == 3 and not outcome.blocking
    assert [e["ts"] for e in outcome.examples] == [open_, open_ + timedelta(minutes=200), open_ + timedelta(minutes=389)]


def test_a_requested_session_with_no_bar_is_missing_whole() -> None:
    start, _ = session_bounds("2024-11-26")
    _, end = session_bounds(DAY)
    report = validate_bars(_session(), timeframe="1m", engine="polars", expected_from=start, expected_until=end)
    assert report.outcome("missing_bars").failed_rows == 390
    assert report.outcome("missing_bars").examples[0]["ts"] == start
    # Both symbols are expected over the range, each missing its own bars.
    both = pl.concat([_session(), _session(symbol="MSFT").filter(pl.col("ts") < session_bounds(DAY)[0] + timedelta(minutes=100))])
    report = validate_bars(both, timeframe="1m", engine="polars", expected_from=start, expected_until=end)
    assert report.outcome("missing_bars").failed_rows == 390 + 390 + 290
    # A range that starts after the first session's open leaves that session out.
    later = validate_bars(_session(), timeframe="1m", engine="polars", expected_from=start + timedelta(minutes=1), expected_until=end)
    assert later.outcome("missing_bars").passed


def test_a_requested_session_of_one_bar_is_missing_it() -> None:
    """A range that ends a minute into a session with no bar expects that one bar."""
    open_, _ = session_bounds(DAY)
    half_day, _ = session_bounds("2024-11-29")  # after Thanksgiving
    report = validate_bars(_session(), timeframe="1m", engine="polars", expected_from=open_, expected_until=half_day + timedelta(minutes=1))
    assert report.outcome("missing_bars").failed_rows == 1
    assert report.outcome("missing_bars").examples[0]["ts"] == half_day


def test_a_requested_range_that_ends_before_it_starts_is_an_error() -> None:
    open_, _ = session_bounds(DAY)
    half_day, _ = session_bounds("2024-11-29")
    with pytest.raises(LakeError, match="empty range: end 2024-11-27 is before start 2024-11-29"):
        validate_bars(_session(), timeframe="1m", engine="polars", expected_from=half_day, expected_until=open_)


def test_requested_daily_sessions() -> None:
    days = [datetime(2024, 6, d, 13, 30, tzinfo=UTC) for d in (3, 4, 6, 7)]  # 2024-06-05 is missing
    bars = _bars(days, timeframe="1d")
    assert _polars(bars).outcome("missing_bars").failed_rows == 1
    assert _polars(bars).outcome("missing_bars").examples[0]["ts"] == datetime(2024, 6, 5, 13, 30, tzinfo=UTC)
    wider = _polars(bars, expected_from=datetime(2024, 5, 31, tzinfo=UTC), expected_until=datetime(2024, 6, 11, tzinfo=UTC))
    assert [e["ts"].day for e in wider.outcome("missing_bars").examples] == [31, 5, 10]


def test_an_hour_session_counts_its_last_partial_bar() -> None:
    bars = _session("1h")
    assert bars.height == 7  # 09:30 ... 15:30
    assert validate_bars(bars, timeframe="1h", engine="polars").outcome("missing_bars").passed
    outcome = validate_bars(bars.head(6), timeframe="1h", engine="polars").outcome("missing_bars")
    assert outcome.failed_rows == 1 and outcome.examples[0]["ts"] == bars["ts"][6]


def test_expected_until_bounds_a_session_in_progress() -> None:
    open_, _ = session_bounds(DAY)
    bars = _session().head(30)
    assert validate_bars(bars, timeframe="1m", engine="polars", expected_until=open_ + timedelta(minutes=30)).outcome("missing_bars").passed
    late = validate_bars(bars, timeframe="1m", engine="polars", expected_until=open_ + timedelta(minutes=32))
    assert late.outcome("missing_bars").failed_rows == 2
    # A millisecond into the 31st minute: that bar has opened, so it is expected (30.00002 bars round up).
    just = validate_bars(bars, timeframe="1m", engine="polars", expected_until=open_ + timedelta(minutes=30, milliseconds=1))
    assert just.outcome("missing_bars").failed_rows == 1


# -- great-expectations: the suite agrees with polars at the edges (it raises when it does not) --------


def test_great_expectations_agrees_on_a_clean_session_and_each_fault() -> None:
    assert validate_bars(_session(), timeframe="1m").passed
    faults = [{"high": 99.0}, {"low": 100.5}, {"volume": -1.0}, {"close": float("nan")}]
    for values in faults:
        report = validate_bars(_set(_session(), 5, **values), timeframe="1m")
        assert not report.passed and report.quarantine.height == 1, values
    assert validate_bars(_set(_session(), 5, volume=0.0), timeframe="1m").passed
    closes = [100.0] * 20 + [100.0 * MAX_JUMP * 0.99] * 20
    assert validate_bars(_session(closes=closes), timeframe="1m").outcome("price_jump").passed
    closes = [100.0] * 20 + [100.0 * MAX_JUMP * 1.01] * 20
    assert not validate_bars(_session(closes=closes), timeframe="1m").outcome("price_jump").passed


# -- a bar without a timestamp, or before the calendar (found in session 6) ---------------------------


def _without_ts(bars: pl.DataFrame, rows: list[int]) -> pl.DataFrame:
    return bars.with_columns(pl.when(pl.int_range(pl.len()).is_in(rows)).then(None).otherwise(pl.col("ts")).alias("ts"))


@pytest.mark.parametrize("engine", ["polars", "great_expectations"])
@pytest.mark.parametrize("rows", [[4], [4, 7], list(range(10))], ids=["one", "two", "all"])
def test_a_bar_without_a_timestamp_fails_not_null_only(rows: list[int], engine: str) -> None:
    """A null ts is not_null's row, like any other null: no session (it was an index out of bounds,
    search_sorted's unsigned 0 - 1), no duplicate of another null (great-expectations counted two),
    and no previous close for the first bar (its close, 50x the others, made a good bar a price_jump)."""
    bars = _session().head(10)
    timeless = _without_ts(bars, rows).with_columns(
        pl.when(pl.col("ts").is_null()).then(5_000.0).otherwise(pl.col(c)).alias(c) for c in ("open", "high", "low", "close")
    )
    report = validate_bars(timeless, timeframe="1m", engine=engine)
    assert report.quarantine["check"].to_list() == ["not_null"] * len(rows)
    assert report.quarantine["reason"].to_list() == ["null or non-finite value in ts"] * len(rows)
    assert [(r.name, r.failed_rows) for r in report.results if r.name != "missing_bars" and r.failed_rows] == [("not_null", len(rows))]
    assert report.clean.equals(bars.filter(~pl.int_range(pl.len()).is_in(rows)))


@pytest.mark.parametrize("engine", ["polars", "great_expectations"])
def test_a_daily_bar_without_a_timestamp_fails_not_null_only(engine: str) -> None:
    daily = _without_ts(_bars([datetime(2024, 6, d, 13, 30, tzinfo=UTC) for d in (3, 4, 5)], timeframe="1d"), [1])
    report = validate_bars(daily, timeframe="1d", engine=engine)
    assert [(r.name, r.failed_rows) for r in report.results if r.failed_rows] == [("not_null", 1), ("missing_bars", 1)]


@pytest.mark.parametrize("engine", ["polars", "great_expectations"])
def test_a_bar_before_the_calendar_is_outside_every_session(engine: str) -> None:
    """The calendar starts in 2005: a minute bar before it has no session to fall in (it was an
    index out of bounds)."""
    early = _bars([datetime(2004, 6, 1, 15, 0, tzinfo=UTC)])
    report = validate_bars(pl.concat([early, _session().head(3)]), timeframe="1m", engine=engine)
    assert report.quarantine["check"].to_list() == ["in_session"]
    assert report.quarantine["reason"].to_list() == ["2004-06-01 falls on no AAPL session (a weekend or holiday)"]


def test_the_second_bar_after_a_timeless_row_is_measured_from_the_first() -> None:
    bars = _without_ts(_session(closes=[100.0, 100.0, 2_000.0, 2_000.0]), [0])
    report = _polars(bars)
    assert report.outcome("price_jump").failed_rows == 1
    assert report.quarantine["check"].to_list() == ["not_null", "price_jump"]


# -- session 6: the full run's survivors (issue 18) ---------------------------------------------------


def test_the_failure_message_shows_the_first_example_of_each_failed_rule() -> None:
    report = _polars(_set(_set(_session(), 5, volume=-1.0), 6, volume=-2.0))
    first = report.outcome("volume_non_negative").examples[0]
    with pytest.raises(ValidationFailed) as caught:
        report.raise_if_failed("bars 1m")
    assert str(caught.value) == f"bars 1m: volume_non_negative: 2 row(s), e.g. {[first]}"


def test_rules_outcomes_reports_and_suites_cannot_be_changed() -> None:
    """RULES and the cached suite are shared by every caller (and thread): frozen."""
    report = _polars(_session().head(3))
    suite = _GreatExpectations.suite(expectation_specs())
    for obj, attr in ((RULES[0], "blocking"), (report.results[0], "passed"), (report, "clean"), (suite, "suite")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, attr, None)


def test_the_calendar_s_first_session_is_a_session() -> None:
    open_, close = session_bounds("2005-01-03")
    report = _polars(_bars([open_, open_ + timedelta(minutes=1), close - timedelta(minutes=1)]))
    assert report.outcome("in_session").passed


def test_a_row_without_a_timestamp_does_not_hide_a_duplicate() -> None:
    open_, _ = session_bounds(DAY)
    bars = _without_ts(_bars([open_ + timedelta(minutes=1), open_ + timedelta(minutes=2), open_ + timedelta(minutes=1)]), [1])
    report = _polars(bars)
    assert report.outcome("ts_unique").failed_rows == 1 and report.outcome("not_null").failed_rows == 1


def _arrivals(rows: list[tuple[str, int]]) -> pl.DataFrame:
    """One bar per (symbol, minute into DAY's session), in this arrival order."""
    open_, _ = session_bounds(DAY)
    return pl.concat([_bars([open_ + timedelta(minutes=m)], symbol=s) for s, m in rows])


REVERSED = [("AAPL", m) for m in range(389, -1, -1)]
INTERLEAVED = [(s, m) for m in range(390) for s in ("AAPL", "MSFT")]


@pytest.mark.parametrize(
    ("rows", "late", "repeated"),
    [
        ([("AAPL", 0), ("TSLA", 0), ("MSFT", 0)], 0, 0),  # symbols out of order, one bar each
        ([("MSFT", 0), ("AAPL", 1)], 0, 0),  # a later symbol first, with the earlier time
        ([("AAPL", 0), ("MSFT", 0), ("AAPL", 1)], 0, 0),  # symbols interleaved
        (INTERLEAVED, 0, 0),
        (REVERSED, 389, 0),  # every bar after the first to arrive is late
        ([("AAPL", 0), ("AAPL", 0), ("AAPL", 1)], 1, 1),  # the first bar twice
        ([("AAPL", 0), ("AAPL", 2), ("AAPL", 1), ("AAPL", 3)], 1, 0),  # two neighbours swapped
    ],
    ids=["symbols", "later_symbol_first", "interleaved", "interleaved_sessions", "reversed", "first_twice", "swapped"],
)
def test_any_arrival_order_comes_out_sorted_with_late_and_repeated_bars_counted(rows: list[tuple[str, int]], late: int, repeated: int) -> None:
    report = _polars(_arrivals(rows))
    assert report.outcome("ts_monotonic").failed_rows == late
    assert report.outcome("ts_unique").failed_rows == repeated
    assert report.clean.equals(_arrivals(sorted(set(rows))))


@pytest.mark.parametrize(("n", "every"), [(2 * SCALE_SAMPLE - 1, 1), (2 * SCALE_SAMPLE, 2)])
def test_a_long_run_s_scale_is_estimated_from_every_n_th_return(n: int, every: int) -> None:
    """Runs of 2 x SCALE_SAMPLE returns and more use every second return (at most SCALE_SAMPLE)."""
    assert SCALE_SAMPLE == 16_384
    # Every fourth return is a 5 % move, the rest 0.1 %: every second return holds half the big ones.
    values = np.array([(0.05 if k % 8 == 0 else -0.05) if k % 4 == 0 else (0.001 if k % 3 else -0.001) for k in range(n)])

    def mad(x: np.ndarray) -> float:
        return float(1.4826 * np.median(np.abs(x - np.median(x))))

    assert mad(values) != mad(values[::2])
    scales = _robust_scales(pl.Series(["AAPL"] * n), pl.Series(values)).to_numpy()
    assert scales[0] == scales[-1] == pytest.approx(mad(values[::every]))


def test_each_symbol_s_run_is_sampled_by_its_own_length() -> None:
    """A symbol after a long one still uses every return of its shorter run."""
    n = 20_000  # under 2 x SCALE_SAMPLE
    values = np.tile([0.0, 0.01, -0.01], n // 3 + 1)[:n]  # every third is 0: a sample of those has no spread
    scales = _robust_scales(pl.Series(["AAPL"] * n + ["MSFT"] * n), pl.Series(np.concatenate([values, values]))).to_numpy()
    assert scales[0] == scales[-1] == pytest.approx(1.4826 * 0.01)


def test_a_return_from_a_zero_close_is_an_outlier() -> None:
    """The only return is infinite: no scale to measure it by, so the floor does."""
    report = _polars(_session(closes=[0.0, 100.0]))
    assert report.outcome("outlier_jumps").failed_rows == 1 and report.outcome("price_jump").failed_rows == 1


def test_without_an_end_the_requested_range_runs_to_the_last_session_with_data() -> None:
    start, _ = session_bounds("2024-11-26")
    assert _polars(_session(), expected_from=start).outcome("missing_bars").failed_rows == 390


def test_a_requested_session_with_no_bar_in_session_is_missing_whole() -> None:
    open_, close = session_bounds(DAY)
    early = _bars([open_ - timedelta(hours=2)])  # 07:30 New York: outside the session
    report = _polars(early, expected_from=open_, expected_until=close)
    assert report.outcome("missing_bars").failed_rows == 390 and report.outcome("in_session").failed_rows == 1


def test_each_symbol_and_session_counts_its_own_bars() -> None:
    """Without a requested range: a full AAPL session does not make up for MSFT's missing bars in the
    same session, nor a full day for another day's."""
    gaps = ~pl.int_range(pl.len()).is_in([10, 20])
    two_symbols = pl.concat([_session(), _session(symbol="MSFT").filter(gaps)])
    assert _polars(two_symbols).outcome("missing_bars").failed_rows == 2
    two_days = pl.concat([_session(day="2024-11-26").filter(gaps), _session()])
    assert _polars(two_days).outcome("missing_bars").failed_rows == 2


def test_a_repeated_bar_does_not_stand_in_for_a_missing_one() -> None:
    bars = _session()
    report = _polars(pl.concat([bars.head(11), bars.slice(10, 1), bars.slice(12)]))  # minute 10 twice, minute 11 gone
    assert report.outcome("missing_bars").failed_rows == 1 and report.outcome("ts_unique").failed_rows == 1
    many = _polars(pl.concat([bars.head(1)] * 400))  # one bar 400 times is one bar
    assert many.outcome("missing_bars").failed_rows == 389


# -- the great-expectations side: it runs when asked, and checks every rule it has ---------------------


def test_each_engine_runs_what_it_says(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def disagreeing(frame: pl.DataFrame) -> dict[str, bool]:
        calls.append(frame.height)
        return {"ohlc_consistent": False}

    monkeypatch.setattr(validation, "run_great_expectations", disagreeing)
    bars = _session().head(5)
    assert validate_bars(bars, timeframe="1m", engine="polars").passed and calls == []
    with pytest.raises(AssertionError, match="great-expectations and polars disagree on ohlc_consistent: False vs True"):
        validate_bars(bars, timeframe="1m")
    assert calls == [5]


def test_the_suite_gives_a_verdict_for_every_rule_it_checks() -> None:
    frame = _helper_columns(_set(_session().head(10), 5, volume=-1.0), "1m", "XNYS").with_columns(
        pl.lit(float(np.log(MAX_JUMP))).alias("_max_log_jump"), pl.lit(False).alias("_extended")
    )
    checked = {rule.name for rule in RULES} - {"missing_bars"}
    assert run_great_expectations(frame) == {name: name != "volume_non_negative" for name in checked}


def test_the_suite_in_use_is_built_of_the_memoized_expectations() -> None:
    """The cached suite uses the classes that compute their configuration once (lake/validation.py,
    _memo_class); GX's own classes only build the reference suite."""
    specs = expectation_specs()
    in_use = _GreatExpectations.suite(specs).suite.expectations
    assert [type(e).__name__ for e in in_use] == [f"Quantlake{name}" for _, name, _ in specs]
    reference = _GreatExpectations.build(specs, memo=False).suite.expectations
    assert [type(e).__name__ for e in reference] == [name for _, name, _ in specs]


def test_great_expectations_prints_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    """No progress bars: validation runs in assets and the CLI, thousands of partitions a day."""
    validate_bars(_session().head(10), timeframe="1m")
    assert capfd.readouterr() == ("", "")


def test_a_bar_off_the_grid_or_past_the_range_does_not_stand_in_for_a_missing_one() -> None:
    """Sessions are listed bar by bar only when they have fewer bars than expected: a bar at 09:30:30
    or one past `expected_until` counted as one (the missing 09:40 bar went unseen)."""
    open_, _ = session_bounds(DAY)
    bars = _session().filter(pl.int_range(pl.len()) != 10)
    off_grid = pl.concat([bars, _bars([open_ + timedelta(seconds=30)])])
    assert _polars(off_grid).outcome("missing_bars").failed_rows == 1
    past = _polars(bars.head(30), expected_until=open_ + timedelta(minutes=30))  # minutes 0-30 but 10
    assert past.outcome("missing_bars").failed_rows == 1
    assert past.outcome("missing_bars").examples[0]["ts"] == open_ + timedelta(minutes=10)
    # Bars past the end count for nothing either: minute 1 of [0, 2) is missing, whatever lies beyond.
    beyond = _polars(bars.head(5).filter(pl.int_range(pl.len()) != 1), expected_until=open_ + timedelta(minutes=2))
    assert beyond.outcome("missing_bars").failed_rows == 1
    # A feed stamping every bar a microsecond late has none of the session's bars.
    late = _session().with_columns(pl.col("ts") + timedelta(microseconds=1))
    assert _polars(late).outcome("missing_bars").failed_rows == 390


# -- session 9 (h2): edges the rest of the hash order found untested ----------------------------------


def test_a_low_at_min_open_close_but_not_positive_is_named_for_its_sign() -> None:
    """low = open = 0 breaks only `low > 0`: the reason says so, not "low 0.0 > min(open, close) 0.0"."""
    bars = _set(_session().head(5), 2, open=0.0, low=0.0)  # close = high = 100: the other bounds hold
    report = _polars(bars)
    assert report.outcome("ohlc_consistent").failed_rows == 1
    assert report.quarantine["reason"].to_list() == ["low 0.0 is not positive"]


@pytest.mark.parametrize("engine", ["polars", "great_expectations"])
def test_a_close_exactly_max_jump_times_the_previous_passes_in_both_engines(engine: str) -> None:
    """The threshold itself is not a jump past it: polars' `>` and the suite's inclusive max agree
    (a mismatch raises). 1000 / 100 is exactly 10 and its log is the threshold's log, bit for bit."""
    closes = [100.0] * 5 + [100.0 * MAX_JUMP] * 5
    assert MAX_JUMP == 10.0 and pl.Series([closes[5] / closes[4]]).log()[0] == float(np.log(MAX_JUMP))
    report = validate_bars(_session(closes=closes), timeframe="1m", engine=engine)
    assert report.outcome("price_jump").passed and report.outcome("price_jump").failed_rows == 0
    custom = validate_bars(
        _session(closes=[100.0] * 5 + [200.0] * 5), timeframe="1m", engine=engine, max_jump=2.0
    )
    assert custom.outcome("price_jump").failed_rows == 0


@pytest.mark.parametrize("engine", ["polars", "great_expectations"])
def test_a_move_of_exactly_jump_z_deviations_is_not_an_outlier_and_one_ulp_more_is(
    engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On flat bars the scale is the floor (JUMP_FLOOR / JUMP_Z); with the floor set to the jump's own
    log return the score is exactly JUMP_Z (checked), one ulp of floor less puts it past."""
    closes = [100.0] * 5 + [200.0] * 5
    jump = math.log(2.0)
    for floor, z_is, flagged in ((jump, "==", 0), (math.nextafter(jump, 0.0), ">", 1)):
        monkeypatch.setitem(validation.JUMP_FLOOR, "1m", floor)
        z = _helper_columns(_session(closes=closes), "1m", "XNYS")["_jump_z"][5]
        assert z == JUMP_Z if z_is == "==" else z > JUMP_Z
        report = validate_bars(_session(closes=closes), timeframe="1m", engine=engine)
        assert report.outcome("outlier_jumps").failed_rows == flagged, floor


def test_validate_bars_takes_its_options_by_keyword_only() -> None:
    """`validate_bars(bars, "1m", "XNYS")` is refused: a timeframe and an exchange (or two datetimes)
    passed by position are too easy to swap."""
    with pytest.raises(TypeError, match="positional argument"):
        validate_bars(_session().head(3), "1m")  # type: ignore[misc]
    assert validate_bars(bars=_session().head(3), timeframe="1m", engine="polars").passed
