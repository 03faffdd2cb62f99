"""The Prometheus endpoint serves run counts and durations from the Dagster instance and the account's
state from the ledger: a scrape equals what the ledger says."""

from __future__ import annotations

import urllib.request
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from orchestration.metrics import build_registry, serve
from tests.orchestration.dagster_server import free_port
from tests.orchestration.observed_runs import NY, decide, kill_switch, ledger_url, resources, write_lake
from trading.events import EventType
from trading.ledger import Ledger, replay_portfolio
from trading.risk import RiskLimits


@dg.op
def ok_op() -> int:
    return 1


@dg.op
def bad_op() -> None:
    raise RuntimeError("boom")


@dg.job
def good_job() -> None:
    ok_op()


@dg.job
def bad_job() -> None:
    bad_op()


def test_scrape_reports_runs_by_job_and_status_and_ledger_counts() -> None:
    with dg.instance_for_test() as instance:
        for _ in range(2):
            good_job.execute_in_process(instance=instance)
        bad_job.execute_in_process(instance=instance, raise_on_error=False)
        registry = build_registry(instance, ledger_counts=lambda: {"orders_submitted": 3.0, "limit_violations": 1.0})
        samples = _scrape(registry)
    assert samples[("quantlake_runs_total", (("job", "good_job"), ("status", "SUCCESS")))] == 2
    assert samples[("quantlake_runs_total", (("job", "bad_job"), ("status", "FAILURE")))] == 1
    assert samples[("quantlake_cycle_duration_seconds", (("job", "good_job"),))] > 0
    assert samples[("quantlake_orders_submitted_total", ())] == 3
    assert samples[("quantlake_limit_violations_total", ())] == 1


def _scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    port = free_port()
    server, thread = serve(registry, port)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
    finally:
        server.shutdown()
        thread.join(timeout=5)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in text_string_to_metric_families(text) for s in family.samples}


def _truth(url: str, session: str) -> dict[str, Any]:
    """What the ledger says, read here event by event (not through the collector's pass)."""
    with Ledger(url) as ledger:
        events = list(ledger.events())
        portfolio = replay_portfolio(ledger)
    marks = [e.payload for e in events if e.type == EventType.RECONCILIATION and e.payload.get("ok")]
    of = lambda t: [e for e in events if e.type == t]  # noqa: E731
    return {
        "equity": marks[-1]["equity"],
        "pnl_day": marks[-1]["equity"] - next(m["equity"] for m in marks if m["session"] == session),
        "positions": {s: q for s, q in portfolio.positions.items() if q},
        "orders": len(of(EventType.ORDER_SUBMITTED)),
        "fills": len(of(EventType.FILL)),
        "rejections": len(of(EventType.REJECTION)),
        "kinds": Counter(str(e.payload["kind"]) for e in of(EventType.INTERVENTION)),
        "realized": portfolio.realized_pnl,
    }


def _assert_equal(got: dict[tuple[str, tuple[tuple[str, str], ...]], float], truth: dict[str, Any]) -> None:
    assert got[("quantlake_equity", ())] == pytest.approx(truth["equity"])
    assert got[("quantlake_pnl_day", ())] == pytest.approx(truth["pnl_day"])
    assert got[("quantlake_realized_pnl", ())] == pytest.approx(truth["realized"])
    assert got[("quantlake_open_positions", ())] == len(truth["positions"])
    for symbol, qty in truth["positions"].items():
        assert got[("quantlake_position", (("symbol", symbol),))] == qty
    assert got[("quantlake_orders_total", ())] == truth["orders"]
    assert got[("quantlake_fills_total", ())] == truth["fills"]
    assert got[("quantlake_rejections_total", ())] == truth["rejections"]
    for kind, n in truth["kinds"].items():
        assert got[("quantlake_interventions_total", (("kind", kind),))] == n


def test_scrapes_after_decide_runs_and_a_kill_switch_equal_the_ledger(tmp_path: Path) -> None:
    """Two simulated decide_job runs (entries, then a mark with fills), a scrape, kill_switch_job, a scrape."""
    url = ledger_url(tmp_path)
    noon = datetime(2024, 11, 25, 12, 0, tzinfo=NY)
    with dg.instance_for_test() as instance, Ledger(url) as ledger:
        registry = build_registry(instance, ledger=ledger, clock=lambda: noon, limits=RiskLimits())
        res = resources(write_lake(tmp_path / "lake"), tmp_path)
        decide(res, datetime(2024, 11, 25, 10, 0, tzinfo=NY), instance)
        decide(res, datetime(2024, 11, 25, 11, 0, tzinfo=NY), instance)
        trading = _truth(url, "2024-11-25")
        got_trading = _scrape(registry)
        kill_switch(res, datetime(2024, 11, 25, 11, 30, tzinfo=NY), instance, reason="metrics test")
        got = _scrape(registry)
    assert trading["orders"] > 0 and trading["fills"] > 0 and trading["positions"] and trading["pnl_day"] != 0  # it did something
    _assert_equal(got_trading, trading)
    assert got_trading[("quantlake_trading_halted", ())] == 0
    assert got_trading[("quantlake_trades_today", ())] == trading["orders"]
    truth = _truth(url, "2024-11-25")
    _assert_equal(got, truth)
    assert truth["kinds"]["kill_switch"] == 1 and got[("quantlake_trading_halted", ())] == 1
    assert got[("quantlake_breaker_tripped", (("breaker", "daily_loss"),))] == 0
    assert got[("quantlake_llm_cost_usd_total", ())] == 0  # rule agents: no model spend
    assert got[("quantlake_decision_latency_seconds_count", ())] == 2
    assert got[("quantlake_decision_latency_seconds_sum", ())] > 0


