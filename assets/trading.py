"""The decision cycle as an asset: one run of the agent pipeline over a universe, recorded in the ledger.

Thin over `trading.cycle` (one `trading.step.trading_step` at the run's now): reconciles with the
broker, checks the breakers, reads point-in-time bars from the lake, runs analysts -> hard limits ->
risk review -> validator, writes every event to the ledger and (simulation, paper, live) sends one
order per EXECUTE decision, under the trading window and the breakers of the pipeline's limits.
"""

import json
import math
import shutil
import tempfile
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal, cast

import dagster as dg
import polars as pl
from pydantic import Field

from assets.clock import DAEMON_SCHEDULED_TAG, NOW_TAG, SCHEDULED_TAG, run_now
from assets.metadata import markdown_table, png_markdown
from assets.partitions import universe
from assets.pipelines_comparison import pipelines_comparison  # noqa: F401  # registered with this module's assets
from assets.policies import TRADING_POOL, TRANSIENT_RETRY
from assets.resources import LakeResource, TradingResource
from assets.screener import screened_universe
from backtests.engine import run_backtest
from backtests.reports import equity_drawdown_png
from lake.errors import LakeError
from lake.filesystem import ObjectPath
from lake.store import write_bytes_atomic, write_text_atomic
from strategies.registry import load_strategy
from trading.accounts import (
    AccountPlan,
    SubAccount,
    configured_plan_file,
    load_account_plan,
    unattributed_positions,
)
from trading.agents.cache import CacheMode, ResponseCache
from trading.analytics import breakdown, drift_report, fills_from_ledger, performance, round_trips
from trading.brokers.base import Broker
from trading.brokers.simulated import SimConfig, SimulatedBroker
from trading.brokers.split import PipelineBroker, SharedBroker, split
from trading.cycle import (
    CycleError,
    day_summary,
    headlines_over,
    last_closes,
    run_decision_cycle,
    run_pipelines,
)
from trading.execution import ExecutionError, Executor
from trading.ledger import Ledger
from trading.models import Mode
from trading.pipeline import PipelineConfig, load_pipeline_config
from trading.safety import session_of
from trading.session import backtest_config, run_simulated_session, session_bars, sizing_limits

GROUP = "trading"


class DecisionConfig(dg.Config):
    strategy: str = Field("sma_cross", description="A built-in name or 'package.module:ATTRIBUTE'.")
    params: dict[str, Any] = Field(default_factory=dict, description="Strategy parameters; unset ones take defaults.")
    symbols: list[str] = Field(default_factory=list, description="Empty: the configured universe.")
    timeframe: Literal["1m", "5m", "15m", "1h", "1d"] = "1d"
    as_of: str = Field("", description="Decision bar (ISO time, UTC) to replay a past cycle; empty: the latest bar.")
    initial_cash: float = Field(100_000.0, gt=0, description="Funds an empty ledger.")
    replay: bool = Field(False, description="Use only cached model answers (no model calls); needs cache_dir.")
    pipelines: str = Field(
        "",
        description="A plan file of several pipelines side by side (trading.accounts.AccountPlan: id, file, capital, strategy each); "
        "empty: QUANTLAKE_PIPELINES' plan, else the one pipeline.",
    )


