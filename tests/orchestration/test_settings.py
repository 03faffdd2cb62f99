"""One settings object, read in orchestration only: bad values named, the lake root and model keys passed down."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from orchestration.resources import build_resources, market_data_resource, trading_resource
from orchestration.settings import SettingsError, settings
from tests.fakes.openai_server import OpenAIServer, Reply
from tests.trading.conftest import UNIVERSE, busiest_entry_bar, good_answers
from trading.agents.registry import AgentConfigError
from trading.context import build_contexts
from trading.events import EventType, MemorySink
from trading.models import PortfolioSnapshot
from trading.pipeline import DecisionPipeline

CANARY = "sk-canary-h3-5f0c2a"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("QUANTLAKE_SEED", "seven", "QUANTLAKE_SEED='seven': Input should be a valid integer"),
        ("QUANTLAKE_MODE", "yolo", "QUANTLAKE_MODE='yolo': Input should be 'validation', 'simulation', 'paper' or 'live'"),
        ("QUANTLAKE_DAILY_BUDGET_USD", "-1", "QUANTLAKE_DAILY_BUDGET_USD='-1': Input should be greater than or equal to 0"),
        ("QUANTLAKE_FALLBACK", "maybe", "QUANTLAKE_FALLBACK='maybe'"),
        ("ALPACA_DATA_FEED", "bloomberg", "ALPACA_DATA_FEED='bloomberg'"),
        ("QUANTLAKE_STRATEGY_PARAMS", "[5, 20]", "QUANTLAKE_STRATEGY_PARAMS='[5, 20]': Value error, expected a JSON object"),
        ("QUANTLAKE_DECISION_TIMES", "11:00,2pm", "QUANTLAKE_DECISION_TIMES='11:00,2pm': Value error, '2pm' is not HH:MM"),
        ("QUANTLAKE_MOVE_PCT", "0", "QUANTLAKE_MOVE_PCT='0': Input should be greater than 0"),
        ("QUANTLAKE_EXECUTOR", "spark", "QUANTLAKE_EXECUTOR='spark'"),
        ("QUANTLAKE_ALERT_LOOKBACK_H", "a day", "QUANTLAKE_ALERT_LOOKBACK_H='a day': Input should be a valid number"),
        ("QUANTLAKE_REFETCH_SESSIONS", "0", "QUANTLAKE_REFETCH_SESSIONS='0': Input should be greater than or equal to 1"),
        ("QUANTLAKE_REFETCH_GRACE_MIN", "an hour", "QUANTLAKE_REFETCH_GRACE_MIN='an hour': Input should be a valid integer"),
        ("QUANTLAKE_REFETCH_BACKOFF_MIN", "-5", "QUANTLAKE_REFETCH_BACKOFF_MIN='-5': Input should be greater than or equal to 0"),
        ("QUANTLAKE_REFETCH_ATTEMPTS", "0", "QUANTLAKE_REFETCH_ATTEMPTS='0': Input should be greater than or equal to 1"),
        ("QUANTLAKE_OPEN_OFFSET_MIN", "-1", "QUANTLAKE_OPEN_OFFSET_MIN='-1': Input should be greater than or equal to 0"),
        ("QUANTLAKE_INTRADAY_MINUTES", "a quarter", "QUANTLAKE_INTRADAY_MINUTES='a quarter': Input should be a valid integer"),
        ("QUANTLAKE_NEWS_TIMES", "8.45", "QUANTLAKE_NEWS_TIMES='8.45': Value error, '8.45' is not HH:MM"),
        ("QUANTLAKE_RETENTION_RUNS_DAYS", "0", "QUANTLAKE_RETENTION_RUNS_DAYS='0': Value error, expected a whole number of days"),
        ("QUANTLAKE_LOG_LEVEL", "loud", "QUANTLAKE_LOG_LEVEL='loud': Value error, expected DEBUG, INFO, WARNING or ERROR"),
        ("QUANTLAKE_LOG_FORMAT", "xml", "QUANTLAKE_LOG_FORMAT='xml': Input should be 'console' or 'json'"),
        ("DAGSTER_EVENT_BATCH_SIZE", "-1", "DAGSTER_EVENT_BATCH_SIZE='-1': Input should be greater than or equal to 0"),
    ],
)
def test_a_bad_value_fails_the_load_naming_the_variable(name: str, value: str, message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        build_resources()
    assert message in str(caught.value)


def test_every_documented_variable_reaches_its_resource(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = {
        "QUANTLAKE_DATA_SOURCE": "files",
        "QUANTLAKE_FILES_GLOB": str(tmp_path / "*.csv"),
        "QUANTLAKE_FILES_TZ": "Europe/London",
        "QUANTLAKE_FILES_COLUMN_MAP": "ts=Date,close=Close",
        "QUANTLAKE_SEED": "11",
        "QUANTLAKE_MODE": "Simulation",
        "QUANTLAKE_LEDGER_URL": f"sqlite:///{tmp_path / 'l.sqlite'}",
        "QUANTLAKE_PIPELINE": str(tmp_path / "p.yaml"),
        "QUANTLAKE_LLM_CACHE": str(tmp_path / "cache"),
        "QUANTLAKE_SIM_STATE": str(tmp_path / "sim.json"),
        "QUANTLAKE_DAILY_BUDGET_USD": "2.5",
        "QUANTLAKE_DAILY_BUDGET_TOKENS": "1000",
        "QUANTLAKE_LIVE_OPT_IN": "1",
        "QUANTLAKE_LIVE_TRADING": "yes",
        "OPENAI_MODEL": "llama3.1",
        "OPENAI_BASE_URL": "http://127.0.0.1:11434/v1",
        "ALPACA_TRADING_URL": "http://127.0.0.1:1/",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    data, trading = market_data_resource(), trading_resource()
    assert (data.source, data.seed, data.files_glob, data.files_timezone, data.files_column_map) == (
        "files", 11, env["QUANTLAKE_FILES_GLOB"], "Europe/London", {"Date": "ts", "Close": "close"}
    )
    assert trading.model_dump(include={"mode", "ledger_url", "pipeline_file", "cache_dir", "sim_state_file", "llm_model", "llm_base_url"}) == {
        "mode": "simulation",
        "ledger_url": env["QUANTLAKE_LEDGER_URL"],
        "pipeline_file": env["QUANTLAKE_PIPELINE"],
        "cache_dir": env["QUANTLAKE_LLM_CACHE"],
        "sim_state_file": env["QUANTLAKE_SIM_STATE"],
        "llm_model": "llama3.1",
        "llm_base_url": "http://127.0.0.1:11434/v1",
    }
    assert (trading.daily_budget_usd, trading.daily_budget_tokens, trading.live_opt_in, trading.live_confirmed, trading.alpaca_trading_url) == (
        2.5, 1000, True, True, "http://127.0.0.1:1/"
    )
    monkeypatch.setenv("QUANTLAKE_LIVE_TRADING", "Yes please")  # only the exact word confirms live trading
    assert trading_resource().live_confirmed is False
    monkeypatch.setenv("QUANTLAKE_MODE", "")  # an empty variable is unset: the default
    assert settings().mode == "validation"


def test_the_lake_root_is_read_when_used_not_when_loaded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("QUANTLAKE_LAKE_DIR", raising=False)
    lake = build_resources()["lake"]
    assert lake.path == Path(__file__).resolve().parents[2] / "data" / "lake"
    monkeypatch.setenv("QUANTLAKE_LAKE_DIR", str(tmp_path / "elsewhere" / ".." / "lake"))
    assert lake.path == tmp_path / "lake"


def _write(tmp_path: Path, text: str) -> str:
    file = tmp_path / "pipeline.yaml"
    file.write_text(text)
    return str(file)


def test_model_keys_are_read_by_orchestration_and_passed_down(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The key each provider's api_key_env names reaches that provider's server; trading/ never reads it."""
    from lake.sources.synthetic import SyntheticSource
    from strategies.builtin import SMA_CROSS

    bars = SyntheticSource(seed=7).fetch(UNIVERSE, "1d", datetime(2023, 1, 1, tzinfo=UTC), datetime(2024, 6, 1, tzinfo=UTC))
    as_of = busiest_entry_bar(bars)
    snapshot = PortfolioSnapshot(cash=100_000.0, equity=100_000.0, start_of_day_equity=100_000.0, peak_equity=100_000.0)
    contexts, _ = build_contexts(bars, SMA_CROSS, SMA_CROSS.params(fast=5, slow=20), as_of, snapshot)
    signalled = [c for c in contexts if c.wants][:1]
    with OpenAIServer(responder=lambda body: Reply(status=500, content="down")) as a, OpenAIServer(responder=good_answers) as b:
        monkeypatch.setenv("QL_H3_KEY_A", CANARY + "-a")
        monkeypatch.setenv("QL_H3_KEY_B", CANARY + "-b")
        monkeypatch.setenv(
            "QUANTLAKE_PIPELINE",
            _write(
                tmp_path,
                f"analyst: {{type: llm_analyst, config: {{model: m, base_url: '{a.base_url}', api_key_env: QL_H3_KEY_A, max_retries: 0,"
                f" fallbacks: [{{base_url: '{b.base_url}', api_key_env: QL_H3_KEY_B}}]}}}}\n",
            ),
        )
        config = trading_resource().pipeline()
        sink = MemorySink()
        result = DecisionPipeline(config).run(signalled, snapshot, as_of=as_of, sink=sink)
        seen = (list(a.auth_headers), list(b.auth_headers))
    assert seen == ([f"Bearer {CANARY}-a"], [f"Bearer {CANARY}-b"])
    assert result.executed() and result.executed()[0].rationale.startswith("model likes")
    # The key is a value passed down, never shown: not in a repr, a dump, or any event.
    assert CANARY not in repr(config) and CANARY not in str(config.model_dump(mode="json"))
    assert all(CANARY not in str(e.payload) for e in sink.events)
    assert [e.payload["kind"] for e in sink.of_type(EventType.FALLBACK)] == ["error"]


