"""Jobs. Each partitioned job covers assets that share one partitions definition."""


import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import dagster as dg
from pydantic import Field

from assets.clock import run_now
from assets.partitions import daily_partitions, intraday_partitions, trading_day_partitions
from assets.resources import TradingResource
from assets.run_limits import max_runtime
from lake.store import write_text_atomic
from trading.accounts import SubAccount, ledger_pipelines, pipeline_state_files
from trading.brokers.base import OrderState
from trading.brokers.simulated import SimulatedBroker
from trading.brokers.split import SharedBroker, kill_split_account
from trading.execution import ExecutionError, Executor
from trading.models import Mode
from trading.risk import RiskLimits

ingest_intraday_job = dg.define_asset_job(
    "ingest_intraday_job",
    selection=dg.AssetSelection.assets("bars_1m", "bars_resampled", "features_1m"),
    partitions_def=intraday_partitions,
    description="1-minute bars for one trading day and symbol: fetch, validate, write, resample, features.",
    tags=max_runtime("ingest"),
)

ingest_daily_job = dg.define_asset_job(
    "ingest_daily_job",
    selection=dg.AssetSelection.assets("bars_1d", "features_1d"),
    partitions_def=daily_partitions,
    description="Daily bars for one year and symbol: fetch, validate, write, features.",
    tags=max_runtime("ingest"),
)

backtest_job = dg.define_asset_job(
    "backtest_job",
    selection=dg.AssetSelection.assets("backtest"),
    description="One backtest of the configured strategy over the lake's bars (configure in the launchpad).",
    tags=max_runtime("research"),
)

research_job = dg.define_asset_job(
    "research_job",
    selection=dg.AssetSelection.groups("research"),
    description="Backtest, parameter sweep, walk-forward and Monte Carlo with one run config.",
    tags=max_runtime("research"),
)

compact_bars_job = dg.define_asset_job(
    "compact_bars_job",
    selection=dg.AssetSelection.assets("bars_1m_compaction"),
    description="Folds each closed month's 1-minute day files into one month file per symbol (reads see every bar once in any state).",
    tags={"quantlake/kind": "maintenance", **max_runtime("maintenance")},
)

screener_job = dg.define_asset_job(
    "screener_job",
    selection=dg.AssetSelection.assets("screener"),
    partitions_def=trading_day_partitions,
    description="The day's screen (liquidity, price, gap, momentum) from the prior sessions' daily bars: what the day's decide runs decide.",
    tags=max_runtime("ingest"),  # a lake read and one partition written, 30 min before the decisions: a hang must end by then
)

decide_job = dg.define_asset_job(
    "decide_job",
    selection=dg.AssetSelection.assets("decision_cycle"),
    description="One decision cycle for the universe: agents and hard limits decide, the ledger records (paper/live: orders).",
    tags={"quantlake/kind": "trading", **max_runtime("trading")},
)

paper_session_job = dg.define_asset_job(
    "paper_session_job",
    selection=dg.AssetSelection.assets("paper_session"),
    description="Simulated paper trading over the lake's bars with the live loop; analytics and drift against the backtest.",
    tags={"quantlake/kind": "trading", "quantlake/mode": "simulation", **max_runtime("simulation")},
)

end_of_day_job = dg.define_asset_job(
    "end_of_day_job",
    selection=dg.AssetSelection.assets("end_of_day_report"),
    description="At the close: flatten when the trading window says so (paper/live), then the day's report.",
    tags={"quantlake/kind": "trading", **max_runtime("trading")},
)


class KillSwitchConfig(dg.Config):
    reason: str = Field(description="Why trading stops (recorded in the ledger).")


class ResumeConfig(dg.Config):
    by: str = Field(description="Who resumes trading (recorded in the ledger).")
    reason: str = ""


@dg.op(description="Cancel open orders, flatten every position, halt trading until resumed.")
def kill_switch_op(context: dg.OpExecutionContext, config: KillSwitchConfig, trading: TradingResource) -> None:
    try:
        closing = kill_switch(trading, context.run_id, config.reason, run_now(context))
    except ExecutionError as exc:
        raise dg.Failure(str(exc)) from exc
    context.log.warning(f"KILL SWITCH: {config.reason}; {len(closing)} closing order(s); trading halted until resume_job")


@dg.op(description="Lift a kill switch, drawdown or daily-loss halt.")
def resume_op(context: dg.OpExecutionContext, config: ResumeConfig, trading: TradingResource) -> None:
    try:
        resume(trading, context.run_id, config.by, config.reason, run_now(context))
    except ExecutionError as exc:
        raise dg.Failure(str(exc)) from exc
    context.log.info(f"trading resumed by {config.by}")


@dg.job(description="Kill switch: cancel, flatten, halt (until resume_job).", tags={"quantlake/kind": "trading", **max_runtime("trading")})
def kill_switch_job() -> None:
    kill_switch_op()


