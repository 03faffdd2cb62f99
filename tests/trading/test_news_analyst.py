"""The team's news/sentiment analyst: headlines reach it point in time only (never one stamped after the
decision time, whichever path it comes by), and its tone moves the bull/bear debate and the plan."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from lake.calendar import EXCHANGE_TZ
from lake.news.schema import empty_news
from lake.news.store import write_news_day
from lake.store import replace_partitions
from tests.fakes.openai_server import OpenAIServer, auto_reply
from tests.trading.conftest import PARAMS, SMA_CROSS, Market, schema_name
from trading.agents.base import AgentRun
from trading.agents.news_analyst import NewsAnalyst, NewsConfig, headline_score
from trading.agents.team import TEAM_PIPELINE, Researcher
from trading.context import SymbolContext, build_contexts
from trading.cost import CostTracker, PriceTable
from trading.cycle import headlines_for, run_decision_cycle
from trading.events import MemorySink
from trading.ledger import Ledger
from trading.models import Mode
from trading.pipeline import DecisionPipeline, PipelineConfig

GOOD = "Company beats estimates, shares surge to record on strong growth"
BAD = "Shares plunge after weak quarter, downgrade and fraud probe"
ROOMY = {"max_open_positions": 20, "max_sector_pct": 1.0, "max_position_pct": 0.05}


def _headlines(as_of: datetime, symbol: str, on_time: str, late: str) -> dict[str, list[dict[str, Any]]]:
    return {
        symbol: [
            {"created_at": as_of - timedelta(hours=2), "headline": on_time, "source": "wire"},
            {"created_at": as_of + timedelta(seconds=1), "headline": late, "source": "wire"},
        ]
    }


def _team_config(**news: Any) -> PipelineConfig:
    raw = json.loads(json.dumps(TEAM_PIPELINE))
    for node in raw["graph"]["nodes"]:
        if node["id"] == "news":
            node["config"] = news
    return PipelineConfig.model_validate({**raw, "limits": ROOMY})


def _run() -> AgentRun:
    return AgentRun(run_id="r", mode=Mode.VALIDATION, sink=MemorySink(), costs=CostTracker(PriceTable()))


def _signalled(market: Market, headlines: dict[str, list[dict[str, Any]]] | None) -> list[SymbolContext]:
    contexts, _ = build_contexts(market.bars, SMA_CROSS, PARAMS, market.as_of, market.snapshot, headlines)
    return [c for c in contexts if c.wants == "BUY"]


def test_the_lexicon_scores_tone() -> None:
    assert headline_score(GOOD) == 1.0
    assert headline_score(BAD) == -1.0
    assert headline_score("Company holds annual meeting") == 0.0


def test_a_headline_one_second_after_the_decision_time_never_reaches_the_context(market: Market) -> None:
    symbol = _signalled(market, None)[0].symbol
    ctx = next(c for c in _signalled(market, _headlines(market.as_of, symbol, GOOD, BAD)) if c.symbol == symbol)
    assert [h["headline"] for h in ctx.headlines] == [GOOD]
    assert ctx.prompt_view()["headlines"][0]["headline"] == GOOD


def test_the_node_itself_ignores_a_late_headline_put_in_its_context(market: Market) -> None:
    """Defence in depth: even a caller that skipped build_contexts' filter cannot feed the future."""
    ctx = _signalled(market, None)[0]
    forged = ctx.model_copy(update={"headlines": _headlines(ctx.as_of, ctx.symbol, GOOD, BAD)[ctx.symbol]})
    run = _run()
    note = NewsAnalyst("news", NewsConfig()).research(forged, {}, run)["news"]
    assert note["headlines"] == 1 and note["score"] == 1.0 and note["stance"] == "bullish"


