"""The trade manager on a paper account split between pipelines (`trading.brokers.split`): real alpaca-py
clients against the loopback Alpaca server. Two pipelines long the same symbol with their own stops and
targets each get their own OCO legs under their own prefix, sized from their own entry's fills; a
target's fill is booked in the right pipeline's book (by the manager or by the pipeline's own sync,
once), and a second pass sends nothing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
import time_machine

from assets.resources import TradingResource
from orchestration.definitions import defs
from tests.fakes.alpaca_trading_server import AlpacaTradingServer
from tests.trading.paper_deployment import deploy_paper
from trading.accounts import PIPELINE_KEY, SubAccount, unattributed_positions
from trading.brokers.alpaca import AlpacaBroker
from trading.brokers.base import OrderRequest, client_order_id
from trading.brokers.split import PipelineBroker, split, tagged
from trading.events import EventType
from trading.execution import Executor
from trading.ledger import Ledger
from trading.ledger.portfolio import replay_portfolio
from trading.models import Decision, Mode, Side, Verdict
from trading.trade_manager import BREAKEVEN, REST, T1, TradeManager, leg_id

KEY, SECRET = "PKTESTKEY", "test-secret"
NOW = datetime(2024, 3, 15, 15, 0, tzinfo=UTC)  # a Friday, 11:00 New York: inside the trading window
ENTRY = client_order_id("brackets", "AAPL", NOW, Side.BUY)  # the same decision in both pipelines: the same id
# pipeline -> (quantity, stop, target 1, target 2): the same symbol, different levels
PLAN = {"cautious": (10.0, 95.0, 110.0, 120.0), "bold": (6.0, 90.0, 105.0, 130.0)}
CAPITAL = {"cautious": 60_000.0, "bold": 40_000.0}


@pytest.fixture
def server() -> Iterator[AlpacaTradingServer]:
    with AlpacaTradingServer(prices={"AAPL": 100.0}, api_key=KEY, secret_key=SECRET) as srv:
        yield srv


def make_broker(srv: AlpacaTradingServer) -> AlpacaBroker:
    return AlpacaBroker(KEY, SECRET, url_override=srv.base_url, timeout_s=5.0, backoff_s=0.0, sleep=lambda _s: None)


def views(srv: AlpacaTradingServer, ledger: Ledger) -> dict[str, PipelineBroker]:
    return split(make_broker(srv), {p: SubAccount(ledger, p) for p in PLAN}, CAPITAL, now=NOW, mode=Mode.PAPER, run_id="decide")


def enter(srv: AlpacaTradingServer, ledger: Ledger) -> None:
    """Each pipeline's decide run: its executor on its view of the account, its entry with its own levels."""
    for pipeline, view in views(srv, ledger).items():
        qty, stop, t1, t2 = PLAN[pipeline]
        decision = Decision(
            run_id="decide", strategy="brackets", symbol="AAPL", decided_at=NOW, verdict=Verdict.EXECUTE, side=Side.BUY,
            quantity=qty, stop=stop, target1=t1, target2=t2,
        )  # fmt: skip
        [state] = Executor(view, SubAccount(ledger, pipeline), mode=Mode.PAPER, run_id="decide", now=NOW).execute([decision], {})
        assert state.client_order_id == ENTRY
        view.sync()  # the run books what filled at once
    assert srv.positions["AAPL"][0] == 16


def live(srv: AlpacaTradingServer, kind: str) -> list[tuple[str, float, float]]:
    """(client id, quantity, level) of every live sell of `kind` ("stop" or "limit"); an OCO's stop leg by its parent's id."""
    field = "stop_price" if kind == "stop" else "limit_price"
    with srv._lock:
        parents = {leg["id"]: o["client_order_id"] for o in srv.orders.values() for leg in o.get("legs") or []}
        return sorted(
            (parents.get(o["id"], o["client_order_id"]), float(o["qty"]), float(o[field]))
            for o in srv.orders.values()
            if o["type"] == kind and o["side"] == "sell" and srv._live(o)
        )


