"""Reflection memory: a closed position leaves a lesson in the ledger, later decisions on the symbol read
it, never one closed or stamped after their decision bar, and a replay from the response cache asks
no model (the lessons included)."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from tests.fakes.openai_server import OpenAIServer, Reply
from tests.trading.conftest import PARAMS, SMA_CROSS, Market, schema_name
from trading.agents.base import AgentRun
from trading.agents.cache import CacheMode, ResponseCache
from trading.agents.reflection import ReflectionConfig, ReflectionMemory, closed_trades, memory_of, remember
from trading.agents.team import TEAM_PIPELINE
from trading.brokers.simulated import SimConfig, SimulatedBroker
from trading.context import build_contexts
from trading.cost import CostTracker, PriceTable
from trading.events import Event, EventType, MemorySink, ReflectionPayload
from trading.ledger import Ledger, Portfolio
from trading.models import Mode
from trading.pipeline import DecisionPipeline, PipelineConfig
from trading.step import StepReport, trading_step

ROOMY = {"max_open_positions": 20, "max_sector_pct": 1.0, "max_position_pct": 0.05}
SYMBOLS = ["AAPL", "AMZN", "GOOG", "JPM"]


def _team(**configs: dict[str, Any]) -> PipelineConfig:
    raw = json.loads(json.dumps(TEAM_PIPELINE))
    for node in raw["graph"]["nodes"]:
        node.setdefault("config", {}).update(configs.get(node["id"], {}))
    return PipelineConfig.model_validate({**raw, "limits": ROOMY})


def _fill(symbol: str, side: str, qty: float, price: float, ts: datetime, n: int, commission: float = 0.0) -> Event:
    payload = {"fill_id": f"f{n}", "client_order_id": f"c{n}", "symbol": symbol, "side": side, "quantity": qty, "price": price, "commission": commission, "ts": ts.isoformat()}
    return Event(type=EventType.FILL, run_id="r", mode=Mode.SIMULATION, symbol=symbol, as_of=ts, payload=payload, event_id=f"fill-{n}")


def _simulate(bars: pl.DataFrame, config: PipelineConfig, ledger: Ledger, cache: ResponseCache | None = None) -> list[StepReport]:
    """The paper session's loop (trading/session.py), one cycle per bar, each its own run id."""
    broker = SimulatedBroker(SimConfig(), cash=100_000.0)
    decider = DecisionPipeline(config, cache=cache)
    stamps = bars["ts"].unique().sort().to_list()
    lookback = SMA_CROSS.lookback(PARAMS) + 1
    steps = []
    for i, ts in enumerate(stamps):
        if i + 1 < lookback:
            broker.on_bar({r["symbol"]: r for r in bars.filter(pl.col("ts") == ts).iter_rows(named=True)})
            continue
        window = bars.filter((pl.col("ts") <= ts) & (pl.col("ts") >= stamps[max(0, i - lookback - 1)]))
        steps.append(
            trading_step(
                ledger=ledger, broker=broker, decider=decider, strategy=SMA_CROSS, params=PARAMS, bars=window,
                as_of=ts, now=ts, mode=Mode.SIMULATION, run_id=f"cycle-{i}", initial_cash=100_000.0,
            )
        )  # fmt: skip
    return steps


@pytest.fixture(scope="module")
def bars(market: Market) -> pl.DataFrame:
    return market.bars.filter(pl.col("symbol").is_in(SYMBOLS)).sort("ts", "symbol").tail(130 * len(SYMBOLS))


def _reflections(ledger: Ledger) -> list[Event]:
    return list(ledger.events(types=[EventType.REFLECTION.value]))


