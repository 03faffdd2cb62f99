"""Two pipelines in paper mode on one broker account (`trading.brokers.split`): each order reaches the
broker under its pipeline's prefix, each pipeline's fills are booked in its own sub-account (positions,
cash and P&L add up to the account's), each is sized on its own capital, and the account's limits hold
across both. On the simulated broker and on alpaca-py's client against the loopback Alpaca server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import Phase, example, given, settings
from hypothesis import strategies as st

from lake.calendar import get_calendar
from lake.sources.synthetic import SyntheticSource
from lake.store import read_bars, replace_partitions
from tests.fakes.alpaca_trading_server import AlpacaTradingServer
from tests.trading.always_long import ALWAYS_LONG
from trading.accounts import AccountPlan, SubAccount, ledger_pipelines, unattributed_positions
from trading.brokers.alpaca import AlpacaBroker
from trading.brokers.base import OrderRequest
from trading.brokers.simulated import SimulatedBroker
from trading.brokers.split import PipelineBroker, SharedBroker, kill_split_account, owner, split, tagged
from trading.cycle import PipelineRun, run_pipelines
from trading.events import EventType
from trading.execution import Executor
from trading.ledger import Ledger, replay_portfolio
from trading.models import Mode, Side
from trading.pipeline import PipelineConfig, load_pipeline_config

SYMBOLS = ["AAPL", "JPM", "META"]
DECISION_BAR = datetime(2023, 12, 20, 14, 30, tzinfo=UTC)
NEXT_BAR = datetime(2023, 12, 21, 14, 30, tzinfo=UTC)
AFTER_NEXT_BAR = datetime(2023, 12, 22, 14, 30, tzinfo=UTC)
CAPITAL = {"cautious": 60_000.0, "bold": 40_000.0}


def _at_eleven(day: int) -> datetime:
    """11:00 New York on a December 2023 session: inside the trading window."""
    return datetime.combine(datetime(2023, 12, day).date(), time(11, 0), tzinfo=get_calendar().tz)


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("split") / "lake"
    daily = SyntheticSource(seed=7).fetch(SYMBOLS, "1d", datetime(2023, 6, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC))
    replace_partitions(root, "bars", "1d", daily, period="year")
    return root


def _bar(lake: Path, ts: datetime) -> dict[str, dict[str, Any]]:
    bars = read_bars(lake, SYMBOLS, "1d", ts, ts + (NEXT_BAR - DECISION_BAR))
    return {r["symbol"]: r for r in bars.filter(pl.col("ts") == ts).iter_rows(named=True)}


def _configs(tmp_path: Path) -> dict[str, PipelineConfig]:
    """The same strategy, two risk appetites: 5 % of the sub-account a position, or the default 20 %."""
    (tmp_path / "cautious.json").write_text(json.dumps({"name": "cautious", "limits": {"max_position_pct": 0.05, "max_sector_pct": 1.0}}))
    (tmp_path / "bold.json").write_text(json.dumps({"name": "bold", "limits": {"max_sector_pct": 1.0}}))
    return {p: load_pipeline_config(tmp_path / f"{p}.json") for p in CAPITAL}


def _plan(account_limits: dict[str, Any] | None = None) -> AccountPlan:
    return AccountPlan.model_validate({"pipelines": [{"id": "cautious", "capital": 0.6}, {"id": "bold", "capital": 40_000}], "limits": account_limits})


def _decide(lake: Path, tmp_path: Path, ledger: Ledger, shared: SharedBroker, plan: AccountPlan, as_of: datetime, now: datetime) -> list[PipelineRun]:
    books: dict[str, Ledger] = {p: SubAccount(ledger, p) for p in CAPITAL}
    brokers = split(shared, books, plan.allocations(100_000.0), now=now, mode=Mode.PAPER, run_id=f"run-{now:%d}")
    return run_pipelines(
        plan=plan, configs=_configs(tmp_path), ledger=ledger, brokers=dict(brokers), initial_cash=100_000.0, run_id=f"run-{now:%d}",
        lake_root=lake, strategy=ALWAYS_LONG, params=ALWAYS_LONG.params(), symbols=SYMBOLS, timeframe="1d", as_of=as_of, mode=Mode.PAPER, now=now,
    )  # fmt: skip


def _books(ledger: Ledger, shared: SharedBroker, now: datetime) -> dict[str, PipelineBroker]:
    """Each pipeline's view, its fills synced (what the next run's reconciliation does first)."""
    views = split(shared, {p: SubAccount(ledger, p) for p in CAPITAL}, CAPITAL, now=now, mode=Mode.PAPER, run_id="sync")
    for view in views.values():
        view.sync()
    return views


def _check_attribution(ledger: Ledger, account_positions: dict[str, float], account_cash: float, closes: dict[str, float]) -> None:
    """`closes`: the decision bar's, which each pipeline sized its orders at."""
    books = {p: replay_portfolio(SubAccount(ledger, p)) for p in CAPITAL}
    for symbol in SYMBOLS:
        cautious, bold = books["cautious"].positions.get(symbol, 0.0), books["bold"].positions.get(symbol, 0.0)
        assert 0 < cautious * closes[symbol] <= 0.05 * CAPITAL["cautious"], f"{symbol}: the cautious pipeline sized on its own $60k"
        assert 0.05 * CAPITAL["cautious"] < bold * closes[symbol] <= 0.2 * CAPITAL["bold"], f"{symbol}: the bold pipeline's own 20 % of its $40k"
        assert cautious + bold == pytest.approx(account_positions[symbol]), f"{symbol}: the sub-accounts add up to the account"
    assert books["cautious"].cash + books["bold"].cash == pytest.approx(account_cash), "each pipeline paid for its own fills"
    assert unattributed_positions(account_positions, ledger, CAPITAL) == {}


