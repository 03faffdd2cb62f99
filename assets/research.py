"""Research assets: backtest, parameter sweep, walk-forward, Monte Carlo. Thin over `backtests/`.

Each is configured from the launchpad (strategy, parameters or grid, symbols, timeframe, range,
costs), reads bars through the lake reader, attaches key metrics as numbers (plotted across
materializations by the UI), a markdown table and plots, and writes its tables and report files
under <lake>/research/<asset>/.
"""

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field

from assets.clock import run_now
from assets.metadata import markdown_table, png_markdown
from assets.partitions import universe
from assets.resources import LakeResource
from backtests import montecarlo, reports
from backtests.engine import BacktestConfig, BacktestResult, run_backtest, trade_returns_on_equity
from backtests.sweep import expand_grid, sweep
from backtests.walkforward import walk_forward
from lake.filesystem import ObjectPath
from lake.store import read_bars, write_frame_atomic, write_text_atomic
from strategies.base import Strategy, StrategyParams
from strategies.builtin import SMA_CROSS
from strategies.registry import load_strategy

GROUP = "research"
KEY_METRICS = ("total_return", "cagr", "sharpe", "sortino", "max_drawdown", "calmar", "win_rate", "trade_count", "exposure")
# What the launchpad scaffolds (Dagster shows plain defaults only): the default strategy's own
# parameters and sweep ranges, so a user sees where they go. Left untouched while another strategy
# is chosen, they count as unset (that strategy's defaults and declared ranges), never as refused.
SCAFFOLD_STRATEGY = "sma_cross"
SCAFFOLD_PARAMS: dict[str, Any] = {k: v for k, v in SMA_CROSS.params().model_dump().items() if k in ("fast", "slow")}
SCAFFOLD_GRID: dict[str, list[Any]] = SMA_CROSS.params_model.sweep_ranges()


class ResearchConfig(dg.Config):
    strategy: str = Field(SCAFFOLD_STRATEGY, description="A built-in name or 'package.module:ATTRIBUTE'.")
    params: dict[str, Any] = Field(
        default=SCAFFOLD_PARAMS,
        description=(
            "Strategy parameters (fixed in a sweep); unset ones take defaults, unknown ones are refused. "
            f"The scaffold is {SCAFFOLD_STRATEGY}'s; left as is with another strategy, it counts as unset."
        ),
    )
    symbols: list[str] = Field(default=universe()[:3], description="Symbols of the lake, traded as one portfolio with shared cash.")
    timeframe: Literal["1m", "5m", "15m", "1h", "1d"] = "1d"
    start: str = Field("2025-01-01", description="First bar (ISO date, UTC).")
    end: str = Field("", description="End, exclusive (ISO date, UTC); empty: now.")
    init_cash: float = 100_000.0
    fees_bps: float = 1.0
    fee_per_share: float = 0.0
    slippage_bps: float = 2.0
    allow_short: bool = False
    fractional: bool = False

    def backtest_config(self) -> BacktestConfig:
        return BacktestConfig(
            init_cash=self.init_cash,
            fees_bps=self.fees_bps,
            fee_per_share=self.fee_per_share,
            slippage_bps=self.slippage_bps,
            allow_short=self.allow_short,
            fractional=self.fractional,
            timeframe=self.timeframe,
        )

    def given_params(self) -> dict[str, Any]:
        untouched = self.strategy != SCAFFOLD_STRATEGY and self.params == SCAFFOLD_PARAMS
        return {} if untouched else dict(self.params)

    def load_bars(self, lake: LakeResource, now: datetime) -> pl.DataFrame:
        symbols = self.symbols or universe()[:3]
        dataset = "resampled" if self.timeframe in ("5m", "15m", "1h") else "bars"
        start = datetime.fromisoformat(self.start).replace(tzinfo=UTC)
        end = datetime.fromisoformat(self.end).replace(tzinfo=UTC) if self.end else now
        bars = read_bars(lake.location, symbols, self.timeframe, start, end, dataset=dataset)
        if bars.is_empty():
            raise dg.Failure(f"no {self.timeframe} bars for {symbols} in [{start:%Y-%m-%d}, {end:%Y-%m-%d}): ingest them first")
        return bars


