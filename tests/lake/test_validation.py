"""Validation rules: each catches its fault, quarantines with a reason, and GX agrees with polars."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lake.calendar import session_bounds
from lake.sources.synthetic import SyntheticSource
from lake.validation import RULES, validate_bars

Corruption = Callable[[pl.DataFrame], pl.DataFrame]
ROW = 17


def _at_row(column: str, value: pl.Expr) -> Corruption:
    return lambda df: df.with_columns(pl.when(pl.int_range(pl.len()) == ROW).then(value).otherwise(pl.col(column)).alias(column))


def _scaled_at_row(df: pl.DataFrame, factor: float, row: int = ROW) -> pl.DataFrame:
    return df.with_columns(
        pl.when(pl.int_range(pl.len()) == row).then(pl.col(c) * factor).otherwise(pl.col(c)).alias(c) for c in ("open", "high", "low", "close")
    )


CASES: dict[str, tuple[Corruption, int, str]] = {
    "not_null": (_at_row("close", pl.lit(None, pl.Float64)), 1, "null"),
    "ohlc_consistent": (_at_row("high", pl.col("low") - 1.0), 1, "high"),
    "volume_non_negative": (_at_row("volume", pl.lit(-5.0)), 1, "volume -5"),
    "ts_unique": (lambda df: pl.concat([df, df.slice(ROW, 2)]), 2, "duplicate bar"),
    "in_session": (_at_row("ts", pl.lit(datetime(2024, 11, 27, 21, 5, tzinfo=UTC))), 1, "outside"),
    # A bad tick 100x the market: the jump up and the jump back down both block.
    "price_jump": (lambda df: _scaled_at_row(df, 100.0), 2, "100.0x the previous close"),
}


@pytest.mark.parametrize("engine", ["great_expectations", "polars"])
@pytest.mark.parametrize("rule", sorted(CASES))
def test_blocking_rule_fails_and_quarantines_the_row(rule: str, engine: str, day_bars: pl.DataFrame) -> None:
    corrupt, failed, reason = CASES[rule]
    bad = corrupt(day_bars)
    report = validate_bars(bad, timeframe="1m", engine=engine)
    outcome = report.outcome(rule)
    assert not outcome.passed and outcome.blocking and outcome.failed_rows == failed
    assert reason in outcome.examples[0]["reason"]
    assert report.quarantine.height == failed and rule in report.quarantine["check"][0]
    assert report.clean.height + report.quarantine.height == bad.height, "no row is lost"
    assert not report.passed


def test_reasons_name_the_values(day_bars: pl.DataFrame) -> None:
    bad = _at_row("high", pl.lit(1.0))(day_bars)
    report = validate_bars(bad, timeframe="1m", engine="polars")
    assert report.quarantine["reason"][0].startswith("high 1.0 < max(open, close) ")


def test_warnings_report_without_quarantine(day_bars: pl.DataFrame) -> None:
    aapl = day_bars.filter(pl.col("symbol") == "AAPL")
    gappy = aapl.filter(~pl.int_range(pl.len()).is_between(100, 109))  # ten minutes missing
    spiky = gappy.with_columns(
        pl.when(pl.int_range(pl.len()) == ROW).then(pl.col(c) * 1.4).otherwise(pl.col(c)).alias(c) for c in ("open", "high", "low", "close")
    )
    shuffled = pl.concat([spiky.slice(200), spiky.slice(0, 200)])
    report = validate_bars(shuffled, timeframe="1m")
    assert report.outcome("missing_bars").failed_rows == 10
    assert report.outcome("missing_bars").examples[0]["ts"] == session_bounds("2024-11-27")[0] + timedelta(minutes=100)
    assert not report.outcome("outlier_jumps").passed
    assert not report.outcome("ts_monotonic").passed
    assert report.passed and report.quarantine.is_empty()
    assert report.clean["ts"].is_sorted()


def test_a_session_in_progress_is_not_missing_its_future(day_bars: pl.DataFrame) -> None:
    open_, _ = session_bounds("2024-11-27")
    so_far = day_bars.filter(pl.col("ts") < open_ + timedelta(minutes=45))
    report = validate_bars(so_far, timeframe="1m", expected_until=open_ + timedelta(minutes=45))
    assert report.outcome("missing_bars").passed
    assert validate_bars(so_far, timeframe="1m", engine="polars").outcome("missing_bars").failed_rows == 2 * 345


def test_daily_bars_on_a_holiday_are_outside_the_session() -> None:
    daily = SyntheticSource().fetch(["AAPL"], "1d", datetime(2024, 11, 1, tzinfo=UTC), datetime(2024, 12, 1, tzinfo=UTC))
    holiday = daily.tail(1).with_columns(pl.lit(datetime(2024, 11, 28, 14, 30, tzinfo=UTC)).alias("ts"))
    report = validate_bars(pl.concat([daily, holiday]), timeframe="1d")
    assert report.outcome("in_session").failed_rows == 1
    assert report.outcome("missing_bars").passed


def test_every_rule_is_a_check() -> None:
    assert {r.name for r in RULES} == {*CASES, "ts_monotonic", "missing_bars", "outlier_jumps", "extended_hours"}


@pytest.mark.parametrize("engine", ["great_expectations", "polars"])
def test_the_jump_threshold_is_a_parameter(engine: str, day_bars: pl.DataFrame) -> None:
    """One bar 20x its neighbours: blocked at the default 10x, clean at max_jump=50 (both engines)."""
    spiked = _scaled_at_row(day_bars, 20.0)
    assert validate_bars(spiked, timeframe="1m", engine=engine).outcome("price_jump").failed_rows == 2  # up, then down
    lenient = validate_bars(spiked, timeframe="1m", engine=engine, max_jump=50.0)
    assert lenient.outcome("price_jump").passed and lenient.quarantine.is_empty()
    for bad in (1.0, 0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="max_jump must be a number > 1"):
            validate_bars(day_bars, timeframe="1m", max_jump=bad)


@pytest.mark.parametrize("engine", ["great_expectations", "polars"])
def test_extended_hours_are_quarantined_as_such_only_when_the_source_sends_them(engine: str, day_bars: pl.DataFrame) -> None:
    open_ = day_bars["ts"].min()
    extended = [open_ - timedelta(hours=5), open_ + timedelta(hours=10)]  # 04:30 and 19:30 New York
    overnight = [open_ - timedelta(hours=6), open_ + timedelta(hours=11)]  # 03:30 and 20:30: no session's hours
    extra = pl.concat([day_bars.head(1).with_columns(pl.lit(t).alias("ts")) for t in extended + overnight])
    report = validate_bars(pl.concat([day_bars, extra]), timeframe="1m", engine=engine, extended_hours=True)
    assert sorted(report.quarantine.filter(pl.col("check") == "extended_hours")["ts"].to_list()) == extended
    assert sorted(report.quarantine.filter(pl.col("check") == "in_session")["ts"].to_list()) == overnight
    assert not report.passed  # the overnight rows still block
    assert report.clean.height == day_bars.height


@settings(max_examples=25, deadline=None)
@given(
    rows=st.lists(st.integers(0, 389), min_size=1, max_size=20, unique=True),
    fault=st.sampled_from(["high", "low", "volume", "close"]),
)
def test_any_corruption_leaves_only_clean_rows(rows: list[int], fault: str, day_bars: pl.DataFrame) -> None:
    aapl = day_bars.filter(pl.col("symbol") == "AAPL")
    broken = {"high": pl.col("low") * 0.5, "low": pl.col("high") * 2.0, "volume": -pl.col("volume") - 1.0, "close": pl.lit(float("nan"))}
    bad = aapl.with_columns(pl.when(pl.int_range(pl.len()).is_in(rows)).then(broken[fault]).otherwise(pl.col(fault)).alias(fault))
    report = validate_bars(bad, timeframe="1m", engine="polars")
    assert report.quarantine.height == len(rows)
    again = validate_bars(report.clean, timeframe="1m", engine="polars")
    assert again.quarantine.is_empty() and all(r.passed for r in again.results if r.blocking)


def test_long_runs_estimate_the_return_scale_from_a_sample_within_two_percent() -> None:
    from lake.validation import SCALE_SAMPLE, _robust_scales

    months = SyntheticSource(seed=8).fetch(["AAPL", "MSFT"], "1m", datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 7, 1, tzinfo=UTC))
    returns = months.with_columns(
        pl.when(pl.col("symbol") == pl.col("symbol").shift(1)).then((pl.col("close") / pl.col("close").shift(1)).log()).alias("r")
    )
    assert returns.filter(pl.col("symbol") == "AAPL").height > 2 * SCALE_SAMPLE  # the sampled path runs
    exact = returns.group_by("symbol").agg(((pl.col("r") - pl.col("r").median()).abs().median() * 1.4826).alias("mad"))
    got = returns.with_columns(_robust_scales(returns["symbol"], returns["r"])).group_by("symbol").agg(pl.col("_scale").first())
    both = exact.join(got, on="symbol")
    assert both.height == 2
    assert ((both["_scale"] / both["mad"] - 1).abs() < 0.02).all(), both

    spike = months.with_columns(
        pl.when(pl.int_range(pl.len()) == 20_000).then(pl.col(c) * 1.05).otherwise(pl.col(c)).alias(c) for c in ("open", "high", "low", "close")
    )
    jumps = validate_bars(spike, timeframe="1m", engine="polars").outcome("outlier_jumps")
    assert {row["ts"] for row in jumps.examples} >= {spike["ts"][20_000]}


def _one_bar(day_bars: pl.DataFrame, **values: float | datetime) -> pl.DataFrame:
    """AAPL's day with bar ROW replaced by `values` (the rest of the row as it was); given a close,
    the day is first scaled to it, so the bar is no price jump."""
    aapl = day_bars.filter(pl.col("symbol") == "AAPL")
    if "close" in values:
        scale = float(values["close"]) / aapl["close"][ROW]  # type: ignore[arg-type]
        aapl = aapl.with_columns(pl.col(c) * scale for c in ("open", "high", "low", "close"))
    return aapl.with_columns(
        pl.when(pl.int_range(pl.len()) == ROW).then(pl.lit(v)).otherwise(pl.col(c)).alias(c) for c, v in values.items()
    )


# (open, high, low, close): valid exactly at each boundary, invalid just past it.
OHLC_BOUNDARIES: list[tuple[tuple[float, float, float, float], bool]] = [
    ((100.0, 102.0, 100.0, 102.0), True),  # low = open = min(open, close), high = close
    ((102.0, 102.0, 100.0, 100.0), True),  # high = open, low = close
    ((100.0, 100.0, 100.0, 100.0), True),  # a flat bar
    ((100.0, 102.0, 101.0, 102.0), False),  # low above min(open, close) but below max(open, close)
    ((102.0, 102.0, 101.0, 100.0), False),  # the same with a falling bar
    ((100.0, 101.0, 99.0, 102.0), False),  # high below close but above open
    ((102.0, 101.0, 99.0, 100.0), False),  # high below open but above close
    ((0.5, 1.0, 0.01, 0.5), True),  # a penny low is a price
    ((0.5, 1.0, 0.0, 0.5), False),  # the documented rule: low > 0 (an equity never trades at 0)
    ((0.5, 1.0, -0.01, 0.5), False),
]


@pytest.mark.parametrize("engine", ["great_expectations", "polars"])
@pytest.mark.parametrize(("ohlc", "valid"), OHLC_BOUNDARIES, ids=[f"{o}-{'ok' if v else 'bad'}" for o, v in OHLC_BOUNDARIES])
def test_ohlc_boundaries(ohlc: tuple[float, float, float, float], valid: bool, engine: str, day_bars: pl.DataFrame) -> None:
    """Each of low <= min(open, close), max(open, close) <= high and low > 0 holds at equality and
    fails one step past it, in polars and in the GX suite (which must agree or validation raises)."""
    o, h, lo, c = ohlc
    report = validate_bars(_one_bar(day_bars, open=o, high=h, low=lo, close=c), timeframe="1m", engine=engine)
    outcome = report.outcome("ohlc_consistent")
    assert outcome.passed is valid
    assert outcome.failed_rows == (0 if valid else 1)
    if not valid:
        assert report.quarantine["ts"].to_list() == [day_bars.filter(pl.col("symbol") == "AAPL")["ts"][ROW]]


def test_ohlc_reasons_name_the_broken_bound(day_bars: pl.DataFrame) -> None:
    def reason(o: float, h: float, lo: float, c: float) -> str:
        report = validate_bars(_one_bar(day_bars, open=o, high=h, low=lo, close=c), timeframe="1m", engine="polars")
        return str(report.quarantine["reason"][0])

    assert reason(100.0, 102.0, 101.0, 102.0) == "low 101.0 > min(open, close) 100.0"
    assert reason(100.0, 101.0, 99.0, 102.0) == "high 101.0 < max(open, close) 102.0"
    assert reason(0.5, 1.0, 0.0, 0.5) == "low 0.0 is not positive"


@pytest.mark.parametrize("engine", ["great_expectations", "polars"])
@pytest.mark.parametrize(
    ("day", "minutes_from_open", "inside"),
    [
        ("2024-11-27", 0, True),  # the first bar opens at the session open
        ("2024-11-27", 389, True),  # the last bar opens a minute before the close
        ("2024-11-27", 390, False),  # a bar stamped at the close would be a bar after it
        ("2024-11-27", -1, False),
        ("2024-11-29", 209, True),  # half day: closes 13:00 New York
        ("2024-11-29", 210, False),
    ],
)
def test_bars_open_before_the_session_closes(day: str, minutes_from_open: int, inside: bool, engine: str, day_bars: pl.DataFrame) -> None:
    """Bar timestamps are bar opens: in session means open <= ts < close."""
    open_, close = session_bounds(day)
    ts = open_ + timedelta(minutes=minutes_from_open)
    assert (open_ <= ts < close) is inside
    report = validate_bars(_one_bar(day_bars, ts=ts), timeframe="1m", engine=engine)
    assert report.outcome("in_session").failed_rows == (0 if inside else 1)


@pytest.mark.parametrize(("timeframe", "floor"), [("1m", 0.02), ("1d", 0.15)])
def test_jump_floor_per_timeframe(timeframe: str, floor: float, day_bars: pl.DataFrame) -> None:
    """On a flat series (robust scale 0) a close-to-close log move is an outlier exactly when it
    exceeds the timeframe's floor: 1 % under it passes, 1 % over it is reported (there and back)."""
    if timeframe == "1m":
        bars = day_bars.filter(pl.col("symbol") == "AAPL")
    else:
        bars = SyntheticSource().fetch(["AAPL"], "1d", datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 7, 1, tzinfo=UTC))
    for factor, flagged in ((0.99, 0), (1.01, 2)):
        price = pl.when(pl.int_range(pl.len()) == ROW).then(100.0 * math.exp(floor * factor)).otherwise(100.0)
        flat = bars.with_columns(price.alias(c) for c in ("open", "high", "low", "close"))
        report = validate_bars(flat, timeframe=timeframe, engine="polars")
        assert report.outcome("outlier_jumps").failed_rows == flagged, factor


