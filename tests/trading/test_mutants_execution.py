"""Executor rules the other tests let mutants of trading/execution.py through on (issue 18)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from trading.brokers.base import BrokerError, OrderRequest, OrderState, UnknownOutcome
from trading.brokers.simulated import SimConfig, SimulatedBroker
from trading.execution import Executor, check_mode, fill_caps, fill_event_id
from trading.ledger import Ledger
from trading.models import Decision, Mode, Side, Verdict
from trading.risk import RiskLimits
from trading.step import fund

OPEN = datetime(2024, 3, 5, 15, 0, tzinfo=UTC)  # 10:00 New York: inside the trading window


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")


class _TimesOutOnce(SimulatedBroker):
    """The first submit times out without reaching the broker; later ones go through."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.timeouts = 1

    def submit(self, request: OrderRequest) -> OrderState:
        if self.timeouts:
            self.timeouts -= 1
            raise UnknownOutcome(f"{request.client_order_id}: read timed out")
        return super().submit(request)


def _decision(symbol: str, side: Side, qty: float) -> Decision:
    return Decision(run_id="r", strategy="sma", symbol=symbol, decided_at=OPEN, verdict=Verdict.EXECUTE, side=side, quantity=qty)


def _executor(broker: SimulatedBroker, ledger: Ledger, run_id: str = "run-1", limits: RiskLimits | None = None) -> Executor:
    fund(ledger, broker.account().cash, source=broker.name, run_id=run_id, mode=Mode.SIMULATION, now=OPEN)
    return Executor(broker, ledger, mode=Mode.SIMULATION, run_id=run_id, now=OPEN, limits=limits)


def test_an_unknown_send_outcome_is_recorded_as_unknown_neither_sent_nor_rejected(ledger: Ledger) -> None:
    broker = _TimesOutOnce(cash=100_000)
    decision = _decision("AAA", Side.BUY, 10)
    ex = _executor(broker, ledger)
    assert ex.execute([decision], {}) == []
    [submitted] = ledger.events(types=["order_submitted"])
    assert submitted.payload["status"] == "unknown" and "read timed out" in submitted.payload["error"]
    assert list(ledger.events(types=["rejection"])) == []
    assert ex.sent_order_ids() == set()  # not confirmed: the next run asks the broker again
    # The next run sends it (the broker never had it), once.
    [state] = _executor(broker, ledger, run_id="run-2").execute([decision], {})
    assert state.client_order_id == submitted.payload["client_order_id"]
    assert _executor(broker, ledger, run_id="run-3").execute([decision], {}) == []


def test_while_halted_a_sell_from_flat_is_a_new_short_and_is_blocked(ledger: Ledger) -> None:
    broker = SimulatedBroker(cash=100_000)
    ex = _executor(broker, ledger)
    ex.kill_switch("stop")
    assert ex.execute([_decision("AAA", Side.SELL, 5), _decision("BBB", Side.BUY, 5)], {}) == []
    blocked = [e.payload["symbol"] for e in ledger.events(types=["intervention"]) if e.payload["kind"] == "blocked"]
    assert blocked == ["AAA", "BBB"]
    # Covering a short and selling a long reduce risk: both go through the halt, without a bracket.
    states = ex.execute([_decision("CCC", Side.BUY, 2), _decision("DDD", Side.SELL, 3)], {"CCC": -2.0, "DDD": 3.0})
    assert [(s.symbol, s.side) for s in states] == [("CCC", Side.BUY), ("DDD", Side.SELL)]
    sent = {e.payload["symbol"]: e.payload for e in ledger.events(types=["order_submitted"]) if e.payload.get("symbol") in ("CCC", "DDD")}
    assert all(p["reduce_only"] and p["caps"] is None for p in sent.values())


def test_an_entry_carries_its_sector_peers_caps_to_the_fill() -> None:
    caps = fill_caps(RiskLimits(max_position_pct=0.1, max_sector_pct=0.25), "MSFT")
    assert (caps.max_position_pct, caps.max_sector_pct, caps.sector) == (0.1, 0.25, ("AAPL", "NVDA"))
    assert fill_caps(RiskLimits(), "ZZZ").sector == ()  # unmapped: a sector of its own


class _Refuses(SimulatedBroker):
    """Refuses orders for one symbol outright (an exception, not a rejected state)."""

    def submit(self, request: OrderRequest) -> OrderState:
        if request.symbol == "BAD":
            raise BrokerError(f"{request.client_order_id}: symbol not tradable")
        return super().submit(request)


def test_a_refused_send_is_a_rejection_and_the_next_decisions_still_go(ledger: Ledger) -> None:
    ex = _executor(_Refuses(cash=100_000), ledger)
    states = ex.execute([_decision("BAD", Side.BUY, 5), _decision("AAA", Side.BUY, 5)], {})
    assert [s.symbol for s in states] == ["AAA"]
    [rejection] = ledger.events(types=["rejection"])
    assert rejection.symbol == "BAD" and "symbol not tradable" in rejection.payload["reason"]


