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

import gc
import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import time_machine
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus
from dagster._core.launcher.sync_in_memory_run_launcher import SyncInMemoryRunLauncher
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster._daemon.auto_run_reexecution.event_log_consumer import EventLogConsumerDaemon
from dagster._daemon.monitoring.run_monitoring import execute_run_monitoring_iteration
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon
from dagster._daemon.sensor import execute_sensor_iteration
from dagster._scheduler.scheduler import launch_scheduled_runs
from dagster._utils.schedules import cron_string_iterator

from orchestration.console_level import console_at_configured_level
from orchestration.home import DEFAULT_INSTANCE
from tests.soak.lean import lean_dagster

NY = ZoneInfo("America/New_York")
ROOT = Path(__file__).resolve().parents[2]
LOCATION = "quantlake"
SCHEDULES = ("market_open_schedule", "market_close_schedule", "decision_schedule", "end_of_day_schedule", "retention_schedule")
SENSORS = ("new_daily_bars_sensor", "price_move_sensor", "run_failure_alert_sensor")
DAEMON_LAG = timedelta(seconds=20)  # the daemon sees a tick a few seconds after its time
SOURCE_DOWN = "market-data source unreachable (soak fault)"
BROKER_5XX = "HTTP 503 from the broker on submission (soak fault)"
DISK_FULL = "No space left on device (soak fault)"
WORKER_KILLED = "run worker killed mid-step (soak fault)"
SYNC_LAUNCHER = (
    "run_launcher:\n  module: dagster._core.launcher.sync_in_memory_run_launcher\n  class: SyncInMemoryRunLauncher\n"
)
# Harness overhead, not the deployment's: no `tail -F` capture process per step (QUANTLAKE_SOAK_COMPUTE_LOGS=1 keeps it).
NO_COMPUTE_LOGS = "compute_logs:\n  module: dagster._core.storage.noop_compute_log_manager\n  class: NoOpComputeLogManager\n"


@dataclass(frozen=True)
class SoakSettings:
    start: date  # the first simulated day (New York)
    end: date  # the last simulated day, inclusive
    work: Path  # lake, ledger, simulated account and Dagster home go here
    symbols: tuple[str, ...] = ("AAPL", "MSFT", "NVDA")
    mode: str = "simulation"
    strategy_params: str = '{"fast": 5, "slow": 20}'  # short windows: the strategy trades within a month
    env: dict[str, str] = field(default_factory=dict)  # extra settings (faults, thresholds)
    source_down: tuple[date, ...] = ()  # faults: the market-data source refuses every request on these days
    broker_5xx: tuple[date, ...] = ()  # faults: every order submission answers HTTP 503 on these days (the order was in fact taken)
    reload_on: tuple[date, ...] = ()  # the code location restarts (modules imported afresh) before these days' first tick
    storage_url: str = ""  # a PostgreSQL URL for the instance's storage; empty: SQLite under the Dagster home
    sensors: tuple[str, ...] = ()  # sensors turned on besides SENSORS (e.g. missed_sessions_sensor)
    disk_full: tuple[tuple[date, str], ...] = ()  # faults: every lake write of (day, symbol)'s 1m bars on that simulated day fails with ENOSPC
    killed: tuple[tuple[date, str], ...] = ()  # faults: the worker of the first run writing (day, symbol)'s 1m bars that day dies mid-write
    actions: tuple[tuple[datetime, str, str], ...] = ()  # what a user launches by hand: (when, job, run config JSON), before that tick
    lean: bool = True  # Dagster's SQLite engines and alembic scripts reused (tests/soak/lean.py), fewer GC passes; False: as Dagster does it
    pipeline: dict[str, object] = field(default_factory=dict)  # the pipeline file's content (e.g. breakers' `limits`), written under `work`
    model_timeout: tuple[date, ...] = ()  # faults: the analyst is a model (a loopback OpenAI server answering as the rules would), which answers nothing in time on these days


