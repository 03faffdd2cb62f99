"""The real alpaca-py client against a loopback server speaking Alpaca's market-data API."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from assets.resources import MarketDataResource
from lake.errors import BarSchemaError, SourceError, UnknownSymbolError
from lake.sources.alpaca import AlpacaSource
from lake.sources.fallback import FallbackSource
from lake.sources.synthetic import SyntheticSource
from lake.validation import validate_bars
from tests.fakes.alpaca_data_server import AlpacaDataState, alpaca_bars_from_frame, alpaca_data_server

KEY, SECRET = "PKTESTKEY123", "s3cr3t-never-logged"
SYMBOLS = ["AAPL", "MSFT", "SPY"]
START = datetime(2024, 3, 4, tzinfo=UTC)  # Monday
END = datetime(2024, 3, 6, tzinfo=UTC)  # two sessions: Mar 4 and 5
SYNTH = SyntheticSource(seed=11)


@pytest.fixture(scope="module")
def minute_bars() -> pl.DataFrame:
    return SYNTH.fetch(SYMBOLS, "1m", START, END)


def _source(url: str, **kwargs: object) -> AlpacaSource:
    return AlpacaSource(KEY, SECRET, url_override=url, retry_wait=0.01, **kwargs)  # type: ignore[arg-type]


def _state(bars: pl.DataFrame, **kwargs: object) -> AlpacaDataState:
    return AlpacaDataState(bars=alpaca_bars_from_frame(bars), **kwargs)  # type: ignore[arg-type]


def test_minute_bars_arrive_whole_across_pages(minute_bars: pl.DataFrame) -> None:
    state = _state(minute_bars, page_size=500)
    with alpaca_data_server(state) as url:
        got = _source(url).fetch(SYMBOLS, "1m", START, END)
    assert_frame_equal(got, minute_bars.sort("symbol", "ts"))
    assert len(state.requests) == math.ceil(minute_bars.height / 500) > 1
    first = state.requests[0]
    assert first["symbols"] == "AAPL,MSFT,SPY"
    assert (first["timeframe"], first["feed"], first["adjustment"]) == ("1Min", "iex", "raw")
    assert first["_headers"]["APCA-API-KEY-ID"] == KEY
    assert [r.get("page_token") for r in state.requests[1:]] == [str(500 * i) for i in range(1, len(state.requests))]


def test_extended_hours_bars_reach_validation_and_are_quarantined(minute_bars: pl.DataFrame) -> None:
    """Pre-market and after-hours bars are passed on, not dropped: validation sets them aside with a
    reason (a warning for a source that sends them by design; blocking for any other source)."""
    first_open = minute_bars["ts"].min()
    premarket = minute_bars.head(1).with_columns(pl.lit(first_open - timedelta(hours=1)).alias("ts"))
    after_close = minute_bars.head(1).with_columns(pl.lit(first_open + timedelta(hours=8)).alias("ts"))
    with alpaca_data_server(_state(pl.concat([premarket, minute_bars, after_close]))) as url:
        source = _source(url)
        got = source.fetch(SYMBOLS, "1m", START, END)
    assert got.height == minute_bars.height + 2  # nothing dropped by the source
    report = validate_bars(got, timeframe="1m", extended_hours=source.extended_hours, expected_from=START, expected_until=END)
    assert report.passed  # expected extended-hours bars do not block the partition
    assert_frame_equal(report.clean, minute_bars.sort("symbol", "ts"))
    assert report.quarantine["ts"].to_list() == [first_open - timedelta(hours=1), first_open + timedelta(hours=8)]
    assert report.quarantine["check"].to_list() == ["extended_hours"] * 2
    assert report.quarantine["reason"].to_list() == [
        "2024-03-04 08:30 EST is outside the AAPL regular session: an extended-hours (pre-market or after-hours) bar",
        "2024-03-04 17:30 EST is outside the AAPL regular session: an extended-hours (pre-market or after-hours) bar",
    ]
    assert report.outcome("extended_hours").failed_rows == 2 and not report.outcome("extended_hours").blocking
    # Without the source's word (a user's file), the same rows fail the blocking in_session check.
    strict = validate_bars(got, timeframe="1m", engine="polars")
    assert not strict.passed and strict.outcome("in_session").failed_rows == 2 and strict.quarantine.height == 2
    # Hourly bars are built from the session's minutes only: the extended minutes are in no hour.
    with alpaca_data_server(_state(pl.concat([premarket, minute_bars, after_close]))) as url:
        hourly = _source(url).fetch(SYMBOLS, "1h", START, END)
    assert_frame_equal(hourly, SYNTH.fetch(SYMBOLS, "1h", START, END).sort("symbol", "ts"))


def test_hourly_bars_are_open_anchored_from_minutes(minute_bars: pl.DataFrame) -> None:
    state = _state(minute_bars)
    with alpaca_data_server(state) as url:
        got = _source(url).fetch(SYMBOLS, "1h", START, END)
    assert state.requests[0]["timeframe"] == "1Min"  # Alpaca's own hours sit on the clock hour
    assert_frame_equal(got, SYNTH.fetch(SYMBOLS, "1h", START, END).sort("symbol", "ts"))
    assert got["ts"].dt.minute().unique().to_list() == [30]


def test_daily_bars_are_restamped_to_the_session_open() -> None:
    daily = SYNTH.fetch(SYMBOLS, "1d", START, END)
    # Alpaca stamps a daily bar at midnight New York time (05:00Z in winter).
    alpaca_stamped = daily.with_columns(
        pl.col("ts").dt.convert_time_zone("America/New_York").dt.truncate("1d").dt.convert_time_zone("UTC")
    )
    assert alpaca_stamped["ts"].dt.hour().unique().to_list() == [5]
    state = _state(alpaca_stamped)
    with alpaca_data_server(state) as url:
        got = _source(url).fetch(SYMBOLS, "1d", START, END)
    assert state.requests[0]["timeframe"] == "1Day"
    assert_frame_equal(got, daily.sort("symbol", "ts"))


def test_rate_limit_is_retried_then_served(minute_bars: pl.DataFrame) -> None:
    state = _state(minute_bars, failures={1: (429, '{"message": "too many requests"}')})
    with alpaca_data_server(state) as url:
        got = _source(url).fetch(SYMBOLS, "1m", START, END)
    assert got.height == minute_bars.height
    assert len(state.requests) == 2


def test_rate_limit_beyond_retries_names_the_status(minute_bars: pl.DataFrame) -> None:
    state = _state(minute_bars, failures={n: (429, '{"message": "too many requests"}') for n in range(1, 10)})
    with alpaca_data_server(state) as url, pytest.raises(SourceError, match=r"HTTP 429: too many requests"):
        _source(url, retry_attempts=2).fetch(SYMBOLS, "1m", START, END)
    assert len(state.requests) == 3


def test_server_error_names_source_symbols_timeframe_and_hides_keys(minute_bars: pl.DataFrame) -> None:
    state = _state(minute_bars, failures={1: (500, '{"code": 50010000, "message": "internal server error"}')})
    with alpaca_data_server(state) as url, pytest.raises(SourceError) as caught:
        _source(url).fetch(SYMBOLS, "1m", START, END)
    message = str(caught.value)
    assert "alpaca 1m bars for ['AAPL', 'MSFT', 'SPY']: HTTP 500: internal server error" in message
    assert KEY not in message and SECRET not in message


def test_failure_on_a_later_page_returns_nothing_partial(minute_bars: pl.DataFrame) -> None:
    state = _state(minute_bars, page_size=500, failures={3: (500, '{"message": "upstream went away"}')})
    with alpaca_data_server(state) as url, pytest.raises(SourceError, match="upstream went away"):
        _source(url).fetch(SYMBOLS, "1m", START, END)
    assert len(state.requests) == 3


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ("this is not json", "JSONDecodeError"),
        ('{"bars": {"AAPL": [{"t": "2024-03-04T14:30:00Z", "o": 1.0}]}, "next_page_token": null}', "lack keys"),
        ('{"bars": {"AAPL": [{"t": "yesterday", "o": 1, "h": 1, "l": 1, "c": 1, "v": 1}]}, "next_page_token": null}', "malformed"),
    ],
)
def test_malformed_payloads_raise_source_error(body: str, detail: str) -> None:
    state = AlpacaDataState(failures={1: (200, body)})
    with alpaca_data_server(state) as url, pytest.raises(SourceError, match=detail):
        _source(url).fetch(["AAPL"], "1m", START, END)


def test_unknown_symbol_among_known_ones_is_named(minute_bars: pl.DataFrame) -> None:
    with alpaca_data_server(_state(minute_bars)) as url, pytest.raises(UnknownSymbolError, match=r"\['ZZZQ'\]"):
        _source(url).fetch(["AAPL", "ZZZQ"], "1m", START, END)


def test_bad_arguments_are_named() -> None:
    with pytest.raises(BarSchemaError, match="unknown timeframe '2m'"):
        _source("http://127.0.0.1:9").fetch(["AAPL"], "2m", START, END)
    with pytest.raises(SourceError, match="timezone-aware"):
        _source("http://127.0.0.1:9").fetch(["AAPL"], "1m", START.replace(tzinfo=None), END)
    with pytest.raises(SourceError, match="unknown feed 'nasdaq'"):
        _source("http://127.0.0.1:9", feed="nasdaq")
    with pytest.raises(SourceError, match="api_key and secret_key"):
        AlpacaSource("", SECRET)


def test_a_stalled_server_times_out_instead_of_hanging(minute_bars: pl.DataFrame) -> None:
    # The server answers after 3 s: only a client that gave up at its 0.3 s timeout raises "Timeout"
    # (one without a timeout gets the bars), so no clock is read.
    state = _state(minute_bars, hangs={1: 3.0})
    with alpaca_data_server(state) as url, pytest.raises(SourceError, match="Timeout"):
        _source(url, timeout_s=0.3, retry_attempts=0).fetch(SYMBOLS, "1m", START, END)


def test_unreachable_server_is_a_source_error() -> None:
    with pytest.raises(SourceError, match="ConnectionError"):
        _source("http://127.0.0.1:9").fetch(["AAPL"], "1m", START, END)


def test_market_data_resource_falls_back_to_the_generator_and_counts_it(minute_bars: pl.DataFrame) -> None:
    state = _state(minute_bars, failures={1: (500, '{"message": "down"}')})
    with alpaca_data_server(state) as url:
        resource = MarketDataResource(
            source="alpaca",
            seed=11,
            alpaca_api_key=KEY,
            alpaca_secret_key=SECRET,
            alpaca_url_override=url,
            fallback_to_synthetic=True,
        )
        source = resource.build("1m")
        assert isinstance(source, FallbackSource)
        got = source.fetch(["AAPL"], "1m", START, END)
    assert_frame_equal(got, minute_bars.filter(pl.col("symbol") == "AAPL"))
    assert (source.fallbacks, source.last_used) == (1, "synthetic")


def _alpaca_daily(daily: pl.DataFrame) -> pl.DataFrame:
    """Daily bars as Alpaca stamps them: 00:00 New York (05:00Z in winter)."""
    return daily.with_columns(pl.col("ts").dt.convert_time_zone("America/New_York").dt.truncate("1d").dt.convert_time_zone("UTC"))


def test_daily_bars_asked_from_the_session_open_keep_the_first_session() -> None:
    """What the daily partition asks: from the first session's open. Alpaca filters by bar time and
    its daily bar is stamped at midnight, so the request must start at midnight New York."""
    from lake.calendar import session_bounds

    daily = SYNTH.fetch(SYMBOLS, "1d", START, END)
    state = _state(_alpaca_daily(daily))
    first_open, last_close = session_bounds("2024-03-04")[0], session_bounds("2024-03-05")[1]
    with alpaca_data_server(state) as url:
        got = _source(url).fetch(SYMBOLS, "1d", first_open, last_close)
    assert_frame_equal(got, daily.sort("symbol", "ts"))
    assert got["ts"].min() == first_open
    assert state.requests[0]["start"].startswith("2024-03-04T05:00:00")  # midnight New York, in UTC


def test_a_daily_bar_on_no_session_is_kept_for_validation_to_quarantine() -> None:
    """A weekend daily bar from the vendor is not dropped (nor a reason to refuse the rest)."""
    daily = SYNTH.fetch(["AAPL"], "1d", START, END)
    saturday = daily.head(1).with_columns(pl.lit(datetime(2024, 3, 2, 14, 30, tzinfo=UTC)).alias("ts"))
    with alpaca_data_server(_state(_alpaca_daily(pl.concat([saturday, daily])))) as url:
        got = _source(url).fetch(["AAPL"], "1d", datetime(2024, 3, 1, 5, tzinfo=UTC), END)
    assert got.height == 3 and got["ts"][0] == datetime(2024, 3, 2, 5, tzinfo=UTC)


@pytest.mark.parametrize(("status", "transient"), [(503, True), (429, True), (403, False), (422, False)])
def test_only_transient_failures_are_marked_worth_a_retry(status: int, transient: bool) -> None:
    from lake.errors import TransientSourceError

    state = AlpacaDataState(failures={n: (status, '{"message": "no"}') for n in range(1, 10)})
    with alpaca_data_server(state) as url, pytest.raises(SourceError, match=f"HTTP {status}") as caught:
        _source(url, retry_attempts=0).fetch(["AAPL"], "1m", START, END)
    assert isinstance(caught.value, TransientSourceError) is transient