def test_a_ledger_without_marks_reports_no_equity_rather_than_zero(tmp_path: Path) -> None:
    with dg.instance_for_test() as instance, Ledger(ledger_url(tmp_path)) as ledger:
        got = _scrape(build_registry(instance, ledger=ledger, clock=lambda: datetime(2024, 11, 25, 12, 0, tzinfo=NY)))
    assert ("quantlake_equity", ()) not in got
    assert got[("quantlake_trading_halted", ())] == 0 and got[("quantlake_orders_total", ())] == 0


def test_quantlake_metrics_once_prints_the_configured_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`quantlake metrics --once`: the ledger at QUANTLAKE_LEDGER_URL, the instance at DAGSTER_HOME."""
    import time_machine

    from orchestration.cli import main
    from trading.events import Event
    from trading.models import Mode

    url = ledger_url(tmp_path)
    at = datetime(2024, 11, 25, 15, 0, tzinfo=NY)
    with Ledger(url) as ledger:
        ledger.emit(Event(type=EventType.DEPOSIT, run_id="r", mode=Mode.SIMULATION, as_of=at, payload={"amount": 1000.0}))
        for equity in (1000.0, 1012.5):
            ledger.emit(Event(type=EventType.RECONCILIATION, run_id="r", mode=Mode.SIMULATION, as_of=at, payload={"ok": True, "equity": equity, "cash": 1000.0, "session": "2024-11-25"}))
        ledger.emit(Event(type=EventType.INTERVENTION, run_id="r", mode=Mode.SIMULATION, as_of=at, payload={"kind": "kill_switch", "reason": "x", "session": "2024-11-25"}))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("QUANTLAKE_LEDGER_URL", url)
    with time_machine.travel(datetime(2024, 11, 25, 15, 30, tzinfo=NY), tick=False):
        assert main(["metrics", "--once"]) == 0
    got = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(capsys.readouterr().out) for s in f.samples}
    assert got[("quantlake_equity", ())] == 1012.5 and got[("quantlake_pnl_day", ())] == 12.5
    assert got[("quantlake_trading_halted", ())] == 1 and got[("quantlake_interventions_total", (("kind", "kill_switch"),))] == 1
    assert got[("quantlake_open_positions", ())] == 0


def test_incremental_scrapes_fold_each_event_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tally kept across scrapes (bulk pass, re-read window, new events) equals a fresh read."""
    from orchestration import metrics
    from trading.events import Event
    from trading.models import Mode

    monkeypatch.setattr(metrics, "REREAD", 3)
    at = datetime(2024, 11, 25, 15, 0, tzinfo=NY)
    url = ledger_url(tmp_path)

    def emit(ledger: Ledger, type_: EventType, **payload: Any) -> None:
        ledger.emit(Event(type=type_, run_id="r", mode=Mode.SIMULATION, as_of=at, payload={"session": "2024-11-25", **payload}))

    def fill(ledger: Ledger, side: str, qty: float, price: float) -> None:
        emit(ledger, EventType.FILL, symbol="AAPL", side=side, quantity=qty, price=price, commission=1.0)

    def as_dict(r: metrics.LedgerReading) -> dict[str, Any]:
        return {k: getattr(r, k) for k in ("equity", "cash", "positions", "realized_pnl", "commissions", "counts", "interventions", "halted")}

    tally = metrics.LedgerTally()
    with Ledger(url) as ledger:
        emit(ledger, EventType.DEPOSIT, amount=1000.0)
        for i in range(6):
            fill(ledger, "buy", 1.0, 100.0 + i)
            emit(ledger, EventType.RECONCILIATION, ok=True, equity=1000.0 + i, cash=900.0)
        first = metrics.read_ledger(ledger, at, RiskLimits(), tally)  # bulk up to last - 3, then the window
        again = metrics.read_ledger(ledger, at, RiskLimits(), tally)  # the window again: nothing twice
        assert as_dict(first) == as_dict(again) == as_dict(metrics.read_ledger(ledger, at, RiskLimits()))
        assert first.positions == {"AAPL": 6.0} and first.equity == 1005.0 and first.counts["fill"] == 6
        fill(ledger, "sell", 2.0, 110.0)
        emit(ledger, EventType.INTERVENTION, kind="kill_switch", reason="x")
        emit(ledger, EventType.RECONCILIATION, ok=True, equity=990.0, cash=1120.0)
        later = metrics.read_ledger(ledger, at, RiskLimits(), tally)
        assert as_dict(later) == as_dict(metrics.read_ledger(ledger, at, RiskLimits()))
    assert later.positions == {"AAPL": 4.0} and later.equity == 990.0 and later.counts["fill"] == 7 and later.halted
