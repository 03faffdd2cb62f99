"""A strategy's own exit on a paper account split between two pipelines, through decide_job (the path
users run) with alpaca-py's client against the loopback Alpaca server.

Both pipelines buy AAPL with a stop and two targets; the trade manager rests each one's exits under its
prefix. On the next bar the strategy's signal turns off in pipeline `a` (`b` is paused: the decide run
uses one strategy for every pipeline, so a pipeline that does not decide is the one whose strategy does
not exit). `a`'s resting exits are canceled first (they reserve its shares: the split refuses a sell
its open orders already cover), its sell goes out under its prefix for exactly its book's shares, and
`b`'s exits rest untouched: after the fill `a`'s book is flat, `b`'s holds its shares, and the account
holds nothing no book accounts for."""

from __future__ import annotations

import json
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from assets.clock import NOW_TAG
from assets.resources import LakeResource, TradingResource
from lake.calendar import get_calendar
from lake.sources.synthetic import SyntheticSource
from lake.store import replace_partitions
from strategies.base import Strategy, StrategyParams, no_shorts
from tests.fakes.alpaca_trading_server import AlpacaTradingServer
from trading.accounts import PIPELINE_KEY, SubAccount
from trading.brokers.alpaca import AlpacaBroker
from trading.brokers.base import client_order_id
from trading.brokers.split import owner, tagged
from trading.events import EventType
from trading.ledger import Ledger, replay_portfolio
from trading.models import Mode, Side
from trading.trade_manager import REST, T1, TradeManager, leg_id

ENTRY_BAR = datetime(2023, 12, 20, 14, 30, tzinfo=UTC)  # both pipelines buy on this daily bar
EXIT_BAR = ENTRY_BAR + timedelta(days=1)  # the strategy's signal turns off here
PIPELINES = ("a", "b")


class EnterThenExitParams(StrategyParams):
    pass


def _enter_then_exit(bars: pl.DataFrame, p: EnterThenExitParams) -> pl.DataFrame:
    """Long before EXIT_BAR with a stop 10 % under the close and targets 10 % and 20 % over it; out from EXIT_BAR."""
    out = pl.col("ts") >= EXIT_BAR
    return bars.with_columns(
        (~out).alias("entry_long"), out.alias("exit_long"), *no_shorts(), pl.lit(0.1).alias("size"),
        *((pl.col("close") * k).round(2).alias(c) for c, k in (("stop", 0.9), ("target1", 1.1), ("target2", 1.2))),
    )  # fmt: skip


ENTER_THEN_EXIT = Strategy(name="enter_then_exit", params_model=EnterThenExitParams, compute=_enter_then_exit, lookback=lambda p: 1)


def _at_eleven(day: int) -> datetime:
    return datetime.combine(datetime(2023, 12, day).date(), time(11, 0), tzinfo=get_calendar().tz)


def _plan(folder: Path, *, b_paused: bool) -> Path:
    plan = folder / ("plan_b_paused.yaml" if b_paused else "plan.yaml")
    slots = [{"id": "a", "capital": 0.6}, {"id": "b", "capital": 0.4, "paused": b_paused}]  # books of different sizes
    plan.write_text(json.dumps({"pipelines": slots}))
    return plan


def _decide(lake: LakeResource, trading: TradingResource, plan: Path, as_of: datetime, now: datetime) -> dict[str, Any]:
    from orchestration.definitions import defs

    config = {"strategy": f"{__name__}:ENTER_THEN_EXIT", "symbols": ["AAPL"], "as_of": as_of.isoformat(), "pipelines": str(plan)}
    run = defs.resolve_job_def("decide_job").execute_in_process(
        run_config={"ops": {"decision_cycle": {"config": config}}}, resources={"lake": lake, "trading": trading}, tags={NOW_TAG: now.isoformat()}
    )
    assert run.success
    [mat] = run.asset_materializations_for_node("decision_cycle")
    return {k: v.value for k, v in mat.metadata.items()}


