"""The decision_cycle asset in-process: decisions as metadata, every event in the ledger, replays exact."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from assets import trading
from assets.clock import NOW_TAG
from assets.resources import LakeResource, TradingResource
from lake.sources.synthetic import SyntheticSource
from strategies.builtin import SMA_CROSS
from tests.fakes.openai_server import OpenAIServer, Reply
from tests.orchestration.lakes import synthetic_daily_lake
from tests.trading.conftest import busiest_entry_bar
from trading.events import EventType
from trading.ledger import Ledger

SYMBOLS = ["AAPL", "AMZN", "GOOG", "JPM", "META", "MSFT", "NVDA", "TSLA"]

@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> LakeResource:
    return synthetic_daily_lake(tmp_path_factory.mktemp("lake"), SYMBOLS)


@pytest.fixture(scope="module")
def sessions() -> list[datetime]:
    """The daily bar times from the busiest entry bar on: [decision bar, next bar, the one after]."""
    bars = SyntheticSource(seed=7).fetch(SYMBOLS, "1d", datetime(2023, 1, 1, tzinfo=UTC), datetime(2024, 7, 1, tzinfo=UTC))
    as_of = busiest_entry_bar(bars, SMA_CROSS.params(fast=5, slow=20))
    return sorted(t for t in bars["ts"].unique().to_list() if t >= as_of)[:3]

def _run(lake: LakeResource, resource: TradingResource, config: dict[str, Any], now: datetime | None = None) -> dg.AssetMaterialization:
    result = dg.materialize(
        [trading.decision_cycle],
        resources={"lake": lake, "trading": resource},
        run_config={"ops": {"decision_cycle": {"config": {"symbols": SYMBOLS, **config}}}},
        tags={NOW_TAG: now.isoformat()} if now else None,
    )
    assert result.success
    [event] = result.get_asset_materialization_events()
    return event.materialization  # type: ignore[return-value]

def at_eleven_after(bar: datetime) -> datetime:
    """11:00 New York in the session after the daily bar's (the bar is complete by then)."""
    from lake.calendar import get_calendar, trading_days

    day = next(d for d in trading_days(bar.date(), bar.date() + timedelta(days=10)) if d > bar.date())
    return datetime.combine(day, time(11, 0), tzinfo=get_calendar().tz)


def _decisions(ledger_url: str, run_id: str | None = None) -> list[dict[str, Any]]:
    with Ledger(ledger_url) as ledger:
        return [
            {k: v for k, v in e.payload.items() if k != "run_id"}
            for e in ledger.events(types=[EventType.DECISION.value])
            if run_id is None or e.run_id == run_id
        ]