@dataclass
class SoakResult:
    settings: SoakSettings
    ticks: int = 0  # moments the daemon acted (schedule ticks, each followed by a sensor iteration)
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # this process's CPU time: what the soak costs whatever else the cores run
    days: int = 0  # simulated calendar days
    runs: list[dg.DagsterRun] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)  # what orchestration.alerts raised (its log lines)
    reloads: int = 0
    # CPU seconds per simulated week (its Monday, New York): a cost that grows with the deployment's
    # history shows here, where a per-day average hides it.
    cpu_by_week: dict[date, float] = field(default_factory=dict)
    launched: int = 0  # runs launched, whether or not retention deleted them since (`runs` is what is left)
    events: int = 0  # Dagster events the instance stored (runs, steps, checks, materializations...)
    # What retention deletes and the daemon purges before a long soak ends, kept as seen at each tick
    # (the fault report needs them): every run's last state, each failed run's log, halted decision ticks.
    history: dict[str, dg.DagsterRun] = field(default_factory=dict)
    failure_logs: dict[str, str] = field(default_factory=dict)
    halted: set[datetime] = field(default_factory=set)

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
        **({"QUANTLAKE_PIPELINE": str(work / "pipeline.yaml")} if settings.pipeline or settings.model_timeout else {}),
        **settings.env,
    }


MODEL_TIMEOUT_S = 0.5  # the analyst's client timeout when the soak's analyst is a model


@contextmanager
def _model(settings: SoakSettings) -> Iterator[dict[str, str]]:
    """The pipeline file (settings.pipeline, and with model_timeout days the analyst as a model on a
    loopback OpenAI server, answering as the rule analyst would, nothing in time on those days);
    yields the environment it needs."""
    path = settings.work / "pipeline.yaml"
    if not settings.model_timeout:
        if settings.pipeline:
            path.write_text(json.dumps(settings.pipeline))
        yield {}
        return
    from tests.fakes.openai_server import OpenAIServer
    from tests.soak.faults import rules_model

    with OpenAIServer(responder=rules_model(settings.model_timeout)) as server:
        llm = {"model": "gpt-4o-mini", "base_url": server.base_url, "timeout_s": MODEL_TIMEOUT_S, "max_retries": 0}
        path.write_text(json.dumps({**settings.pipeline, "analyst": {"type": "llm_analyst", "config": llm}}))
        yield {"OPENAI_API_KEY": "soak-key"}


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


def _turn_on(context: WorkspaceProcessContext, extra: tuple[str, ...] = ()) -> None:
    """What a user does in the UI's Automation tab: the schedules and sensors on."""
    instance = context.instance
    location = context.create_request_context().get_code_location(LOCATION)
    [repo] = location.get_repositories().values()
    for name in SCHEDULES:
        instance.start_schedule(repo.get_schedule(name))
    for name in (*SENSORS, *extra):
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


class _Daemons:
    """The daemon's loops, one iteration each, in the order a tick's consequences need them."""

    def __init__(self, context: WorkspaceProcessContext, log: logging.Logger) -> None:
        self.context, self.log = context, log
        self.iteration_times: dict = {}
        self.dequeuer = QueuedRunCoordinatorDaemon(interval_seconds=1)
        self.retrier = EventLogConsumerDaemon()  # run retries: re-executes failed runs (max_retries)
        self.monitoring = False  # run monitoring: fails runs whose worker died (on when a fault kills one)

    def tick(self, now: datetime) -> int:
        """One daemon moment; returns how many runs it launched."""
        list(launch_scheduled_runs(self.context, self.log, end_datetime_utc=now, iteration_times=self.iteration_times))
        total = _drain(self.context, self.dequeuer)
        for _ in range(8):  # retries and sensors react to the runs (failures, new bars), then to theirs
            if self.monitoring:
                list(execute_run_monitoring_iteration(self.context, self.log))
            list(self.retrier.run_iteration(self.context))
            launched = _drain(self.context, self.dequeuer)
            list(execute_sensor_iteration(self.context, self.log, None, None))
            launched += _drain(self.context, self.dequeuer)
            total += launched
            if not launched:
                return total
        raise RuntimeError(f"runs keep launching runs at {now:%Y-%m-%d %H:%M} UTC")