def test_without_a_key_a_model_agent_on_openai_is_refused_by_name(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_MODEL", "gpt-4o-mini")
    with pytest.raises(AgentConfigError, match=r"needs an API key in \$OPENAI_API_KEY"):
        DecisionPipeline(trading_resource().pipeline())
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    config = trading_resource().pipeline()
    assert config.analyst.config["key"].get_secret_value() == CANARY
    DecisionPipeline(config)  # builds: the key came from orchestration


def test_a_key_written_in_the_pipeline_file_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("QUANTLAKE_PIPELINE", _write(tmp_path, f"analyst: {{type: llm_analyst, config: {{model: m, key: {CANARY}}}}}\n"))
    with pytest.raises(ValueError, match="pipeline.yaml: a model key is never written in a pipeline file: name its environment variable in api_key_env") as caught:
        trading_resource().pipeline()
    assert CANARY not in str(caught.value)


def test_every_variable_of_the_readme_configuration_table_is_a_setting() -> None:
    """Every variable the README's table documents is read and validated by the settings object."""
    import re

    from orchestration.settings import Settings

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("###", 1)[0]
    documented = {name for row in table.splitlines() if row.startswith("| `") for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split("|")[1])}
    aliases = {field.alias for field in Settings.model_fields.values()}
    assert documented <= aliases, sorted(documented - aliases)  # DAGSTER_HOME and the retention days included