def test_two_pipelines_on_one_simulated_account(lake: Path, tmp_path: Path) -> None:
    shared = SimulatedBroker(cash=100_000.0)
    with Ledger("sqlite://") as ledger:
        runs = _decide(lake, tmp_path, ledger, shared, _plan(), DECISION_BAR, _at_eleven(21))
        assert [len(r.report.orders) for r in runs] == [3, 3]
        wire = [o.state.client_order_id for o in shared._orders.values()]
        assert len(wire) == 6, "the same decision in two pipelines is two orders at the broker, not one"
        assert sorted(owner(c) or "" for c in wire) == ["bold"] * 3 + ["cautious"] * 3, "every order carries its pipeline's prefix"
        own = {e.payload["client_order_id"] for e in ledger.events(types=[EventType.ORDER_SUBMITTED.value])}
        assert {f"{e}" for e in own} == {c.split(".", 1)[1] for c in wire}, "the ledger has the executor's own ids"
        # Sent at 11:00 on the 21st: the 21st's bar had opened, so they fill at the next bar's open (the
        # sent-time rule holds under a pipeline's view as on the bare simulated broker).
        assert shared.on_bar(_bar(lake, NEXT_BAR)) == [], "no fill at a bar that opened before the orders were sent"
        fills = shared.on_bar(_bar(lake, AFTER_NEXT_BAR))
        assert len(fills) == 6 and {f.ts for f in fills} == {AFTER_NEXT_BAR}, "both pipelines' orders fill at the 22nd's open"
        views = _books(ledger, shared, _at_eleven(26))
        _check_attribution(ledger, shared.positions(), shared.cash, {s: b["close"] for s, b in _bar(lake, DECISION_BAR).items()})
        assert sum(v.account().equity for v in views.values()) == pytest.approx(shared.account().equity), "the pipelines' equity is the account's"
        assert {v.sync() for v in views.values()} == {0}, "a fill is booked once"


@pytest.fixture
def alpaca(lake: Path) -> Iterator[tuple[AlpacaTradingServer, AlpacaBroker]]:
    closes = {s: float(b["close"]) for s, b in _bar(lake, DECISION_BAR).items()}
    with AlpacaTradingServer(prices=closes) as server:  # market orders fill at once at these prices
        yield server, AlpacaBroker("key", "secret", url_override=server.base_url, sleep=lambda _s: None)


def test_two_pipelines_on_one_alpaca_paper_account(lake: Path, tmp_path: Path, alpaca: tuple[AlpacaTradingServer, AlpacaBroker]) -> None:
    server, broker = alpaca
    with Ledger("sqlite://") as ledger:
        runs = _decide(lake, tmp_path, ledger, broker, _plan(), DECISION_BAR, _at_eleven(21))
        assert [len(r.report.orders) for r in runs] == [3, 3]
        wire = [o["client_order_id"] for o in server.orders.values()]
        assert sorted(owner(c) or "" for c in wire) == ["bold"] * 3 + ["cautious"] * 3, "every order carries its pipeline's prefix"
        assert all(n == 1 for n in server.orders_created_by_client_id.values())
        _books(ledger, broker, _at_eleven(22))
        _check_attribution(ledger, broker.positions(), broker.account().cash, server.prices)
        # The next run books nothing twice and sends nothing again for the same decisions.
        again = _decide(lake, tmp_path, ledger, broker, _plan(), DECISION_BAR, _at_eleven(21).replace(minute=30))
        assert all(n == 1 for n in server.orders_created_by_client_id.values()) and len(server.orders) == 6
        assert sum(len(r.report.orders) for r in again) == 0
        _check_attribution(ledger, broker.positions(), broker.account().cash, server.prices)


