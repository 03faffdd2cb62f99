"""The pre-run budget gate through decide_job: a run whose worst case would take the month (or the day)
over its budget makes no model request, records why in the ledger and in the run's metadata; the month's
spend is read from the ledger (other runs, other processes) and a new month starts afresh."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import dagster as dg

from assets.clock import NOW_TAG
from assets.resources import LakeResource, TradingResource
from lake.sources.synthetic import SyntheticSource
from lake.store import replace_partitions
from tests.fakes.openai_server import OpenAIServer
from tests.trading.conftest import good_answers
from trading.events import Event, EventType
from trading.models import Mode

SYMBOLS = ["AAPL", "MSFT"]
NOW = datetime.fromisoformat("2023-12-30T12:00:00+00:00")  # the decision bar: 2023-12-28 14:30 (a daily bar is complete a day after it opens)
PRICE = [1000.0, 1000.0]  # USD per 1M tokens: a call costs about a dollar, so the worst case is visible


def _setup(tmp_path: Path, server: OpenAIServer, budget: dict[str, float]) -> tuple[LakeResource, TradingResource]:
    lake = tmp_path / "lake"
    daily = SyntheticSource(seed=7).fetch(SYMBOLS, "1d", datetime.fromisoformat("2023-06-01T00:00:00+00:00"), datetime.fromisoformat("2024-01-01T00:00:00+00:00"))
    replace_partitions(lake, "bars", "1d", daily, period="year")
    llm = {"model": "fake-small", "base_url": server.base_url, "max_retries": 0, "timeout_s": 5.0}
    nodes = [{"id": "analyst", "type": "llm_analyst", "config": llm}, {"id": "limits", "type": "hard_limits", "when": "trade"}]
    pipeline: dict[str, Any] = {
        "graph": {"nodes": nodes},
        "limits": {"max_open_positions": 20, "max_sector_pct": 1.0, "max_position_pct": 0.05},
        "prices": {"fake-small": PRICE},
        "budget": budget,
        "checkpoint": "memory",
    }
    (tmp_path / "pipeline.yaml").write_text(json.dumps(pipeline))
    resource = TradingResource(ledger_url=f"sqlite:///{tmp_path / 'ledger.sqlite'}", pipeline_file=str(tmp_path / "pipeline.yaml"))
    return LakeResource(root=str(lake)), resource


def _spent_earlier(resource: TradingResource, day: str, usd: float) -> None:
    """Another run (another process) spent `usd` on a decision bar of `day`: only the ledger knows."""
    ledger = resource.ledger()
    try:
        payload = {"scope": "run", "run_cost_usd": usd, "model_calls": 4, "prompt_tokens": 1000, "completion_tokens": 1000}
        ledger.append_many([Event(type=EventType.COST, run_id="earlier", mode=Mode.VALIDATION, as_of=datetime.fromisoformat(f"{day}T00:00:00+00:00"), payload=payload)])
    finally:
        ledger.close()


def _decide(lake: LakeResource, resource: TradingResource) -> dg.ExecuteInProcessResult:
    from orchestration.definitions import defs

    config = {"ops": {"decision_cycle": {"config": {"strategy": "tests.trading.always_long:ALWAYS_LONG", "symbols": SYMBOLS}}}}
    job = defs.resolve_job_def("decide_job")
    return job.execute_in_process(run_config=config, resources={"lake": lake, "trading": resource}, tags={NOW_TAG: NOW.isoformat()})


def _budget_interventions(resource: TradingResource) -> list[dict[str, Any]]:
    ledger = resource.ledger()
    try:
        return [e.payload for e in ledger.events(types=EventType.INTERVENTION) if e.payload.get("kind") == "budget"]
    finally:
        ledger.close()


def test_a_nearly_spent_month_stops_the_run_before_any_model_request(tmp_path: Path) -> None:
    with OpenAIServer(responder=good_answers) as server:
        lake, resource = _setup(tmp_path, server, {"per_month": 100.0})
        _spent_earlier(resource, "2023-12-04", 99.99)  # earlier this month: a cent left
        run = _decide(lake, resource)
        assert len(server.requests) == 0, "the gate stopped the run before its first model request"
    [mat] = run.asset_materializations_for_node("decision_cycle")
    meta = mat.metadata
    assert meta["model_calls"].value == 0 and meta["execute"].value == 0 and meta["hold"].value == len(SYMBOLS)
    budget = meta["budget"].value
    assert budget["month"] == "2023-12" and budget["spent_month_usd"] == 99.99
    assert budget["blocked"] and "monthly budget $100.0000 would be exceeded" in budget["blocked"]
    assert any("monthly budget" in i for i in meta["interventions"].value)
    [recorded] = _budget_interventions(resource)
    assert "monthly budget" in recorded["reason"] and "no model call" in recorded["detail"]
    decisions = mat.metadata["decisions"].value
    assert "monthly budget" in decisions, "each held symbol says why"


def test_a_new_month_runs(tmp_path: Path) -> None:
    with OpenAIServer(responder=good_answers) as server:
        lake, resource = _setup(tmp_path, server, {"per_month": 100.0})
        _spent_earlier(resource, "2023-11-28", 99.99)  # last month's spend does not count
        run = _decide(lake, resource)
        assert len(server.requests) == len(SYMBOLS), "one analyst call per symbol"
    [mat] = run.asset_materializations_for_node("decision_cycle")
    assert mat.metadata["budget"].value["spent_month_usd"] == 0.0 and mat.metadata["budget"].value["blocked"] is None
    assert mat.metadata["execute"].value == len(SYMBOLS)
    assert _budget_interventions(resource) == []


def test_the_month_counts_every_run_in_the_ledger(tmp_path: Path) -> None:
    """A first run spends; the second run (a fresh ledger connection, as another process) sees that spend
    and, with the month's budget then too short for its worst case, does not start."""
    with OpenAIServer(responder=good_answers) as server:
        lake, resource = _setup(tmp_path, server, {"per_month": 100.0})
        first = _decide(lake, resource)
        [mat] = first.asset_materializations_for_node("decision_cycle")
        spent, worst = float(mat.metadata["cost_usd"].value), float(mat.metadata["budget"].value["run_worst_case_usd"])
        assert spent > 0 and len(server.requests) == len(SYMBOLS)
        # Exactly enough left for the first run's spend plus less than one more worst case.
        _setup(tmp_path, server, {"per_month": round(spent + worst / 2, 6)})
        second = _decide(lake, resource)
        assert len(server.requests) == len(SYMBOLS), "the second run made no request"
    [mat] = second.asset_materializations_for_node("decision_cycle")
    assert abs(mat.metadata["budget"].value["spent_month_usd"] - spent) < 1e-6
    assert "monthly budget" in (mat.metadata["budget"].value["blocked"] or "")