@dg.asset(group_name=GROUP, kinds={"python"}, deps=["bars_1d"], retry_policy=TRANSIENT_RETRY, pool=TRADING_POOL)
def decision_cycle(context: dg.AssetExecutionContext, config: DecisionConfig, lake: LakeResource, trading: TradingResource) -> dg.MaterializeResult:
    """One decision cycle for the universe: signals -> analysts -> hard limits -> risk review -> validator -> decisions (and orders in paper/live)."""
    try:  # bad configuration (strategy, parameters, mode, missing keys): a retry cannot fix it
        strategy = load_strategy(config.strategy)
        params = strategy.params(**config.params)
        mode = Mode(trading.mode)
        as_of = datetime.fromisoformat(config.as_of).astimezone(UTC) if config.as_of else None
        pipeline = trading.pipeline()  # its screener section picks the symbols when the run names none
        if plan_file := config.pipelines or configured_plan_file():  # QUANTLAKE_PIPELINES when the run names none
            return _side_by_side(context, config, lake, trading, load_account_plan(plan_file), strategy, params, as_of)
        broker = trading.broker()
    except (ValueError, ExecutionError) as exc:
        raise dg.Failure(str(exc), allow_retries=False) from exc
    cache = _cache(trading, config)
    ledger = trading.ledger()
    try:
        report = run_decision_cycle(
            lake_root=lake.location,
            ledger=ledger,
            strategy=strategy,
            params=params,
            symbols=config.symbols or screened_universe(lake.location, run_now(context), as_of, config.timeframe, pipeline.screener),
            timeframe=config.timeframe,
            pipeline=pipeline,
            as_of=as_of,
            mode=mode,
            initial_cash=config.initial_cash,
            cache=cache,
            broker=broker,
            run_id=context.run_id,
            now=run_now(context),
            checkpoint=checkpoint_file(ledger, context),
            thread_key=cycle_key(context),
        )
        if isinstance(broker, SimulatedBroker):
            trading.save_simulated(broker)  # after the ledger has the cycle: the account continues next run
    except (CycleError, LakeError, ValueError) as exc:
        raise dg.Failure(str(exc), allow_retries=False) from exc  # bad input: a retry cannot fix it
    finally:
        ledger.close()
    result = report.result
    context.log.info(f"{len(result.executed())} EXECUTE of {len(result.decisions)} decisions as of {report.as_of:%Y-%m-%d %H:%M}")
    table = report.decisions_frame()
    if not table.is_empty():
        table = table.select("symbol", "verdict", "side", "quantity", "entry", "stop", "target1", "target2", "rationale")
    costs = result.costs
    return dg.MaterializeResult(
        metadata={
            "mode": mode.value,
            "as_of": report.as_of.isoformat(),
            "decisions": dg.MetadataValue.md(markdown_table(table, max_rows=50)),
            "execute": len(result.executed()),
            "hold": len(result.decisions) - len(result.executed()),
            "skipped_symbols": dg.MetadataValue.json(report.skipped),
            "orders_sent": len(report.orders),
            "model_calls": result.model_calls,
            "cost_usd": float(costs["run_cost_usd"]),
            "estimated_cost_usd": float(report.estimate["usd"]),
            # Every provider of every chain asked and charged; which provider costs most per node.
            "estimated_cost_usd_worst_case": float(report.estimate.get("usd_worst_case", 0.0)),
            "costliest_providers": dg.MetadataValue.json(report.estimate.get("costliest_providers", {})),  # type: ignore[arg-type]
            # Spent and left of the day's and the month's budgets, and why a run did not start (blocked).
            "budget": dg.MetadataValue.json(report.estimate.get("budget", {})),  # type: ignore[arg-type]
            "prompt_tokens": int(costs["prompt_tokens"]),  # type: ignore[call-overload]
            "completion_tokens": int(costs["completion_tokens"]),  # type: ignore[call-overload]
            "total_tokens": int(costs["total_tokens"]),  # type: ignore[call-overload]
            "unpriced_tokens": int(costs["unpriced_tokens"]),  # type: ignore[call-overload]  # counted, in no USD figure
            "unpriced_models": dg.MetadataValue.json(costs["unpriced_models"]),
            "estimated_tokens": int(costs["estimated_tokens"]),  # type: ignore[call-overload]  # the server sent no usage
            "cost_per_agent": dg.MetadataValue.json(costs["per_agent"]),
            "cost_per_provider": dg.MetadataValue.json(costs.get("per_provider", {})),  # answers, failures, fallbacks, tokens
            "interventions": dg.MetadataValue.json(result.interventions + (report.step.trips if report.step else [])),
            "blocked": (report.step.blocked if report.step else None) or "",
            "flattened_orders": len(report.step.flattened) if report.step else 0,
            "ledger_events_written": report.events_written,
            "equity": float(report.snapshot.equity),
            "cash": float(report.snapshot.cash),
            "positions": dg.MetadataValue.json(report.snapshot.positions),
        }
    )


