"""Several pipelines side by side, compared from the ledger: each pipeline's sub-account (its equity at
each run's mark, fills, model cost), over a chosen period, with the equity curves plotted."""

import io
from datetime import UTC, datetime

import dagster as dg
import polars as pl
from pydantic import Field

from assets.metadata import markdown_table, png_markdown
from assets.resources import TradingResource
from trading.accounts import compare_pipelines, load_account_plan


class PipelinesComparisonConfig(dg.Config):
    pipelines: str = Field(description="The plan file the decide runs used (trading.accounts.AccountPlan).")
    start: str = Field("", description="First day compared (ISO date, UTC); empty: from the first mark.")
    end: str = Field("", description="End, exclusive (ISO date, UTC); empty: to the last mark.")


@dg.asset(group_name="trading", kinds={"python"}, deps=["decision_cycle"])
def pipelines_comparison(config: PipelinesComparisonConfig, trading: TradingResource) -> dg.MaterializeResult:
    """Per pipeline of the plan: capital, equity, return, Sharpe, max drawdown, fills, model cost and the return net of it; equity curves plotted."""
    try:
        ids = [slot.id for slot in load_account_plan(config.pipelines).pipelines]
    except ValueError as exc:
        raise dg.Failure(str(exc), allow_retries=False) from exc
    start, end = (datetime.fromisoformat(d).replace(tzinfo=UTC) if d else None for d in (config.start, config.end))
    ledger = trading.ledger()
    try:
        summary, curves = compare_pipelines(ledger, ids, start=start, end=end)
    finally:
        ledger.close()
    return dg.MaterializeResult(
        metadata={
            "comparison": dg.MetadataValue.md(markdown_table(summary)),
            "per_pipeline": dg.MetadataValue.json({r["pipeline"]: {k: v for k, v in r.items() if k != "pipeline"} for r in summary.to_dicts()}),
            "equity_curves": png_markdown(equity_png(curves), "equity per pipeline"),
            "marks": curves.height,
        }
    )


def equity_png(curves: pl.DataFrame) -> bytes:
    """One line per pipeline (equity at each mark), legend by pipeline id."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for (pipeline,), curve in curves.sort("ts").group_by("pipeline", maintain_order=True):
        ax.plot(curve["ts"].to_list(), curve["equity"].to_list(), label=str(pipeline), marker=".")
    ax.set_title("Equity per pipeline")
    ax.legend(loc="best")
    fig.autofmt_xdate()
    out = io.BytesIO()
    fig.savefig(out, format="png", metadata={"Software": None})
    return out.getvalue()