def test_decisions_not_to_trade_are_skipped_and_the_rest_still_go(ledger: Ledger) -> None:
    hold = Decision(run_id="r", strategy="sma", symbol="HHH", decided_at=OPEN, verdict=Verdict.HOLD)
    nothing = _decision("ZZZ", Side.BUY, 0)
    states = _executor(SimulatedBroker(cash=100_000), ledger).execute([hold, nothing, _decision("AAA", Side.BUY, 1)], {})
    assert [(s.symbol, s.quantity) for s in states] == [("AAA", 1)]
    assert [e.payload["symbol"] for e in ledger.events(types=["order_submitted"])] == ["AAA"]


def test_reconciliation_reports_each_difference_beyond_float_noise(ledger: Ledger) -> None:
    broker = SimulatedBroker(cash=100_000)
    ex = _executor(broker, ledger)
    ex.execute([_decision("AAA", Side.BUY, 10)], {})
    broker.on_bar({"AAA": {"ts": OPEN, "open": 100.0, "high": 101.0, "low": 99.0, "close": 100.0}})
    assert broker.positions() == {"AAA": 10}
    same = ex.reconcile({"AAA": 10.0 + 1e-10, "CCC": 1e-9})
    assert same["ok"] and same["position_mismatches"] == {}  # 1e-9 itself is float noise
    report = ex.reconcile({"AAA": 9.5, "BBB": 5.0})
    assert report["position_mismatches"] == {"AAA": {"broker": 10, "ledger": 9.5}, "BBB": {"broker": 0.0, "ledger": 5.0}}


def test_the_flatten_says_when_the_window_ends(ledger: Ledger) -> None:
    broker = SimulatedBroker(cash=100_000)
    _executor(broker, ledger).execute([_decision("AAA", Side.BUY, 10)], {})
    broker.on_bar({"AAA": {"ts": OPEN, "open": 100.0, "high": 101.0, "low": 99.0, "close": 100.0}})
    late = Executor(broker, ledger, mode=Mode.SIMULATION, run_id="late", now=datetime(2024, 3, 5, 20, 55, tzinfo=UTC))
    assert len(late.flatten_if_due()) == 1
    [flatten] = [e for e in ledger.events(types=["intervention"]) if e.payload["kind"] == "flatten"]
    assert flatten.payload["reason"] == "end of the trading window (5 min before the close 2024-03-05T21:00:00+00:00)"


def test_only_exits_release_the_symbol_first(ledger: Ledger) -> None:
    released: list[str] = []
    broker = SimulatedBroker(cash=100_000)
    fund(ledger, broker.account().cash, source=broker.name, run_id="run-1", mode=Mode.SIMULATION, now=OPEN)
    ex = Executor(broker, ledger, mode=Mode.SIMULATION, run_id="run-1", now=OPEN, before_exit=released.append)
    assert len(ex.execute([_decision("AAA", Side.BUY, 5), _decision("BBB", Side.SELL, 3)], {"BBB": 3.0})) == 2
    assert released == ["BBB"]


def test_the_trades_per_day_block_says_so(ledger: Ledger) -> None:
    ex = _executor(SimulatedBroker(cash=100_000), ledger, limits=RiskLimits(max_trades_per_day=2))
    assert len(ex.execute([_decision(s, Side.BUY, 1) for s in ("AAA", "BBB", "CCC")], {})) == 2
    [blocked] = [e.payload for e in ledger.events(types=["intervention"]) if e.payload["kind"] == "blocked"]
    assert blocked["symbol"] == "CCC" and blocked["reason"] == "trades_per_day: 2 orders in the session 2024-03-05 >= 2"


def test_a_flatten_records_each_new_close_after_one_still_pending(ledger: Ledger) -> None:
    def bar(at: datetime) -> dict[str, Any]:
        return {"ts": at, "open": 100.0, "high": 101.0, "low": 99.0, "close": 100.0}

    broker = SimulatedBroker(cash=100_000)
    _executor(broker, ledger).execute([_decision("AAA", Side.BUY, 10)], {})
    broker.on_bar({"AAA": bar(OPEN)})
    day1 = datetime(2024, 3, 5, 20, 55, tzinfo=UTC)
    [aaa_close] = Executor(broker, ledger, mode=Mode.SIMULATION, run_id="d1", now=day1).flatten_if_due()
    # Next day: BBB is bought and fills; AAA's close still waits for its bar.
    day2 = OPEN + timedelta(days=1)
    buy = Decision(run_id="r", strategy="sma", symbol="BBB", decided_at=day2, verdict=Verdict.EXECUTE, side=Side.BUY, quantity=5)
    Executor(broker, ledger, mode=Mode.SIMULATION, run_id="d2", now=day2).execute([buy], {"AAA": 10.0})
    broker.on_bar({"BBB": bar(day2)})
    closes = Executor(broker, ledger, mode=Mode.SIMULATION, run_id="d2-close", now=day1 + timedelta(days=1)).flatten_if_due()
    assert sorted(c.symbol for c in closes) == ["AAA", "BBB"]
    recorded = [e.payload["symbol"] for e in ledger.events(types=["order_submitted"]) if e.payload["client_order_id"].startswith("close-")]
    assert recorded == ["AAA", "BBB"]  # AAA's once (kept), BBB's new one too
    assert aaa_close.client_order_id in {c.client_order_id for c in closes}