def test_the_news_lake_read_is_point_in_time(market: Market, tmp_path: Path) -> None:
    as_of = market.as_of
    rows = [
        {"id": "1", "symbol": "AAPL", "created_at": as_of - timedelta(hours=1), "headline": GOOD, "source": "wire"},
        {"id": "2", "symbol": "AAPL", "created_at": as_of + timedelta(seconds=1), "headline": BAD, "source": "wire"},
        {"id": "3", "symbol": "AAPL", "created_at": as_of - timedelta(days=5), "headline": BAD, "source": "wire"},
    ]
    news = pl.DataFrame(rows).with_columns(pl.col("created_at").dt.cast_time_unit("us"))
    day_of = pl.col("created_at").dt.convert_time_zone(EXCHANGE_TZ).dt.date()  # partitions are session days
    for day in news.select(day_of.unique())["created_at"].to_list():
        write_news_day(tmp_path, day, news.filter(day_of == day), empty_news())
    got = headlines_for(tmp_path, _team_config(), ["AAPL", "MSFT"], as_of)
    assert got is not None and [h["headline"] for h in got["AAPL"]] == [GOOD]  # not the late one, not the 5-day-old one
    assert headlines_for(tmp_path, PipelineConfig(), ["AAPL"], as_of) is None, "no news node: the lake is not read"


def test_the_model_never_sees_a_late_headline(market: Market) -> None:
    symbol = _signalled(market, None)[0].symbol
    contexts = [c for c in _signalled(market, _headlines(market.as_of, symbol, GOOD, BAD)) if c.symbol == symbol]
    forged = [c.model_copy(update={"headlines": _headlines(c.as_of, c.symbol, GOOD, BAD)[c.symbol]}) for c in contexts]
    with OpenAIServer(responder=auto_reply) as server:
        llm = {"model": "fake-small", "base_url": server.base_url, "max_retries": 0, "timeout_s": 5.0}
        DecisionPipeline(_team_config(llm=llm)).run(forged, market.snapshot, as_of=market.as_of)
        news_calls = [b for b in server.requests if schema_name(b) == "ReportOut"]
    assert len(news_calls) == 1
    text = json.dumps(news_calls[0]["messages"])
    assert GOOD in text and BAD not in text


def test_the_news_tone_moves_the_debate_and_the_plan(market: Market) -> None:
    base = _signalled(market, None)
    run = _run()
    technical = {"technical": {"score": 0.2, "summary": "t"}}
    bull = Researcher("bull", "bull", 1)
    conviction: dict[str, float] = {}
    for tone, headline in (("none", None), ("good", GOOD), ("bad", BAD)):
        ctx = base[0] if headline is None else base[0].model_copy(update={"headlines": [{"created_at": market.as_of, "headline": headline}]})
        notes = {**technical, **NewsAnalyst("news", NewsConfig()).research(ctx, technical, run)}
        conviction[tone] = bull.research(ctx, notes, run)["debate"]["turns"][0]["conviction"]
    assert conviction["bad"] < conviction["none"] < conviction["good"]

    # Through the whole team graph: the debate balance the trader decides on follows the news.
    def balances(headline: str | None) -> dict[str, float]:
        hl = None if headline is None else {c.symbol: [{"created_at": market.as_of, "headline": headline}] for c in base}
        result = DecisionPipeline(_team_config()).run(_signalled(market, hl), market.snapshot, as_of=market.as_of)
        found = {d.symbol: re.search(r"debate balance ([+-][0-9.]+)", d.rationale) for d in result.decisions}
        return {s: float(m.group(1)) for s, m in found.items() if m}

    quiet, good, bad = balances(None), balances(GOOD), balances(BAD)
    assert quiet and set(quiet) == set(bad)
    assert all(bad[s] < quiet[s] for s in quiet), (bad, quiet)
    assert all(good[s] >= quiet[s] for s in quiet), (good, quiet)


def test_a_decision_cycle_gives_the_team_the_lake_headlines_up_to_the_decision_bar(market: Market, tmp_path: Path) -> None:
    """The cycle's path (lake -> cycle -> step -> contexts): on-time headlines arrive, a late one does not."""
    lake = tmp_path / "lake"
    replace_partitions(lake, "bars", "1d", market.bars, period="year")
    symbol = _signalled(market, None)[0].symbol
    as_of = market.as_of
    rows = [
        {"id": "1", "symbol": symbol, "created_at": as_of - timedelta(hours=1), "headline": GOOD, "source": "wire"},
        {"id": "2", "symbol": symbol, "created_at": as_of + timedelta(seconds=1), "headline": BAD, "source": "wire"},
    ]
    news = pl.DataFrame(rows).with_columns(pl.col("created_at").dt.cast_time_unit("us"))
    day_of = pl.col("created_at").dt.convert_time_zone(EXCHANGE_TZ).dt.date()
    for day in news.select(day_of.unique())["created_at"].to_list():
        write_news_day(lake, day, news.filter(day_of == day), empty_news())
    symbols = sorted(market.bars["symbol"].unique().to_list())
    with Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}") as ledger:
        report = run_decision_cycle(
            lake_root=lake, ledger=ledger, strategy=SMA_CROSS, params=PARAMS, symbols=symbols, timeframe="1d",
            pipeline=_team_config(), as_of=as_of, now=as_of + timedelta(days=4),
        )
    assert report.step is not None
    got = {c.symbol: [h["headline"] for h in c.headlines] for c in report.step.contexts}
    assert got[symbol] == [GOOD]
    assert all(not v for s, v in got.items() if s != symbol)