@dg.job(description="Resume trading after a kill switch or circuit breaker.", tags={"quantlake/kind": "trading", **max_runtime("trading")})
def resume_job() -> None:
    resume_op()


def _limits(trading: TradingResource) -> RiskLimits:
    """The pipeline file's limits; a file that does not load must not stop a kill switch."""
    try:
        return trading.pipeline().limits
    except ValueError:
        return RiskLimits()


@contextmanager
def trading_executor(trading: TradingResource, run_id: str, now: datetime | None = None) -> Iterator[Executor]:
    """The executor on the configured broker at `now` (default: the wall clock); validation mode has
    none, so only the halt is recorded. A simulated account is saved afterwards (its orders persist)."""
    ledger = trading.ledger()
    broker = trading.broker()
    try:
        yield Executor(broker or SimulatedBroker(cash=0.0, name="none"), ledger, mode=Mode(trading.mode), run_id=run_id, now=now or datetime.now(UTC), limits=_limits(trading))
        if isinstance(broker, SimulatedBroker):
            trading.save_simulated(broker)
    finally:
        ledger.close()


def kill_switch(trading: TradingResource, run_id: str, reason: str, now: datetime | None = None) -> list[OrderState]:
    """Cancel, flatten, halt: the closing orders are in the ledger (and the simulated account). In
    simulation each pipeline's own simulated book (`<sim_state>.<id>.json`) is flattened too, on its
    sub-account; the account's halt (written first, with no pipeline id) already holds every pipeline."""
    now = now or datetime.now(UTC)
    if Mode(trading.mode) in (Mode.PAPER, Mode.LIVE) and (split := _kill_split_account(trading, run_id, reason, now)) is not None:
        return split
    with trading_executor(trading, run_id, now) as executor:
        closing = executor.kill_switch(reason)
    if Mode(trading.mode) == Mode.SIMULATION:
        closing += _kill_pipeline_books(trading, run_id, reason, now)
    return closing


def _kill_split_account(trading: TradingResource, run_id: str, reason: str, now: datetime) -> list[OrderState] | None:
    """Paper/live with pipeline books in the ledger: each book closed by its own orders (`kill_split_account`),
    so the books go flat with the account; None when no pipeline ever traded it (the account's own kill switch)."""
    ledger = trading.ledger()
    try:
        pipelines = ledger_pipelines(ledger)
        if not pipelines:
            return None
        broker = trading.broker()
        if not isinstance(broker, SharedBroker):
            return None
        return kill_split_account(broker, ledger, pipelines, reason=reason, now=now, mode=Mode(trading.mode), run_id=run_id)
    finally:
        ledger.close()


def _kill_pipeline_books(trading: TradingResource, run_id: str, reason: str, now: datetime) -> list[OrderState]:
    """Every pipeline book on disk, whatever plan opened it; one that cannot be flattened does not stop
    the others: the failures are raised after them."""
    closing: list[OrderState] = []
    failed: list[str] = []
    limits, ledger = _limits(trading), trading.ledger()
    try:
        for pipeline_id, path in pipeline_state_files(trading._sim_path()).items():
            try:
                broker = SimulatedBroker.from_state(json.loads(path.read_text()))
                executor = Executor(broker, SubAccount(ledger, pipeline_id), mode=Mode.SIMULATION, run_id=run_id, now=now, limits=limits)
                closing += executor.kill_switch(reason)
                write_text_atomic(path, json.dumps(broker.to_state()))
            except (OSError, ValueError, KeyError) as exc:
                failed.append(f"pipeline {pipeline_id} ({path}): {exc}")
    finally:
        ledger.close()
    if failed:
        raise ExecutionError(f"kill switch: trading is halted, but these books were not flattened: {'; '.join(failed)}")
    return closing


def resume(trading: TradingResource, run_id: str, by: str, reason: str = "", now: datetime | None = None) -> None:
    with trading_executor(trading, run_id, now) as executor:
        executor.resume(by, reason)


def trading_halted(trading: TradingResource, now: datetime | None = None) -> str | None:
    """The ledger's halt (kill switch or drawdown not yet resumed), read without a broker."""
    from trading.safety import Safety

    ledger = trading.ledger()
    try:
        return Safety(ledger, _limits(trading), now or datetime.now(UTC), "schedule", Mode(trading.mode)).halted()
    finally:
        ledger.close()


JOBS: "list[dg.JobDefinition | dg.UnresolvedAssetJobDefinition]" = [
    ingest_intraday_job,
    ingest_daily_job,
    backtest_job,
    research_job,
    screener_job,
    decide_job,
    paper_session_job,
    end_of_day_job,
    kill_switch_job,
    resume_job,
    compact_bars_job,
]