def _out_dir(lake: LakeResource, name: str) -> Path | ObjectPath:
    return lake.location / "research" / name


def _numbers(metrics: dict[str, float]) -> dict[str, float]:
    """Key metrics for people: 4 decimals (the exact values are in metrics.json beside the report)."""
    return {k: round(float(v), 4) for k, v in metrics.items() if k in KEY_METRICS and np.isfinite(v)}


def _provenance(config: ResearchConfig, strategy_name: str, params: StrategyParams | None, bars: pl.DataFrame) -> dict[str, Any]:
    """What produced a result: strategy, parameters, symbols, bar range, costs (shown beside it in the UI)."""
    meta: dict[str, Any] = {
        "strategy": strategy_name,
        "symbols": ", ".join(sorted(bars["symbol"].unique().to_list())),
        "timeframe": config.timeframe,
        "range": f"{_stamp(bars['ts'].min())} to {_stamp(bars['ts'].max())} UTC ({bars.height} bars)",
        "costs": f"fees {config.fees_bps:g} bps + {config.fee_per_share:g}/share, slippage {config.slippage_bps:g} bps",
    }
    if params is not None:
        meta["params"] = dg.MetadataValue.json(params.model_dump())
    return meta


def _stamp(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if isinstance(value, datetime) else str(value)


def _title(strategy_name: str, given: dict[str, Any], bars: pl.DataFrame) -> str:
    """A short plot title: the strategy, the parameters the user set, the symbols (cut at 70 characters)."""
    shown = " ".join(f"{k}={v}" for k, v in sorted(given.items()))
    symbols = ",".join(sorted(bars["symbol"].unique().to_list()))
    title = " ".join(part for part in (strategy_name, shown, "on", symbols) if part)
    return title if len(title) <= 70 else title[:69] + "…"


def _grid_given(config: Any) -> dict[str, list[Any]]:
    untouched = config.strategy != SCAFFOLD_STRATEGY and config.grid == SCAFFOLD_GRID
    return {} if untouched else dict(config.grid)


def _fixed(strategy: Strategy[Any], config: ResearchConfig, swept: dict[str, Any] | None = None) -> dict[str, Any]:
    """The given parameters, plus allow_short when the run allows shorts and nobody set it."""
    given = config.given_params()
    named = set(given) | set(swept or {})
    shorts = config.allow_short and "allow_short" in strategy.params_model.model_fields and "allow_short" not in named
    return given | ({"allow_short": True} if shorts else {})


def _no_ignored_shorts(grid: list[StrategyParams], config: ResearchConfig) -> list[StrategyParams]:
    if not config.allow_short and any(getattr(p, "allow_short", False) for p in grid):
        raise dg.Failure("parameter allow_short=True, but the run's allow_short is false: its short signals would be ignored; set allow_short: true")
    return grid


def _run(config: ResearchConfig, lake: LakeResource, now: datetime) -> tuple[BacktestResult, Any, pl.DataFrame]:
    strategy = load_strategy(config.strategy)
    [params] = _no_ignored_shorts([strategy.params(**_fixed(strategy, config))], config)
    bars = config.load_bars(lake, now)
    return run_backtest(bars, strategy, params, config.backtest_config()), params, bars


@dg.asset(group_name=GROUP, deps=["bars_1d"], kinds={"vectorbt", "polars"})
def backtest(context: dg.AssetExecutionContext, config: ResearchConfig, lake: LakeResource) -> dg.MaterializeResult:
    """One strategy on a portfolio of symbols (shared cash): equity, orders, trades and metrics."""
    result, params, bars = _run(config, lake, run_now(context))
    out = _out_dir(lake, "backtest")
    write_frame_atomic(result.equity, out / "equity.parquet")
    write_frame_atomic(result.orders, out / "orders.parquet")
    write_text_atomic(out / "metrics.json", json.dumps({k: float(v) for k, v in result.metrics.items()}, indent=2))
    png = reports.equity_drawdown_png(result.equity["ts"].to_list(), result.equity["equity"].to_numpy(), title=_title(config.strategy, config.given_params(), bars))
    reports.save_report(out / "report", {"equity_drawdown": png})
    context.log.info(f"{config.strategy}: {result.orders.height} orders, total return {result.metrics['total_return']:.2%}")
    metrics_table = pl.DataFrame({"metric": list(result.metrics), "value": [float(v) for v in result.metrics.values()]})
    return dg.MaterializeResult(
        metadata={
            **_provenance(config, config.strategy, params, bars),
            **_numbers(result.metrics),
            "summary": dg.MetadataValue.md(markdown_table(metrics_table, max_rows=40)),
            "equity_and_drawdown": png_markdown(png, "equity and drawdown"),
            "orders": result.orders.height,
            "report": dg.MetadataValue.path(str(out / "report" / "index.html")),
        }
    )


class SweepConfig(ResearchConfig):
    params: dict[str, Any] = Field(default={}, description="Parameters held fixed while the grid's are swept; unset ones take defaults.")
    grid: dict[str, list[Any]] = Field(
        default=SCAFFOLD_GRID,
        description=(
            "Values per swept parameter (the others come from `params` or defaults); empty: the strategy's declared sweep ranges. "
            f"The scaffold is {SCAFFOLD_STRATEGY}'s ranges; left as is with another strategy, that strategy's own ranges are swept."
        ),
    )
    x: str = Field("", description="Heatmap column parameter (default: the first in the grid).")
    y: str = Field("", description="Heatmap row parameter (default: the second).")


def _grid(strategy: Strategy[Any], config: SweepConfig) -> list[StrategyParams]:
    """Full parameter objects: `params` fixed, `grid` swept; unknown names and bad values are refused."""
    grid = _grid_given(config)
    return _no_ignored_shorts(expand_grid(strategy, _fixed(strategy, config, grid), grid), config)


@dg.asset(group_name=GROUP, deps=["bars_1d"], kinds={"numba", "polars"})
def parameter_sweep(context: dg.AssetExecutionContext, config: SweepConfig, lake: LakeResource) -> dg.MaterializeResult:
    """Every grid combination on the first symbol (cross-sectional strategies: on all symbols), with a heatmap."""
    strategy = load_strategy(config.strategy)
    bars = config.load_bars(lake, run_now(context))
    grid = _grid(strategy, config)
    on = bars if strategy.cross_sectional else bars.filter(pl.col("symbol") == bars["symbol"].min())
    symbols = ",".join(on["symbol"].unique().sort())
    context.log.info(f"sweeping {len(grid)} combinations of {config.strategy} on {symbols} ({on.height} bars)")
    table = sweep(on, strategy, grid, config.backtest_config(), progress=lambda d, t: context.log.info(f"sweep {d}/{t}"))
    names = [c for c in table.columns if c not in ("final_equity", "total_return", "max_drawdown", "orders")]
    x, y = config.x or names[0], config.y or (names[1] if len(names) > 1 else names[0])
    png = reports.heatmap_png(table, x=x, y=y, value="total_return", title=_title(config.strategy, {}, on) + ": total return")
    out = _out_dir(lake, "parameter_sweep")
    write_frame_atomic(table, out / "results.parquet")
    reports.save_report(out / "report", {"heatmap": png})
    best = int(table["total_return"].fill_nan(None).arg_max() or 0)
    return dg.MaterializeResult(
        metadata={
            **_provenance(config, config.strategy, None, on),
            "combinations": table.height,
            "best_total_return": round(float(table["total_return"][best]), 4),
            "best_params": dg.MetadataValue.json(grid[best].model_dump()),
            "top": dg.MetadataValue.md(markdown_table(table.sort("total_return", descending=True), max_rows=15)),
            "heatmap": png_markdown(png, "sweep heatmap"),
        }
    )


class WalkForwardConfig(SweepConfig):
    folds: int = Field(5, ge=1, le=100)
    mode: Literal["rolling", "anchored"] = "rolling"
    is_bars: int = Field(0, ge=0, description="In-sample length in bars; 0: bars / (folds + 1).")
    objective: Literal["total_return", "return_over_drawdown"] = "total_return"


@dg.asset(group_name=GROUP, deps=["bars_1d"], kinds={"numba", "polars"})
def walk_forward_analysis(context: dg.AssetExecutionContext, config: WalkForwardConfig, lake: LakeResource) -> dg.MaterializeResult:
    """Optimize in-sample, trade out-of-sample, fold after fold; stitched OOS equity and efficiency
    (the first symbol, or the whole universe with shared cash for a cross-sectional strategy)."""
    strategy = load_strategy(config.strategy)
    bars = config.load_bars(lake, run_now(context))
    one = bars if strategy.cross_sectional else bars.filter(pl.col("symbol") == bars["symbol"].min())
    wf = walk_forward(
        one,
        strategy,
        _grid(strategy, config),
        config.backtest_config(),
        folds=config.folds,
        is_bars=config.is_bars or None,
        mode=config.mode,
        objective=config.objective,
        progress=lambda d, t: context.log.info(f"walk-forward fold {d}/{t} done"),
    )
    bounds = [(int(i), int(j)) for i, j in _fold_bounds(wf.oos_equity["ts"], wf.folds["oos_start"])]
    png = reports.walk_forward_png(wf.oos_equity["ts"].to_list(), wf.oos_equity["equity"].to_numpy(), bounds)
    out = _out_dir(lake, "walk_forward_analysis")
    write_frame_atomic(wf.folds, out / "folds.parquet")
    reports.save_report(out / "report", {"walk_forward": png})
    oos_return = float(wf.oos_equity["equity"][-1] / config.init_cash - 1)
    return dg.MaterializeResult(
        metadata={
            **_provenance(config, config.strategy, None, one),
            "oos_total_return": round(oos_return, 4),
            "efficiency": round(wf.efficiency, 4) if np.isfinite(wf.efficiency) else 0.0,
            "stability": dg.MetadataValue.json(wf.stability),
            "folds": dg.MetadataValue.md(markdown_table(wf.folds, max_rows=50)),
            "oos_equity": png_markdown(png, "walk-forward"),
        }
    )


def _fold_bounds(ts: pl.Series, starts: pl.Series) -> list[tuple[int, int]]:
    idx = [int(ts.search_sorted(s)) for s in starts] + [ts.len()]
    return list(zip(idx[:-1], idx[1:], strict=True))


class MonteCarloConfig(ResearchConfig):
    method: Literal["trade_reshuffle", "iid_bootstrap", "block_bootstrap"] = "block_bootstrap"
    paths: int = Field(10_000, ge=1, le=1_000_000)
    block: int = Field(20, ge=1)
    ruin_loss: float = Field(0.3, gt=0, lt=1)
    seed: int = 0


@dg.asset(group_name=GROUP, deps=["bars_1d"], kinds={"numpy"})
def monte_carlo(context: dg.AssetExecutionContext, config: MonteCarloConfig, lake: LakeResource) -> dg.MaterializeResult:
    """Resampled futures of the backtest: final return and drawdown distributions, ruin odds, a fan chart."""
    result, params, bars = _run(config, lake, run_now(context))
    equity = result.equity["equity"].to_numpy()
    if config.method == "trade_reshuffle":
        trade_returns = trade_returns_on_equity(result)
        if trade_returns.size < 2:
            raise dg.Failure(f"trade_reshuffle needs at least two closed trades; the backtest closed {trade_returns.size}")
        mc = montecarlo.trade_reshuffle(trade_returns, config.paths, ruin_loss=config.ruin_loss, seed=config.seed)
    else:
        returns = np.diff(equity) / equity[:-1]
        block = 1 if config.method == "iid_bootstrap" else min(config.block, returns.size)
        mc = montecarlo.bootstrap_returns(returns, config.paths, block=block, ruin_loss=config.ruin_loss, seed=config.seed)
    png = reports.fan_chart_png(mc.percentiles())
    reports.save_report(_out_dir(lake, "monte_carlo") / "report", {"fan_chart": png})
    summary = mc.summary()
    context.log.info(f"{config.method}: {config.paths} paths, ruin probability {mc.ruin_probability:.2%}")
    return dg.MaterializeResult(
        metadata={
            **_provenance(config, config.strategy, params, bars),
            **{k: round(float(v), 4) for k, v in summary.items()},
            "summary": dg.MetadataValue.md(markdown_table(pl.DataFrame({"statistic": list(summary), "value": list(summary.values())}))),
            "fan_chart": png_markdown(png, "Monte Carlo fan chart"),
        }
    )
