"""The decision cycle as an asset: one run of the agent pipeline over a universe, recorded in the ledger.

Thin over `trading.cycle`: reads point-in-time bars from the lake, runs analysts -> hard limits ->
risk review -> validator, writes every event to the ledger in one transaction and (in paper or
live mode) sends one order per EXECUTE decision after reconciling with the broker.
"""

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import dagster as dg
from pydantic import Field

from assets.metadata import markdown_table
from assets.partitions import universe
from assets.resources import LakeResource, TradingResource
from lake.errors import LakeError
from strategies.registry import load_strategy
from trading.agents.cache import CacheMode, ResponseCache
from trading.cycle import CycleError, run_decision_cycle
from trading.models import Mode

GROUP = "trading"


class DecisionConfig(dg.Config):
    strategy: str = Field("sma_cross", description="A built-in name or 'package.module:ATTRIBUTE'.")
    params: dict[str, Any] = Field(default_factory=dict, description="Strategy parameters; unset ones take defaults.")
    symbols: list[str] = Field(default_factory=list, description="Empty: the configured universe.")
    timeframe: Literal["1m", "5m", "15m", "1h", "1d"] = "1d"
    as_of: str = Field("", description="Decision bar (ISO time, UTC) to replay a past cycle; empty: the latest bar.")
    initial_cash: float = Field(100_000.0, gt=0, description="Funds an empty ledger.")
    replay: bool = Field(False, description="Use only cached model answers (no model calls); needs cache_dir.")


@dg.asset(group_name=GROUP, kinds={"python"}, deps=["bars_1d"])
def decision_cycle(context: dg.AssetExecutionContext, config: DecisionConfig, lake: LakeResource, trading: TradingResource) -> dg.MaterializeResult:
    """One decision cycle for the universe: signals -> analysts -> hard limits -> risk review -> validator -> decisions (and orders in paper/live)."""
    strategy = load_strategy(config.strategy)
    params = strategy.params(**config.params)
    mode = Mode(trading.mode)
    cache = None
    if trading.cache_dir:
        cache = ResponseCache(Path(trading.cache_dir), CacheMode.REPLAY if config.replay else CacheMode.RECORD)
    as_of = datetime.fromisoformat(config.as_of).astimezone(UTC) if config.as_of else None
    ledger = trading.ledger()
    try:
        report = run_decision_cycle(
            lake_root=lake.path,
            ledger=ledger,
            strategy=strategy,
            params=params,
            symbols=config.symbols or universe(),
            timeframe=config.timeframe,
            pipeline=trading.pipeline(),
            as_of=as_of,
            mode=mode,
            initial_cash=config.initial_cash,
            cache=cache,
            broker=trading.broker(),
            run_id=context.run_id,
        )
    except (CycleError, LakeError, ValueError) as exc:
        raise dg.Failure(str(exc)) from exc
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
            "prompt_tokens": int(costs["prompt_tokens"]),  # type: ignore[call-overload]
            "completion_tokens": int(costs["completion_tokens"]),  # type: ignore[call-overload]
            "cost_per_agent": dg.MetadataValue.json(costs["per_agent"]),
            "interventions": dg.MetadataValue.json(result.interventions),
            "ledger_events_written": report.events_written,
            "equity": float(report.snapshot.equity),
            "cash": float(report.snapshot.cash),
            "positions": dg.MetadataValue.json(report.snapshot.positions),
        }
    )
