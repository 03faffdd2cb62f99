"""A model node declares the other timeframes it reads (`frames` in its settings, like trend_filter's):
the cycle reads them from the lake point in time, the node's prompt carries exactly its frames' bars
(none closed after the decision bar's close), and `quantlake estimate` counts their text."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from lake.store import replace_partitions
from tests.fakes.openai_server import OpenAIServer
from tests.trading.always_long import ALWAYS_LONG
from tests.trading.conftest import good_answers
from tests.trading.test_multi_timeframe import MONDAY, TUESDAY, minutes
from trading.context import build_contexts, frames_from, frames_prompt_chars
from trading.cost import estimate_tokens
from trading.cycle import run_decision_cycle
from trading.estimate import PROMPT_CHARS_WITHOUT_HISTORY, pipeline_estimate
from trading.ledger import Ledger
from trading.models import PortfolioSnapshot
from trading.pipeline import PipelineConfig

WEDNESDAY = "2026-11-25"  # in the lake, after the decision: must never reach a prompt
FRAMES = {"1h": 5, "1d": 2}


def _pipeline(llm: dict[str, Any], trend: dict[str, Any] | None = None) -> PipelineConfig:
    nodes = [{"id": "analyst", "type": "llm_analyst", "config": llm}, {"id": "hard_limits", "type": "hard_limits", "when": "trade"}]
    if trend is not None:  # another node reading more of a timeframe: the context has more bars than the model node asked for
        nodes.append({"id": "trend", "type": "trend_filter", "when": "approved", "config": trend})
    return PipelineConfig.model_validate({"graph": {"nodes": nodes}, "checkpoint": "memory", "limits": {"max_sector_pct": 1.0}})


def _lake(tmp_path: Path) -> tuple[Path, datetime]:
    """Minutes and daily bars of Monday to Wednesday; the decision bar is Tuesday's daily bar."""
    lake = tmp_path / "lake"
    ticks = minutes(MONDAY, TUESDAY, WEDNESDAY)
    replace_partitions(lake, "bars", "1m", ticks, period="date")
    daily = frames_from(ticks, ["1d"])["1d"]
    replace_partitions(lake, "bars", "1d", daily, period="year")
    return lake, daily["ts"].sort()[1]


def test_a_model_node_gets_its_hourly_and_daily_frames_point_in_time(tmp_path: Path) -> None:
    lake, as_of = _lake(tmp_path)
    tuesday_close = datetime.fromisoformat(f"{TUESDAY}T21:00:00+00:00")
    with OpenAIServer(responder=good_answers) as server, Ledger("sqlite://") as ledger:
        llm = {"model": "fake-small", "base_url": server.base_url, "max_retries": 0, "timeout_s": 5.0, "frames": FRAMES}
        run_decision_cycle(lake_root=lake, ledger=ledger, strategy=ALWAYS_LONG, params=ALWAYS_LONG.params(), symbols=["AAPL"], timeframe="1d",
                           pipeline=_pipeline(llm, {"timeframe": "1h", "window": 8}), as_of=as_of, now=as_of + timedelta(days=2))  # fmt: skip
        [body] = server.requests
    prompt = json.loads(next(m["content"] for m in body["messages"] if m["role"] == "user"))
    frames = prompt["frames"]
    assert {tf: len(f["bars"]) for tf, f in frames.items()} == FRAMES, "each declared timeframe, as many bars as declared"
    hours = [datetime.fromisoformat(b["ts"]) for b in frames["1h"]["bars"]]
    days = [datetime.fromisoformat(b["ts"]) for b in frames["1d"]["bars"]]
    assert all(ts < tuesday_close for ts in hours), "no hour of Wednesday (bars close at the hour or the session's close)"
    assert hours[-1] == tuesday_close - timedelta(minutes=30), "the last hour is the half hour that closed with Tuesday's session"
    assert [d.date().isoformat() for d in days] == [MONDAY, TUESDAY], "the daily frame ends at the decision bar, not Wednesday"
    last_close = float(minutes(MONDAY, TUESDAY)["close"][-1])
    assert frames["1h"]["bars"][-1]["close"] == frames["1d"]["bars"][-1]["close"] == last_close, "Tuesday's last minute, not a later one"


def test_a_model_node_without_frames_reads_none(tmp_path: Path) -> None:
    lake, as_of = _lake(tmp_path)
    with OpenAIServer(responder=good_answers) as server, Ledger("sqlite://") as ledger:
        llm = {"model": "fake-small", "base_url": server.base_url, "max_retries": 0, "timeout_s": 5.0}
        run_decision_cycle(lake_root=lake, ledger=ledger, strategy=ALWAYS_LONG, params=ALWAYS_LONG.params(), symbols=["AAPL"], timeframe="1d",
                           pipeline=_pipeline(llm), as_of=as_of, now=as_of + timedelta(days=2))  # fmt: skip
        [body] = server.requests
    assert "frames" not in json.loads(next(m["content"] for m in body["messages"] if m["role"] == "user"))


def test_the_estimate_grows_by_the_frames_text(tmp_path: Path) -> None:
    """Before any recorded call, a model node's prompt is the default size plus its frames' bars, counted
    at a wide bar's width: at least what real bars add to the prompt."""
    day = date(2026, 11, 24)
    llm = {"model": "gpt-4o-mini", "base_url": "http://127.0.0.1:9/v1"}
    with Ledger("sqlite://") as ledger:
        plain = pipeline_estimate(ledger, _pipeline(llm), symbols=3, day=day)
        framed = pipeline_estimate(ledger, _pipeline({**llm, "frames": FRAMES}), symbols=3, day=day)
    extra = frames_prompt_chars(FRAMES)
    grown = 3 * (estimate_tokens(PROMPT_CHARS_WITHOUT_HISTORY + extra) - estimate_tokens(PROMPT_CHARS_WITHOUT_HISTORY))
    assert extra > 0 and framed["tokens_per_run"] - plain["tokens_per_run"] == grown
    assert framed["run_usd"] > plain["run_usd"] and "other timeframes' bars" in framed["basis"]
    # What real frames add to a prompt is no more than the estimate counts.
    ticks = minutes(MONDAY, TUESDAY)
    daily = frames_from(ticks, ["1d"])["1d"]
    snapshot = PortfolioSnapshot(cash=1e5, equity=1e5)
    frames = {"1h": frames_from(ticks, ["1h"])["1h"], "1d": daily}
    [ctx], _ = build_contexts(daily, ALWAYS_LONG, ALWAYS_LONG.params(), daily["ts"].max(), snapshot, frames=frames, frame_bars=FRAMES)  # type: ignore[arg-type]
    real = len(json.dumps(ctx.prompt_view(FRAMES), sort_keys=True)) - len(json.dumps(ctx.prompt_view({}), sort_keys=True))
    assert 0 < real <= extra
    assert pl.DataFrame(ctx.frames["1h"].bars).height == FRAMES["1h"]