def _orders(server: AlpacaTradingServer) -> dict[str, tuple[str, str, float, float, float | None, float | None]]:
    """client id -> (status, side, quantity, filled, limit, stop) of every order at the broker (an OCO's stop leg under its parent's id + '/stop')."""
    with server._lock:
        parents = {leg["id"]: o["client_order_id"] for o in server.orders.values() for leg in o.get("legs") or []}
        return {
            (f"{parents[o['id']]}/stop" if o["id"] in parents else o["client_order_id"]): (
                o["status"], o["side"], float(o["qty"]), float(o["filled_qty"]),
                None if o.get("limit_price") is None else float(o["limit_price"]), None if o.get("stop_price") is None else float(o["stop_price"]),
            )  # fmt: skip
            for o in server.orders.values()
        }


def _books(ledger: Ledger) -> dict[str, float]:
    return {p: replay_portfolio(SubAccount(ledger, p)).positions.get("AAPL", 0.0) for p in PIPELINES}


def test_a_strategy_exit_in_one_pipeline_releases_only_its_own_resting_exits(tmp_path: Path) -> None:
    lake_root = tmp_path / "lake"
    daily = SyntheticSource(seed=7).fetch(["AAPL"], "1d", datetime(2023, 6, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC))
    replace_partitions(lake_root, "bars", "1d", daily, period="year")
    lake = LakeResource(root=str(lake_root))
    close = daily.filter(pl.col("ts") == ENTRY_BAR)["close"].item()
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    entry = client_order_id("enter_then_exit", "AAPL", ENTRY_BAR, Side.BUY)
    legs = {p: [tagged(p, leg_id(entry, leg)) for leg in (T1, REST)] for p in PIPELINES}

    with AlpacaTradingServer(prices={"AAPL": close}) as server:  # market orders fill at once, at the entry bar's close
        trading = TradingResource(mode="paper", ledger_url=url, alpaca_api_key="key", alpaca_secret_key="secret", alpaca_trading_url=server.base_url)
        first = _decide(lake, trading, _plan(tmp_path, b_paused=False), ENTRY_BAR, _at_eleven(21))
        assert first["orders_sent"] == 2 and first["unattributed_positions"] == {}
        with Ledger(url) as ledger:
            held = _books(ledger)
            # the polling sensor's pass: the exits rest whatever placed them (the run did; none is sent twice)
            TradeManager(AlpacaBroker("key", "secret", url_override=server.base_url), ledger, run_id="sensor", mode=Mode.PAPER, clock=lambda: _at_eleven(21)).sync_all()
        assert 0 < held["b"] < held["a"] and server.positions["AAPL"][0] == sum(held.values())
        resting = _orders(server)
        for p in PIPELINES:  # the trade manager's exits rest under each pipeline's prefix, covering its shares
            for cid in legs[p]:
                assert resting[cid][0] == "new" and resting[f"{cid}/stop"][0] == "new", f"{cid}: resting"
            assert sum(resting[c][2] for c in legs[p]) == held[p], f"{p}'s exits cover its own shares"
        b_before = {k: v for k, v in resting.items() if owner(k) == "b"}

        second = _decide(lake, trading, _plan(tmp_path, b_paused=True), EXIT_BAR, _at_eleven(22))
        assert second["orders_sent"] == 1 and second["unattributed_positions"] == {}
        after = _orders(server)
        for cid in legs["a"]:  # a's exits canceled before its sell (they held its shares)
            assert after[cid][0] == "canceled" and after[f"{cid}/stop"][0] == "canceled", f"{cid}: canceled"
        [sell] = [(k, v) for k, v in after.items() if k not in resting]
        assert owner(sell[0]) == "a" and sell[1][:4] == ("filled", "sell", held["a"], held["a"]), "a's sell, under its prefix, for exactly its shares"
        assert {k: v for k, v in after.items() if owner(k) == "b"} == b_before, "b's exits rest untouched"
        assert set(server.orders_created_by_client_id.values()) == {1}, "nothing sent twice"
        assert server.positions["AAPL"][0] == held["b"]

    with Ledger(url) as ledger:
        assert _books(ledger) == {"a": 0.0, "b": held["b"]}, "a's book is flat, b's holds its shares"
        closed = [e.payload for e in ledger.events(types=[EventType.CANCEL.value]) if e.payload.get("bracket_closed")]
        rejected = list(ledger.events(types=[EventType.REJECTION.value]))
    assert [(c[PIPELINE_KEY], c["bracket_closed"], c["reason"]) for c in closed] == [("a", entry, "released: strategy exit")], "only a's bracket released"
    assert rejected == [], "no order refused"
