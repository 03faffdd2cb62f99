"""Decisions to orders: once only, reconciled first, halted by the safety controls, replayable from the ledger."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from trading.brokers.base import BrokerError, OrderRequest, client_order_id
from trading.brokers.simulated import SimConfig, SimulatedBroker
from trading.events import EventType
from trading.execution import ExecutionError, Executor, ReconciliationFailed, check_mode
from trading.ledger import Ledger, replay_portfolio
from trading.models import Decision, Mode, Side, Verdict
from trading.risk import RiskLimits
from trading.step import fund

OPEN = datetime(2024, 3, 5, 15, 0, tzinfo=UTC)  # 10:00 New York: inside the trading window


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")


def _decision(symbol: str, side: Side, qty: float, at: datetime = OPEN, **levels: float) -> Decision:
    return Decision(run_id="r", strategy="sma", symbol=symbol, decided_at=at, verdict=Verdict.EXECUTE, side=side, quantity=qty, **levels)


def _bar(price: float, at: datetime) -> dict[str, Any]:
    return {"ts": at, "open": price, "high": price * 1.01, "low": price * 0.99, "close": price}


def _executor(broker: SimulatedBroker, ledger: Ledger, run_id: str = "run-1", mode: Mode = Mode.SIMULATION, now: datetime = OPEN, limits: RiskLimits | None = None) -> Executor:
    fund(ledger, broker.account().cash, source=broker.name, run_id=run_id, mode=mode, now=now)
    return Executor(broker, ledger, mode=mode, run_id=run_id, now=now, limits=limits)


def test_each_decision_is_sent_once_across_reruns(ledger: Ledger) -> None:
    broker = SimulatedBroker(cash=100_000)
    decisions = [_decision("AAA", Side.BUY, 10), _decision("BBB", Side.BUY, 5)]
    first = _executor(broker, ledger).execute(decisions, {})
    rerun = _executor(broker, ledger, run_id="run-2").execute(decisions, {})
    assert len(first) == 2 and rerun == []
    assert len(list(ledger.events(types=["order_submitted"]))) == 2


def test_a_crash_between_send_and_ledger_write_sends_nothing_twice(ledger: Ledger) -> None:
    broker = SimulatedBroker(cash=100_000)
    d = _decision("AAA", Side.BUY, 10)
    # The previous run sent the order and died before writing it down.
    broker.submit(OrderRequest(client_order_id=client_order_id("sma", "AAA", OPEN, Side.BUY), symbol="AAA", side=Side.BUY, quantity=10))
    ex = _executor(broker, ledger, run_id="after-crash")
    report = ex.reconcile({})
    assert len(report["unknown_orders"]) == 1  # the reconciliation notices the order the ledger lacks
    [state] = ex.execute([d], {})
    assert len(broker.open_orders()) == 1 and state.broker_order_id == "sim-1"
    broker.on_bar({"AAA": _bar(100, OPEN + timedelta(days=1))})
    assert broker.positions() == {"AAA": 10}


def test_validation_mode_sends_nothing(ledger: Ledger) -> None:
    broker = SimulatedBroker(cash=100_000)
    assert _executor(broker, ledger, mode=Mode.VALIDATION).execute([_decision("AAA", Side.BUY, 10)], {}) == []
    assert broker.open_orders() == []


def test_unreadable_broker_fails_closed(ledger: Ledger) -> None:
    class Down(SimulatedBroker):
        def positions(self) -> dict[str, float]:
            raise BrokerError("alpaca: HTTP 503 on GET /v2/positions")

    ex = _executor(SimulatedBroker(cash=1), ledger)
    ex.broker = Down(cash=1)
    with pytest.raises(ReconciliationFailed, match="nothing was sent"):
        ex.reconcile({})
    [event] = ledger.events(types=["reconciliation"])
    assert event.payload["ok"] is False and "503" in event.payload["error"]


def test_kill_switch_flattens_halts_and_lets_only_exits_through_until_resumed(ledger: Ledger) -> None:
    broker = SimulatedBroker(cash=100_000)
    ex = _executor(broker, ledger)
    ex.execute([_decision("AAA", Side.BUY, 10)], {})
    broker.on_bar({"AAA": _bar(100, OPEN + timedelta(days=1))})
    ex.kill_switch("trader pressed the button")
    broker.on_bar({"AAA": _bar(101, OPEN + timedelta(days=2))})
    assert broker.positions() == {}
    assert ex.halted() == "kill_switch: trader pressed the button"
    later = OPEN + timedelta(days=1)  # Wednesday, inside the window
    ex = _executor(broker, ledger, now=later)
    assert ex.execute([_decision("BBB", Side.BUY, 5, at=later)], {}) == []
    blocked = [e for e in ledger.events(types=["intervention"]) if e.payload["kind"] == "blocked"]
    assert blocked[0].payload["symbol"] == "BBB"
    # An exit is a risk-reducing order: it goes through a halt.
    assert len(ex.execute([_decision("CCC", Side.SELL, 3, at=later)], {"CCC": 3})) == 1
    ex.resume("alice")
    assert ex.halted() is None
    assert len(ex.execute([_decision("BBB", Side.BUY, 5, at=later)], {})) == 1
    with pytest.raises(ExecutionError, match="not halted"):
        ex.resume("alice")


def test_drawdown_halts_until_resumed_and_daily_loss_blocks_until_the_next_session(ledger: Ledger) -> None:
    ex = _executor(SimulatedBroker(cash=100_000), ledger)
    mark = {"ok": True, "cash": 0.0}
    ex.safety.mark({**mark, "equity": 100_000.0})  # the session's opening mark and the peak
    assert ex.safety.check_breakers(98_000) == []
    [trip] = ex.safety.check_breakers(97_000)
    assert trip.startswith("daily_loss: daily loss 3.00%")
    assert ex.halted() is None and ex.safety.state().no_new_risk(ex.limits) is not None
    assert ex.safety.check_breakers(96_000) == []  # one trip a session
    tomorrow = _executor(SimulatedBroker(cash=1), ledger, now=OPEN + timedelta(days=1))
    tomorrow.safety.mark({**mark, "equity": 96_000.0})
    assert tomorrow.safety.state().no_new_risk(tomorrow.limits) is None  # a new session
    drawdown, daily = tomorrow.safety.check_breakers(85_000)
    assert drawdown.startswith("drawdown: drawdown 15.00%")  # from the ledger's peak, 100,000
    assert daily.startswith("daily_loss: daily loss 11.46%")  # from this session's opening mark, 96,000
    assert tomorrow.halted() is not None
    later = _executor(SimulatedBroker(cash=1), ledger, now=OPEN + timedelta(days=2))
    assert later.halted() is not None  # held across sessions
    later.resume("alice")
    assert later.halted() is None


def test_trading_window_is_the_calendars_and_flattens_before_the_close(ledger: Ledger) -> None:
    broker = SimulatedBroker(cash=100_000)
    early = datetime(2024, 3, 5, 14, 0, tzinfo=UTC)  # 09:00 New York
    assert _executor(broker, ledger, now=early).execute([_decision("AAA", Side.BUY, 10, at=early)], {}) == []
    _executor(broker, ledger).execute([_decision("AAA", Side.BUY, 10)], {})
    broker.on_bar({"AAA": _bar(100, OPEN + timedelta(minutes=1))})
    assert _executor(broker, ledger, now=datetime(2024, 3, 5, 20, 54, tzinfo=UTC)).flatten_if_due() == []  # 15:54 New York
    assert len(_executor(broker, ledger, now=datetime(2024, 3, 5, 20, 55, tzinfo=UTC)).flatten_if_due()) == 1  # 15:55
    # The day after Thanksgiving closes at 13:00: the window ends at 12:55.
    half_day = datetime(2024, 11, 29, 17, 55, tzinfo=UTC)
    assert _executor(broker, ledger, now=half_day - timedelta(minutes=1)).execute([_decision("BBB", Side.BUY, 1, at=half_day)], {})
    assert _executor(broker, ledger, now=half_day).execute([_decision("CCC", Side.BUY, 1, at=half_day)], {}) == []
    reasons = [e.payload["reason"] for e in ledger.events(types=["intervention"]) if e.payload["kind"] == "blocked"]
    assert reasons == [
        "outside the trading window 09:30-15:55 America/New_York on 2024-03-05 (now 09:00)",
        "outside the trading window 09:30-12:55 America/New_York on 2024-11-29 (now 12:55)",
    ]


def test_trades_per_day_refuse_new_risk_but_not_exits(ledger: Ledger) -> None:
    broker = SimulatedBroker(cash=100_000)
    ex = _executor(broker, ledger, limits=RiskLimits(max_trades_per_day=2))
    sent = ex.execute([_decision(s, Side.BUY, 1) for s in ("AAA", "BBB", "CCC")] + [_decision("DDD", Side.SELL, 1)], {"DDD": 1})
    assert sorted(o.symbol for o in sent) == ["AAA", "BBB", "DDD"]
    tomorrow = _executor(broker, ledger, now=OPEN + timedelta(days=1), limits=RiskLimits(max_trades_per_day=2))
    assert len(tomorrow.execute([_decision("CCC", Side.BUY, 1, at=OPEN + timedelta(days=1))], {})) == 1


def test_live_mode_needs_both_opt_ins() -> None:
    check_mode(Mode.PAPER, live_opt_in=False, live_confirmed=False)
    for opt_in, confirmed in ((True, False), (False, True), (False, False)):
        with pytest.raises(ExecutionError, match="real money"):
            check_mode(Mode.LIVE, live_opt_in=opt_in, live_confirmed=confirmed)
    check_mode(Mode.LIVE, live_opt_in=True, live_confirmed=True)


def test_ledger_replay_equals_the_broker_after_a_long_random_session(ledger: Ledger) -> None:
    rng = random.Random(11)
    broker = SimulatedBroker(SimConfig(seed=3, slippage_bps=5, commission_per_share=0.005, partial_fill_prob=0.3, reject_prob=0.05), cash=250_000)
    ex = _executor(broker, ledger, limits=RiskLimits(max_trades_per_day=10_000))
    symbols = ["AAA", "BBB", "CCC", "DDD"]
    prices = dict.fromkeys(symbols, 100.0)
    at = OPEN
    for step in range(400):
        at += timedelta(minutes=1)
        decisions = []
        for s in symbols:
            prices[s] *= 1 + rng.gauss(0, 0.01)
            if rng.random() < 0.2:
                side = rng.choice([Side.BUY, Side.SELL])
                decisions.append(_decision(s, side, rng.randint(1, 200), at=at))
        ex.execute(decisions, broker.positions())
        ex.record_fills(broker.on_bar({s: _bar(prices[s], at + timedelta(seconds=30)) for s in symbols}))
        if step % 50 == 0:
            ex.record_fills(broker.fills[-3:])  # recording a fill twice writes it once
    portfolio = replay_portfolio(ledger)
    assert len(broker.fills) > 300
    assert portfolio.cash == pytest.approx(broker.cash, rel=1e-12)
    assert {s: q for s, q in portfolio.positions.items() if q} == pytest.approx(broker.positions())
    assert len(list(ledger.events(types=[EventType.FILL.value]))) == len(broker.fills)


def test_a_flatten_still_pending_the_next_day_is_recorded_once(ledger: Ledger) -> None:
    """Daily bars: the close sent at 15:55 waits for a bar the lake gets after the next day's flatten.
    That flatten keeps it (one order at the broker) and the ledger has it once, with its first send."""
    broker = SimulatedBroker(cash=100_000)
    _executor(broker, ledger).execute([_decision("AAA", Side.BUY, 10)], {})
    broker.on_bar({"AAA": _bar(100, OPEN + timedelta(minutes=1))})
    day1 = datetime(2024, 3, 5, 20, 55, tzinfo=UTC)
    [first] = _executor(broker, ledger, now=day1).flatten_if_due()
    [kept] = _executor(broker, ledger, now=day1 + timedelta(days=1)).flatten_if_due()
    assert kept.client_order_id == first.client_order_id
    closes = [e for e in ledger.events(types=["order_submitted"]) if e.payload["client_order_id"] == first.client_order_id]
    assert len(closes) == 1 and closes[0].recorded_at is not None
    assert len([e for e in ledger.events(types=["intervention"]) if e.payload["kind"] == "flatten"]) == 2


def test_the_environment_opt_in_is_read_by_orchestration_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """trading/ never reads QUANTLAKE_LIVE_TRADING itself: orchestration passes it down as a value."""
    from orchestration.resources import trading_resource

    monkeypatch.setenv("QUANTLAKE_LIVE_TRADING", "yes")
    assert trading_resource().live_confirmed is True
    monkeypatch.setenv("QUANTLAKE_LIVE_TRADING", "no")
    assert trading_resource().live_confirmed is False