@contextmanager
def _source_down(days: tuple[date, ...]) -> Iterator[None]:
    """The offline source refuses every request while the simulated New York date is one of `days`."""
    from unittest import mock

    from lake.sources.synthetic import SyntheticSource

    real = SyntheticSource.fetch

    def fetch(self: SyntheticSource, *args: object, **kwargs: object) -> object:
        if datetime.now(NY).date() in days:
            raise ConnectionError(SOURCE_DOWN)  # as a dead network looks before any client wraps it
        return real(self, *args, **kwargs)  # type: ignore[arg-type]

    with mock.patch.object(SyntheticSource, "fetch", fetch):
        yield


@contextmanager
def _broker_5xx(days: tuple[date, ...]) -> Iterator[None]:
    """The simulated venue takes the order, then the answer is lost to a 503 while the simulated
    New York date is one of `days`: the worst case, an order that exists but was not confirmed."""
    from unittest import mock

    from trading.brokers.base import UnknownOutcome
    from trading.brokers.simulated import SimulatedBroker

    real = SimulatedBroker.submit

    def submit(self: SimulatedBroker, order: object) -> object:
        state = real(self, order)  # type: ignore[arg-type]
        if datetime.now(NY).date() in days:
            raise UnknownOutcome(f"{order.client_order_id}: {BROKER_5XX}")  # type: ignore[attr-defined]
        return state

    with mock.patch.object(SimulatedBroker, "submit", submit):
        yield


class WorkerKilled(BaseException):
    """A run's worker dying (SIGKILL, the node lost): not an error any handler in the run may catch."""


_DYING: set[str] = set()  # runs whose worker is dying now: nothing they write reaches the instance
_DEAD: set[str] = set()  # runs whose worker died: what run monitoring's health check finds


class KillableRunLauncher(SyncInMemoryRunLauncher):
    """The synchronous launcher with a worker health check: a run whose worker was killed is FAILED
    to run monitoring. In a deployment the k8s/Docker launchers' health checks find it; under the
    DefaultRunLauncher (no health check) the code server's watcher of its run processes fails it,
    which needs the code server alive: a run orphaned by a dead code server stays STARTED unless
    run_monitoring.max_runtime_seconds (or a job's dagster/max_runtime tag) bounds it."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        if run.run_id in _DEAD:
            return CheckRunHealthResult(WorkerStatus.FAILED, WORKER_KILLED)
        return CheckRunHealthResult(WorkerStatus.RUNNING)

    def launch_run(self, context: object) -> None:
        try:
            super().launch_run(context)  # type: ignore[arg-type]
        except WorkerKilled:
            pass  # the worker is gone; the launch itself had succeeded
        finally:
            _DEAD.update(_DYING)
            _DYING.clear()


KILLABLE_LAUNCHER = "run_launcher:\n  module: tests.soak.harness\n  class: KillableRunLauncher\n"


def _target(path: object, days: tuple[tuple[date, str], ...]) -> bool:
    """Whether `path` is the temp file of a 1m-bars write of one of (day, symbol) on that simulated day."""
    text = str(path)
    today = datetime.now(NY).date()
    return "timeframe=1m" in text and any(d == today and f"symbol={s}" in text for d, s in days) and text.endswith(".tmp") and "/bars/" in text


@contextmanager
def _lake_write_faults(disk_full: tuple[tuple[date, str], ...], killed: tuple[tuple[date, str], ...]) -> Iterator[None]:
    """Parquet writes into the lake that fail half-way: ENOSPC (an error the step sees), or the worker
    killed (nothing after it runs in that run: its later events never reach the instance)."""
    import errno
    from unittest import mock

    import polars as pl

    real_write = pl.DataFrame.write_parquet
    real_handle = dg.DagsterInstance.handle_new_event
    kills_left = set(killed)

    def write_parquet(self: pl.DataFrame, file: object, *args: object, **kwargs: object) -> object:
        if _target(file, disk_full) or _target(file, tuple(kills_left)):
            Path(str(file)).write_bytes(b"PAR1" + b"\0" * 64)  # the bytes that fit before the failure
            if _target(file, disk_full):
                raise OSError(errno.ENOSPC, DISK_FULL, str(file))
            kills_left.difference_update({k for k in kills_left if _target(file, (k,))})
            _DYING.add(dg.OpExecutionContext.get().run_id)  # type: ignore[union-attr]
            raise WorkerKilled(WORKER_KILLED)
        return real_write(self, file, *args, **kwargs)  # type: ignore[arg-type]

    def handle_new_event(self: dg.DagsterInstance, event: dg.EventLogEntry, **kwargs: object) -> None:
        if event.run_id in _DYING:
            return  # a dead process writes nothing
        real_handle(self, event, **kwargs)  # type: ignore[arg-type]

    with mock.patch.object(pl.DataFrame, "write_parquet", write_parquet), mock.patch.object(dg.DagsterInstance, "handle_new_event", handle_new_event):
        try:
            yield
        finally:
            _DYING.clear()
            _DEAD.clear()


@contextmanager
def _counting_events(result: SoakResult) -> Iterator[None]:
    """Counts the events the instance stores (a dying run's, which never reach it, are not counted)."""
    from unittest import mock

    real = dg.DagsterInstance.handle_new_event

    def handle_new_event(self: dg.DagsterInstance, event: dg.EventLogEntry, **kwargs: object) -> None:
        real(self, event, **kwargs)  # type: ignore[arg-type]
        result.events += 1

    with mock.patch.object(dg.DagsterInstance, "handle_new_event", handle_new_event):
        yield


def _launch_by_hand(instance: dg.DagsterInstance, job: str, run_config: str) -> dg.DagsterRun | None:
    """A user launching `job` (the kill switch, a resume) from the UI: in process, on this instance."""
    from orchestration.definitions import defs

    result = defs.resolve_job_def(job).execute_in_process(run_config=json.loads(run_config), instance=instance, raise_on_error=False, tags={"quantlake/trigger": "manual"})
    return instance.get_run_by_id(result.run_id)


class _SimulatedSleep:
    """`time` for Dagster's step-retry wait: a sleep moves the simulated clock instead of waiting."""

    def __init__(self, clock: time_machine.Traveller) -> None:
        self._clock = clock

    def sleep(self, seconds: float) -> None:
        self._clock.shift(seconds)

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)