def _side_by_side(
    context: dg.AssetExecutionContext, config: DecisionConfig, lake: LakeResource, trading: TradingResource, plan: AccountPlan, strategy: Any, params: Any, as_of: datetime | None
) -> dg.MaterializeResult:
    """The plan's pipelines, each on its own sub-account of the ledger (`trading.cycle.run_pipelines`);
    in simulation each has its own simulated broker (its state beside the account's, by pipeline id); in
    paper and live they share the one Alpaca account, split per pipeline (`trading.brokers.split`: orders
    under the pipeline's prefix, its fills booked in its sub-account, its capital a share of the account's equity)."""
    mode = Mode(trading.mode)
    configs = {slot.id: pipeline_config(trading, plan.file_of(slot)) for slot in plan.pipelines}
    try:  # each pipeline's own strategy and params, else the run's (a bad one fails the run: the caller's dg.Failure)
        deciders = {slot.id: slot.decides_with(strategy, params) for slot in plan.pipelines}
    except ValueError as exc:
        raise ValueError(f"pipelines plan {plan.source}: {exc}") from None
    shared = trading.broker() if mode in (Mode.PAPER, Mode.LIVE) else None  # one account, split per pipeline below
    if shared is not None and not isinstance(shared, SharedBroker):
        raise ValueError(f"{shared.name} cannot be split between pipelines (it has no cancel of one order or no prices)")
    account_cash = shared.account().equity if shared is not None else config.initial_cash  # shares of the broker's account (its worth: the cash moves as it trades)
    capital = plan.allocations(account_cash)
    brokers: dict[str, Broker | None] = {s.id: _simulated(trading, s.id, capital[s.id]) if mode == Mode.SIMULATION else None for s in plan.pipelines}
    ledger = trading.ledger()
    try:
        if shared is not None:  # each pipeline's orders tagged with its id, its fills booked in its sub-account (trading.brokers.split)
            books: dict[str, Ledger] = {s.id: SubAccount(ledger, s.id) for s in plan.pipelines}
            brokers = dict(split(shared, books, capital, now=run_now(context), mode=mode, run_id=context.run_id))
        runs = run_pipelines(
            plan=plan, configs=configs, ledger=ledger, brokers=brokers, initial_cash=account_cash, run_id=context.run_id,
            thread_key=cycle_key(context), lake_root=lake.location, strategy=strategy, params=params, deciders=deciders,
            symbols=config.symbols or screened_universe(lake.location, run_now(context), as_of, config.timeframe, trading.pipeline().screener),
            timeframe=config.timeframe,
            as_of=as_of, mode=mode, cache=_cache(trading, config), now=run_now(context), checkpoint=checkpoint_file(ledger, context),
        )  # fmt: skip
        for view in brokers.values():  # what filled during the run (Alpaca's market orders) is booked now, not at the next run
            if isinstance(view, PipelineBroker):
                view.sync()
        # What the broker's account holds that no pipeline's book says it holds (a trade by hand, an order no pipeline sent).
        unattributed = unattributed_positions(shared.positions(), ledger, [s.id for s in plan.pipelines]) if shared is not None else {}
        for pipeline_id, broker in brokers.items():
            if isinstance(broker, SimulatedBroker):
                write_text_atomic(_sim_file(trading, pipeline_id), json.dumps(broker.to_state()))
    except (CycleError, LakeError, ExecutionError) as exc:
        raise dg.Failure(str(exc), allow_retries=False) from exc
    finally:
        ledger.close()
    rows: list[dict[str, Any]] = [
        {"pipeline": r.pipeline_id, "strategy": deciders[r.pipeline_id][0].name, "capital": r.capital, "equity": r.report.snapshot.equity,
         "execute": len(r.report.result.executed()),
         "hold": len(r.report.result.decisions) - len(r.report.result.executed()), "orders": len(r.report.orders),
         "model_calls": r.report.result.model_calls, "cost_usd": float(r.report.result.costs["run_cost_usd"]),
         "blocked": (r.report.step.blocked if r.report.step else None) or ""}
        for r in runs
    ]  # fmt: skip
    context.log.info("; ".join(f"{r['pipeline']}: {r['execute']} EXECUTE, equity {r['equity']:,.2f}" for r in rows))
    decisions = [r.report.decisions_frame().select(pl.lit(r.pipeline_id).alias("pipeline"), pl.all()) for r in runs if r.report.result.decisions]
    table = pl.concat(decisions, how="diagonal_relaxed") if decisions else pl.DataFrame()
    if not table.is_empty():
        table = table.select("pipeline", "symbol", "verdict", "side", "quantity", "entry", "stop", "rationale")
    costs = [r.report.result.costs for r in runs]
    return dg.MaterializeResult(
        metadata={
            "mode": mode.value,
            "as_of": runs[0].report.as_of.isoformat() if runs else "",
            "pipelines": dg.MetadataValue.md(markdown_table(pl.DataFrame(rows))),
            "decisions": dg.MetadataValue.md(markdown_table(table, max_rows=50)),  # every pipeline's, as the one pipeline's run shows its own
            **{k: sum(int(c[k]) for c in costs) for k in ("prompt_tokens", "completion_tokens", "total_tokens", "unpriced_tokens", "estimated_tokens")},  # type: ignore[call-overload]
            "unpriced_models": dg.MetadataValue.json(sorted({m for c in costs for m in c["unpriced_models"]})),  # type: ignore[attr-defined]
            "execute": sum(r["execute"] for r in rows),
            "hold": sum(r["hold"] for r in rows),
            "orders_sent": sum(r["orders"] for r in rows),
            "model_calls": sum(r["model_calls"] for r in rows),
            "cost_usd": sum(r["cost_usd"] for r in rows),
            "equity": sum(r["equity"] for r in rows),
            "equity_per_pipeline": dg.MetadataValue.json({r["pipeline"]: r["equity"] for r in rows}),
            "blocked": dg.MetadataValue.json({r["pipeline"]: r["blocked"] for r in rows if r["blocked"]}),  # why new risk was refused
            "paused": dg.MetadataValue.json([s.id for s in plan.pipelines if s.paused]),
            "unattributed_positions": dg.MetadataValue.json(unattributed),
            "plan": dg.MetadataValue.path(str(plan.source)) if plan.source else "",
        }
    )


