"""Two pipelines side by side on one account, through decide_job: each decides on its own sub-account of
the one ledger (its capital, its own simulated broker), every event carries its pipeline id, each
pipeline's portfolio is projected from its own events and the two add up to the account; the
pipelines_comparison asset reports and plots them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any

import dagster as dg
from hypothesis import given, settings
from hypothesis import strategies as st

from assets.clock import NOW_TAG
from assets.resources import LakeResource, TradingResource
from lake.calendar import get_calendar
from lake.sources.synthetic import SyntheticSource
from lake.store import replace_partitions
from tests.orchestration.plans import decide_with_plan, end_of_day_with_plan
from trading.accounts import PIPELINE_KEY, SubAccount, load_account_plan
from trading.events import EventType
from trading.ledger import Ledger, replay_portfolio

SYMBOLS = ["AAPL", "JPM", "META"]
DECISION_BAR, LATER_BAR = datetime(2023, 12, 20, 14, 30, tzinfo=UTC), datetime(2023, 12, 22, 14, 30, tzinfo=UTC)


def _at_eleven(day: int) -> datetime:
    """11:00 New York on a December 2023 session: inside the trading window, after the bar before it."""
    return datetime.combine(datetime(2023, 12, day).date(), time(11, 0), tzinfo=get_calendar().tz)


def _setup(tmp_path: Path) -> tuple[LakeResource, TradingResource, Path]:
    lake = tmp_path / "lake"
    daily = SyntheticSource(seed=7).fetch(SYMBOLS, "1d", datetime(2023, 6, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC))
    replace_partitions(lake, "bars", "1d", daily, period="year")
    # The same strategy, two risk appetites: 5 % of the sub-account a position, or the default 20 %.
    (tmp_path / "cautious.yaml").write_text(json.dumps({"name": "cautious", "limits": {"max_position_pct": 0.05, "max_sector_pct": 1.0}}))
    (tmp_path / "bold.yaml").write_text(json.dumps({"name": "bold", "limits": {"max_sector_pct": 1.0}}))
    plan = tmp_path / "pipelines.yaml"
    plan.write_text(json.dumps({"pipelines": [{"id": "cautious", "file": "cautious.yaml", "capital": 0.6}, {"id": "bold", "file": "bold.yaml", "capital": 40_000}]}))
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    return LakeResource(root=str(lake)), TradingResource(mode="simulation", ledger_url=url, sim_state_file=str(tmp_path / "sim.json")), plan


def _decide(lake: LakeResource, trading: TradingResource, plan: Path, as_of: datetime, now: datetime) -> dict[str, Any]:
    return decide_with_plan(lake, trading, plan, as_of, now, SYMBOLS)


def test_two_pipelines_trade_their_own_capital_in_one_ledger(tmp_path: Path) -> None:
    lake, trading, plan = _setup(tmp_path)
    first = _decide(lake, trading, plan, DECISION_BAR, _at_eleven(21))
    assert first["equity_per_pipeline"] == {"cautious": 60_000.0, "bold": 40_000.0}, "each starts with its capital"
    assert first["orders_sent"] == 2 * len(SYMBOLS), "each pipeline buys every symbol for its own account"
    _decide(lake, trading, plan, LATER_BAR, _at_eleven(26))  # the first run's orders fill at the next open

    with Ledger(trading.ledger_url) as ledger:
        events = list(ledger.events())
        assert {e.payload.get(PIPELINE_KEY) for e in events} == {"cautious", "bold"}, "the pipeline id on every event"
        deposits = {e.payload[PIPELINE_KEY]: e.payload["amount"] for e in events if e.type == EventType.DEPOSIT}
        assert deposits == {"cautious": 60_000.0, "bold": 40_000.0}
        account = replay_portfolio(ledger)
        books = {p: replay_portfolio(SubAccount(ledger, p)) for p in ("cautious", "bold")}
    prices = {e.symbol: e.payload["price"] for e in events if e.type == EventType.FILL}
    for symbol in SYMBOLS:
        cautious, bold = books["cautious"].positions[symbol], books["bold"].positions[symbol]
        assert 0 < cautious * prices[symbol] <= 0.05 * 60_000, f"{symbol}: the cautious pipeline's cap, on its own capital"
        assert bold * prices[symbol] > 0.05 * 60_000, f"{symbol}: the bold pipeline is not held to the other's cap"
        assert cautious + bold == account.positions[symbol], "the sub-accounts add up to the account"
    assert abs(books["cautious"].cash + books["bold"].cash - account.cash) < 1e-6

    # The comparison, from the same ledger: each pipeline's capital, fills and equity at its marks.
    from assets.trading import pipelines_comparison

    result = dg.materialize([pipelines_comparison], run_config={"ops": {"pipelines_comparison": {"config": {"pipelines": str(plan)}}}}, resources={"trading": trading})
    [mat] = result.asset_materializations_for_node("pipelines_comparison")
    per = mat.metadata["per_pipeline"].value
    assert per["cautious"]["capital"] == 60_000.0 and per["bold"]["capital"] == 40_000.0  # type: ignore[index]
    assert per["cautious"]["fills"] == per["bold"]["fills"] == len(SYMBOLS)  # type: ignore[index]
    assert mat.metadata["marks"].value == 4, "two runs, two sub-accounts"
    assert "data:image/png;base64," in str(mat.metadata["equity_curves"].value)
    assert [s.id for s in load_account_plan(plan).pipelines] == ["cautious", "bold"]


def test_the_kill_switch_halts_every_pipeline_until_resumed(tmp_path: Path) -> None:
    """The account's kill switch (written with no pipeline id) is every sub-account's: no pipeline sends
    an order while it holds, and one resume lifts it for all."""
    from orchestration.definitions import defs

    lake, trading, plan = _setup(tmp_path)
    killed = defs.resolve_job_def("kill_switch_job").execute_in_process(
        run_config={"ops": {"kill_switch_op": {"config": {"reason": "desk says stop"}}}}, resources={"trading": trading}, tags={NOW_TAG: _at_eleven(21).isoformat()}
    )
    assert killed.success
    halted = _decide(lake, trading, plan, DECISION_BAR, _at_eleven(21).replace(minute=30))
    assert halted["orders_sent"] == 0 and set(halted["blocked"]) == {"cautious", "bold"}
    assert all("kill_switch" in why for why in halted["blocked"].values())
    resumed = defs.resolve_job_def("resume_job").execute_in_process(
        run_config={"ops": {"resume_op": {"config": {"by": "alice"}}}}, resources={"trading": trading}, tags={NOW_TAG: _at_eleven(22).isoformat()}
    )
    assert resumed.success
    assert _decide(lake, trading, plan, DECISION_BAR, _at_eleven(22).replace(minute=30))["orders_sent"] == 2 * len(SYMBOLS)


def test_the_account_limits_hold_across_both_pipelines(tmp_path: Path) -> None:
    """4 % of the account a symbol, over both books: the cautious pipeline (first in the plan) takes up
    to its own 5 % of $60k = $3,000; the bold one, whose own limits would let it buy more than that,
    is cut to what the account has left of its $4,000."""
    lake, trading, plan = _setup(tmp_path)
    raw = json.loads(plan.read_text())
    plan.write_text(json.dumps({**raw, "limits": {"max_position_pct": 0.04, "max_sector_pct": 1.0}}))
    first = _decide(lake, trading, plan, DECISION_BAR, _at_eleven(21))
    assert first["orders_sent"] == 2 * len(SYMBOLS)
    with Ledger(trading.ledger_url) as ledger:
        decisions = [e.payload for e in ledger.events(types=[EventType.DECISION.value])]
        account = [e.payload for e in ledger.events(types=[EventType.RISK_ASSESSMENT.value]) if "account: " in str(e.payload.get("hard_violations"))]
    closes = {d["symbol"]: d["entry"] for d in decisions}
    for symbol in SYMBOLS:
        both = sum(d["quantity"] for d in decisions if d["symbol"] == symbol)
        assert 0 < both * closes[symbol] <= 0.04 * 100_000, f"{symbol}: the account's cap over both books"
        bold = next(d for d in decisions if d["symbol"] == symbol and d[PIPELINE_KEY] == "bold")
        assert bold["quantity"] * closes[symbol] > 0, "bold still gets what the account has left"
    assert {p[PIPELINE_KEY] for p in account} == {"bold"}, "the account cut the bold pipeline, not the cautious one"


def test_each_pipeline_has_its_own_budget(tmp_path: Path) -> None:
    """Two model pipelines with the same monthly budget: the one whose sub-account spent its month makes
    no model request; the other, whose sub-account spent nothing, asks as usual."""
    from tests.fakes.openai_server import OpenAIServer
    from tests.trading.conftest import good_answers
    from trading.events import Event
    from trading.models import Mode

    lake, trading, plan = _setup(tmp_path)
    with OpenAIServer(responder=good_answers) as server:
        llm = {"model": "fake-small", "base_url": server.base_url, "max_retries": 0, "timeout_s": 5.0}
        nodes = [{"id": "analyst", "type": "llm_analyst", "config": llm}, {"id": "limits", "type": "hard_limits", "when": "trade"}]
        for name in ("cautious", "bold"):
            spec = {"name": name, "graph": {"nodes": nodes}, "prices": {"fake-small": [1000.0, 1000.0]}, "budget": {"per_month": 100.0}, "checkpoint": "memory"}
            (tmp_path / f"{name}.yaml").write_text(json.dumps(spec))
        with Ledger(trading.ledger_url) as ledger:  # the bold pipeline spent its month earlier
            spent = {"scope": "run", "run_cost_usd": 99.99, "model_calls": 4}
            SubAccount(ledger, "bold").append_many([Event(type=EventType.COST, run_id="earlier", mode=Mode.SIMULATION, as_of=datetime(2023, 12, 4, tzinfo=UTC), payload=spent)])
        run = _decide(lake, trading, plan, DECISION_BAR, _at_eleven(21))
        asked = len(server.requests)
    assert asked == len(SYMBOLS), "only the cautious pipeline asked the model, once a symbol"
    assert run["orders_sent"] == len(SYMBOLS)
    with Ledger(trading.ledger_url) as ledger:
        gated = [e.payload for e in ledger.events(types=[EventType.INTERVENTION.value]) if e.payload.get("kind") == "budget"]
    assert [g[PIPELINE_KEY] for g in gated] == ["bold"] and "monthly budget $100.0000" in gated[0]["reason"]


PRICES = {"AAA": 12.5, "BBB": 101.0, "CCC": 730.0}


@settings(max_examples=60, deadline=None)
@given(
    shares=st.tuples(st.floats(0.05, 0.95), st.floats(0.0, 1.0)),
    cap=st.floats(0.01, 0.5),
    orders=st.lists(st.tuples(st.sampled_from(["a", "b"]), st.sampled_from(sorted(PRICES)), st.sampled_from(["BUY", "SELL"]), st.integers(1, 2_000)), max_size=25),
)
def test_property_the_account_caps_hold_whatever_the_pipelines_ask(shares: tuple[float, float], cap: float, orders: list[tuple[str, str, str, int]]) -> None:
    """Any split of the account, any cap, any sequence of buys and sells from either pipeline: what the
    account book passes never holds more than the cap of the account's equity in a symbol, nor a short,
    nor more than was asked."""
    from trading.accounts import AccountBook
    from trading.events import Event
    from trading.models import Action, Mode, TradeProposal
    from trading.risk import RiskLimits

    with Ledger("sqlite://") as ledger:
        capital = {"a": 100_000 * shares[0], "b": 100_000 * (1 - shares[0]) * shares[1]}
        for pipeline_id, amount in capital.items():
            if amount > 0:
                SubAccount(ledger, pipeline_id).append_many([Event(type=EventType.DEPOSIT, run_id="r", mode=Mode.VALIDATION, payload={"amount": amount})])
        book = AccountBook(ledger, RiskLimits(max_position_pct=cap, max_sector_pct=1.0, max_open_positions=50))
        book.mark(PRICES)
        equity = sum(capital.values())
        held = dict.fromkeys(PRICES, 0.0)
        for _pipeline, symbol, side, quantity in orders:
            proposal = TradeProposal(symbol=symbol, action=Action(side), confidence=0.5, rationale="property", quantity=float(quantity))
            verdict = book.check(proposal, float(quantity), PRICES[symbol])
            assert 0 <= verdict.quantity <= quantity
            held[symbol] += verdict.quantity if side == "BUY" else -verdict.quantity
            assert held[symbol] >= 0, "no short across the account"
            assert held[symbol] * PRICES[symbol] <= cap * equity + 1e-6, f"{symbol}: the account's cap"


def test_a_paused_pipeline_does_not_decide_while_the_other_does(tmp_path: Path) -> None:
    lake, trading, plan = _setup(tmp_path)
    raw = json.loads(plan.read_text())
    raw["pipelines"][1]["paused"] = True
    plan.write_text(json.dumps(raw))
    paused = _decide(lake, trading, plan, DECISION_BAR, _at_eleven(21))
    assert paused["paused"] == ["bold"] and paused["orders_sent"] == len(SYMBOLS)
    with Ledger(trading.ledger_url) as ledger:
        assert {e.payload[PIPELINE_KEY] for e in ledger.events()} == {"cautious"}, "nothing decided or written for the paused one"
    raw["pipelines"][1]["paused"] = False
    plan.write_text(json.dumps(raw))
    resumed = _decide(lake, trading, plan, DECISION_BAR, _at_eleven(21).replace(minute=30))
    assert resumed["paused"] == [] and resumed["equity_per_pipeline"]["bold"] == 40_000.0


def test_the_end_of_day_flattens_each_pipelines_simulated_account(tmp_path: Path) -> None:

    lake, trading, plan = _setup(tmp_path)
    _decide(lake, trading, plan, DECISION_BAR, _at_eleven(21))
    _decide(lake, trading, plan, LATER_BAR, _at_eleven(26))  # both hold every symbol now
    closing = _at_eleven(26).replace(hour=15, minute=58)  # after the window's end (5 min before the close)
    assert end_of_day_with_plan(lake, trading, plan, closing, SYMBOLS)["flattened_orders"] == 2 * len(SYMBOLS)
    with Ledger(trading.ledger_url) as ledger:
        flattens = [e.payload[PIPELINE_KEY] for e in ledger.events(types=[EventType.INTERVENTION.value]) if e.payload.get("kind") == "flatten"]
    assert sorted(flattens) == ["bold", "cautious"]