def _forget_code() -> None:
    """Our code location's modules out of sys.modules: the next import builds them afresh, with the
    environment and the clock of that moment (resources read their settings when built)."""
    import sys

    for name in [n for n in sys.modules if n.split(".")[0] in ("assets", "orchestration")]:
        del sys.modules[name]


def _restart(context: WorkspaceProcessContext) -> WorkspaceProcessContext:
    """The code location restarts: our modules imported again (partitions computed as of the
    simulated now) in a new workspace; the instance, its cursors and schedule states stay."""
    instance = context.instance
    context.__exit__(None, None, None)
    _forget_code()
    fresh = _workspace(instance)
    fresh.__enter__()
    return fresh


# The cyclic collector's first threshold (CPython's default: 700 allocations). The soak's process holds
# a large heap that lives as long as it does (the code location, Dagster's definitions and storages),
# which each full collection walks again: with the default, 11 full collections took 2.5 of a week's
# 20 CPU-s; at this threshold, none. Garbage is the same, collected later.
GC_THRESHOLD = (20_000, 10, 10)


@contextmanager
def _fewer_collections() -> Iterator[None]:
    old = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLD)
    try:
        yield
    finally:
        gc.set_threshold(*old)


def _remember(instance: dg.DagsterInstance, result: SoakResult, since: datetime) -> None:
    """The runs updated since `since` (and the failed ones' logs) and the decision ticks skipped as
    halted since then, into `result`: what the fault report reads, before retention deletes it."""
    from dagster._core.scheduler.instigation import TickStatus

    for run in instance.get_runs(dg.RunsFilter(updated_after=since)):
        result.history[run.run_id] = run
        if run.status == dg.DagsterRunStatus.FAILURE and run.run_id not in result.failure_logs:
            logs = instance.all_logs(run.run_id)
            result.failure_logs[run.run_id] = "\n".join(e.message + str(e.dagster_event.event_specific_data if e.dagster_event else "") for e in logs)
    for state in instance.all_instigator_state():
        if state.instigator_name == "decision_schedule":
            for tick in instance.get_ticks(state.instigator_origin_id, state.selector_id, after=since.timestamp(), statuses=[TickStatus.SKIPPED]):
                if "halted" in (tick.skip_reason or ""):
                    result.halted.add(datetime.fromtimestamp(tick.timestamp, UTC))