def test_a_paper_session_gives_the_news_node_the_lake_headlines_up_to_each_bar(tmp_path: Path) -> None:
    """The path users run: the paper_session asset with the team file over a lake with news (dg.materialize).
    The news node (asked through the loopback model) reads the headlines before each bar; one stamped 1 s
    after a bar reaches the next bar's decision, never that bar's."""
    import dagster as dg

    from assets import trading
    from assets.resources import LakeResource, TradingResource
    from lake.sources.synthetic import SyntheticSource

    lake = tmp_path / "lake"
    symbols = ["AAPL", "MSFT"]
    daily = SyntheticSource(seed=7).fetch(symbols, "1d", datetime.fromisoformat("2023-09-01T00:00:00+00:00"), datetime.fromisoformat("2023-11-01T00:00:00+00:00"))
    replace_partitions(lake, "bars", "1d", daily, period="year")
    stamps = sorted(daily.filter(pl.col("ts") >= datetime.fromisoformat("2023-10-01T00:00:00+00:00"))["ts"].unique().to_list())
    bar, following = stamps[10], stamps[11]
    rows = [
        {"id": "1", "symbol": "AAPL", "created_at": bar - timedelta(hours=1), "headline": GOOD, "source": "wire"},
        {"id": "2", "symbol": "AAPL", "created_at": bar + timedelta(seconds=1), "headline": BAD, "source": "wire"},
    ]
    news = pl.DataFrame(rows).with_columns(pl.col("created_at").dt.cast_time_unit("us"))
    day_of = pl.col("created_at").dt.convert_time_zone(EXCHANGE_TZ).dt.date()
    for day in news.select(day_of.unique())["created_at"].to_list():
        write_news_day(lake, day, news.filter(day_of == day), empty_news())
    with OpenAIServer(responder=auto_reply) as server:
        team = json.loads(json.dumps(TEAM_PIPELINE))
        for node in team["graph"]["nodes"]:
            if node["id"] == "news":
                node["config"] = {"llm": {"model": "fake-small", "base_url": server.base_url, "max_retries": 0, "timeout_s": 5.0}}
        team_file = tmp_path / "team.yaml"
        team_file.write_text(json.dumps({**team, "limits": ROOMY}))  # JSON is YAML
        config = {"strategy": "tests.trading.always_long:ALWAYS_LONG", "symbols": symbols, "start": "2023-10-01", "end": "2023-11-01", "reject_prob": 1.0}
        # (the broker rejects every order: the account stays flat, so always_long signals at every bar)
        resource = TradingResource(ledger_url=f"sqlite:///{tmp_path / 'trading.sqlite'}", pipeline_file=str(team_file))
        result = dg.materialize(
            [trading.paper_session], resources={"lake": LakeResource(root=str(lake)), "trading": resource}, run_config={"ops": {"paper_session": {"config": config}}}
        )
        asked = [json.loads(next(m["content"] for m in b["messages"] if m["role"] == "user")) for b in server.requests if schema_name(b) == "ReportOut"]
    assert result.success
    cited = {(p["symbol"], p["as_of"]): [h["headline"] for h in p["headlines"]] for p in asked}
    assert len(asked) == len(cited), "one news call per symbol and bar"
    assert cited[("AAPL", bar.isoformat())] == [GOOD], "the bar's decision reads the headline before it, not the one after"
    assert cited[("AAPL", following.isoformat())] == [GOOD, BAD], "the next bar's decision reads both"
    assert all(h["created_at"] <= p["as_of"] for p in asked for h in p["headlines"])
    assert not any(s == "MSFT" for s, _ in cited), "no headlines for MSFT: no model call"