def test_round_trips_follow_the_portfolios_average_cost_rule() -> None:
    t0 = datetime.fromisoformat("2024-03-01T15:00:00+00:00")
    fills = [
        _fill("AAPL", "buy", 10, 100.0, t0, 1, 1.0),
        _fill("AAPL", "buy", 10, 110.0, t0 + timedelta(days=1), 2, 1.0),  # average 105
        _fill("AAPL", "sell", 5, 120.0, t0 + timedelta(days=2), 3, 0.5),  # reduced
        _fill("AAPL", "sell", 25, 90.0, t0 + timedelta(days=3), 4, 2.5),  # closes 15, opens a short of 10
        _fill("AAPL", "buy", 10, 80.0, t0 + timedelta(days=4), 5, 1.0),  # closes the short
    ]
    long, short = closed_trades(fills)
    assert (long.side, long.quantity, long.entry_price, long.closing_fill) == ("long", 20, 105.0, "fill-4")
    assert long.pnl == pytest.approx((120 - 105) * 5 + (90 - 105) * 15) and long.exit_price == pytest.approx((120 * 5 + 90 * 15) / 20)
    assert long.commission == pytest.approx(1 + 1 + 0.5 + 2.5 * 15 / 25) and long.opened_at == t0 and long.closed_at == t0 + timedelta(days=3)
    assert (short.side, short.quantity, short.entry_price, short.pnl) == ("short", 10, 90.0, pytest.approx(100.0))
    assert short.opened_at == t0 + timedelta(days=3) and short.commission == pytest.approx(2.5 * 10 / 25 + 1.0)
    # Random fills that end flat: the round trips' P&L is the portfolio's realized P&L, to the cent.
    rng = random.Random(3)
    for _ in range(20):
        events, position, n = [], 0, 0
        for _ in range(rng.randint(2, 12)):
            qty = rng.choice([-3, -2, -1, 1, 2, 3]) * rng.randint(1, 4)
            n += 1
            events.append(_fill("X", "buy" if qty > 0 else "sell", abs(qty), rng.uniform(50, 150), t0 + timedelta(hours=n), n))
            position += qty
        if position:
            n += 1
            events.append(_fill("X", "sell" if position > 0 else "buy", abs(position), rng.uniform(50, 150), t0 + timedelta(hours=n), n))
        portfolio = Portfolio()
        for e in events:
            portfolio.apply_payload("fill", e.payload)
        assert sum(t.pnl for t in closed_trades(events)) == pytest.approx(portfolio.realized_pnl, abs=1e-6)


def test_a_closed_position_leaves_a_reflection_the_next_decision_on_the_symbol_reads(bars: pl.DataFrame, tmp_path: Path) -> None:
    with Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}") as ledger:
        steps = _simulate(bars, _team(), ledger)
        reflections = _reflections(ledger)
        assert reflections, "no position closed in the run"
        fills = list(ledger.events_with_seq(types=[EventType.FILL.value]))
        for symbol in {e.symbol for e in reflections}:
            mine = sorted((e for e in reflections if e.symbol == symbol), key=lambda e: e.typed().closed_at)  # type: ignore[attr-defined]
            seq_of = {e.event_id: seq for seq, e in fills}
            last_close = max(seq_of[e.payload["closing_fill"]] for e in mine)
            portfolio = Portfolio()  # the ledger's own rule over the symbol's fills up to its last close
            for seq, e in fills:
                if e.symbol == symbol and seq <= last_close:
                    portfolio.apply_payload("fill", e.payload)
            assert sum(e.payload["pnl"] for e in mine) == pytest.approx(portfolio.realized_pnl, abs=1e-6)
            assert all(e.typed().by == "rules" and e.payload["lesson"] for e in mine)  # type: ignore[attr-defined]

        first = min(reflections, key=lambda e: e.as_of)  # type: ignore[arg-type,return-value]
        stamp = first.as_of
        p = first.typed()
        assert stamp is not None and isinstance(p, ReflectionPayload) and p.closed_at <= stamp
        assert p.decision_event_id and p.rationale.startswith("trader: "), "linked to the decision that opened it"
        # Written before the contexts of the step at its bar: that decision and the later ones see it (until
        # three newer ones on the symbol push it out of the last 3); none before.
        newer = [e.as_of for e in reflections if e.symbol == first.symbol and e.event_id != first.event_id and e.as_of is not None]
        seen = 0
        for step in steps:
            ctx = next((c for c in step.contexts if c.symbol == first.symbol), None)
            if ctx is None:
                continue
            lessons = [r["lesson"] for r in ctx.reflections]
            in_window = step.as_of >= stamp and sum(1 for t in newer if t <= step.as_of) < 3
            assert (p.lesson in lessons) == in_window, step.as_of
            seen += in_window
            if in_window:
                note = ReflectionMemory("memory", ReflectionConfig()).research(ctx, {}, _run())["memory"]
                assert note["reflections"] >= 1 and any(x["lesson"] == p.lesson for x in note["lessons"])
        assert seen, "a decision on the symbol read the reflection"
        later = [d for s in steps if s.as_of >= stamp for d in s.result.decisions if d.symbol == first.symbol and d.verdict.value == "EXECUTE"]
        assert all("memory:" in d.rationale for d in later), [d.rationale for d in later]
        # A rerun of the same bars on the same ledger writes no second reflection.
        before = len(reflections)
        memory = memory_of(DecisionPipeline(_team()))
        assert memory is not None
        remember(ledger, memory, as_of=steps[-1].as_of, run_id="again", mode=Mode.SIMULATION, strategy="sma_cross", prices=PriceTable(), budget=_team().budget)
        assert len(_reflections(ledger)) == before


