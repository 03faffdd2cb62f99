"""JSON logs carry the bound run context, and a canary key never reaches a log line."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from orchestration.observability import configure_logging, get_logger, log_context, reset_logging

CANARY = "canary-secret-7f3a9c"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    reset_logging()  # whatever an earlier test (the CLI's main) configured
    yield
    reset_logging()


def test_json_logs_carry_context_and_mask_keys(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ALPACA_SECRET_KEY", CANARY)
    configure_logging("json")
    with log_context(run_id="run-1", partition="2024-11-29|AAPL", trace_id="t-9"):
        get_logger().info("fetched bars", url=f"https://x/?key={CANARY}", rows=210)
        logging.getLogger("lake.sources").warning("retrying after %s with %s", "500", CANARY)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 2
    first, second = lines
    assert first["run_id"] == "run-1" and first["partition"] == "2024-11-29|AAPL" and first["trace_id"] == "t-9"
    assert first["rows"] == 210 and first["event"] == "fetched bars"
    assert second["run_id"] == "run-1" and second["logger"] == "lake.sources"
    assert CANARY not in json.dumps(lines)


def test_bad_log_format_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="QUANTLAKE_LOG_FORMAT='xml'"):
        configure_logging("xml")


# Written out here, not read from the module: dropping a name from the masking list must fail.
KEY_VARIABLES = ["ALPACA_API_KEY", "ALPACA_SECRET_KEY", "OPENAI_API_KEY", "DAGSTER_PG_URL", "QUANTLAKE_ALERT_WEBHOOK"]


@pytest.mark.parametrize("fmt", ["json", "console"])
@pytest.mark.parametrize("name", KEY_VARIABLES)
def test_every_key_variable_is_masked_on_every_logging_path(
    name: str, fmt: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for other in KEY_VARIABLES:
        monkeypatch.delenv(other, raising=False)
    secret = f"{name.lower()}-{CANARY}"
    monkeypatch.setenv(name, secret)
    configure_logging(fmt)
    get_logger().info(f"calling with {secret}", header=f"Bearer {secret}", rows=3)
    logging.getLogger("trading.brokers").error("rejected: %s", secret)
    err = capsys.readouterr().err
    assert secret not in err and CANARY not in err
    assert err.count("***") >= 3  # the event, the field and the stdlib message


def test_values_of_six_characters_are_masked_shorter_ones_are_not(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Very short values (a placeholder like "x" or "none") would mask ordinary words everywhere."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-abc")
    monkeypatch.setenv("ALPACA_API_KEY", "k-123")
    configure_logging("json")
    get_logger().info("keys", openai="sk-abc", alpaca="k-123")
    line = json.loads(capsys.readouterr().err)
    assert line["openai"] == "***" and line["alpaca"] == "k-123"


@pytest.mark.parametrize(
    "name, url, password",
    [
        ("QUANTLAKE_LEDGER_URL", "postgresql://quant:pg-pass-41d9@db.internal:5432/ledger", "pg-pass-41d9"),
        ("DAGSTER_PG_URL", "postgresql://dagster:dg-pass-77ab@db/dagster", "dg-pass-77ab"),
        ("OPENAI_BASE_URL", "https://user:oa-pass-9c1e@llm.example/v1", "oa-pass-9c1e"),
    ],
)
def test_urls_with_a_password_are_masked_whole_and_the_password_alone(
    name: str, url: str, password: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(name, url)
    configure_logging("json")
    get_logger().info("connecting", url=url, details={"dsn": url, "hosts": [f"password {password} refused"]})
    logging.getLogger("trading.ledger").error("ledger unreachable: %s (auth %s)", url, password)
    err = capsys.readouterr().err
    assert password not in err and url not in err
    first, second = (json.loads(line) for line in err.splitlines())
    assert first["url"] == "***" and first["details"] == {"dsn": "***", "hosts": ["password *** refused"]}
    assert second["event"] == "ledger unreachable: *** (auth ***)"


def test_a_url_without_a_password_is_left_readable(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The SQLite ledger's path is what a user needs to see; only credentials are secrets."""
    monkeypatch.setenv("QUANTLAKE_LEDGER_URL", "sqlite:////srv/quantlake/ledger.sqlite")
    configure_logging("json")
    get_logger().info("ledger", url="sqlite:////srv/quantlake/ledger.sqlite")
    assert json.loads(capsys.readouterr().err)["url"] == "sqlite:////srv/quantlake/ledger.sqlite"


