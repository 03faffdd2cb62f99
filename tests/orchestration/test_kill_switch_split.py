"""The kill switch on one paper account split between two pipelines, through kill_switch_job (the path
users run), on the simulated broker and on alpaca-py's client against the loopback Alpaca server.

Both pipelines hold part-filled entries when it fires: the job halts the account, cancels every open
order (the pipelines' and one no pipeline sent), and closes each pipeline's book by its own tagged
orders for what its book holds, so once they fill every book is flat and the account holds nothing no
book accounts for; the next decide_job run sends nothing. An account-wide close (untagged orders, as
before the split's kill switch) flattens the account but leaves every book holding its shares."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from assets.clock import NOW_TAG
from assets.resources import LakeResource, TradingResource
from lake.store import read_bars
from tests.fakes.alpaca_trading_server import AlpacaTradingServer
from tests.orchestration.plans import decide_with_plan
from tests.orchestration.test_pipelines_paper import DECISION_BAR, SYMBOLS, _at_eleven, _setup
from trading.accounts import PIPELINE_KEY, SubAccount
from trading.brokers.alpaca import AlpacaBroker
from trading.brokers.base import Broker, OrderRequest, OrderStatus, OrderType
from trading.brokers.simulated import SimConfig, SimulatedBroker
from trading.brokers.split import SharedBroker, owner
from trading.events import EventType
from trading.ledger import Ledger, replay_portfolio
from trading.models import Side

PIPELINES = ("bold", "cautious")
NEXT_BAR = DECISION_BAR + timedelta(days=1)  # 21 Dec: the bar the entries part-fill at (simulated)
# The entries go out at the 21st's open, so they (part-)fill at that bar, as a venue fills them (an order
# fills only at a bar opening at or after it was sent: under a pipeline's view too).
SENT_AT = _at_eleven(21).replace(hour=9, minute=30)
KILLED_AT = SENT_AT.replace(minute=40)
HAND = "by-hand"  # a resting order no pipeline sent

_ACCOUNTS: dict[str, SimulatedBroker] = {}  # sim_state_file -> the one simulated account the runs share


class SimulatedPaperResource(TradingResource):
    """Paper mode on one in-memory simulated account: the split's shared broker without Alpaca."""

    def broker(self) -> Broker | None:
        return _ACCOUNTS[self.sim_state_file]


@dataclass
class Account:
    """One paper account as the test drives it: the resource the jobs get, the broker as the test reads
    it, and the market (`fill_part`: part of every open order fills; `fill_rest`: every open order fills)."""

    trading: TradingResource
    broker: SharedBroker
    fill_part: Callable[[], None]
    fill_rest: Callable[[], None]


def _bars(lake: LakeResource, ts: datetime) -> dict[str, dict[str, Any]]:
    bars = read_bars(Path(lake.root), SYMBOLS, "1d", ts, ts + timedelta(days=1))
    return {r["symbol"]: r for r in bars.filter(pl.col("ts") == ts).iter_rows(named=True)}


@pytest.fixture(params=["simulated", "alpaca"])
def account(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[LakeResource, Path, Account]]:
    lake, plan, closes = _setup(tmp_path)
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    if request.param == "simulated":
        # Every order fills in part on a bar (at least half, the rest stays open), until the market is told otherwise.
        shared = SimulatedBroker(config=SimConfig(partial_fill_prob=1.0, partial_fill_min=0.5), cash=100_000.0)
        key = str(tmp_path / "sim.json")
        _ACCOUNTS[key] = shared

        def part() -> None:
            shared.on_bar(_bars(lake, NEXT_BAR))

        def rest() -> None:
            shared.config = SimConfig()  # whole fills from now on
            shared.on_bar(_bars(lake, NEXT_BAR + timedelta(days=1)))

        trading: TradingResource = SimulatedPaperResource(mode="paper", ledger_url=url, sim_state_file=key)
        yield lake, plan, Account(trading, shared, part, rest)
        _ACCOUNTS.pop(key)
        return
    with AlpacaTradingServer(prices=closes, fill_market_orders=False) as server:  # orders rest until the test fills them
        broker = AlpacaBroker("key", "secret", url_override=server.base_url, sleep=lambda _s: None)

        def part() -> None:
            for o in broker.open_orders():
                if o.client_order_id != HAND:
                    server.fill_order(o.client_order_id, math.ceil(o.quantity / 2))

        def fill_all() -> None:
            for o in broker.open_orders():
                server.fill_order(o.client_order_id)

        trading = TradingResource(mode="paper", ledger_url=url, alpaca_api_key="key", alpaca_secret_key="secret", alpaca_trading_url=server.base_url)
        yield lake, plan, Account(trading, broker, part, fill_all)