class _Alerts(logging.Handler):
    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.ERROR)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record.getMessage())


def run_soak(settings: SoakSettings, log: logging.Logger | None = None) -> SoakResult:
    """Drives the deployment from `settings.start` to `settings.end`; returns the runs it made."""
    log = log or logging.getLogger("quantlake.soak")
    console_at_configured_level()  # the runs' Dagster console lines at QUANTLAKE_LOG_LEVEL (scripts/soak.py: WARNING)
    home = settings.work / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    storage = f"storage:\n  postgres:\n    postgres_url: {json.dumps(settings.storage_url)}\n" if settings.storage_url else ""
    logs = "" if os.environ.get("QUANTLAKE_SOAK_COMPUTE_LOGS") == "1" else NO_COMPUTE_LOGS
    launcher = KILLABLE_LAUNCHER if settings.killed else SYNC_LAUNCHER
    (home / "dagster.yaml").write_text(DEFAULT_INSTANCE.read_text() + launcher + logs + storage)
    result = SoakResult(settings, days=(settings.end - settings.start).days + 1)
    began, began_cpu = time.perf_counter(), time.process_time()
    first = datetime(settings.start.year, settings.start.month, settings.start.day, tzinfo=NY)
    alerts = logging.getLogger("quantlake.alerts")
    with ExitStack() as stack:
        stack.enter_context(_environ({**environment(settings), **stack.enter_context(_model(settings))}))
        # A fresh deployment: the code location loads with this soak's settings (ledger, account),
        # never with those of an earlier import in this process; and is forgotten afterwards.
        _forget_code()
        stack.callback(_forget_code)
        # A ticking clock set to each moment: time passes while runs work (step retries wait on it).
        clock = stack.enter_context(time_machine.travel(first, tick=True))
        stack.enter_context(_source_down(settings.source_down))
        stack.enter_context(_broker_5xx(settings.broker_5xx))
        stack.enter_context(_counting_events(result))  # before the faults: a dead worker's events are dropped before it
        if settings.disk_full or settings.killed:
            stack.enter_context(_lake_write_faults(settings.disk_full, settings.killed))
        # A step's retry policy (2, 4, 8 s) waits in simulated time: a fault costs no real seconds.
        from unittest import mock

        from dagster._core.execution.plan import active

        stack.enter_context(mock.patch.object(active, "time", _SimulatedSleep(clock)))
        if settings.lean:
            stack.enter_context(lean_dagster())
            stack.enter_context(_fewer_collections())
        handler = _Alerts(result.alerts)
        alerts.addHandler(handler)
        stack.callback(alerts.removeHandler, handler)
        ticks = daemon_ticks(settings.start, settings.end)
        instance = stack.enter_context(dg.DagsterInstance.from_config(str(home)))
        context = _workspace(instance).__enter__()
        stack.callback(lambda: daemons.context.__exit__(None, None, None))
        _turn_on(context, settings.sensors)
        daemons = _Daemons(context, log)
        daemons.monitoring = bool(settings.killed)
        reload_on = set(settings.reload_on)
        actions = sorted(settings.actions)
        since = first.astimezone(UTC)
        for tick in ticks:
            cpu = time.process_time()
            while actions and actions[0][0] <= tick:
                at, job, config = actions.pop(0)
                clock.move_to(at)
                _launch_by_hand(instance, job, config)
                result.launched += 1
            clock.move_to(tick + DAEMON_LAG)
            if (day := tick.astimezone(NY).date()) in reload_on:
                reload_on.discard(day)
                daemons.context = _restart(daemons.context)
                result.reloads += 1
            result.launched += daemons.tick(tick + DAEMON_LAG)
            result.ticks += 1
            _remember(instance, result, since)
            since = tick
            monday = day - timedelta(days=day.weekday())
            result.cpu_by_week[monday] = result.cpu_by_week.get(monday, 0.0) + time.process_time() - cpu
        result.runs = list(instance.get_runs())
    result.seconds = time.perf_counter() - began
    result.cpu_seconds = time.process_time() - began_cpu
    return result