def placed(pipeline: str) -> list[str]:
    qty, *_ = PLAN[pipeline]
    half = qty // 2
    return [f"t1: sell {half:g} placed", f"rest: sell {qty - half:g} placed"]


def books(ledger: Ledger) -> dict[str, float]:
    return {p: replay_portfolio(SubAccount(ledger, p)).positions.get("AAPL", 0.0) for p in PLAN}


def leg_fills(ledger: Ledger, pipeline: str) -> list[tuple[str, float, float]]:
    return sorted(
        (e.payload["client_order_id"], e.payload["quantity"], e.payload["price"])
        for e in SubAccount(ledger, pipeline).events(types=[EventType.FILL.value])
        if e.payload["client_order_id"] != ENTRY
    )


def assert_nothing_twice(srv: AlpacaTradingServer) -> None:
    assert srv.orders_created_by_client_id and set(srv.orders_created_by_client_id.values()) == {1}


def test_two_pipelines_long_one_symbol_each_get_their_own_legs(server: AlpacaTradingServer, tmp_path: Path) -> None:
    with Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}") as ledger:
        enter(server, ledger)
        manager = TradeManager(make_broker(server), ledger, run_id="tm", mode=Mode.PAPER, clock=lambda: NOW)
        assert manager.sync_all() == {tagged(p, ENTRY): placed(p) for p in PLAN}

        # each pipeline's legs under its prefix, its own quantities (half of its own fill) and levels
        c, b = (lambda leg, p=p: tagged(p, leg_id(ENTRY, leg)) for p in ("cautious", "bold"))  # type: ignore[misc]
        assert live(server, "stop") == sorted([(b(T1), 3, 90), (b(REST), 3, 90), (c(T1), 5, 95), (c(REST), 5, 95)])
        assert live(server, "limit") == sorted([(b(T1), 3, 105), (b(REST), 3, 130), (c(T1), 5, 110), (c(REST), 5, 120)])
        for pipeline in PLAN:  # recorded in the pipeline's book, under its own ids
            legs = [e for e in SubAccount(ledger, pipeline).events(types=[EventType.ORDER_SUBMITTED.value]) if e.payload.get("bracket_leg")]
            assert sorted(e.payload["client_order_id"] for e in legs) == [leg_id(ENTRY, REST), leg_id(ENTRY, T1)]
            assert {e.payload[PIPELINE_KEY] for e in legs} == {pipeline}
        assert manager.unprotected == {}

        # bold's target 1 (105) fills; the pipeline's own sync (its next decide run) books it first
        server.set_price("AAPL", 106.0)
        assert views(server, ledger)["bold"].sync() == 1
        assert books(ledger) == {"cautious": 10.0, "bold": 3.0}
        assert manager.sync_all() == {tagged("cautious", ENTRY): [], tagged("bold", ENTRY): ["stop moved to breakeven 100"]}
        assert live(server, "stop") == sorted([(b(REST), 3, 100), (c(T1), 5, 95), (c(REST), 5, 95)])  # the breakeven stop is still rest's OCO leg
        assert leg_fills(ledger, "bold") == [(leg_id(ENTRY, T1), 3.0, 106.0)]  # once, in bold's book
        assert leg_fills(ledger, "cautious") == []

        # a second pass sends nothing
        assert manager.sync_all() == {tagged(p, ENTRY): [] for p in PLAN}
        assert_nothing_twice(server)

        # cautious's stops (95): both OCO stop legs fill; its sync books them (as the manager would), once
        server.set_price("AAPL", 94.0)  # bold's breakeven stop fires too
        for view in views(server, ledger).values():
            view.sync()
        assert books(ledger) == {"cautious": 0.0, "bold": 0.0}
        assert manager.sync_all() == {tagged(p, ENTRY): ["bracket closed"] for p in PLAN}
        assert manager.sync_all() == {}
        assert leg_fills(ledger, "cautious") == [(leg_id(ENTRY, REST), 5.0, 94.0), (leg_id(ENTRY, T1), 5.0, 94.0)]
        assert leg_fills(ledger, "bold") == [(leg_id(ENTRY, BREAKEVEN), 3.0, 94.0), (leg_id(ENTRY, T1), 3.0, 106.0)]
        assert server.positions.get("AAPL", (0.0, 0.0))[0] == 0
        assert unattributed_positions({}, ledger, list(PLAN)) == {}
        assert replay_portfolio(SubAccount(ledger, "bold")).realized_pnl == pytest.approx(3 * 6 - 3 * 6)
        assert replay_portfolio(SubAccount(ledger, "cautious")).realized_pnl == pytest.approx(-10 * 6)
        assert_nothing_twice(server)


