"""The screener asset through dg.materialize, and decide runs that read its output when it is on."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from assets import trading
from assets.clock import NOW_TAG
from assets.resources import LakeResource, TradingResource
from assets.screener import screener
from lake.calendar import get_calendar, session_bounds
from lake.schema import conform_bars
from lake.screener import screener_path
from lake.sources.synthetic import SyntheticSource
from lake.store import replace_partitions
from tests.orchestration.lakes import synthetic_daily_lake
from trading.events import EventType
from trading.ledger import Ledger

SYMBOLS = ["AAPL", "AMZN", "GOOG", "JPM", "META", "MSFT", "NVDA", "TSLA"]
DAY = date(2024, 6, 4)  # a Tuesday: screened from the sessions up to Monday 2024-06-03
PRIOR = date(2024, 6, 3)
NOW = datetime.combine(DAY, time(11, 0), tzinfo=get_calendar().tz)


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> LakeResource:
    return synthetic_daily_lake(tmp_path_factory.mktemp("lake"), SYMBOLS)


@pytest.fixture(autouse=True)
def _settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTLAKE_UNIVERSE", ",".join(SYMBOLS))
    monkeypatch.setenv("QUANTLAKE_SCREENER_LOOKBACK", "10")
    monkeypatch.setenv("QUANTLAKE_SCREENER_MAX_SYMBOLS", "3")


def _screen(lake: LakeResource, now: datetime = NOW) -> dg.ExecuteInProcessResult:
    return dg.materialize([screener], resources={"lake": lake, "trading": TradingResource()}, partition_key=DAY.isoformat(), tags={NOW_TAG: now.isoformat()}, raise_on_error=False)


def test_the_asset_writes_the_chosen_symbols_with_scores_and_the_reasons(lake: LakeResource) -> None:
    result = _screen(lake)
    assert result.success
    [mat] = result.asset_materializations_for_node("screener")
    assert mat.partition == DAY.isoformat()
    stored = pl.read_parquet(screener_path(lake.path, DAY))
    chosen = stored.filter("chosen")
    assert chosen.height == 3 and mat.metadata["chosen"].value == chosen["symbol"].to_list()
    rejected = mat.metadata["rejected"].value
    assert set(rejected) == set(SYMBOLS) - set(chosen["symbol"])  # type: ignore[arg-type]
    assert all(r == "rank: beyond the top 3 scores" for r in rejected.values())  # type: ignore[union-attr]
    assert chosen["score"].min() >= stored.filter(~pl.col("chosen"))["score"].max()  # type: ignore[operator]
    # the score is the 10-session return up to the prior session's close, not the day's own
    bars = pl.read_parquet(list((lake.path / "bars" / "timeframe=1d" / f"symbol={chosen['symbol'][0]}").rglob("*.parquet")))
    closes = bars.filter(pl.col("ts") <= session_bounds(PRIOR)[0]).sort("ts")["close"].to_list()
    assert chosen["score"][0] == pytest.approx(closes[-1] / closes[-11] - 1)
    first = screener_path(lake.path, DAY).read_bytes()
    assert _screen(lake).success and screener_path(lake.path, DAY).read_bytes() == first, "a rerun writes the same screen"


def test_a_day_whose_prior_session_has_not_closed_is_refused(lake: LakeResource) -> None:
    early = datetime.combine(PRIOR, time(15, 0), tzinfo=get_calendar().tz)  # Monday 15:00: its close is not known yet
    result = _screen(lake, now=early)
    assert not result.success
    assert "has not closed" in str(result.get_step_failure_events()[0].event_specific_data.error)  # type: ignore[union-attr]


def _decide(lake: LakeResource, tmp_path: Path, name: str) -> tuple[dg.ExecuteInProcessResult, str]:
    url = f"sqlite:///{tmp_path / name}"
    result = dg.materialize(
        [trading.decision_cycle],
        resources={"lake": lake, "trading": TradingResource(ledger_url=url)},
        run_config={"ops": {"decision_cycle": {"config": {"params": {"fast": 5, "slow": 20}, "as_of": session_bounds(PRIOR)[0].isoformat()}}}},
        tags={NOW_TAG: NOW.isoformat()},
        raise_on_error=False,
    )
    return result, url


def _decided(url: str) -> set[str]:
    with Ledger(url) as ledger:
        return {e.payload["symbol"] for e in ledger.events(types=[EventType.DECISION.value])}


def test_a_decide_run_with_the_screener_on_decides_only_the_chosen(lake: LakeResource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _screen(lake).success
    chosen = set(pl.read_parquet(screener_path(lake.path, DAY)).filter("chosen")["symbol"])
    result, url = _decide(lake, tmp_path, "off.sqlite")
    assert result.success and _decided(url) == set(SYMBOLS), "screener off: the whole universe"
    monkeypatch.setenv("QUANTLAKE_SCREENER", "1")
    result, url = _decide(lake, tmp_path, "on.sqlite")
    assert result.success and _decided(url) == chosen and len(chosen) == 3


def test_a_decide_run_with_the_screener_on_and_no_screen_fails_with_the_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "lake"
    bars = SyntheticSource(seed=7).fetch(SYMBOLS, "1d", datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 7, 1, tzinfo=UTC))
    replace_partitions(root, "bars", "1d", bars, period="year")
    monkeypatch.setenv("QUANTLAKE_SCREENER", "1")
    result, url = _decide(LakeResource(root=str(root)), tmp_path, "l.sqlite")
    assert not result.success
    assert "screener: no output for 2024-06-04" in str(result.get_step_failure_events()[0].event_specific_data.error)  # type: ignore[union-attr]
    assert not Path(url.removeprefix("sqlite:///")).exists() or _decided(url) == set()


def test_the_gap_filter_uses_the_days_open_only_once_it_has_happened(lake: LakeResource, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    root = tmp_path / "lake"
    for part in (lake.path / "bars" / "timeframe=1d").rglob("*.parquet"):
        target = root / part.relative_to(lake.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(part.read_bytes())
    gapped = LakeResource(root=str(root))
    prior = pl.read_parquet(list((root / "bars" / "timeframe=1d").rglob("*.parquet"))).filter(pl.col("ts") == session_bounds(PRIOR)[0])
    closes = dict(zip(prior["symbol"], prior["close"], strict=True))
    open_ = session_bounds(DAY)[0]
    # AAPL opens 5% above its prior close, MSFT 0.5%: only MSFT passes a 2% gap; the others have no minute bars
    minute = pl.DataFrame(
        {
            "symbol": ["AAPL", "MSFT"],
            "timeframe": "1m",
            "ts": [open_, open_],
            "open": [closes["AAPL"] * 1.05, closes["MSFT"] * 1.005],
            "high": [closes["AAPL"] * 1.05, closes["MSFT"] * 1.005],
            "low": [closes["AAPL"] * 1.05, closes["MSFT"] * 1.005],
            "close": [closes["AAPL"] * 1.05, closes["MSFT"] * 1.005],
            "volume": [100.0, 100.0],
        }
    )
    replace_partitions(root, "bars", "1m", conform_bars(minute), period="date")
    monkeypatch.setenv("QUANTLAKE_SCREENER_MAX_GAP", "0.02")
    monkeypatch.delenv("QUANTLAKE_SCREENER_MAX_SYMBOLS")
    assert _screen(gapped).success
    stored = pl.read_parquet(screener_path(root, DAY))
    assert stored.filter("chosen")["symbol"].to_list() == ["MSFT"]
    reasons = dict(zip(stored["symbol"], stored["reason"], strict=True))
    assert reasons["AAPL"].startswith("gap: +5.00%") and reasons["NVDA"] == "gap: no open of the day at the decision time"
    before_open = datetime.combine(DAY, time(9, 0), tzinfo=get_calendar().tz)
    assert _screen(gapped, now=before_open).success
    assert pl.read_parquet(screener_path(root, DAY))["chosen"].sum() == 0, "before the open no open is known: nothing passes the gap"


def test_the_decision_day_follows_the_bar_that_ends_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from assets.screener import screened_universe
    from lake.screener import SCREEN_SCHEMA, write_screen

    friday, monday = date(2024, 5, 31), date(2024, 6, 3)
    for day, symbol in ((friday, "AAPL"), (monday, "MSFT")):
        row = {"symbol": symbol, "chosen": True, "score": 0.0, "last_close": None, "avg_dollar_volume": None, "momentum": None, "gap": None, "reason": None}
        write_screen(tmp_path, day, pl.DataFrame([row], schema=SCREEN_SCHEMA))
    saturday = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
    assert screened_universe(tmp_path, saturday, None) == list(SYMBOLS), "screener off: the universe"
    monkeypatch.setenv("QUANTLAKE_SCREENER", "1")
    assert screened_universe(tmp_path, saturday, None) == ["MSFT"], "a day off decides for the next session"
    friday_bar = session_bounds(friday)[0]
    assert screened_universe(tmp_path, saturday, friday_bar, "1d") == ["MSFT"], "Friday's daily bar ends in Monday's decisions"
    assert screened_universe(tmp_path, saturday, friday_bar + timedelta(hours=1), "1m") == ["AAPL"], "a minute bar: its own session"