def pipeline_config(trading: TradingResource, file: Path | None) -> PipelineConfig:
    """A pipeline file with the resource's overrides (model, base URL, budgets), as `trading.pipeline()` reads its own."""
    return load_pipeline_config(
        file,
        llm_model=trading.llm_model or None,
        llm_base_url=trading.llm_base_url or None,
        daily_budget_usd=trading.daily_budget_usd,
        daily_budget_tokens=trading.daily_budget_tokens,
        monthly_budget_usd=trading.monthly_budget_usd,
    )


def _cache(trading: TradingResource, config: DecisionConfig) -> ResponseCache | None:
    return ResponseCache(Path(trading.cache_dir), CacheMode.REPLAY if config.replay else CacheMode.RECORD) if trading.cache_dir else None


def _sim_file(trading: TradingResource, pipeline_id: str) -> Path:
    """A pipeline's simulated broker state: beside the account's (`sim_state_file`), named by the pipeline."""
    account = trading._sim_path()  # the account's own file (the resource's rule for its default)
    return account.with_name(f"{account.stem}.{pipeline_id}{account.suffix}")


def _simulated(trading: TradingResource, pipeline_id: str, capital: float) -> SimulatedBroker:
    path = _sim_file(trading, pipeline_id)
    return SimulatedBroker.from_state(json.loads(path.read_text())) if path.exists() else SimulatedBroker(cash=capital)