def _run() -> AgentRun:
    return AgentRun(run_id="r", mode=Mode.VALIDATION, sink=MemorySink(), costs=CostTracker(PriceTable()))


def test_a_reflection_stamped_after_the_decision_time_never_reaches_it(market: Market, tmp_path: Path) -> None:
    as_of = market.as_of
    signalled = [c for c in market.contexts() if c.wants == "BUY"]
    symbol = signalled[0].symbol
    with Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}") as ledger:
        ledger.append_many([_fill(symbol, "buy", 10, 100.0, as_of - timedelta(days=9), 1), _fill(symbol, "sell", 10, 95.0, as_of - timedelta(days=2), 2)])
        # Two forged reflections: a close known before the bar but written after it (stamped 1 s late), and a later close.
        late = {"side": "long", "quantity": 1.0, "entry_price": 1.0, "exit_price": 2.0, "pnl": 1.0, "return_pct": 1.0, "closing_fill": "x"}
        forged = [
            Event(type=EventType.REFLECTION, run_id="late", mode=Mode.SIMULATION, symbol=symbol, as_of=as_of + timedelta(seconds=1), event_id="late-stamp",
                  payload={**late, "symbol": symbol, "closed_at": (as_of - timedelta(days=1)).isoformat(), "lesson": "LATE STAMP"}),
            Event(type=EventType.REFLECTION, run_id="late", mode=Mode.SIMULATION, symbol=symbol, as_of=as_of - timedelta(days=1), event_id="late-close",
                  payload={**late, "symbol": symbol, "closed_at": (as_of + timedelta(seconds=1)).isoformat(), "lesson": "LATE CLOSE"}),
        ]  # fmt: skip
        ledger.append_many(forged)
        recalled = remember(ledger, ReflectionMemory("memory", ReflectionConfig()), as_of=as_of, run_id="c", mode=Mode.SIMULATION, strategy="sma_cross", prices=PriceTable(), budget=_team().budget)
    assert recalled.written == 1
    [mine] = recalled.reflections[symbol]
    assert mine["pnl"] == pytest.approx(-50.0) and "Lost" in mine["lesson"]
    # build_contexts drops them even when a caller hands them over; the node drops them from a forged context.
    entries = [mine, {**mine, "stamped_at": as_of + timedelta(seconds=1), "lesson": "LATE STAMP"}, {**mine, "closed_at": as_of + timedelta(seconds=1), "lesson": "LATE CLOSE"}]
    contexts, _ = build_contexts(market.bars, SMA_CROSS, PARAMS, as_of, market.snapshot, None, {symbol: entries})
    ctx = next(c for c in contexts if c.symbol == symbol)
    assert [r["lesson"] for r in ctx.reflections] == [mine["lesson"]]
    forged_ctx = ctx.model_copy(update={"reflections": entries})
    note = ReflectionMemory("memory", ReflectionConfig()).research(forged_ctx, {}, _run())["memory"]
    assert [x["lesson"] for x in note["lessons"]] == [mine["lesson"]]
    # Nor the model's prompt: the trader asks a model; its prompt has the lesson, not the late ones.
    with OpenAIServer(responder=_answers) as server:
        llm = {"model": "fake-small", "base_url": server.base_url, "max_retries": 0, "timeout_s": 5.0}
        DecisionPipeline(_team(trader={"llm": llm})).run([ctx], market.snapshot, as_of=as_of)
        prompts = [json.dumps(b["messages"]) for b in server.requests if schema_name(b) == "DecisionOut"]
    assert len(prompts) == 1 and mine["lesson"][:40] in prompts[0]
    assert "LATE" not in prompts[0]