def test_one_share_exits_reduce_risk_while_halted(ledger: Ledger) -> None:
    ex = _executor(SimulatedBroker(cash=100_000), ledger)
    ex.kill_switch("stop")
    states = ex.execute([_decision("CCC", Side.BUY, 1), _decision("DDD", Side.SELL, 1)], {"CCC": -1.0, "DDD": 1.0})
    assert [s.symbol for s in states] == ["CCC", "DDD"]


def test_recording_fills_counts_them(ledger: Ledger) -> None:
    broker = SimulatedBroker(cash=100_000)
    ex = _executor(broker, ledger)
    ex.execute([_decision("AAA", Side.BUY, 10), _decision("BBB", Side.BUY, 4)], {})
    fills = broker.on_bar({s: {"ts": OPEN, "open": 100.0, "high": 101.0, "low": 99.0, "close": 100.0} for s in ("AAA", "BBB")})
    assert ex.record_fills(fills) == len(fills) == 2
    assert ex.record_fills([]) == 0


def test_fill_event_ids_are_32_hex_characters_like_the_ledgers_own() -> None:
    assert fill_event_id("fill-1") == fill_event_id("fill-1") != fill_event_id("fill-2")
    assert len(fill_event_id("fill-1")) == 32 and int(fill_event_id("fill-1"), 16) >= 0


def test_the_executor_takes_its_settings_by_keyword_only(ledger: Ledger) -> None:
    broker = SimulatedBroker(cash=100_000)
    assert Executor(broker=broker, ledger=ledger, mode=Mode.SIMULATION, run_id="r", now=OPEN).run_id == "r"
    with pytest.raises(TypeError):
        Executor(broker, ledger, Mode.SIMULATION, "r", OPEN)  # type: ignore[misc]


def test_a_decision_already_sent_is_skipped_and_the_next_still_goes(ledger: Ledger) -> None:
    broker = SimulatedBroker(cash=100_000)
    first = _decision("AAA", Side.BUY, 5)
    assert len(_executor(broker, ledger).execute([first], {})) == 1
    states = _executor(broker, ledger, run_id="run-2").execute([first, _decision("BBB", Side.BUY, 5)], {})
    assert [s.symbol for s in states] == ["BBB"]


def test_the_simulated_broker_learns_when_orders_are_placed(ledger: Ledger) -> None:
    broker = SimulatedBroker(cash=100_000)
    Executor(broker, ledger, mode=Mode.SIMULATION, run_id="r", now=OPEN)
    assert broker.placed_at == OPEN


def test_at_the_flatten_an_exit_is_left_to_it_and_a_later_entry_is_still_blocked(ledger: Ledger) -> None:
    late = datetime(2024, 3, 5, 20, 55, tzinfo=UTC)  # 15:55 New York: the window's flatten
    fund(ledger, 100_000, source="simulated", run_id="late", mode=Mode.SIMULATION, now=late)
    ex = Executor(SimulatedBroker(cash=100_000), ledger, mode=Mode.SIMULATION, run_id="late", now=late)
    assert ex.execute([_decision("AAA", Side.SELL, 5), _decision("BBB", Side.BUY, 5)], {"AAA": 5.0}) == []
    blocked = [e.payload["symbol"] for e in ledger.events(types=["intervention"]) if e.payload["kind"] == "blocked"]
    assert blocked == ["BBB"]


def test_check_mode_takes_the_opt_ins_by_keyword_only() -> None:
    check_mode(Mode.PAPER, live_opt_in=False, live_confirmed=False)
    with pytest.raises(TypeError):
        check_mode(Mode.PAPER, False, False)  # type: ignore[misc]


def test_a_rejected_state_is_recorded_as_a_rejection_and_an_accepted_one_is_not(ledger: Ledger) -> None:
    ex = _executor(SimulatedBroker(SimConfig(reject_prob=1.0), cash=100_000), ledger)
    [state] = ex.execute([_decision("AAA", Side.BUY, 5)], {})
    [rejection] = ledger.events(types=["rejection"])
    assert rejection.payload == {"client_order_id": state.client_order_id, "reason": "rejected by the simulated venue"}
    accepted = _executor(SimulatedBroker(cash=100_000), ledger, run_id="run-2")
    accepted.execute([_decision("BBB", Side.BUY, 5)], {})
    assert [e.payload["client_order_id"] for e in ledger.events(types=["rejection"])] == [state.client_order_id]