def checkpoint_file(ledger: Ledger, context: dg.AssetExecutionContext) -> str:
    """Where decide runs keep the graph's threads when the pipeline file does not say: the ledger's own
    store: beside a SQLite ledger (`<ledger>.graph.sqlite`), in a PostgreSQL ledger's database (its URL:
    LangGraph's PostgresSaver tables beside the ledger's, in its search_path), else (an in-memory ledger)
    in the Dagster instance's storage. A cycle killed mid-graph and run again resumes from it
    (`checkpoint: memory` in the pipeline file turns it off)."""
    if ledger.dialect == "postgresql":
        return ledger.engine.url.render_as_string(hide_password=False)  # never shown: trading.graph.checkpoint names only the host
    database = ledger.engine.url.database if ledger.dialect == "sqlite" else None
    if database and database != ":memory:" and not database.startswith("file:"):
        path = Path(database).expanduser()
        return str(path.with_name(f"{path.stem}.graph.sqlite"))
    return str(Path(context.instance.storage_directory()) / "graph_checkpoints.sqlite")


def cycle_key(context: dg.AssetExecutionContext) -> str:
    """What the run is one attempt at, the same for a retry, a re-execution or a relaunch at the same run
    clock (as orchestration.observability.cycle_id names it in the logs): the graph's threads are named by it."""
    tags = context.run.tags if context.run is not None else {}
    if key := tags.get("dagster/run_key"):
        return key
    if when := tags.get(NOW_TAG) or tags.get(SCHEDULED_TAG) or tags.get(DAEMON_SCHEDULED_TAG):
        return f"{context.job_name}@{when}"
    return tags.get("dagster/root_run_id") or context.run_id


class EndOfDayConfig(dg.Config):
    day: str = Field("", description="Trading day (YYYY-MM-DD, the exchange's date); empty: the run's day.")
    symbols: list[str] = Field(default_factory=list, description="Symbols to mark positions with; empty: the universe.")
    pipelines: str = Field(
        "", description="The decide runs' plan of pipelines side by side: each simulated sub-account is flattened too; empty: QUANTLAKE_PIPELINES' plan, if any."
    )


@dg.asset(group_name=GROUP, kinds={"python"}, deps=["decision_cycle"])
def end_of_day_report(context: dg.AssetExecutionContext, config: EndOfDayConfig, lake: LakeResource, trading: TradingResource) -> dg.MaterializeResult:
    """End of day: flatten what the window's end left open (paper/live/simulation), then the day's report from the ledger."""
    now = run_now(context)
    limits = trading.pipeline().limits
    day = date.fromisoformat(config.day) if config.day else session_of(now, limits)
    symbols = config.symbols or universe()
    try:
        marks = last_closes(lake.location, symbols, day)
    except LakeError:
        marks = {}
    ledger = trading.ledger()
    try:
        mode = Mode(trading.mode)
        broker = trading.broker()
        plan_file = config.pipelines or configured_plan_file()
        flattened = 0
        if plan_file and mode in (Mode.PAPER, Mode.LIVE) and broker is not None:
            # One account split per pipeline: each closes its own book (its orders tagged, its fills its own),
            # at its own window's end; an account-wide close would leave every book holding what the broker sold.
            flattened = _flatten_split(trading, load_account_plan(plan_file), broker, ledger, context.run_id, now)
        elif broker is not None:
            flattened = len(Executor(broker, ledger, mode=mode, run_id=context.run_id, now=now, limits=limits).flatten_if_due())
            if isinstance(broker, SimulatedBroker):
                trading.save_simulated(broker)  # the closing orders fill on the simulation's next bar
        if plan_file and mode == Mode.SIMULATION:
            flattened += _flatten_pipelines(trading, load_account_plan(plan_file), ledger, context.run_id, now)
        summary = day_summary(ledger, day, marks, limits.exchange)
    except ValueError as exc:  # a bad plan: a retry cannot fix it
        raise dg.Failure(str(exc), allow_retries=False) from exc
    finally:
        ledger.close()
    report = _eod_markdown(summary, flattened)
    out = lake.location / "reports" / "eod" / f"{day.isoformat()}.md"
    write_text_atomic(out, report)
    context.log.info(f"end of day {day}: {summary['decisions']} decisions, {summary['orders']} orders, equity {summary['equity']:,.2f}")
    return dg.MaterializeResult(
        metadata={
            "day": day.isoformat(),
            "report": dg.MetadataValue.md(report),
            "report_file": dg.MetadataValue.path(str(out)),
            "decisions": summary["decisions"],
            "orders": summary["orders"],
            "fills": summary["fills"],
            "flattened_orders": flattened,
            "equity": float(summary["equity"]),
            "realized_pnl": float(summary["realized_pnl"]),
            "unrealized_pnl": float(summary["unrealized_pnl"]),
            "model_cost_usd": float(summary["model_cost_usd"]),
        }
    )


