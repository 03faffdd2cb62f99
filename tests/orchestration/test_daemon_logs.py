"""The Helm deployment (deploy/k8s) logs one JSON object a line from every process in JSON mode: the
daemon and the code server through their own `--log-format json`, the webserver through its variable,
run and step pods through the instance's handler. No chart is rendered here (no helm, no cluster): the
chart's daemon Deployment is built as Dagster's chart 1.13.27 renders it, and goes through our
post-renderer with kubectl's kustomize; each command line is parsed by the installed Dagster's own CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import dagster as dg
import pytest
import yaml

from orchestration.settings import dagster_log_args, settings
from tests.orchestration.dagster_server import ROOT

K8S = ROOT / "deploy" / "k8s"
POST_RENDER = K8S / "post-render.sh"
WORKSPACE = "/dagster-workspace/workspace.yaml"  # where the chart mounts the workspace it writes
# The daemon's container command in Dagster's chart (templates/deployment-daemon.yaml and the helper
# dagster.dagsterDaemon.daemonCommand, user deployments enabled): no log option, and no value adds one.
CHART_DAEMON_COMMAND = ["/bin/bash", "-c", f"dagster-daemon run -w {WORKSPACE}"]
JSON_OPTIONS = dagster_log_args(settings({"QUANTLAKE_LOG_FORMAT": "json"}))  # what `make ui` passes too


def _values() -> dict[str, Any]:
    return yaml.safe_load((K8S / "values.yaml").read_text())


def _image(image: dict[str, str]) -> str:
    return f"{image['repository']}:{image['tag']}"


def _deployment(component: str, image: str, command: list[str]) -> dict[str, Any]:
    """A Deployment shaped as the chart renders its components (the labels the post-renderer targets)."""
    labels = {"app.kubernetes.io/name": "dagster", "app.kubernetes.io/instance": "quantlake", "component": component}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": f"quantlake-{component}", "labels": labels},
        "spec": {"selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": {
            "containers": [{"name": "dagster", "image": image, "command": command}]}}},
    }


def _post_render(manifests: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    if shutil.which("kubectl") is None:
        if os.environ.get("CI"):
            raise AssertionError("kubectl (its kustomize) is required in CI for deploy/k8s/post-render.sh")
        pytest.skip("kubectl not installed: deploy/k8s/post-render.sh needs its kustomize")
    return subprocess.run([str(POST_RENDER)], input=yaml.safe_dump_all(manifests), capture_output=True, text=True, timeout=60)


def _rendered_daemon() -> dict[str, Any]:
    values = _values()
    daemon = _deployment("dagster-daemon", _image(values["dagsterDaemon"]["image"]), CHART_DAEMON_COMMAND)
    webserver = _deployment("dagster-webserver", _image(values["dagsterWebserver"]["image"]),
                            ["/bin/bash", "-c", f"dagster-webserver -h 0.0.0.0 -p 80 -w {WORKSPACE}"])
    done = _post_render([daemon, webserver])
    assert done.returncode == 0, done.stderr
    return next(d for d in yaml.safe_load_all(done.stdout) if d["metadata"]["labels"]["component"] == "dagster-daemon")


def test_the_daemon_starts_with_dagsters_json_log_option() -> None:
    from dagster._daemon.cli import run_command

    daemon = _rendered_daemon()
    [container] = daemon["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["dagster-daemon", "run", "-w", WORKSPACE, *JSON_OPTIONS]
    # The installed dagster-daemon takes it as its log format (the workspace path exists only in the pod).
    args = [str(ROOT / "workspace.yaml") if a == WORKSPACE else a for a in container["command"][2:]]
    assert run_command.make_context("run", args).params["log_format"] == "json"
    assert container["image"] == _image(_values()["dagsterDaemon"]["image"])


def test_the_post_renderer_leaves_the_other_components_alone() -> None:
    values = _values()
    webserver = _deployment("dagster-webserver", _image(values["dagsterWebserver"]["image"]),
                            ["/bin/bash", "-c", f"dagster-webserver -h 0.0.0.0 -p 80 -w {WORKSPACE}"])
    done = _post_render([webserver])
    assert done.returncode == 0, done.stderr
    assert list(yaml.safe_load_all(done.stdout)) == [webserver]


def test_a_chart_whose_daemon_command_changed_fails_the_install() -> None:
    """Rather than the post-renderer silently dropping what a new chart adds to the command."""
    daemon = _deployment("dagster-daemon", "quantlake:0", [*CHART_DAEMON_COMMAND[:2], f"{CHART_DAEMON_COMMAND[2]} --new-option"])
    done = _post_render([daemon])
    assert done.returncode != 0
    assert "test failed" in done.stderr


def test_the_code_server_and_webserver_take_the_json_log_format() -> None:
    from dagster._cli.api import api_cli
    from dagster_webserver.cli import cli as webserver_cli

    values = _values()
    [code] = values["dagster-user-deployments"]["deployments"]
    grpc_args = code["dagsterApiGrpcArgs"]
    assert grpc_args[-len(JSON_OPTIONS):] == JSON_OPTIONS
    # The chart runs `dagster api grpc <dagsterApiGrpcArgs> -h 0.0.0.0 -p <port>`.
    grpc = api_cli.commands["grpc"].make_context("grpc", [*grpc_args, "-h", "0.0.0.0", "-p", str(code["port"])])
    assert grpc.params["log_format"] == "json"
    webserver_env = {e["name"]: e["value"] for e in values["dagsterWebserver"]["env"]}
    with pytest.MonkeyPatch.context() as env:
        env.delenv("DAGSTER_WEBSERVER_LOG_FORMAT", raising=False)
        for name, value in webserver_env.items():
            env.setenv(name, value)
        parsed = webserver_cli.make_context("dagster-webserver", ["-h", "0.0.0.0", "-p", "80", "-w", str(ROOT / "workspace.yaml")],
                                            auto_envvar_prefix="DAGSTER_WEBSERVER")
    assert parsed.params["log_format"] == "json"


def test_every_component_is_in_json_mode_and_runs_install_the_json_handler() -> None:
    """QUANTLAKE_LOG_FORMAT=json for our code everywhere; the chart's instance (every pod loads it) installs
    the handler that writes Dagster's run and step events as JSON, from our image in every pod."""
    from orchestration.observability import DagsterJsonHandler

    values = _values()
    [code] = values["dagster-user-deployments"]["deployments"]
    envs = {
        "code server": {e["name"]: e["value"] for e in code["env"]},
        "webserver": {e["name"]: e["value"] for e in values["dagsterWebserver"]["env"]},
        "daemon": {e["name"]: e["value"] for e in values["dagsterDaemon"]["env"]},
        "run pods": dict(v.split("=", 1) for v in values["runLauncher"]["config"]["k8sRunLauncher"]["envVars"]),
    }
    assert {name: env.get("QUANTLAKE_LOG_FORMAT") for name, env in envs.items()} == dict.fromkeys(envs, "json")
    # configmap-instance.yaml: python_logs.dagster_handler_config is pythonLogs.dagsterHandlerConfig.
    handler_config = values["pythonLogs"]["dagsterHandlerConfig"]
    with dg.instance_for_test(overrides={"python_logs": {"dagster_handler_config": handler_config}}) as instance:
        assert any(isinstance(h, DagsterJsonHandler) for h in instance.get_handlers())
    images = {_image(code["image"]), _image(values["dagsterWebserver"]["image"]), _image(values["dagsterDaemon"]["image"])}
    assert len(images) == 1, f"the webserver and daemon load an instance naming our handler: they need our image, not {images}"


def test_post_render_is_executable() -> None:
    assert os.access(POST_RENDER, os.X_OK), f"{POST_RENDER} must be executable (helm runs it)"
    assert (K8S / "post-render" / "kustomization.yaml").is_file()
