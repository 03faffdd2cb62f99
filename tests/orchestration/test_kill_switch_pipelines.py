"""The kill switch with a plan of pipelines side by side, in simulation, through kill_switch_job and
resume_job: every pipeline's own simulated book (`<sim_state>.<id>.json`) is flattened on its
sub-account, not only the account's broker; every sub-account is halted until one resume lifts both."""

from __future__ import annotations

import json
from pathlib import Path

from assets.clock import NOW_TAG
from assets.resources import TradingResource
from tests.orchestration.test_pipelines_side_by_side import (
    DECISION_BAR,
    LATER_BAR,
    SYMBOLS,
    _at_eleven,
    _decide,
    _setup,
)
from trading.accounts import PIPELINE_KEY, SubAccount, pipeline_state_file, pipeline_state_files
from trading.brokers.simulated import SimulatedBroker
from trading.events import EventType
from trading.ledger import Ledger, replay_portfolio

PIPELINES = ("cautious", "bold")
NEXT_BAR = LATER_BAR.replace(day=27)  # the first bar to open after the kill switch (26 Dec, 11:10)


def _book(path: Path) -> SimulatedBroker:
    return SimulatedBroker.from_state(json.loads(path.read_text()))


def _run(job: str, op: str, config: dict[str, str], trading: TradingResource, now: str) -> None:
    from orchestration.definitions import defs

    result = defs.resolve_job_def(job).execute_in_process(run_config={"ops": {op: {"config": config}}}, resources={"trading": trading}, tags={NOW_TAG: now})
    assert result.success


def test_the_kill_switch_flattens_every_pipelines_book_and_one_resume_lifts_both(tmp_path: Path) -> None:
    lake, trading, plan = _setup(tmp_path)
    _decide(lake, trading, plan, DECISION_BAR, _at_eleven(21))
    _decide(lake, trading, plan, LATER_BAR, _at_eleven(26))  # the first run's orders filled: both hold every symbol
    books = pipeline_state_files(Path(trading.sim_state_file))
    assert books == {p: pipeline_state_file(Path(trading.sim_state_file), p) for p in PIPELINES}, "where decide_job keeps them"
    assert all(set(_book(books[p]).positions()) == set(SYMBOLS) for p in PIPELINES)

    _run("kill_switch_job", "kill_switch_op", {"reason": "desk says stop"}, trading, _at_eleven(26).replace(minute=10).isoformat())
    for pipeline_id in PIPELINES:
        closing = _book(books[pipeline_id]).open_orders()
        assert sorted(o.symbol for o in closing) == SYMBOLS, f"{pipeline_id}: a closing order a symbol, saved with its book"
        assert all(o.client_order_id.startswith("close-") for o in closing)
    with Ledger(trading.ledger_url) as ledger:
        for pipeline_id in PIPELINES:
            sub = SubAccount(ledger, pipeline_id)
            sent = [e for e in sub.events(types=[EventType.ORDER_SUBMITTED.value]) if str(e.payload["client_order_id"]).startswith("close-")]
            assert sorted(str(e.symbol) for e in sent) == SYMBOLS, f"{pipeline_id}: the closing orders in its sub-account"

    # The next run fills the closes at the next open; no pipeline opens anything while halted.
    halted = _decide(lake, trading, plan, NEXT_BAR, _at_eleven(28))
    assert halted["orders_sent"] == 0 and set(halted["blocked"]) == set(PIPELINES)
    assert all("kill_switch" in why for why in halted["blocked"].values())
    with Ledger(trading.ledger_url) as ledger:
        for pipeline_id in PIPELINES:
            held = replay_portfolio(SubAccount(ledger, pipeline_id)).positions
            assert {s: q for s, q in held.items() if q} == {}, f"{pipeline_id}: flat in its sub-account"
        assert {s: q for s, q in replay_portfolio(ledger).positions.items() if q} == {}, "the account is flat"
    assert all(_book(books[p]).positions() == {} for p in PIPELINES), "every simulated book is flat"

    _run("resume_job", "resume_op", {"by": "alice"}, trading, _at_eleven(28).replace(minute=10).isoformat())
    resumed = _decide(lake, trading, plan, NEXT_BAR, _at_eleven(28).replace(minute=30))
    assert resumed["orders_sent"] == 2 * len(SYMBOLS), "one resume: both pipelines buy again"
    assert resumed["blocked"] == {}



def test_a_book_that_cannot_be_read_does_not_stop_the_others(tmp_path: Path) -> None:
    """kill_switch_job fails naming the unreadable book, after halting and flattening the rest."""
    from orchestration.definitions import defs
    from trading.brokers.base import OrderRequest, Side

    account = tmp_path / "sim.json"
    bold = SimulatedBroker(cash=10_000.0)
    bold.submit(OrderRequest(client_order_id="buy-aapl", symbol="AAPL", side=Side.BUY, quantity=10))
    bold.on_bar({"AAPL": {"ts": DECISION_BAR, "open": 100.0, "high": 101.0, "low": 99.0, "close": 100.5}})
    assert bold.positions() == {"AAPL": 10}
    pipeline_state_file(account, "bold").write_text(json.dumps(bold.to_state()))
    pipeline_state_file(account, "alpha").write_text("{not json")  # read first (sorted)
    trading = TradingResource(mode="simulation", ledger_url=f"sqlite:///{tmp_path / 'ledger.sqlite'}", sim_state_file=str(account))

    killed = defs.resolve_job_def("kill_switch_job").execute_in_process(
        run_config={"ops": {"kill_switch_op": {"config": {"reason": "desk says stop"}}}},
        resources={"trading": trading}, tags={NOW_TAG: _at_eleven(21).isoformat()}, raise_on_error=False,
    )  # fmt: skip
    assert not killed.success
    [failure] = [e for e in killed.all_events if e.is_step_failure]
    assert "pipeline alpha" in str(failure.step_failure_data.error) and "trading is halted" in str(failure.step_failure_data.error)
    assert [(o.symbol, o.side) for o in _book(pipeline_state_file(account, "bold")).open_orders()] == [("AAPL", Side.SELL)]
    with Ledger(trading.ledger_url) as ledger:
        kills = [e.payload.get(PIPELINE_KEY) for e in ledger.events(types=[EventType.INTERVENTION.value]) if e.payload.get("kind") == "kill_switch"]
    assert kills == [None, "bold"], "the account halted first, then the bold book flattened on its sub-account"