def _flatten_pipelines(trading: TradingResource, plan: AccountPlan, ledger: Ledger, run_id: str, now: datetime) -> int:
    """Each pipeline's simulated account flattened at its own window's end (its limits), on its sub-account."""
    closing = 0
    for slot in plan.pipelines:
        if not _sim_file(trading, slot.id).exists():
            continue  # never traded
        broker = _simulated(trading, slot.id, 0.0)
        limits = pipeline_config(trading, plan.file_of(slot)).limits
        closing += len(Executor(broker, SubAccount(ledger, slot.id), mode=Mode.SIMULATION, run_id=run_id, now=now, limits=limits).flatten_if_due())
        write_text_atomic(_sim_file(trading, slot.id), json.dumps(broker.to_state()))
    return closing


def _flatten_split(trading: TradingResource, plan: AccountPlan, broker: Broker, ledger: Ledger, run_id: str, now: datetime) -> int:
    """Each pipeline's book on the shared paper/live account flattened at its own window's end, by its own orders."""
    if not isinstance(broker, SharedBroker):
        raise ValueError(f"{broker.name} cannot be split between pipelines (it has no cancel of one order or no prices)")
    mode, closing = Mode(trading.mode), 0
    for slot in plan.pipelines:
        book = SubAccount(ledger, slot.id)
        view = PipelineBroker(broker, slot.id, book, capital=0.0, now=now, mode=mode, run_id=run_id)
        limits = pipeline_config(trading, plan.file_of(slot)).limits
        closing += len(Executor(view, book, mode=mode, run_id=run_id, now=now, limits=limits).flatten_if_due())
    return closing


def _eod_markdown(s: dict[str, Any], flattened: int) -> str:
    lines = [
        f"# End of day {s['day']}",
        "",
        f"- equity **{s['equity']:,.2f}** (cash {s['cash']:,.2f}); realized P&L {s['realized_pnl']:,.2f}, unrealized {s['unrealized_pnl']:,.2f}",
        f"- {s['decisions']} decisions, {len(s['executed'])} to execute; {s['orders']} orders, {s['fills']} fills, {s['rejections']} rejections",
        f"- model cost ${s['model_cost_usd']:.4f}",
        f"- flattened at the window's end: {flattened} order(s)" if flattened else "- no flatten needed",
    ]
    if s["interventions"]:
        lines += ["", "## Interventions", *[f"- {i}" for i in s["interventions"]]]
    if s["executed"]:
        lines += ["", "## Executed decisions", "", "| symbol | side | quantity | entry | stop | why |", "|---|---|---:|---:|---:|---|"]
        lines += [f"| {e['symbol']} | {e['side']} | {e['quantity']} | {e['entry']} | {e['stop']} | {str(e['rationale'])[:60]} |" for e in s["executed"]]
    if s["positions"]:
        lines += ["", "## Positions", *[f"- {sym}: {qty:g}" for sym, qty in sorted(s["positions"].items())]]
    return "\n".join(lines) + "\n"