ORCHESTRATION = Path(__file__).resolve().parents[2] / "orchestration"
# The one module that reads the environment for configuration.
READER = "settings.py"
# Justified exceptions, by module and function: observability's masking scans every variable by its
# name for values to hide (a key a pipeline file names can be any variable): not a setting.
ALLOWED_READS = {("observability.py", "_secrets"), ("kernel_cache.py", "key_kernel_cache")}  # numba's own variable, before the settings load


def environment_reads(source: str, writes_too: bool = False) -> list[str]:
    """Where `source` reads os.environ / os.getenv, as "line N in f: os.x". Writes are not reads
    (unless `writes_too`): an assignment `os.environ[...] = ...` and a bare `os.environ.setdefault(...)`
    statement set a variable for a library or a child process and read nothing back."""
    import ast

    tree = ast.parse(source)
    writes: set[int] = set()
    for node in ast.walk(tree) if not writes_too else ():
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store | ast.Del):
            writes.add(id(node.value))
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Attribute) and node.value.func.attr == "setdefault":
            writes.add(id(node.value.func.value))
    reads = []

    def visit(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else function
            if (
                isinstance(child, ast.Attribute) and isinstance(child.value, ast.Name) and child.value.id == "os"
                and child.attr in ("environ", "environb", "getenv", "getenvb") and id(child) not in writes
            ):
                reads.append(f"line {child.lineno} in {function}: os.{child.attr}")
            if isinstance(child, ast.ImportFrom) and child.module == "os" and any(a.name in ("environ", "getenv") for a in child.names):
                reads.append(f"line {child.lineno} in {function}: from os import")
            visit(child, name)

    visit(tree, "<module>")
    return reads


@pytest.mark.parametrize("name", sorted(p.name for p in ORCHESTRATION.glob("*.py") if p.name != READER))
def test_orchestration_reads_the_environment_only_through_the_settings(name: str) -> None:
    """Every orchestration module but settings.py takes its values from `settings()`: one place
    validates them and names a bad one."""
    reads = [r for r in environment_reads((ORCHESTRATION / name).read_text()) if (name, r.split(" in ")[1].split(":")[0]) not in ALLOWED_READS]
    assert not reads, f"orchestration/{name} reads the environment itself: {reads}"


ROOT = ORCHESTRATION.parent
# The layers below orchestration receive values: not one environment read, writes included (none
# has a reason to set a variable either). Exceptions would be listed here, each with its reason.
BELOW = ("assets", "trading", "lake", "backtests", "strategies")
ALLOWED_BELOW: dict[str, str] = {}


@pytest.mark.parametrize("package", BELOW)
def test_nothing_below_orchestration_reads_the_environment(package: str) -> None:
    """assets/ included: the universe, exchange, partition start and screener filters are passed
    down by orchestration (settings.pass_settings_down), not read by the asset modules."""
    offenders = {
        where: reads
        for path in sorted((ROOT / package).rglob("*.py"))
        if (where := path.relative_to(ROOT).as_posix()) not in ALLOWED_BELOW and (reads := environment_reads(path.read_text(), writes_too=True))
    }
    assert not offenders, f"{package}/ reads the environment (take the value from orchestration/settings.py): {offenders}"


def test_the_source_check_sees_reads_and_lets_writes_pass() -> None:
    source = (
        "import os\n"
        "def f():\n    return os.environ.get('X')\n"
        "def g():\n    os.environ['X'] = 'y'\n    os.environ.setdefault('Y', 'z')\n"
        "def h():\n    return os.environ.setdefault('Y', 'z') or os.getenv('Z')\n"
    )
    assert environment_reads(source) == ["line 3 in f: os.environ", "line 8 in h: os.environ", "line 8 in h: os.getenv"]
    assert environment_reads("from os import environ\n") == ["line 1 in <module>: from os import"]
    assert environment_reads(source, writes_too=True) == [
        "line 3 in f: os.environ", "line 5 in g: os.environ", "line 6 in g: os.environ", "line 8 in h: os.environ", "line 8 in h: os.getenv"
    ]


def test_the_sensors_alerts_and_executor_take_their_values_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestration.alerts import webhook_url
    from orchestration.executors import build_executor, celery_config

    monkeypatch.setenv("QUANTLAKE_ALERT_WEBHOOK", "http://127.0.0.1:9/hook")
    monkeypatch.setenv("QUANTLAKE_EXECUTOR", "In_Process")  # validated and lower-cased once, in settings
    monkeypatch.setenv("QUANTLAKE_CELERY_BACKEND", "")  # empty is unset: the broker is the backend too
    assert webhook_url() == "http://127.0.0.1:9/hook"
    assert build_executor() is dg_in_process()
    assert celery_config()["backend"] == {"env": "QUANTLAKE_CELERY_BROKER"}
    monkeypatch.setenv("QUANTLAKE_ALERT_WEBHOOK", "")
    assert webhook_url() is None


def test_the_schedules_cli_home_and_retention_take_their_values_from_the_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from orchestration.home import dagster_home
    from orchestration.news_schedule import news_times
    from orchestration.retention import RetentionPolicy, retention_policy
    from orchestration.schedules import _trading_tags, decision_run_config, decision_times

    for name, value in {
        "QUANTLAKE_MODE": "Paper", "QUANTLAKE_STRATEGY": "rsi", "QUANTLAKE_STRATEGY_PARAMS": '{"period": 9}',
        "QUANTLAKE_DECISION_TIMEFRAME": "1m", "QUANTLAKE_DECISION_TIMES": "15:00, 10:15", "QUANTLAKE_NEWS_TIMES": "18:00,07:30,18:00",
        "QUANTLAKE_RETENTION_RUNS_DAYS": " -1 ", "QUANTLAKE_RETENTION_CHECKPOINT_DAYS": "3", "DAGSTER_HOME": str(tmp_path / "home"),
    }.items():
        monkeypatch.setenv(name, value)
    assert _trading_tags() == {"quantlake/mode": "paper", "quantlake/strategy": "rsi"}
    assert decision_run_config() == {"ops": {"decision_cycle": {"config": {"strategy": "rsi", "params": {"period": 9}, "timeframe": "1m"}}}}
    assert [t.isoformat(timespec="minutes") for t in decision_times()] == ["10:15", "15:00"]
    assert [t.isoformat(timespec="minutes") for t in news_times()] == ["07:30", "18:00"]
    assert retention_policy() == RetentionPolicy(runs_days=-1, checkpoint_days=3)
    assert dagster_home() == tmp_path / "home"
    monkeypatch.setenv("QUANTLAKE_SEED", "seven")  # retention and the log format read only their own variables
    assert retention_policy().checkpoint_days == 3
    monkeypatch.setenv("DAGSTER_HOME", "")  # empty is unset: the repo's .dagster_home
    assert dagster_home() == Path(__file__).resolve().parents[2] / ".dagster_home"
    for name in ("QUANTLAKE_STRATEGY", "QUANTLAKE_STRATEGY_PARAMS", "QUANTLAKE_DECISION_TIMEFRAME", "QUANTLAKE_MODE"):
        monkeypatch.delenv(name)
    monkeypatch.delenv("QUANTLAKE_SEED")
    assert decision_run_config() == {"ops": {"decision_cycle": {"config": {"strategy": "sma_cross", "params": {}}}}}
    assert _trading_tags() == {"quantlake/mode": "validation", "quantlake/strategy": "sma_cross"}


def test_the_log_handler_never_fails_on_a_bad_format_and_the_cli_names_it(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from orchestration.cli import main
    from orchestration.observability import _json_mode

    monkeypatch.setenv("QUANTLAKE_LOG_FORMAT", "JSON")
    assert _json_mode()
    monkeypatch.setenv("QUANTLAKE_LOG_FORMAT", "xml")
    assert not _json_mode()  # a log line never fails
    assert main(["status"]) == 2
    assert "QUANTLAKE_LOG_FORMAT='xml'" in capsys.readouterr().err


def dg_in_process() -> object:
    import dagster as dg

    return dg.in_process_executor
