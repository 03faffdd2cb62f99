"""The soak harness: the real Definitions, left alone on a simulated clock, as the daemon would run them.

A fresh DagsterInstance (SQLite under a work folder; storage as the default instance, runs launched
synchronously in this process). The clock is frozen at each moment the daemon would act: every tick
of the enabled schedules (the open, the close, the decision times, the end of day) on every weekday,
holidays included. At each one, Dagster's own scheduler iteration (`launch_scheduled_runs`) and
sensor iteration (`execute_sensor_iteration`) run: cursors, ticks and run keys live in the
instance, exactly as under `dagster-daemon`. The runs they request execute in process before the
clock moves on. Sensors are evaluated right after each schedule tick's runs: between ticks nothing
they read can change (bars only arrive through runs), so the daemon's 30 s loop would see the same.

The offline source serves only the bars that exist at the simulated time (`assets.clock.run_now`:
a scheduled run's time, else the frozen clock). The 15-minute intraday schedule stays off, as a
user would leave it for daily decisions: 1-minute bars come once, after the close.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import time_machine
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon
from dagster._daemon.sensor import execute_sensor_iteration
from dagster._scheduler.scheduler import launch_scheduled_runs
from dagster._utils.schedules import cron_string_iterator

from orchestration.home import DEFAULT_INSTANCE

NY = ZoneInfo("America/New_York")
ROOT = Path(__file__).resolve().parents[2]
LOCATION = "quantlake"
SCHEDULES = ("market_open_schedule", "market_close_schedule", "decision_schedule", "end_of_day_schedule")
SENSORS = ("new_daily_bars_sensor", "price_move_sensor", "run_failure_alert_sensor")
DAEMON_LAG = timedelta(seconds=20)  # the daemon sees a tick a few seconds after its time
SYNC_LAUNCHER = (
    "run_launcher:\n  module: dagster._core.launcher.sync_in_memory_run_launcher\n  class: SyncInMemoryRunLauncher\n"
)


@dataclass(frozen=True)
class SoakSettings:
    start: date  # the first simulated day (New York)
    end: date  # the last simulated day, inclusive
    work: Path  # lake, ledger, simulated account and Dagster home go here
    symbols: tuple[str, ...] = ("AAPL", "MSFT", "NVDA")
    mode: str = "simulation"
    strategy_params: str = '{"fast": 5, "slow": 20}'  # short windows: the strategy trades within a month
    env: dict[str, str] = field(default_factory=dict)  # extra settings (faults, thresholds)


@dataclass
class SoakResult:
    settings: SoakSettings
    ticks: int = 0  # moments the daemon acted (schedule ticks, each followed by a sensor iteration)
    seconds: float = 0.0
    days: int = 0  # simulated calendar days
    runs: list[dg.DagsterRun] = field(default_factory=list)

    @property
    def seconds_per_day(self) -> float:
        return self.seconds / max(self.days, 1)

    @property
    def lake(self) -> Path:
        return self.settings.work / "lake"

    @property
    def ledger_url(self) -> str:
        return f"sqlite:///{self.settings.work / 'ledger.sqlite'}"

    @property
    def sim_state(self) -> Path:
        return self.settings.work / "sim_broker.json"

    @property
    def home(self) -> Path:
        return self.settings.work / "dagster_home"


def environment(settings: SoakSettings) -> dict[str, str]:
    """The deployment's settings for the soak: everything under `work`, simulation, in process."""
    work = settings.work
    return {
        "DAGSTER_HOME": str(work / "dagster_home"),
        "QUANTLAKE_LAKE_DIR": str(work / "lake"),
        "QUANTLAKE_LEDGER_URL": f"sqlite:///{work / 'ledger.sqlite'}",
        "QUANTLAKE_SIM_STATE": str(work / "sim_broker.json"),
        "QUANTLAKE_MODE": settings.mode,
        "QUANTLAKE_UNIVERSE": ",".join(settings.symbols),
        "QUANTLAKE_STRATEGY": "sma_cross",
        "QUANTLAKE_STRATEGY_PARAMS": settings.strategy_params,
        "QUANTLAKE_EXECUTOR": "in_process",  # a subprocess would not see the simulated clock
        # Partitions from well before the first day: the first open ingests the last year's bar.
        "QUANTLAKE_PARTITION_START": (settings.start - timedelta(days=45)).isoformat(),
        "QUANTLAKE_ALERT_WEBHOOK": "",
        "GX_ANALYTICS_ENABLED": "false",
        **settings.env,
    }


@contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def daemon_ticks(start: date, end: date) -> list[datetime]:
    """Every instant one of SCHEDULES fires between `start` and `end` (New York), from their crons."""
    from orchestration.definitions import defs

    first = datetime(start.year, start.month, start.day, tzinfo=NY)
    stop = datetime(end.year, end.month, end.day, tzinfo=NY) + timedelta(days=1)
    out: set[datetime] = set()
    for name in SCHEDULES:
        crons = defs.resolve_schedule_def(name).cron_schedule
        for cron in [crons] if isinstance(crons, str) else crons:
            for tick in cron_string_iterator(first.timestamp(), cron, "America/New_York"):
                if tick >= stop:
                    break
                out.add(tick.astimezone(UTC))
    return sorted(out)


def _workspace(instance: dg.DagsterInstance) -> WorkspaceProcessContext:
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(module_name="orchestration.definitions", attribute="defs", working_directory=str(ROOT)),
        location_name=LOCATION,
    )
    return WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget(origin))


def _turn_on(context: WorkspaceProcessContext) -> None:
    """What a user does in the UI's Automation tab: the schedules and sensors on."""
    instance = context.instance
    location = context.create_request_context().get_code_location(LOCATION)
    [repo] = location.get_repositories().values()
    for name in SCHEDULES:
        instance.start_schedule(repo.get_schedule(name))
    for name in SENSORS:
        instance.start_sensor(repo.get_sensor(name))


def _drain(context: WorkspaceProcessContext, dequeuer: QueuedRunCoordinatorDaemon) -> int:
    """The run queue daemon's iterations until the queue is empty (each launch runs synchronously)."""
    launched = 0
    queued = dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED])
    while waiting := context.instance.get_runs_count(queued):
        list(dequeuer.run_iteration(context))
        left = context.instance.get_runs_count(queued)
        if left >= waiting:
            raise RuntimeError(f"the run queue is stuck: {left} runs still queued")
        launched += waiting - left
    return launched


def run_soak(settings: SoakSettings, log: logging.Logger | None = None) -> SoakResult:
    """Drives the deployment from `settings.start` to `settings.end`; returns the runs it made."""
    log = log or logging.getLogger("quantlake.soak")
    home = settings.work / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(DEFAULT_INSTANCE.read_text() + SYNC_LAUNCHER)
    result = SoakResult(settings, days=(settings.end - settings.start).days + 1)
    began = time.perf_counter()
    first = datetime(settings.start.year, settings.start.month, settings.start.day, tzinfo=NY)
    with _environ(environment(settings)), time_machine.travel(first, tick=False) as clock:
        ticks = daemon_ticks(settings.start, settings.end)
        with dg.DagsterInstance.from_config(str(home)) as instance, _workspace(instance) as context:
            _turn_on(context)
            iteration_times: dict = {}
            dequeuer = QueuedRunCoordinatorDaemon(interval_seconds=1)
            for tick in ticks:
                clock.move_to(tick + DAEMON_LAG)
                now = tick + DAEMON_LAG
                list(launch_scheduled_runs(context, log, end_datetime_utc=now, iteration_times=iteration_times))
                _drain(context, dequeuer)
                for _ in range(3):  # sensors react to the runs (new bars, failures), then to theirs
                    list(execute_sensor_iteration(context, log, None, None))
                    if not _drain(context, dequeuer):
                        break
                result.ticks += 1
            result.runs = list(instance.get_runs())
    result.seconds = time.perf_counter() - began
    return result