class PaperSessionConfig(dg.Config):
    strategy: str = Field("donchian_breakout", description="A built-in name or 'package.module:ATTRIBUTE'.")
    params: dict[str, Any] = Field(default_factory=dict)
    symbols: list[str] = Field(default_factory=list, description="Empty: the first three symbols of the universe.")
    timeframe: Literal["1m", "5m", "15m", "1h", "1d"] = "1d"
    start: str = Field("2024-01-01", description="First bar (ISO date, UTC); the strategy's lookback warms up from here.")
    end: str = Field("", description="End, exclusive (ISO date, UTC); empty: now.")
    initial_cash: float = Field(100_000.0, gt=0)
    slippage_bps: float = Field(2.0, ge=0)
    commission_per_share: float = Field(0.005, ge=0)
    partial_fill_prob: float = Field(0.0, ge=0, le=1)
    reject_prob: float = Field(0.0, ge=0, le=1)
    seed: int = 7


@dg.asset(group_name=GROUP, kinds={"python"}, deps=["bars_1d"])
def paper_session(context: dg.AssetExecutionContext, config: PaperSessionConfig, lake: LakeResource, trading: TradingResource) -> dg.MaterializeResult:
    """Simulated paper trading over the lake's bars (pipeline, limits, executor, simulated broker, ledger), with analytics and drift against the backtest with the same costs and sizing limits."""
    strategy = load_strategy(config.strategy)
    params = strategy.params(**config.params)
    symbols = config.symbols or universe()[:3]
    start = datetime.fromisoformat(config.start).replace(tzinfo=UTC)
    end = datetime.fromisoformat(config.end).replace(tzinfo=UTC) if config.end else run_now(context)
    try:
        bars = session_bars(lake.location, symbols, config.timeframe, start, end)
    except LakeError as exc:
        raise dg.Failure(str(exc)) from exc
    if bars.is_empty():
        raise dg.Failure(f"no {config.timeframe} bars for {symbols} in [{config.start}, {config.end or 'now'}): ingest them first")
    sim = SimConfig(
        seed=config.seed,
        slippage_bps=config.slippage_bps,
        commission_per_share=config.commission_per_share,
        partial_fill_prob=config.partial_fill_prob,
        reject_prob=config.reject_prob,
    )
    pipeline = trading.pipeline()
    # The team's news nodes read what a decision cycle at each bar would: the news lake up to that bar.
    stamps = bars["ts"]
    headlines_at = headlines_over(lake.location, pipeline, symbols, cast(datetime, stamps.min()), cast(datetime, stamps.max()))
    # A session over history is its own account: its own ledger per run, never the trading ledger
    # (whose portfolio, halts and peak would otherwise take in a simulation's fills and marks).
    stored = lake.location / "research" / "paper_session" / "ledgers" / f"{context.run_id}.sqlite"
    ledger_path = _session_ledger_file(stored)
    ledger = Ledger(f"sqlite:///{ledger_path}")
    done = False
    spend = trading.ledger()  # the model spend is real money: it counts against the trading ledger's budget
    try:
        session = run_simulated_session(
            bars=bars,
            ledger=ledger,
            strategy=strategy,
            params=params,
            pipeline=pipeline,
            sim=sim,
            initial_cash=config.initial_cash,
            run_id=context.run_id,
            progress=lambda done, total: context.log.info(f"paper session: bar {done}/{total}"),
            headlines_at=headlines_at,
            lake_root=lake.location,  # type: ignore[arg-type]  # other timeframes a node declares (trend_filter) come from the lake
            spend_ledger=spend,
            now=run_now(context),
        )
        fills = fills_from_ledger(ledger, run_id=context.run_id)
        done = True
    finally:
        ledger.close()
        spend.close()
        if isinstance(stored, ObjectPath):
            _store_session_ledger(ledger_path, stored if done else None)
    marks = bars.select("ts", "symbol", "close")
    perf = performance(fills, marks, config.initial_cash, config.timeframe)
    # The backtest with the session's costs and hard sizing limits: the session must make its orders
    # (drift 0 unless faults, breakers or the window act); the one without limits shows what they cost.
    costs = backtest_config(sim, config.initial_cash, config.timeframe)
    expected = run_backtest(bars, strategy, params, costs, limits=sizing_limits(pipeline.limits, symbols))
    unlimited = run_backtest(bars, strategy, params, costs)
    drift = drift_report(fills, expected.orders, orders=session.order_log, limits_in_backtest=True)
    equity_gap = float(abs(session.equity["equity"].to_numpy() - expected.equity["equity"].to_numpy()).max())
    trips = round_trips(fills)
    png = equity_drawdown_png(
        session.equity["ts"].to_list(),
        session.equity["equity"].to_numpy(),
        expected.equity["equity"].to_numpy(),
        "Paper session (solid) vs backtest (dashed)",
        labels=("paper", "backtest"),
    )
    numbers = {k: float(v) for k, v in perf.items() if isinstance(v, int | float) and math.isfinite(v)}
    return dg.MaterializeResult(
        metadata={
            **{k: numbers[k] for k in ("total_pnl", "realized_pnl", "sharpe", "max_drawdown", "win_rate", "profit_factor", "commissions") if k in numbers},
            "bars": session.bars,
            "orders": session.orders,
            "fills": session.fills,
            "equity_vs_backtest": png_markdown(png, "equity"),
            "drift": dg.MetadataValue.md(drift.markdown()),
            "by_symbol": dg.MetadataValue.md(markdown_table(breakdown(trips, "symbol"))),
            "by_weekday": dg.MetadataValue.md(markdown_table(breakdown(trips, "weekday"))),
            "backtest_total_return": float(expected.metrics["total_return"]),
            "backtest_without_limits_total_return": float(unlimited.metrics["total_return"]),
            "drift_shortfall": float(drift.summary["shortfall"]),
            "drift_matched_orders": int(drift.summary["matched"]),
            "drift_missing_orders": int(drift.summary["missing"]),
            "drift_extra_orders": int(drift.summary["extra"]),
            "max_equity_difference": equity_gap,
            "ledger": dg.MetadataValue.path(str(stored)),
        }
    )


