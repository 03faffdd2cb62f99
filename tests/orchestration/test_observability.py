"""JSON logs carry the bound run context, and a canary key never reaches a log line."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from orchestration.observability import configure_logging, get_logger, log_context, reset_logging

CANARY = "canary-secret-7f3a9c"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
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