def test_log_level_from_the_environment_and_a_bad_one_named(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("QUANTLAKE_LOG_LEVEL", "warning")
    configure_logging("json")
    get_logger().info("hidden")
    get_logger().warning("shown")
    assert [json.loads(line)["event"] for line in capsys.readouterr().err.splitlines()] == ["shown"]
    monkeypatch.setenv("QUANTLAKE_LOG_LEVEL", "loud")
    with pytest.raises(ValueError, match="QUANTLAKE_LOG_LEVEL='loud'"):
        configure_logging("json")


def test_the_application_resources_set_up_the_run_context() -> None:
    """What the code location registers (not what a test builds) binds the ids at a run's start."""
    from orchestration.resources import build_resources
    from orchestration.run_context import RunContextMixin

    built = build_resources()
    assert isinstance(built["lake"], RunContextMixin) and isinstance(built["trading"], RunContextMixin)


def test_a_decide_job_run_logs_json_lines_with_its_run_cycle_and_trace_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """QUANTLAKE_LOG_FORMAT=json and no configure_logging call here: the run's resources configure it."""
    import dagster as dg

    from tests.orchestration.observed_runs import NY, decide, resources, write_lake

    monkeypatch.setenv("QUANTLAKE_LOG_FORMAT", "json")
    res = resources(write_lake(tmp_path / "lake"), tmp_path)
    capsys.readouterr()
    with dg.instance_for_test() as instance:
        # 15:57 New York is past the window's end: entries are refused, and trading.safety logs it.
        result = decide(res, datetime(2024, 11, 25, 15, 57, tzinfo=NY), instance, **{"dagster/run_key": "decide|tick-1557"})
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    ours = [line for line in lines if line.get("run_id") == result.run_id]
    assert {line["logger"] for line in ours} >= {"quantlake.run", "trading.safety"}
    assert {line["event"] for line in ours} >= {"run step started", "run step finished"}
    for line in ours:
        assert line["cycle_id"] == "decide|tick-1557" and line["job"] == "decide_job"
        assert len(line["trace_id"]) == 32
    safety = [line["event"] for line in ours if line["logger"] == "trading.safety" and line["level"] == "warning"]
    assert any(event.startswith("intervention blocked: outside the trading window") for event in safety), safety
    # The context ends with the run: a later line carries none of it.
    get_logger().info("after the run")
    after = json.loads(capsys.readouterr().err)
    assert "run_id" not in after and "cycle_id" not in after


def test_cycle_id_is_what_a_rerun_repeats() -> None:
    from orchestration.run_context import cycle_id

    assert cycle_id("r2", "decide_job", {"dagster/run_key": "decide|1d|x", "quantlake/now": "t"}) == "decide|1d|x"
    assert cycle_id("r2", "decide_job", {"dagster/scheduled_execution_time": "2024-11-25T11:00:00-05:00"}) == "decide_job@2024-11-25T11:00:00-05:00"
    assert cycle_id("r2", "decide_job", {"dagster/root_run_id": "r1"}) == "r1"
    assert cycle_id("r2", "decide_job", {}) == "r2"


def _default_instance_logs() -> dict[str, object]:
    import yaml

    from orchestration.home import DEFAULT_INSTANCE

    return {"python_logs": yaml.safe_load(DEFAULT_INSTANCE.read_text())["python_logs"]}


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_dagsters_own_lines_are_json_with_the_runs_ids_in_json_mode(
    fmt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The instance's handler (the default dagster.yaml installs it) turns Dagster's own lines (run and
    step events, the asset's context.log) into JSON lines with the run, cycle and trace ids, keys masked."""
    import dagster as dg

    from tests.orchestration.observed_runs import NY, decide, resources, write_lake

    monkeypatch.setenv("QUANTLAKE_LOG_FORMAT", fmt)
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    res = resources(write_lake(tmp_path / "lake"), tmp_path)
    capsys.readouterr()
    with dg.instance_for_test(overrides=_default_instance_logs()) as instance:
        result = decide(res, datetime(2024, 11, 25, 11, 0, tzinfo=NY), instance, **{"dagster/run_key": "decide|tick-1100"})
    err = capsys.readouterr().err
    dagster = [json.loads(line) for line in err.splitlines() if line.startswith("{") and '"logger": "dagster"' in line]
    if fmt == "console":
        assert not dagster  # Dagster's console logger prints them; the handler adds nothing
        assert " - dagster - DEBUG - decide_job - " in err and "RUN_SUCCESS" in err
        return
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and [type(json.loads(line)) for line in lines] == [dict] * len(lines)  # JSON only: no text line beside
    events = {line.get("dagster_event") for line in dagster}
    assert {"RUN_START", "RESOURCE_INIT_STARTED", "STEP_START", "ASSET_MATERIALIZATION", "STEP_SUCCESS", "RUN_SUCCESS"} <= events, events
    for line in dagster:
        assert line["run_id"] == result.run_id and line["cycle_id"] == "decide|tick-1100" and line["job"] == "decide_job"
        assert len(line["trace_id"]) == 32 and line["level"] in {"debug", "info", "warning", "error"} and line["timestamp"]
    steps = {line.get("step") for line in dagster if line.get("dagster_event") == "STEP_START"}
    assert steps == {"decision_cycle"}
    # The asset's own context.log lines (no Dagster event) are there too, with the same ids.
    assert any(line.get("dagster_event") is None and line["event"] for line in dagster)
    # The application's lines of the same run carry the same trace id: one search finds both.
    ours = [json.loads(line) for line in err.splitlines() if line.startswith("{") and '"logger": "quantlake.run"' in line]
    assert ours and {line["trace_id"] for line in ours} == {line["trace_id"] for line in dagster}
    assert CANARY not in err


def test_a_dagster_line_carrying_a_key_is_masked(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from orchestration.observability import DagsterJsonHandler

    monkeypatch.setenv("ALPACA_SECRET_KEY", CANARY)
    record = logging.LogRecord("dagster", logging.ERROR, __file__, 1, f"job - r1 - failed with {CANARY}", (), None)
    record.dagster_meta = {"run_id": "r1", "job_name": "decide_job", "job_tags": {"dagster/run_key": "k"}, "step_key": None,
                           "orig_message": f"failed with {CANARY}", "dagster_event": None}
    DagsterJsonHandler(fmt="json").handle(record)
    line = json.loads(capsys.readouterr().err)
    assert line["event"] == "failed with ***" and line["cycle_id"] == "k" and CANARY not in json.dumps(line)


def test_quantlake_decide_in_json_mode_writes_json_lines_only_on_stderr(tmp_path: Path) -> None:
    """The command users type, in its own process: Dagster's run events, the application's lines and
    any Python warning are JSON; no text line (Dagster's console logger, its beta note) reaches stderr."""
    import os
    import subprocess
    import sys
    from datetime import UTC

    from lake.sources.synthetic import SyntheticSource
    from lake.store import replace_partitions

    symbols = ["AAPL", "JPM", "MSFT"]
    bars = SyntheticSource(seed=7).fetch(symbols, "1d", datetime(2023, 1, 1, tzinfo=UTC), datetime(2024, 7, 1, tzinfo=UTC))
    replace_partitions(tmp_path / "lake", "bars", "1d", bars, period="year")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUANTLAKE_", "OPENAI_", "ALPACA_"))}
    env |= {
        "QUANTLAKE_LOG_FORMAT": "json",
        "QUANTLAKE_LAKE_DIR": str(tmp_path / "lake"),
        "QUANTLAKE_LEDGER_URL": f"sqlite:///{tmp_path / 'ledger.sqlite'}",
        "DAGSTER_HOME": str(tmp_path / "home"),  # the default instance config is written there
    }
    command = [str(Path(sys.executable).parent / "quantlake"), "decide", "--symbols", ",".join(symbols), "--params", '{"fast": 5, "slow": 20}',
               "--as-of", "2024-06-03T20:00:00+00:00"]
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert [line for line in lines if not line.startswith("{")] == []
    parsed = [json.loads(line) for line in lines]
    dagster = {line.get("dagster_event") for line in parsed if line["logger"] == "dagster"}
    assert {"RUN_START", "STEP_START", "RUN_SUCCESS"} <= dagster
    run_ids = {line["run_id"] for line in parsed if line["logger"] == "dagster"}
    assert any(line["logger"] == "quantlake.run" and line["run_id"] in run_ids for line in parsed)