def test_a_nearly_spent_day_stops_the_run_too(tmp_path: Path) -> None:
    with OpenAIServer(responder=good_answers) as server:
        lake, resource = _setup(tmp_path, server, {"per_day": 10.0, "per_month": 1000.0})
        _spent_earlier(resource, "2023-12-28", 9.99)  # the decision bar's day
        run = _decide(lake, resource)
        assert len(server.requests) == 0
    [mat] = run.asset_materializations_for_node("decision_cycle")
    assert "daily budget $10.0000 would be exceeded" in (mat.metadata["budget"].value["blocked"] or "")


def test_quantlake_monthly_budget_usd_sets_the_month_and_the_gate_reads_it(tmp_path: Path) -> None:
    """The environment's default, as for the daily budget: QUANTLAKE_MONTHLY_BUDGET_USD -> the trading
    resource -> the pipeline's budget.per_month, which the gate of a decide run then holds to."""
    from orchestration.resources import trading_resource
    from orchestration.settings import settings

    env = settings({"QUANTLAKE_MONTHLY_BUDGET_USD": "100", "QUANTLAKE_LEDGER_URL": f"sqlite:///{tmp_path / 'ledger.sqlite'}"})
    built = trading_resource(env)
    assert built.pipeline().budget.per_month == 100.0
    with OpenAIServer(responder=good_answers) as server:
        lake, resource = _setup(tmp_path, server, {})  # the file sets no monthly budget
        resource = TradingResource(ledger_url=resource.ledger_url, pipeline_file=resource.pipeline_file, monthly_budget_usd=built.monthly_budget_usd)
        _spent_earlier(resource, "2023-12-04", 99.99)
        run = _decide(lake, resource)
        assert len(server.requests) == 0
    [mat] = run.asset_materializations_for_node("decision_cycle")
    assert "monthly budget $100.0000" in (mat.metadata["budget"].value["blocked"] or "")