def test_releasing_one_pipelines_bracket_leaves_the_others_followed(server: AlpacaTradingServer, tmp_path: Path) -> None:
    """A strategy's exit in one pipeline releases that pipeline's legs only: its bracket closes, the
    other pipeline's stays open and protected, and the shares left bare are named."""
    with Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}") as ledger:
        enter(server, ledger)
        manager = TradeManager(make_broker(server), ledger, run_id="tm", mode=Mode.PAPER, clock=lambda: NOW)
        manager.sync_all()
        assert manager.release("AAPL", "strategy exit", pipeline="bold") == [tagged("bold", leg_id(ENTRY, leg)) for leg in (T1, REST)]
        assert manager.sync_all() == {tagged("cautious", ENTRY): []}  # bold's bracket is closed, cautious's is not
        assert manager.unprotected == {"AAPL": 6.0}  # bold's shares, no longer under a stop
        bold = views(server, ledger)["bold"]
        exit_ = OrderRequest(client_order_id="exit-1", symbol="AAPL", side=Side.SELL, quantity=6, reduce_only=True)
        Executor(bold, SubAccount(ledger, "bold"), mode=Mode.PAPER, run_id="decide", now=NOW)._send(exit_, None)  # its freed shares
        bold.sync()
        assert books(ledger) == {"cautious": 10.0, "bold": 0.0}
        server.set_price("AAPL", 94.0)
        assert manager.sync_all() == {tagged("cautious", ENTRY): ["bracket closed"]}
        assert books(ledger) == {"cautious": 0.0, "bold": 0.0}
        assert server.positions.get("AAPL", (0.0, 0.0))[0] == 0
        assert_nothing_twice(server)


def test_the_sensor_follows_both_pipelines_brackets(server: AlpacaTradingServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The deployed sensor (the path users run, its resources from the deployment's environment) over
    the split account's ledger."""
    ledger_url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    deploy_paper(monkeypatch, server.base_url, ledger_url, key=KEY, secret=SECRET)
    trading = TradingResource(mode="paper", ledger_url=ledger_url)  # the same ledger, for the test's own reads
    sensor = defs.resolve_sensor_def("trade_manager_sensor")
    instance = dg.DagsterInstance.ephemeral()

    def tick() -> str:
        result = sensor(dg.build_sensor_context(instance=instance))
        assert isinstance(result, dg.SkipReason) and result.skip_message
        return result.skip_message

    with time_machine.travel(NOW, tick=False):
        with trading.ledger() as ledger:
            enter(server, ledger)
        lines = sorted(f"{tagged(p, ENTRY)}: {'; '.join(placed(p))}" for p in PLAN)
        assert tick() == "2 open bracket(s): " + " | ".join(lines)
        server.set_price("AAPL", 111.0)  # both targets 1 (105, 110)
        assert tick() == "2 open bracket(s): " + " | ".join(f"{tagged(p, ENTRY)}: stop moved to breakeven 100" for p in sorted(PLAN))
        assert tick() == "2 open bracket(s), nothing to do"
    with trading.ledger() as ledger:
        assert books(ledger) == {"cautious": 5.0, "bold": 3.0}
        assert [view.sync() for view in views(server, ledger).values()] == [0, 0]  # the pipelines' own sync: booked already
        assert leg_fills(ledger, "cautious") == [(leg_id(ENTRY, T1), 5.0, 111.0)]
        assert leg_fills(ledger, "bold") == [(leg_id(ENTRY, T1), 3.0, 111.0)]
    assert server.positions["AAPL"][0] == 8
    assert_nothing_twice(server)