def _decide(lake: LakeResource, trading: TradingResource, plan: Path, as_of: datetime, now: datetime) -> dict[str, Any]:
    return decide_with_plan(lake, trading, plan, as_of, now, SYMBOLS)


def _books(url: str) -> dict[str, dict[str, float]]:
    with Ledger(url) as ledger:
        return {p: {s: q for s, q in replay_portfolio(SubAccount(ledger, p)).positions.items() if abs(q) > 1e-9} for p in PIPELINES}


def test_the_kill_switch_job_closes_each_pipelines_book_by_its_own_orders(account: tuple[LakeResource, Path, Account]) -> None:
    lake, plan, acct = account
    broker, url = acct.broker, acct.trading.ledger_url
    first = _decide(lake, acct.trading, plan, DECISION_BAR, SENT_AT)
    assert first["orders_sent"] == 2 * len(SYMBOLS)
    entries = [o.client_order_id for o in broker.open_orders()]
    acct.fill_part()
    again = _decide(lake, acct.trading, plan, DECISION_BAR, SENT_AT.replace(minute=35))  # the same decisions: books the part fills
    assert again["orders_sent"] == 0 and again["unattributed_positions"] == {}, "the books hold what the account holds"
    broker.submit(OrderRequest(client_order_id=HAND, symbol="AAPL", side=Side.BUY, quantity=3, type=OrderType.LIMIT, limit_price=1.0))
    books = _books(url)
    assert all(set(b) == set(SYMBOLS) for b in books.values()), "both pipelines hold every symbol"
    assert len(broker.open_orders()) == 2 * len(SYMBOLS) + 1, "the part-filled entries still open, and the hand order"

    from orchestration.definitions import defs

    killed = defs.resolve_job_def("kill_switch_job").execute_in_process(
        run_config={"ops": {"kill_switch_op": {"config": {"reason": "desk says stop"}}}}, resources={"trading": acct.trading}, tags={NOW_TAG: KILLED_AT.isoformat()}
    )
    assert killed.success
    for cid in [*entries, HAND]:
        state = broker.get_order(cid)
        assert state is not None and state.status == OrderStatus.CANCELED, f"{cid}: canceled"
    closing = broker.open_orders()
    with Ledger(url) as ledger:
        halts = [e.payload for e in ledger.events(types=[EventType.INTERVENTION.value]) if e.payload.get("kind") == "kill_switch"]
    assert len([h for h in halts if PIPELINE_KEY not in h]) == 1, "the account's halt (no pipeline id) holds both pipelines"

    acct.fill_rest()  # the market fills the closes
    assert broker.positions() == {}, "the account is flat"
    later = _decide(lake, acct.trading, plan, NEXT_BAR, _at_eleven(22))  # a later bar, a new decision: still halted
    assert later["orders_sent"] == 0 and broker.open_orders() == [], "no new risk"
    assert set(later["blocked"]) == set(PIPELINES) and all("kill_switch" in why for why in later["blocked"].values())
    assert _books(url) == {p: {} for p in PIPELINES}, "every book is flat: its shares were closed by its own orders"
    assert later["unattributed_positions"] == {}, "nothing the account did is left out of the books"
    assert sorted((owner(o.client_order_id) or "", o.symbol, o.side, o.quantity) for o in closing) == sorted(
        (p, s, Side.SELL, q) for p, book in books.items() for s, q in book.items()
    ), "one closing order a pipeline and symbol, under its prefix, for what its book held"
