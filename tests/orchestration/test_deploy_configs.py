"""The deployment configs in deploy/ validate against Dagster's own schemas and classes."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._config import validate_config
from dagster._core.instance.config import dagster_instance_config
from dagster._serdes.config_class import class_from_code_pointer

from tests.orchestration.dagster_server import ROOT

INSTANCE_FILES = sorted((ROOT / "deploy").rglob("dagster.yaml"))


@pytest.mark.parametrize("path", INSTANCE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_instance_config_validates(path: Path) -> None:
    config, _ = dagster_instance_config(str(path.parent), path.name)
    assert "postgres" in config["storage"], "production instances store in PostgreSQL"
    for section in ("run_launcher", "run_coordinator"):
        if section in config:
            cls = class_from_code_pointer(config[section]["module"], config[section]["class"])
            result = validate_config(cls.config_type(), config[section].get("config", {}))
            assert result.success, f"{path}: {section}: {[e.message for e in result.errors or []]}"


def _executor(name: str) -> dg.ExecutorDefinition:
    if name == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    from dagster_celery import celery_executor

    return celery_executor


@pytest.mark.parametrize("name", ["k8s", "celery"])
def test_executor_run_config_validates(name: str) -> None:
    run_config = yaml.safe_load((ROOT / "deploy" / name / "run_config.yaml").read_text())
    schema = _executor(name).config_schema
    assert schema is not None
    result = validate_config(schema.config_type, run_config["execution"]["config"])
    assert result.success, [e.message for e in result.errors or []]


@pytest.mark.parametrize("name", ["multiprocess", "in_process", "celery", "k8s"])
def test_executor_is_chosen_from_the_environment(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestration.executors import build_executor

    monkeypatch.setenv("QUANTLAKE_EXECUTOR", name)
    assert name.replace("_", "") in build_executor().name.replace("_", "")


def test_unknown_executor_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestration.executors import build_executor

    monkeypatch.setenv("QUANTLAKE_EXECUTOR", "spark")
    with pytest.raises(ValueError, match="QUANTLAKE_EXECUTOR='spark'"):
        build_executor()
