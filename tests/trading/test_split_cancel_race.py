"""A split account's flatten when an order fills while it is being canceled (a filled order cannot be
canceled: Alpaca answers 422): the order is left filled, booked, and closed with the rest."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from tests.fakes.alpaca_trading_server import AlpacaTradingServer
from trading.accounts import SubAccount
from trading.brokers.alpaca import AlpacaBroker
from trading.brokers.base import BrokerError, OrderRequest
from trading.brokers.split import split, tagged
from trading.execution import Executor
from trading.ledger import Ledger
from trading.models import Mode, Side

NOW = datetime(2023, 12, 21, 15, 55, tzinfo=ZoneInfo("America/New_York"))


class FillsWhileCanceling(AlpacaBroker):
    """The venue fills each order just before its cancel arrives."""

    server: AlpacaTradingServer

    def cancel(self, broker_order_id: str) -> None:
        [order] = [o for o in self.open_orders() if o.broker_order_id == broker_order_id]
        self.server.fill_order(order.client_order_id, None, 100.0)
        super().cancel(broker_order_id)


def test_an_order_filled_while_canceled_is_booked_and_closed() -> None:
    with AlpacaTradingServer(prices={"AAPL": 100.0}, fill_market_orders=False) as server, Ledger("sqlite://") as ledger:
        broker = FillsWhileCanceling("key", "secret", url_override=server.base_url, sleep=lambda _s: None)
        broker.server = server
        mine = split(broker, {"p": SubAccount(ledger, "p")}, {"p": 50_000.0}, now=NOW, mode=Mode.PAPER, run_id="r")["p"]
        executor = Executor(mine, SubAccount(ledger, "p"), mode=Mode.PAPER, run_id="r", now=NOW)
        executor._send(OrderRequest(client_order_id="ql-1", symbol="AAPL", side=Side.BUY, quantity=10), None)  # recorded in its book
        closing = mine.close_all()  # its cancel is refused: the order filled
        assert [(c.symbol, c.side, c.quantity) for c in closing] == [("AAPL", Side.SELL, 10.0)]
        assert broker.get_order(tagged("p", "ql-1")).status.value == "filled"  # type: ignore[union-attr]


def test_a_refused_cancel_of_an_order_still_open_is_raised() -> None:
    class Refuses(AlpacaBroker):
        def cancel(self, broker_order_id: str) -> None:
            raise BrokerError(f"alpaca: cancel order {broker_order_id}: HTTP 500")

    with AlpacaTradingServer(prices={"AAPL": 100.0}, fill_market_orders=False) as server, Ledger("sqlite://") as ledger:
        broker = Refuses("key", "secret", url_override=server.base_url, sleep=lambda _s: None)
        mine = split(broker, {"p": SubAccount(ledger, "p")}, {"p": 50_000.0}, now=NOW, mode=Mode.PAPER, run_id="r")["p"]
        mine.submit(OrderRequest(client_order_id="ql-1", symbol="AAPL", side=Side.BUY, quantity=10))
        with pytest.raises(BrokerError, match="HTTP 500"):
            mine.cancel_all()
