"""The deployment configs in deploy/ validate against Dagster's own schemas and classes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
            cls: Any = class_from_code_pointer(config[section]["module"], config[section]["class"])
            result = validate_config(cls.config_type(), config[section].get("config", {}))
            assert result.success, f"{path}: {section}: {[e.message for e in result.errors or []]}"


@pytest.mark.parametrize("path", INSTANCE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_instance_config_installs_the_json_log_handler(path: Path) -> None:
    """Every deployed instance writes Dagster's own lines as JSON in JSON mode, as the default one does:
    the same handlers (by class), built by Dagster from the file."""
    import yaml

    from orchestration.home import DEFAULT_INSTANCE
    from orchestration.observability import DagsterJsonHandler

    config, _ = dagster_instance_config(str(path.parent), path.name)
    handlers = config["python_logs"]["dagster_handler_config"]["handlers"]
    default = yaml.safe_load(DEFAULT_INSTANCE.read_text())["python_logs"]["dagster_handler_config"]["handlers"]
    assert {h["class"] for h in handlers.values()} == {h["class"] for h in default.values()}
    with dg.instance_for_test(overrides={"python_logs": config["python_logs"]}) as instance:
        assert any(isinstance(h, DagsterJsonHandler) for h in instance.get_handlers())


def _executor(name: str) -> dg.ExecutorDefinition:
    if name == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    from dagster_celery import celery_executor

    return celery_executor


@pytest.mark.parametrize(("name", "path"), [("k8s", "k8s/run_config.yaml"), ("celery", "celery/workers.yaml")])
def test_executor_run_config_validates(name: str, path: str) -> None:
    run_config = yaml.safe_load((ROOT / "deploy" / path).read_text())
    schema = _executor(name).config_schema
    assert schema is not None
    result = validate_config(schema.config_type, run_config["execution"]["config"])
    assert result.success, [e.message for e in result.errors or []]


@pytest.mark.parametrize("name", ["multiprocess", "in_process", "celery", "k8s"])
def test_executor_is_chosen_from_the_environment(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestration.executors import build_executor

    monkeypatch.setenv("QUANTLAKE_EXECUTOR", name)
    monkeypatch.setenv("QUANTLAKE_CELERY_BROKER", "redis://127.0.0.1:6379/5")
    assert name.replace("_", "") in build_executor().name.replace("_", "")


def test_celery_workers_use_the_executors_own_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers started from deploy/celery/workers.yaml listen where the runs send their steps."""
    from orchestration.executors import celery_config

    monkeypatch.delenv("QUANTLAKE_CELERY_BACKEND", raising=False)
    workers = yaml.safe_load((ROOT / "deploy" / "celery" / "workers.yaml").read_text())
    assert workers["execution"]["config"] == celery_config()


def test_celery_takes_its_broker_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestration.executors import build_executor

    monkeypatch.setenv("QUANTLAKE_EXECUTOR", "celery")
    monkeypatch.delenv("QUANTLAKE_CELERY_BROKER", raising=False)
    with pytest.raises(ValueError, match="QUANTLAKE_EXECUTOR=celery needs QUANTLAKE_CELERY_BROKER"):
        build_executor()


def test_unknown_executor_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestration.executors import build_executor

    monkeypatch.setenv("QUANTLAKE_EXECUTOR", "spark")
    with pytest.raises(ValueError, match="QUANTLAKE_EXECUTOR='spark'"):
        build_executor()


def test_helm_values_load_our_code_location_and_mount_the_lake_claim() -> None:
    values = yaml.safe_load((ROOT / "deploy" / "k8s" / "values.yaml").read_text())
    [deployment] = values["dagster-user-deployments"]["deployments"]
    assert deployment["dagsterApiGrpcArgs"][:2] == ["-m", "orchestration.definitions"]
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert "QUANTLAKE_EXECUTOR=k8s" in launcher["envVars"]
    pvc = yaml.safe_load((ROOT / "deploy" / "k8s" / "lake-pvc.yaml").read_text())
    claims = {v["persistentVolumeClaim"]["claimName"] for v in [*deployment["volumes"], *launcher["volumes"]]}
    assert claims == {pvc["metadata"]["name"]}


def test_image_holds_every_package_and_the_deploy_configs() -> None:
    import tomllib

    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    for name in [p.rstrip("*") for p in packages] + ["deploy"]:
        assert f"COPY {name}/ {name}/" in dockerfile, f"deploy/Dockerfile does not copy {name}/"