def _session_ledger_file(stored: Path | ObjectPath) -> Path:
    """Where a paper session's SQLite ledger is written: its file in the lake on a local lake; on an
    object-store lake (SQLite needs a local file) a fresh local temp folder's, uploaded when it ends."""
    if isinstance(stored, ObjectPath):
        return Path(tempfile.mkdtemp(prefix="paper_session-")) / stored.name
    stored.parent.mkdir(parents=True, exist_ok=True)
    return stored


def _store_session_ledger(local: Path, stored: ObjectPath | None) -> None:
    """The finished session's ledger uploaded whole (staged, then copied into place: a reader never sees
    half a database), then the local temp folder removed; `stored` None (the session failed): removed only."""
    try:
        if stored is not None:
            write_bytes_atomic(stored, local.read_bytes())
    finally:
        shutil.rmtree(local.parent, ignore_errors=True)


class CostEstimateConfig(dg.Config):
    symbols: list[str] = Field(default_factory=list, description="Symbols a run decides on; empty: the universe.")
    runs_per_day: int = Field(1, ge=0, description="Decide runs a session (the schedule's).")
    day: str = Field("", description="The day whose spend counts (YYYY-MM-DD); empty: the run clock's day in New York.")


@dg.asset(group_name=GROUP, kinds={"python"})
def cost_estimate(context: dg.AssetExecutionContext, config: CostEstimateConfig, trading: TradingResource) -> dg.MaterializeResult:
    """`quantlake estimate` as an asset: the pipeline's expected model spend per run, day and month, and
    what the day's and the month's budgets have left (nothing is decided or spent)."""
    from zoneinfo import ZoneInfo

    from trading.estimate import pipeline_estimate

    day = date.fromisoformat(config.day) if config.day else run_now(context).astimezone(ZoneInfo("America/New_York")).date()
    ledger = trading.ledger()
    try:
        report = pipeline_estimate(ledger, trading.pipeline(), symbols=len(config.symbols or universe()), day=day, runs_per_day=config.runs_per_day)
    finally:
        ledger.close()
    return dg.MaterializeResult(metadata={k: dg.MetadataValue.json(v) if isinstance(v, dict) else v for k, v in report.items()})