def test_arrival_order_does_not_change_the_returns(day_bars: pl.DataFrame) -> None:
    """Shuffled input takes the sorting path; its returns and jump scores equal the sorted input's."""
    from lake.validation import _helper_columns

    aapl = day_bars.filter(pl.col("symbol") == "AAPL")
    shuffled = pl.concat([aapl.slice(200), aapl.slice(0, 200)])
    columns = ["ts", "_log_ret", "_scale", "_jump_z"]
    in_order = _helper_columns(aapl, "1m", "XNYS").select(columns)
    assert in_order["_log_ret"][1] == pytest.approx(math.log(aapl["close"][1] / aapl["close"][0]))
    assert in_order.equals(_helper_columns(shuffled, "1m", "XNYS").select(columns))


@pytest.mark.parametrize("engine", ["great_expectations", "polars"])
def test_the_previous_bar_is_context_only(engine: str, day_bars: pl.DataFrame) -> None:
    """The stored bar before a partition measures its first return (so a day 100x off the one before
    is caught) but is itself neither checked, written, quarantined nor counted."""
    aapl = day_bars.filter(pl.col("symbol") == "AAPL")
    before = aapl.head(1).with_columns(pl.col("ts") - timedelta(days=1), *(pl.col(c) / 100 for c in ("open", "high", "low", "close")))
    report = validate_bars(aapl, timeframe="1m", previous=before, engine=engine)
    assert report.outcome("price_jump").failed_rows == 1 and report.quarantine["ts"].to_list() == [aapl["ts"][0]]
    assert report.clean.height + report.quarantine.height == aapl.height
    same = aapl.head(1).with_columns(pl.col("ts") - timedelta(days=1))
    assert validate_bars(aapl, timeframe="1m", previous=same, engine=engine).passed
