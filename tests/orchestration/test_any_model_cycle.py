"""The README's two-variable route: OPENAI_MODEL=llama3.1 and OPENAI_BASE_URL, nothing else, end to end."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from assets import trading
from assets.resources import LakeResource
from lake.sources.synthetic import SyntheticSource
from lake.store import replace_partitions
from orchestration.resources import trading_resource
from strategies.builtin import SMA_CROSS
from tests.fakes.openai_server import OpenAIServer, Reply, fenced
from tests.trading.conftest import busiest_entry_bar
from trading.agents.llm import FORMAT_MEMORY
from trading.events import EventType
from trading.ledger import Ledger

SYMBOLS = ["AAPL", "AMZN", "GOOG", "JPM", "META", "MSFT"]
ENV = ("OPENAI_API_KEY", "QUANTLAKE_PIPELINE", "QUANTLAKE_DAILY_BUDGET_USD", "QUANTLAKE_DAILY_BUDGET_TOKENS", "QUANTLAKE_LLM_CACHE", "QUANTLAKE_MODE")


@pytest.fixture(scope="module")
def lake_and_bar(tmp_path_factory: pytest.TempPathFactory) -> tuple[LakeResource, datetime]:
    root: Path = tmp_path_factory.mktemp("lake")
    bars = SyntheticSource(seed=7).fetch(SYMBOLS, "1d", datetime(2023, 1, 1, tzinfo=UTC), datetime(2024, 7, 1, tzinfo=UTC))
    replace_partitions(root, "bars", "1d", bars, period="year")
    return LakeResource(root=str(root)), busiest_entry_bar(bars, SMA_CROSS.params(fast=5, slow=20))


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("QUANTLAKE_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    return monkeypatch


def local_model(body: dict[str, Any]) -> Reply:
    """A local server that ignores json_schema: prose, then the answer in a fence, and no usage."""
    payload = json.loads(next(m["content"] for m in body["messages"] if m["role"] == "user"))
    close = payload["close"]
    answer = {"action": "BUY", "confidence": 0.7, "rationale": "llama likes it", "entry": close, "stop": close * 0.95, "target1": close * 1.05, "target2": close * 1.1}
    return fenced(Reply(content=json.dumps(answer)))


def test_openai_model_and_base_url_alone_run_the_model_end_to_end(lake_and_bar: tuple[LakeResource, datetime], env: pytest.MonkeyPatch) -> None:
    lake, as_of = lake_and_bar
    with OpenAIServer(responder=local_model, send_usage=False) as server:
        env.setenv("OPENAI_MODEL", "llama3.1")
        env.setenv("OPENAI_BASE_URL", server.base_url)
        resource = trading_resource()
        result = dg.materialize(
            [trading.decision_cycle],
            resources={"lake": lake, "trading": resource},
            run_config={"ops": {"decision_cycle": {"config": {"symbols": SYMBOLS, "params": {"fast": 5, "slow": 20}, "as_of": as_of.isoformat()}}}},
        )
        calls, models = server.calls, list(server.models_seen)
    assert result.success
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert calls > 0 and meta["model_calls"].value == calls and models == ["llama3.1"]
    assert meta["execute"].value >= 1 and "llama likes it" in str(meta["decisions"].value)
    analyst = meta["cost_per_agent"].value["llm_analyst"]  # type: ignore[index]
    assert analyst["calls"] == calls and analyst["unpriced_tokens"] == analyst["estimated_tokens"] > 0 and analyst["usd"] == 0
    with Ledger(resource.ledger_url) as ledger:
        [run_cost] = [e for e in ledger.events(types=[EventType.COST.value]) if e.payload.get("scope") == "run"]
        responses = list(ledger.events(types=[EventType.RESPONSE.value]))
    assert run_cost.payload["unpriced_models"] == ["llama3.1"] and run_cost.payload["unpriced_tokens"] == analyst["unpriced_tokens"]
    assert [(e.payload["outcome"], e.payload["found"], e.payload["estimated"], e.payload["pricing"]) for e in responses] == [("used", "fence", True, "unpriced")] * calls


def test_the_pipeline_file_keeps_what_it_says_under_the_env(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    file = tmp_path / "pipeline.yaml"
    file.write_text("analyst: {type: llm_analyst, config: {timeout_s: 3, max_retries: 0}}\nvalidator: {type: llm_validator, config: {model: gpt-4o-mini, base_url: 'https://api.openai.com/v1'}}\nbudget: {tokens_per_run: 50000}\n")
    env.setenv("QUANTLAKE_PIPELINE", str(file))
    env.setenv("OPENAI_MODEL", "llama3.1")
    env.setenv("OPENAI_BASE_URL", "http://127.0.0.1:11434/v1")
    env.setenv("QUANTLAKE_DAILY_BUDGET_TOKENS", "2000000")
    config = trading_resource().pipeline()
    assert config.analyst.config == {"timeout_s": 3, "max_retries": 0, "model": "llama3.1", "base_url": "http://127.0.0.1:11434/v1"}
    assert config.validator.config == {"model": "gpt-4o-mini", "base_url": "https://api.openai.com/v1"}
    assert (config.budget.tokens_per_run, config.budget.tokens_per_day) == (50_000, 2_000_000)


def test_the_answer_format_a_server_refused_is_remembered_by_the_next_cycle(lake_and_bar: tuple[LakeResource, datetime], env: pytest.MonkeyPatch) -> None:
    """Each cycle is a new process: what a server refused is learnt from the ledger, not re-probed."""
    lake, as_of = lake_and_bar
    with OpenAIServer(responder=local_model, send_usage=False, refuse_formats={"json_schema"}) as server:
        env.setenv("OPENAI_MODEL", "llama3.1")
        env.setenv("OPENAI_BASE_URL", server.base_url)
        formats: list[list[str | None]] = []
        refused: list[int] = []
        for _ in range(2):
            FORMAT_MEMORY.forget()  # nothing carried over in the process
            before = len(server.requests)
            result = dg.materialize(
                [trading.decision_cycle],
                resources={"lake": lake, "trading": trading_resource()},
                run_config={"ops": {"decision_cycle": {"config": {"symbols": SYMBOLS, "params": {"fast": 5, "slow": 20}, "as_of": as_of.isoformat()}}}},
            )
            assert result.success
            formats.append([(b.get("response_format") or {}).get("type") for b in server.requests[before:]])
            refused.append(server.refused)
    first, second = formats
    # The first cycle asks once for json_schema (the other symbols in flight wait for that probe), then JSON mode.
    assert len(first) >= 3 and first == ["json_schema"] + ["json_object"] * (len(first) - 1) and refused == [1, 1]
    assert len(second) >= 1 and set(second) == {"json_object"}  # never asked for json_schema again


def test_quantlake_decide_with_only_the_two_variables_uses_the_model_and_shows_its_unpriced_tokens(
    lake_and_bar: tuple[LakeResource, datetime], env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's route on the command line users type: `quantlake decide`, nothing configured but the two variables."""
    from orchestration.cli import main

    lake, as_of = lake_and_bar
    env.setenv("QUANTLAKE_LAKE_DIR", lake.root)
    env.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    with OpenAIServer(responder=local_model, send_usage=False) as server:
        env.setenv("OPENAI_MODEL", "llama3.1")
        env.setenv("OPENAI_BASE_URL", server.base_url)
        code = main(["decide", "--symbols", ",".join(SYMBOLS), "--params", '{"fast": 5, "slow": 20}', "--as-of", as_of.isoformat()])
        calls, models, provider = server.calls, list(server.models_seen), f"llama3.1@{server.base_url}"
    out = capsys.readouterr().out
    assert code == 0 and calls > 0 and models == ["llama3.1"]
    assert "llama likes it" in out and re.search(rf"model_calls\s+{calls}\n", out)
    with dg.DagsterInstance.get() as instance:
        [record] = instance.fetch_materializations(dg.AssetKey("decision_cycle"), limit=1).records
    meta = record.asset_materialization.metadata  # type: ignore[union-attr]
    total = meta["total_tokens"].value
    assert total > 0 and meta["unpriced_tokens"].value == meta["estimated_tokens"].value == total  # type: ignore[operator]
    assert meta["unpriced_models"].value == ["llama3.1"] and meta["cost_usd"].value == 0
    assert re.search(rf"tokens\s+{total} \({total} unpriced: llama3\.1; {total} estimated locally\)", out)
    # What each provider did, in the metadata and on the command line.
    assert meta["cost_per_provider"].value == {  # type: ignore[comparison-overlap]
        provider: {"responses": calls, "answers": calls, "cached": 0, "failures": {}, "fallbacks": 0, "to_rules": 0, "tokens": total, "estimated_tokens": total, "usd": 0.0}
    }
    assert f"  {provider}: {calls} answers, failures none, 0 to the next provider, 0 to the rules, {total} tokens" in out
    assert meta["costliest_providers"].value == {"llm_analyst": provider} and meta["estimated_cost_usd_worst_case"].value == 0.0