def test_a_replay_from_the_cache_is_not_gated(tmp_path: Path) -> None:
    """A replay asks no model (cached answers only): a spent month does not stop it."""
    from orchestration.definitions import defs

    with OpenAIServer(responder=good_answers) as server:
        lake, resource = _setup(tmp_path, server, {"per_month": 100.0})
        resource = TradingResource(ledger_url=resource.ledger_url, pipeline_file=resource.pipeline_file, cache_dir=str(tmp_path / "cache"))
        assert _decide(lake, resource).success
        asked = len(server.requests)
        _spent_earlier(resource, "2023-12-04", 200.0)  # the month is now over its budget
        config = {"ops": {"decision_cycle": {"config": {"strategy": "tests.trading.always_long:ALWAYS_LONG", "symbols": SYMBOLS, "replay": True}}}}
        run = defs.resolve_job_def("decide_job").execute_in_process(run_config=config, resources={"lake": lake, "trading": resource}, tags={NOW_TAG: NOW.isoformat()})
        assert len(server.requests) == asked, "the replay asked no model"
    [mat] = run.asset_materializations_for_node("decision_cycle")
    assert mat.metadata["execute"].value == len(SYMBOLS), "the cached decisions, not budget HOLDs"
    assert _budget_interventions(resource) == []


def test_quantlake_estimate_prints_run_day_month_and_what_is_left(tmp_path: Path, monkeypatch: Any, capsys: Any) -> None:
    from orchestration.cli import main

    with OpenAIServer(responder=good_answers) as server:
        _lake, resource = _setup(tmp_path, server, {"per_day": 10.0, "per_month": 100.0})
        _spent_earlier(resource, "2023-12-04", 99.99)  # 4 calls: $25 a call
    monkeypatch.setenv("QUANTLAKE_LEDGER_URL", resource.ledger_url)
    monkeypatch.setenv("QUANTLAKE_PIPELINE", resource.pipeline_file)
    assert main(["estimate", "--symbols", "AAPL,MSFT", "--runs-per-day", "3", "--day", "2023-12-28"]) == 0
    out = capsys.readouterr().out
    assert "2 model calls a run at most (2 symbols), $24.997500 a call" in out
    assert "per run   $49.9950" in out and "per day   $149.9850  (3 runs)" in out
    assert "per month $2999.7000  (20 sessions in 2023-12)" in out
    assert "this month spent $99.9900; budget $100.0000, left $0.0100" in out
    assert "the next run would not start: daily budget" in out


def test_the_cost_estimate_asset_shows_the_same_figures(tmp_path: Path) -> None:
    from assets.trading import cost_estimate

    with OpenAIServer(responder=good_answers) as server:
        _lake, resource = _setup(tmp_path, server, {"per_day": 10.0, "per_month": 100.0})
        _spent_earlier(resource, "2023-12-04", 99.99)
    config = {"ops": {"cost_estimate": {"config": {"symbols": SYMBOLS, "runs_per_day": 3}}}}
    result = dg.materialize([cost_estimate], run_config=config, resources={"trading": resource}, tags={NOW_TAG: NOW.isoformat()})
    [mat] = result.asset_materializations_for_node("cost_estimate")
    meta = {k: v.value for k, v in mat.metadata.items()}
    assert meta["month"] == "2023-12" and meta["sessions_in_month"] == 20  # the run clock's month, in New York
    assert meta["model_calls_per_run"] == 2 and abs(meta["day_usd"] - 149.985) < 1e-9
    assert abs(meta["left_month_usd"] - 0.01) < 1e-9 and "daily budget" in meta["blocked"]
