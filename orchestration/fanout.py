"""A parameter sweep fanned out as chunks: `chunked_sweep_job`.

`split_sweep` expands the grid (exactly as the `parameter_sweep` asset does) and emits one dynamic
output per chunk of contiguous combinations; `sweep_chunk` runs `backtests.sweep.sweep` on its chunk
(one step per chunk, so the multiprocess, Celery or Kubernetes executor spreads them over processes,
workers or pods); `collect_sweep` puts the chunks back in grid order, writes the table atomically
under <lake>/research/parameter_sweep_chunked/ and reports a materialization of that asset with the
same heatmap and metadata as `parameter_sweep`. Each combination is simulated on its own, so the
result equals the single-process sweep of the same grid exactly (tests/orchestration/test_celery.py).

Steps hand each other only small plans and metric tables: every chunk reads its bars from the lake
itself (local disk or object store), so nothing large goes through the IO manager.
"""

import os
import socket
from dataclasses import dataclass
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from assets.clock import run_now
from assets.metadata import markdown_table, png_markdown
from assets.research import SweepConfig, _grid
from assets.resources import LakeResource
from assets.run_limits import max_runtime
from backtests import reports
from backtests.sweep import sweep
from lake.store import write_frame_atomic
from strategies.base import StrategyParams
from strategies.registry import load_strategy

ASSET = "parameter_sweep_chunked"
METRICS = ("final_equity", "total_return", "max_drawdown", "orders")

# The table collect_sweep writes: declared so the catalog shows it with its lineage and description.
CHUNKED_SWEEP_SPEC = dg.AssetSpec(
    ASSET,
    group_name="research",
    deps=["bars_1d"],
    kinds={"numba", "polars"},
    description="The parameter sweep of `chunked_sweep_job`: the grid run as chunks on separate steps (workers), then joined.",
)


class ChunkedSweepConfig(SweepConfig):
    chunks: int = Field(4, ge=1, le=1024, description="How many steps the grid is split into (at most one per combination).")


@dataclass(frozen=True)
class SweepPlan:
    """What every step needs: the run's config with its end pinned (so all chunks read the same bars)."""

    config: dict[str, Any]

    def sweep_config(self) -> ChunkedSweepConfig:
        return ChunkedSweepConfig(**self.config)


@dataclass(frozen=True)
class SweepChunk:
    plan: SweepPlan
    index: int
    start: int  # grid positions [start, stop)
    stop: int