def _answers(body: dict[str, Any]) -> Reply:
    name = schema_name(body)
    payload = json.loads(next(m["content"] for m in body["messages"] if m["role"] == "user"))
    if name == "LessonOut":
        trade = payload["trade"]
        answer: dict[str, Any] = {"lesson": f"model: {trade['symbol']} {trade['side']} returned {trade['return_pct']:+.4f}"}
    elif name == "DecisionOut":
        answer = {"approve": True, "rationale": "model approves"}
    else:
        raise AssertionError(f"unexpected schema {name}")
    return Reply(content=json.dumps(answer), prompt_tokens=200, completion_tokens=20)


def test_a_replay_from_the_cache_reproduces_the_cycles_and_lessons_with_no_model_call(bars: pl.DataFrame, tmp_path: Path) -> None:
    def outcome(steps: list[StepReport], ledger: Ledger) -> tuple[list[Any], list[Any]]:
        decided = [(d.symbol, d.decided_at, d.verdict, d.side, d.quantity, d.rationale) for s in steps for d in s.result.decisions]
        # The decision events' own ids are random (uuid4); everything else must be the same.
        reflected = [(e.event_id, e.as_of, {k: v for k, v in e.payload.items() if k != "decision_event_id"}) for e in _reflections(ledger)]
        return decided, reflected

    folder = tmp_path / "cache"
    with OpenAIServer(responder=_answers) as server:
        llm = {"model": "fake-small", "base_url": server.base_url, "max_retries": 0, "timeout_s": 5.0}
        config = _team(trader={"llm": llm}, memory={"llm": llm})
        with Ledger(f"sqlite:///{tmp_path / 'recorded.sqlite'}") as ledger:
            recorded = outcome(_simulate(bars, config, ledger, ResponseCache(folder, CacheMode.RECORD)), ledger)
            costs = [e.payload for e in ledger.events(types=[EventType.COST.value]) if e.payload.get("stage") == "reflection"]
        asked = [schema_name(b) for b in server.requests]
    assert "LessonOut" in asked and "DecisionOut" in asked
    lessons = [p for _, _, p in recorded[1]]
    assert lessons and all(p["by"] == "model" and p["lesson"].startswith("model: ") for p in lessons)
    assert costs and sum(c["model_calls"] for c in costs) == asked.count("LessonOut"), "the lessons' calls are in the day's spend"

    with OpenAIServer(responder=None) as server:  # would answer HTTP 400 to anything
        llm = {"model": "fake-small", "base_url": server.base_url, "max_retries": 0, "timeout_s": 5.0}
        config = _team(trader={"llm": llm}, memory={"llm": llm})
        with Ledger(f"sqlite:///{tmp_path / 'replayed.sqlite'}") as ledger:
            replayed = outcome(_simulate(bars, config, ledger, ResponseCache(folder, CacheMode.REPLAY)), ledger)
            fallbacks = list(ledger.events(types=[EventType.FALLBACK.value]))
        assert server.requests == [], "a replay asks no model"
    assert not fallbacks, "every answer came from the cache"
    assert replayed == recorded


