"""Two pipelines in paper mode on one Alpaca account, through decide_job (the path users run), with
alpaca-py's client against the loopback Alpaca server: every order at the broker carries its pipeline's
prefix, each pipeline's fills are booked in its own sub-account and the books add up to the account,
and the account's limit holds across both pipelines."""

from __future__ import annotations

import json
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any

import polars as pl

from assets.resources import LakeResource, TradingResource
from lake.calendar import get_calendar
from lake.sources.synthetic import SyntheticSource
from lake.store import replace_partitions
from tests.fakes.alpaca_trading_server import AlpacaTradingServer
from tests.orchestration.plans import decide_with_plan, end_of_day_with_plan
from trading.accounts import PIPELINE_KEY, SubAccount
from trading.brokers.split import owner
from trading.events import EventType
from trading.ledger import Ledger, replay_portfolio

SYMBOLS = ["AAPL", "JPM", "META"]
DECISION_BAR = datetime(2023, 12, 20, 14, 30, tzinfo=UTC)


def _at_eleven(day: int) -> datetime:
    return datetime.combine(datetime(2023, 12, day).date(), time(11, 0), tzinfo=get_calendar().tz)


def _setup(tmp_path: Path) -> tuple[LakeResource, Path, dict[str, float]]:
    lake = tmp_path / "lake"
    daily = SyntheticSource(seed=7).fetch(SYMBOLS, "1d", datetime(2023, 6, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC))
    replace_partitions(lake, "bars", "1d", daily, period="year")
    (tmp_path / "cautious.yaml").write_text(json.dumps({"name": "cautious", "limits": {"max_position_pct": 0.05, "max_sector_pct": 1.0}}))
    (tmp_path / "bold.yaml").write_text(json.dumps({"name": "bold", "limits": {"max_sector_pct": 1.0}}))
    plan = tmp_path / "pipelines.yaml"
    plan.write_text(
        json.dumps(
            {
                "pipelines": [{"id": "cautious", "file": "cautious.yaml", "capital": 0.6}, {"id": "bold", "file": "bold.yaml", "capital": 40_000}],
                "limits": {"max_position_pct": 0.04, "max_sector_pct": 1.0},  # 4 % of the account a symbol, over both books
            }
        )
    )
    closes = {r["symbol"]: r["close"] for r in daily.filter(pl.col("ts") == DECISION_BAR).iter_rows(named=True)}
    return LakeResource(root=str(lake)), plan, closes


def _decide(lake: LakeResource, trading: TradingResource, plan: Path, now: datetime) -> dict[str, Any]:
    return decide_with_plan(lake, trading, plan, DECISION_BAR, now, SYMBOLS)


def test_two_paper_pipelines_share_one_alpaca_account(tmp_path: Path) -> None:
    lake, plan, closes = _setup(tmp_path)
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    with AlpacaTradingServer(prices=closes) as server:  # market orders fill at once at the decision bar's closes
        trading = TradingResource(mode="paper", ledger_url=url, alpaca_api_key="key", alpaca_secret_key="secret", alpaca_trading_url=server.base_url)
        first = _decide(lake, trading, plan, _at_eleven(21))
        assert first["mode"] == "paper" and first["orders_sent"] == 2 * len(SYMBOLS)
        wire = [o["client_order_id"] for o in server.orders.values()]
        assert sorted(owner(c) or "" for c in wire) == ["bold"] * 3 + ["cautious"] * 3, "every order at the broker carries its pipeline"
        assert first["unattributed_positions"] == {}, "what filled in the run is booked in the run"
        for symbol, (qty, _avg) in server.positions.items():
            assert 0 < qty * closes[symbol] <= 0.04 * 100_000, f"{symbol}: the account's cap over both pipelines"
        again = _decide(lake, trading, plan, _at_eleven(21).replace(minute=30))  # the same decisions: nothing sent or booked twice
        assert again["orders_sent"] == 0 and len(server.orders) == 6
        held = {s: q for s, (q, _avg) in server.positions.items()}
        cash = server.cash

    with Ledger(url) as ledger:
        books = {p: replay_portfolio(SubAccount(ledger, p)) for p in ("cautious", "bold")}
        cut = [e.payload for e in ledger.events(types=[EventType.RISK_ASSESSMENT.value]) if "account: " in str(e.payload.get("hard_violations"))]
        fills = [e.payload for e in ledger.events(types=[EventType.FILL.value])]
    assert {p[PIPELINE_KEY] for p in cut} == {"bold"}, "the account cut the bold pipeline, not the cautious one"
    assert len(fills) == 6 and {f[PIPELINE_KEY] for f in fills} == {"cautious", "bold"}, "each fill booked once, in its pipeline's book"
    for symbol in SYMBOLS:
        assert 0 < books["cautious"].positions[symbol] * closes[symbol] <= 0.05 * 60_000, f"{symbol}: sized on the cautious pipeline's $60k"
        assert books["cautious"].positions[symbol] + books["bold"].positions[symbol] == held[symbol], f"{symbol}: the books add up to the account"
    assert abs(books["cautious"].cash + books["bold"].cash - cash) < 1e-6, "each pipeline's P&L from its own fills"


def test_the_end_of_day_flattens_each_paper_pipelines_book_by_its_own_orders(tmp_path: Path) -> None:
    """At the window's end each pipeline closes its own positions (orders under its prefix, fills in its
    book): the account is flat and so is every book; an account-wide close would leave the books holding."""


    lake, plan, closes = _setup(tmp_path)
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    with AlpacaTradingServer(prices=closes) as server:
        trading = TradingResource(mode="paper", ledger_url=url, alpaca_api_key="key", alpaca_secret_key="secret", alpaca_trading_url=server.base_url)
        _decide(lake, trading, plan, _at_eleven(21))
        closing = _at_eleven(21).replace(hour=15, minute=58)  # after the window's end (5 min before the close)
        assert end_of_day_with_plan(lake, trading, plan, closing, SYMBOLS)["flattened_orders"] == 2 * len(SYMBOLS)
        assert server.positions == {}, "the account is flat"
        closes_sent = list(server.orders.values())[-6:]
        assert sorted(owner(o["client_order_id"]) or "" for o in closes_sent) == ["bold"] * 3 + ["cautious"] * 3
        again = _decide(lake, trading, plan, closing.replace(minute=59))  # the next run books the closing fills
        assert again["unattributed_positions"] == {}
    with Ledger(url) as ledger:
        for pipeline_id in ("cautious", "bold"):
            assert not any(replay_portfolio(SubAccount(ledger, pipeline_id)).positions.values()), f"{pipeline_id}'s book is flat"