def test_rule_based_cycle_records_decisions_and_metadata(lake: LakeResource, sessions: list[datetime], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    resource = TradingResource(ledger_url=url)
    mat = _run(lake, resource, {"params": {"fast": 5, "slow": 20}, "as_of": sessions[0].isoformat()})
    meta = mat.metadata
    assert meta["mode"].value == "validation" and meta["as_of"].value == sessions[0].isoformat()
    assert meta["execute"].value + meta["hold"].value == len(SYMBOLS)  # type: ignore[operator]
    assert meta["model_calls"].value == 0 and meta["cost_usd"].value == 0.0 and meta["execute"].value >= 1
    assert "| symbol | verdict |" in meta["decisions"].value  # type: ignore[operator]
    decisions = _decisions(url)
    assert len(decisions) == len(SYMBOLS)
    assert meta["ledger_events_written"].value > len(SYMBOLS)  # type: ignore[operator]
    with Ledger(url) as ledger:
        [deposit] = ledger.events(types=[EventType.DEPOSIT.value])
        assert deposit.payload["amount"] == 100_000.0

def test_a_past_cycle_replays_from_cached_model_answers_without_the_model(lake: LakeResource, sessions: list[datetime], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")

    def answer(body: dict[str, Any]) -> Reply:
        payload = json.loads(next(m["content"] for m in body["messages"] if m["role"] == "user"))
        close = payload["close"]
        content = {"action": "BUY", "confidence": 0.9, "rationale": "model", "entry": close, "stop": close * 0.9, "target1": close * 1.1, "target2": close * 1.2}
        return Reply(content=json.dumps(content), prompt_tokens=500, completion_tokens=50)

    config = {"params": {"fast": 5, "slow": 20}, "as_of": sessions[0].isoformat()}
    with OpenAIServer(responder=answer) as server:
        recorded_url = f"sqlite:///{tmp_path / 'recorded.sqlite'}"
        live = TradingResource(ledger_url=recorded_url, llm_model="gpt-4o-mini", llm_base_url=server.base_url, cache_dir=str(tmp_path / "cache"))
        mat = _run(lake, live, config)
        calls = server.calls
    assert calls > 0 and mat.metadata["model_calls"].value == calls
    assert mat.metadata["cost_usd"].value > 0  # type: ignore[operator]
    replay_url = f"sqlite:///{tmp_path / 'replay.sqlite'}"
    replay = TradingResource(ledger_url=replay_url, llm_model="gpt-4o-mini", llm_base_url="http://127.0.0.1:9/v1", cache_dir=str(tmp_path / "cache"))
    again = _run(lake, replay, config | {"replay": True})
    assert again.metadata["model_calls"].value == 0
    assert _decisions(replay_url) == _decisions(recorded_url)

@pytest.mark.parametrize("scale", [1.0, 1000.0])
def test_absurd_model_levels_never_reach_an_order_through_the_job(lake: LakeResource, sessions: list[datetime], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scale: float) -> None:
    """The price-sanity limit fires on the path users run: a model quoting 1000x the market in
    simulation mode sends no order; the same model at the market does (the control, not the setup)."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")

    def answer(body: dict[str, Any]) -> Reply:
        payload = json.loads(next(m["content"] for m in body["messages"] if m["role"] == "user"))
        level = payload["close"] * scale
        content = {"action": "BUY", "confidence": 0.9, "rationale": "model", "entry": level, "stop": level * 0.95, "target1": level * 1.05, "target2": level * 1.1}
        return Reply(content=json.dumps(content), prompt_tokens=500, completion_tokens=50)

    url = f"sqlite:///{tmp_path / 'sanity.sqlite'}"
    with OpenAIServer(responder=answer) as server:
        resource = TradingResource(mode="simulation", ledger_url=url, sim_state_file=str(tmp_path / "sim.json"), llm_model="gpt-4o-mini", llm_base_url=server.base_url)
        mat = _run(lake, resource, {"params": {"fast": 5, "slow": 20}, "as_of": sessions[0].isoformat()}, at_eleven_after(sessions[0]))
        assert server.calls > 0
    held = [d for d in _decisions(url) if "price sanity" in str(d.get("rationale", ""))]
    if scale == 1.0:
        assert mat.metadata["orders_sent"].value >= 1 and not held  # type: ignore[operator]
    else:
        assert mat.metadata["orders_sent"].value == 0 and mat.metadata["execute"].value == 0
        assert held  # the decisions say why: the price-sanity limit


def test_a_decision_bar_not_yet_complete_at_the_runs_now_is_refused(lake: LakeResource, sessions: list[datetime], tmp_path: Path) -> None:
    """No lookahead on replays either: an explicit daily bar an hour after its open is still forming."""
    resource = TradingResource(ledger_url=f"sqlite:///{tmp_path / 'l.sqlite'}")
    result = dg.materialize(
        [trading.decision_cycle],
        resources={"lake": lake, "trading": resource},
        run_config={"ops": {"decision_cycle": {"config": {"symbols": SYMBOLS, "params": {"fast": 5, "slow": 20}, "as_of": sessions[0].isoformat()}}}},
        tags={NOW_TAG: (sessions[0] + timedelta(hours=1)).isoformat()},
        raise_on_error=False,
    )
    assert not result.success
    [failure] = result.get_step_failure_events()
    assert "is not complete by the run's now" in failure.step_failure_data.error.message  # type: ignore[union-attr]
    assert _run(lake, resource, {"params": {"fast": 5, "slow": 20}, "as_of": sessions[0].isoformat()}, at_eleven_after(sessions[0])).metadata["as_of"].value == sessions[0].isoformat()


def test_bad_config_fails_with_the_reason(lake: LakeResource, tmp_path: Path) -> None:
    resource = TradingResource(ledger_url=f"sqlite:///{tmp_path / 'l.sqlite'}", pipeline_file=str(tmp_path / "missing.yaml"))
    with pytest.raises(dg.Failure, match="missing.yaml"):
        dg.materialize([trading.decision_cycle], resources={"lake": lake, "trading": resource}, run_config={"ops": {"decision_cycle": {"config": {"symbols": SYMBOLS}}}})
    with pytest.raises(dg.Failure, match="ZZZZ"):
        dg.materialize(
            [trading.decision_cycle],
            resources={"lake": lake, "trading": TradingResource(ledger_url=f"sqlite:///{tmp_path / 'm.sqlite'}")},
            run_config={"ops": {"decision_cycle": {"config": {"symbols": ["ZZZZ"]}}}},
        )

@pytest.fixture
def _no_live(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("QUANTLAKE_LIVE_TRADING", raising=False)
    yield

@pytest.mark.usefixtures("_no_live")
@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        ({"mode": "live", "alpaca_api_key": "k", "alpaca_secret_key": "s"}, "real money"),
        ({"mode": "paper"}, "needs ALPACA_API_KEY and ALPACA_SECRET_KEY"),
    ],
)
def test_a_refused_mode_fails_once_with_the_reason_never_retried(lake: LakeResource, tmp_path: Path, settings: dict[str, str], reason: str) -> None:
    resource = TradingResource(ledger_url=f"sqlite:///{tmp_path / 'l.sqlite'}", **settings)
    result = dg.materialize(
        [trading.decision_cycle], resources={"lake": lake, "trading": resource}, run_config={"ops": {"decision_cycle": {"config": {"symbols": SYMBOLS}}}}, raise_on_error=False
    )
    assert not result.success
    [failure] = result.get_step_failure_events()
    assert reason in failure.step_failure_data.error.message  # type: ignore[union-attr]
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]  # bad config: no retry

def test_paper_session_trades_the_lake_and_reports_drift_against_the_backtest(lake: LakeResource, tmp_path: Path) -> None:
    trading_url = f"sqlite:///{tmp_path / 'trading.sqlite'}"
    config = {"strategy": "donchian_breakout", "params": {"entry_window": 15, "exit_window": 8}, "symbols": ["AAPL", "MSFT"], "start": "2023-01-01", "end": "2024-07-01"}

    def session() -> dict[str, Any]:
        result = dg.materialize([trading.paper_session], resources={"lake": lake, "trading": TradingResource(ledger_url=trading_url)}, run_config={"ops": {"paper_session": {"config": config}}})
        assert result.success
        [event] = result.get_asset_materialization_events()
        return dict(event.materialization.metadata)

    meta = session()
    # Its own account: a second session over the same bars does the same, whatever the first left
    # behind, and the trading ledger (the decision cycles' portfolio, halts and peak) never sees it.
    again = session()
    assert (again["orders"].value, again["fills"].value, again["drift_shortfall"].value) == (meta["orders"].value, meta["fills"].value, meta["drift_shortfall"].value)
    assert again["ledger"].value != meta["ledger"].value
    with Ledger(trading_url) as trading_ledger:
        assert not list(trading_ledger.events())
    url = f"sqlite:///{meta['ledger'].value}"
    assert meta["fills"].value > 10 and meta["orders"].value > 5  # type: ignore[operator]
    assert "data:image/png;base64," in meta["equity_vs_backtest"].value  # type: ignore[operator]
    assert "slippage" in meta["drift"].value and "commission" in meta["drift"].value  # type: ignore[operator]
    # The backtest pays the session's costs; what is left is the default limits (20 % a position) cutting its all-in entries.
    drift = str(meta["drift"].value)
    assert "| risk limits |" in drift and "| slippage | 0.00 |" in drift and "| commission |" in drift
    assert "Monday" in str(meta["by_weekday"].value) or "Tuesday" in str(meta["by_weekday"].value)
    from trading.ledger import replay_portfolio

    with Ledger(url) as ledger:
        fills = list(ledger.events(types=[EventType.FILL.value]))
        decisions = list(ledger.events(types=[EventType.DECISION.value]))
        portfolio = replay_portfolio(ledger)
    assert len(fills) == meta["fills"].value
    # Point in time: every fill comes after an EXECUTE decision on its symbol (next bar's open or later).
    executed = [(d.symbol, d.as_of) for d in decisions if d.payload["verdict"] == "EXECUTE"]
    for fill in fills:
        assert any(sym == fill.symbol and at is not None and fill.as_of is not None and at < fill.as_of for sym, at in executed)
    assert portfolio.cash < 100_000 or portfolio.realized_pnl != 0

def test_simulation_mode_carries_the_account_from_one_scheduled_run_to_the_next(lake: LakeResource, sessions: list[datetime], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sim.sqlite'}"
    resource = TradingResource(mode="simulation", ledger_url=url, sim_state_file=str(tmp_path / "sim.json"))
    decision_bar, next_bar, later_bar = sessions
    # Each run at 11:00 on the exchange's clock the session after its bar's: inside the trading window.
    first = _run(lake, resource, {"params": {"fast": 5, "slow": 20}, "as_of": decision_bar.isoformat()}, at_eleven_after(decision_bar))
    assert first.metadata["orders_sent"].value >= 1  # type: ignore[operator]
    with Ledger(url) as ledger:
        assert not list(ledger.events(types=[EventType.FILL.value]))  # nothing fills on the decision bar
    second = _run(lake, resource, {"params": {"fast": 5, "slow": 20}, "as_of": later_bar.isoformat()}, at_eleven_after(later_bar))
    with Ledger(url) as ledger:
        fills = list(ledger.events(types=[EventType.FILL.value]))
        from trading.ledger import replay_portfolio

        portfolio = replay_portfolio(ledger)

    assert len(fills) == first.metadata["orders_sent"].value
    # Sent at 11:00 on next_bar's session, after that bar opened: the first open after the order is
    # later_bar's (a fill at next_bar's 09:30 open would be a price from before the order existed).
    assert next_bar < at_eleven_after(decision_bar) < later_bar
    assert fills and all(f.as_of == later_bar for f in fills)
    assert second.metadata["positions"].value == {s: q for s, q in portfolio.positions.items() if q}

    # A run whose list leaves out what the ledger holds still marks and decides on it (its exits).
    held = sorted(s for s, q in portfolio.positions.items() if q)
    others = [s for s in SYMBOLS if s not in held]
    assert held and others
    before = {d["symbol"] for d in _decisions(url)}
    third = _run(lake, resource, {"symbols": others[:1], "params": {"fast": 5, "slow": 20}, "as_of": later_bar.isoformat()}, at_eleven_after(later_bar))
    decided = [d["symbol"] for d in _decisions(url)]
    assert set(held) <= set(decided[-len(held) - 1 :]) and before <= set(decided)
    assert third.metadata["positions"].value == second.metadata["positions"].value