def chunk_bounds(n: int, chunks: int) -> list[tuple[int, int]]:
    """`n` combinations as min(chunks, n) contiguous ranges whose sizes differ by at most one."""
    if n < 1 or chunks < 1:
        raise ValueError(f"chunk_bounds: need at least one combination and one chunk, got n={n}, chunks={chunks}")
    k = min(chunks, n)
    edges = [i * n // k for i in range(k + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def _load(plan: SweepPlan, lake: LakeResource, context: dg.OpExecutionContext) -> tuple[Any, list[StrategyParams], pl.DataFrame]:
    """The strategy, the full grid and the bars swept, as `parameter_sweep` computes them."""
    config = plan.sweep_config()
    strategy = load_strategy(config.strategy)
    bars = config.load_bars(lake, run_now(context))
    on = bars if strategy.cross_sectional else bars.filter(pl.col("symbol") == bars["symbol"].min())
    return strategy, _grid(strategy, config), on


@dg.op(
    out={"plan": dg.Out(SweepPlan), "chunks": dg.DynamicOut(SweepChunk)},
    description="Expand the grid (bad names and values refused here, once) and split it into chunks.",
)
def split_sweep(context: dg.OpExecutionContext, config: ChunkedSweepConfig, lake: LakeResource):  # type: ignore[no-untyped-def]
    # Pin the end: chunks start at different moments, and an open end would read different bars.
    pinned = config.model_dump() | {"end": config.end or run_now(context).strftime("%Y-%m-%dT%H:%M:%S")}
    plan = SweepPlan(pinned)
    _, grid, on = _load(plan, lake, context)
    bounds = chunk_bounds(len(grid), config.chunks)
    context.log.info(f"sweeping {len(grid)} combinations of {config.strategy} on {on.height} bars in {len(bounds)} chunks")
    yield dg.Output(plan, "plan")
    for i, (start, stop) in enumerate(bounds):
        yield dg.DynamicOutput(SweepChunk(plan, i, start, stop), mapping_key=f"chunk_{i}", output_name="chunks")


@dg.op(description="Sweep one chunk of the grid; records which host and process ran it.")
def sweep_chunk(context: dg.OpExecutionContext, chunk: SweepChunk, lake: LakeResource) -> pl.DataFrame:
    strategy, grid, on = _load(chunk.plan, lake, context)
    config = chunk.plan.sweep_config()
    table = sweep(on, strategy, grid[chunk.start : chunk.stop], config.backtest_config())
    context.add_output_metadata(
        {"combinations": chunk.stop - chunk.start, "first": chunk.start, "host": socket.gethostname(), "pid": os.getpid()}
    )
    # The chunk's own parameter columns depend on what varies inside it: only metrics travel.
    return table.select(METRICS).with_columns(pl.lit(chunk.index).alias("chunk"))


def join_chunks(grid: list[StrategyParams], tables: list[pl.DataFrame]) -> pl.DataFrame:
    """The chunks' metrics in grid order beside the parameters that vary across the whole grid
    (the columns `backtests.sweep.sweep` gives the same grid in one piece)."""
    metrics = pl.concat(tables).sort("chunk", maintain_order=True).drop("chunk")
    if metrics.height != len(grid):
        raise dg.Failure(f"chunks returned {metrics.height} rows for {len(grid)} combinations", allow_retries=False)
    params = pl.DataFrame([p.model_dump() for p in grid])
    varying = [c for c in params.columns if params[c].n_unique() > 1] or params.columns[:1]
    return pl.concat([params.select(varying), metrics], how="horizontal")


@dg.op(description="Join the chunks in grid order, write the table atomically, report the heatmap.")
def collect_sweep(context: dg.OpExecutionContext, plan: SweepPlan, tables: list[pl.DataFrame], lake: LakeResource) -> None:
    config = plan.sweep_config()
    _, grid, on = _load(plan, lake, context)
    table = join_chunks(grid, tables)
    names = [c for c in table.columns if c not in METRICS]
    x, y = config.x or names[0], config.y or (names[1] if len(names) > 1 else names[0])
    symbols = ",".join(sorted(on["symbol"].unique().to_list()))
    png = reports.heatmap_png(table, x=x, y=y, value="total_return", title=f"{config.strategy} on {symbols}: total return")
    out = lake.location / "research" / ASSET  # a local folder or the object store's prefix
    write_frame_atomic(table, out / "results.parquet")
    reports.save_report(out / "report", {"heatmap": png})
    best = int(table["total_return"].fill_nan(None).arg_max() or 0)
    context.log_event(
        dg.AssetMaterialization(
            ASSET,
            metadata={
                "strategy": config.strategy,
                "symbols": symbols,
                "bars": on.height,
                "chunks": len(tables),
                "combinations": table.height,
                "best_total_return": round(float(table["total_return"][best]), 4),
                "best_params": dg.MetadataValue.json(grid[best].model_dump()),
                "top": dg.MetadataValue.md(markdown_table(table.sort("total_return", descending=True), max_rows=15)),
                "heatmap": png_markdown(png, "sweep heatmap"),
                "path": dg.MetadataValue.path(str(out / "results.parquet")),
            },
        )
    )


@dg.job(
    description="A parameter sweep split into chunks run as separate steps (spread over Celery workers or pods), joined in grid order.",
    tags={"quantlake/kind": "research", **max_runtime("research")},
)
def chunked_sweep_job() -> None:
    plan, chunks = split_sweep()
    collect_sweep(plan, chunks.map(sweep_chunk).collect())