def test_a_position_opened_before_a_compaction_closes_with_its_real_entry(tmp_path: Path) -> None:
    """The opening fill left the live table (archived, compacted): a new process reads it from the archive,
    so the close is a round trip with its entry, not a new short. Closes older than max_age_days are history."""
    from trading.ledger.archive import archive_events
    from trading.ledger.compaction import compact_ledger, compacted

    t0 = datetime.fromisoformat("2026-01-05T15:00:00+00:00")
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    old = [
        _fill("MSFT", "buy", 5, 200.0, t0 - timedelta(days=60), 1),
        _fill("MSFT", "sell", 5, 210.0, t0 - timedelta(days=50), 2),  # closed long ago: no reflection now
        _fill("AAPL", "buy", 10, 100.0, t0, 3, 1.0),
        *[Event(type=EventType.DEPOSIT, run_id="r", mode=Mode.PAPER, as_of=t0 + timedelta(hours=i), payload={"amount": 1.0}, event_id=f"d{i}") for i in range(3)],
    ]
    old = [e.model_copy(update={"recorded_at": (e.as_of or t0) + timedelta(seconds=3)}) for e in old]
    with Ledger(url) as ledger:
        ledger.append_many(old)
        archive_events(ledger, tmp_path / "archive", t0 + timedelta(days=1), max_events=2)  # the newest event always stays
        assert compact_ledger(ledger, tmp_path / "archive", t0 + timedelta(days=1)).removed >= 3
        assert compacted(ledger).up_to_seq >= 3 and not list(ledger.events(types=[EventType.FILL.value]))
        ledger.append_many([_fill("AAPL", "sell", 10, 110.0, t0 + timedelta(days=5), 4, 1.0)])
    with Ledger(url) as ledger:  # a new Ledger object: nothing kept from before
        got = remember(ledger, ReflectionMemory("memory", ReflectionConfig()), as_of=t0 + timedelta(days=5), run_id="c", mode=Mode.PAPER, strategy="sma_cross", prices=PriceTable(), budget=_team().budget)
        [event] = _reflections(ledger)
    p = event.typed()
    assert isinstance(p, ReflectionPayload) and got.written == 1
    assert (p.symbol, p.side, p.entry_price, p.exit_price, p.pnl, p.commission, p.opened_at) == ("AAPL", "long", 100.0, 110.0, 100.0, 2.0, t0)


def test_a_paper_session_with_the_team_file_writes_reflections_through_dagster(tmp_path: Path) -> None:
    """The path users run: the paper_session asset with the built-in team file (its memory node) leaves a
    reflection per closed round trip in the session's ledger, each matching the ledger's realized P&L."""
    import dagster as dg

    from assets import trading
    from assets.resources import LakeResource, TradingResource
    from lake.sources.synthetic import SyntheticSource
    from lake.store import replace_partitions

    team_file = Path(__file__).resolve().parents[2] / "trading" / "graph" / "pipelines" / "team.yaml"
    symbols = ["AAPL", "MSFT"]
    daily = SyntheticSource(seed=7).fetch(symbols, "1d", datetime.fromisoformat("2023-01-01T00:00:00+00:00"), datetime.fromisoformat("2024-01-01T00:00:00+00:00"))
    replace_partitions(tmp_path / "lake", "bars", "1d", daily, period="year")
    config = {"strategy": "sma_cross", "params": {"fast": 5, "slow": 20}, "symbols": symbols, "start": "2023-07-01", "end": "2024-01-01"}
    resource = TradingResource(ledger_url=f"sqlite:///{tmp_path / 'trading.sqlite'}", pipeline_file=str(team_file))
    result = dg.materialize([trading.paper_session], resources={"lake": LakeResource(root=str(tmp_path / "lake")), "trading": resource}, run_config={"ops": {"paper_session": {"config": config}}})
    assert result.success
    [event] = result.get_asset_materialization_events()
    with Ledger(f"sqlite:///{event.materialization.metadata['ledger'].value}") as ledger:
        reflections = _reflections(ledger)
        fills = list(ledger.events(types=[EventType.FILL.value]))
    assert reflections, "the session closed no position"
    trades = {t.closing_fill: t for t in closed_trades(fills)}
    assert {e.payload["closing_fill"] for e in reflections} == set(trades), "one reflection per close"
    for e in reflections:
        assert e.payload["pnl"] == pytest.approx(round(trades[e.payload["closing_fill"]].pnl, 6)) and e.as_of is not None
        assert datetime.fromisoformat(e.payload["closed_at"]) <= e.as_of