def test_the_account_limit_holds_across_both_on_alpaca(lake: Path, tmp_path: Path, alpaca: tuple[AlpacaTradingServer, AlpacaBroker]) -> None:
    """4 % of the account a symbol, over both books: the bold pipeline is cut to what the account has left."""
    server, broker = alpaca
    with Ledger("sqlite://") as ledger:
        _decide(lake, tmp_path, ledger, broker, _plan({"max_position_pct": 0.04, "max_sector_pct": 1.0}), DECISION_BAR, _at_eleven(21))
        for symbol, (qty, _avg) in server.positions.items():
            assert 0 < qty * server.prices[symbol] <= 0.04 * 100_000, f"{symbol}: the account's cap over both pipelines"
        cut = [e.payload for e in ledger.events(types=[EventType.RISK_ASSESSMENT.value]) if "account: " in str(e.payload.get("hard_violations"))]
        assert {p["pipeline"] for p in cut} == {"bold"}


def test_a_partly_filled_order_is_booked_part_by_part_and_settled_once() -> None:
    """Each sync books what filled since the last at that part's own price; an order that is over is
    not asked again; the other pipeline's orders are neither seen nor canceled."""
    with AlpacaTradingServer(prices={"AAPL": 100.0}, fill_market_orders=False) as server, Ledger("sqlite://") as ledger:
        broker = AlpacaBroker("key", "secret", url_override=server.base_url, sleep=lambda _s: None)
        views = split(broker, {p: SubAccount(ledger, p) for p in CAPITAL}, CAPITAL, now=_at_eleven(21), mode=Mode.PAPER, run_id="r")
        mine, other = views["cautious"], views["bold"]
        Executor(mine, SubAccount(ledger, "cautious"), mode=Mode.PAPER, run_id="r", now=_at_eleven(21))._send(
            OrderRequest(client_order_id="ql-1", symbol="AAPL", side=Side.BUY, quantity=10), None
        )
        other.submit(OrderRequest(client_order_id="ql-1", symbol="AAPL", side=Side.BUY, quantity=5))
        assert [o.client_order_id for o in mine.open_orders()] == ["ql-1"] and len(broker.open_orders()) == 2
        server.fill_order(tagged("cautious", "ql-1"), 4, 100.0)
        assert mine.sync() == 1
        server.fill_order(tagged("cautious", "ql-1"), 6, 110.0)
        assert mine.sync() == 1 and mine.sync() == 0
        fills = [(e.payload["quantity"], e.payload["price"]) for e in SubAccount(ledger, "cautious").events(types=[EventType.FILL.value])]
        assert fills == [(4.0, 100.0), (6.0, pytest.approx(110.0))]
        assert mine.positions() == {"AAPL": 10.0} and mine.account().cash == pytest.approx(60_000.0 - 400.0 - 660.0)
        asked = len(server.calls("GET", "/v2/orders:by_client_order_id"))
        assert asked > 0
        mine.sync()
        assert len(server.calls("GET", "/v2/orders:by_client_order_id")) == asked, "a settled order is not asked again"
        assert mine.cancel_all() == 0 and len(broker.open_orders()) == 1, "the other pipeline's open order stays"