def test_an_entry_carries_its_bracket_and_an_exit_none(ledger: Ledger) -> None:
    entry = Decision(
        run_id="r", strategy="sma", symbol="AAA", decided_at=OPEN, verdict=Verdict.EXECUTE, side=Side.BUY, quantity=5, stop=95.0, target1=110.0, target2=120.0,
        size=0.5,
    )
    exit_ = Decision(
        run_id="r", strategy="sma", symbol="BBB", decided_at=OPEN, verdict=Verdict.EXECUTE, side=Side.SELL, quantity=3, stop=1.0, target1=2.0, size=0.5
    )
    _executor(SimulatedBroker(cash=100_000), ledger).execute([entry, exit_], {"BBB": 3.0})
    sent = {e.payload["symbol"]: e.payload for e in ledger.events(types=["order_submitted"])}
    assert (sent["AAA"]["stop"], sent["AAA"]["target1"], sent["AAA"]["target2"]) == (95.0, 110.0, 120.0)
    assert (sent["BBB"]["stop"], sent["BBB"]["target1"], sent["BBB"]["target2"]) == (None, None, None)
    assert (sent["AAA"]["size"], sent["BBB"]["size"]) == (0.5, None)  # an exit is sized by the position


def test_the_daily_loss_limit_blocks_entries_and_lets_exits_through(ledger: Ledger) -> None:
    ex = _executor(SimulatedBroker(cash=100_000), ledger)
    ex.safety.mark({"ok": True, "cash": 0.0, "equity": 100_000.0})
    [trip] = ex.safety.check_breakers(97_000)
    assert trip.startswith("daily_loss")
    states = ex.execute([_decision("AAA", Side.BUY, 5), _decision("BBB", Side.SELL, 3)], {"BBB": 3.0})
    assert [s.symbol for s in states] == ["BBB"]
    [blocked] = [e.payload for e in ledger.events(types=["intervention"]) if e.payload["kind"] == "blocked"]
    assert blocked["symbol"] == "AAA" and blocked["reason"].startswith("daily_loss")


def test_the_flatten_happens_once_a_session(ledger: Ledger) -> None:
    broker = SimulatedBroker(cash=100_000)
    _executor(broker, ledger).execute([_decision("AAA", Side.BUY, 10)], {})
    broker.on_bar({"AAA": {"ts": OPEN, "open": 100.0, "high": 101.0, "low": 99.0, "close": 100.0}})
    late = datetime(2024, 3, 5, 20, 55, tzinfo=UTC)
    assert len(Executor(broker, ledger, mode=Mode.SIMULATION, run_id="a", now=late).flatten_if_due()) == 1
    # Its close has not filled yet (no bar since): a second look the same session sends nothing.
    assert Executor(broker, ledger, mode=Mode.SIMULATION, run_id="b", now=late + timedelta(minutes=2)).flatten_if_due() == []
    assert len([e for e in ledger.events(types=["intervention"]) if e.payload["kind"] == "flatten"]) == 1


def test_a_decision_without_a_side_sends_nothing(ledger: Ledger) -> None:
    sideless = Decision(run_id="r", strategy="sma", symbol="AAA", decided_at=OPEN, verdict=Verdict.EXECUTE, side=None, quantity=5)
    assert _executor(SimulatedBroker(cash=100_000), ledger).execute([sideless], {}) == []


def test_a_one_share_position_the_ledger_lacks_is_a_mismatch(ledger: Ledger) -> None:
    broker = SimulatedBroker(cash=100_000)
    ex = _executor(broker, ledger)
    ex.execute([_decision("AAA", Side.BUY, 1)], {})
    broker.on_bar({"AAA": {"ts": OPEN, "open": 100.0, "high": 101.0, "low": 99.0, "close": 100.0}})
    assert ex.reconcile({})["position_mismatches"] == {"AAA": {"broker": 1, "ledger": 0.0}}


class _HoldsOneShortShare(SimulatedBroker):
    """A broker holding a one-share short the ledger never recorded (opened by hand, say)."""

    def positions(self) -> dict[str, float]:
        return {"AAA": -1.0}


def test_a_one_share_short_the_ledger_lacks_is_a_mismatch(ledger: Ledger) -> None:
    # A missing ledger position counts as 0, not -1: against -1 it would hide exactly this short.
    ex = _executor(_HoldsOneShortShare(cash=100_000), ledger)
    assert ex.reconcile({})["position_mismatches"] == {"AAA": {"broker": -1.0, "ledger": 0.0}}