def test_the_kill_switch_closes_each_pipelines_book_and_halts_both(lake: Path, tmp_path: Path, alpaca: tuple[AlpacaTradingServer, AlpacaBroker]) -> None:
    """Each pipeline's positions are closed by its own orders (its book goes flat), a position no book
    holds (bought by hand) by the account's; one halt holds both pipelines."""
    server, broker = alpaca
    with Ledger("sqlite://") as ledger:
        _decide(lake, tmp_path, ledger, broker, _plan(), DECISION_BAR, _at_eleven(21))
        server.add_order({"symbol": "AAPL", "qty": "7", "side": "buy", "type": "market", "time_in_force": "day", "client_order_id": "by-hand"})
        assert ledger_pipelines(ledger) == ["bold", "cautious"], "the books a kill switch closes, found in the ledger"
        closing = kill_split_account(broker, ledger, ledger_pipelines(ledger), reason="desk says stop", now=_at_eleven(21).replace(minute=5), mode=Mode.PAPER, run_id="kill")
        assert len(closing) == 2 * len(SYMBOLS) + 1 and server.positions == {}, "every position closed, the hand-bought 7 AAPL too"
        assert sorted(owner(o["client_order_id"]) or "" for o in list(server.orders.values())[-7:]) == ["", *["bold"] * 3, *["cautious"] * 3]
        _books(ledger, broker, _at_eleven(21).replace(minute=10))
        for pipeline_id in CAPITAL:
            assert not any(replay_portfolio(SubAccount(ledger, pipeline_id)).positions.values()), f"{pipeline_id}'s book is flat"
        assert unattributed_positions(broker.positions(), ledger, CAPITAL) == {}
        account_halts = [e for e in ledger.events(types=[EventType.INTERVENTION.value]) if e.payload.get("kind") == "kill_switch" and "pipeline" not in e.payload]
        assert len(account_halts) == 1, "the account's halt (no pipeline id) holds any pipeline, one added later too"
        halted = _decide(lake, tmp_path, ledger, broker, _plan(), DECISION_BAR, _at_eleven(21).replace(minute=30))
        assert sum(len(r.report.orders) for r in halted) == 0 and all("kill_switch" in (r.report.step.blocked or "") for r in halted if r.report.step)


@settings(max_examples=25, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate])  # no shrinking: each example runs a ledger
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["cautious", "bold"]), st.sampled_from(["AAA", "BBB"]), st.booleans(), st.integers(1, 40), st.booleans(), st.floats(50.0, 150.0)),
        max_size=15,
    ),
    seed=st.integers(0, 10_000),
)
@example(  # cautious's second exit while its first is still open: only bold's shares are left to sell
    steps=[("cautious", "AAA", True, 10, True, 100.0), ("bold", "AAA", True, 10, True, 100.0), ("cautious", "AAA", False, 10, False, 100.0), ("cautious", "AAA", False, 10, True, 100.0)],
    seed=0,
)
def test_property_the_books_add_up_to_the_account(steps: list[tuple[str, str, bool, int, bool, float]], seed: int) -> None:
    """Any orders from either pipeline (exits up to what its book holds, its earlier exits maybe still
    open), partial fills, rejections and bars in between: after a sync the books hold exactly the account's
    positions and cash between them, no book is short (an exit cannot sell another pipeline's shares), and
    each fill is booked once."""
    from trading.brokers.simulated import SimConfig

    shared = SimulatedBroker(config=SimConfig(seed=seed, slippage_bps=5.0, partial_fill_prob=0.4, reject_prob=0.1), cash=100_000.0)
    now = _at_eleven(21)
    with Ledger("sqlite://") as ledger:
        books = {p: SubAccount(ledger, p) for p in CAPITAL}
        for i, (pipeline_id, symbol, buy, quantity, bar, price) in enumerate(steps):
            view = PipelineBroker(shared, pipeline_id, books[pipeline_id], capital=CAPITAL[pipeline_id], now=now, mode=Mode.PAPER, run_id=f"r{i}")
            held = view.positions().get(symbol, 0.0)
            qty = float(quantity) if buy else min(float(quantity), held)
            if qty > 0:
                request = OrderRequest(client_order_id=f"o{i}", symbol=symbol, side=Side.BUY if buy else Side.SELL, quantity=qty, reduce_only=not buy)
                Executor(view, books[pipeline_id], mode=Mode.PAPER, run_id=f"r{i}", now=now)._send(request, None)
            if bar:
                ts = DECISION_BAR + (NEXT_BAR - DECISION_BAR) * i
                shared.on_bar({s: {"ts": ts, "open": price, "high": price, "low": price, "close": price} for s in ("AAA", "BBB")})
        views = _books(ledger, shared, now)
        replayed = {p: replay_portfolio(books[p]) for p in CAPITAL}
        for symbol in ("AAA", "BBB"):
            assert sum(r.positions.get(symbol, 0.0) for r in replayed.values()) == pytest.approx(shared.positions().get(symbol, 0.0))
            assert all(r.positions.get(symbol, 0.0) >= -1e-9 for r in replayed.values()), "no book is short"
        assert sum(r.cash for r in replayed.values()) == pytest.approx(shared.cash - 100_000.0), "each pipeline paid for its own fills"
        assert {v.sync() for v in views.values()} == {0}
