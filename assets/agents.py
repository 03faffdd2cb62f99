"""The agent catalog as an asset: every node type a pipeline graph can use, and the configured graph."""

import dagster as dg

from assets.resources import TradingResource


@dg.asset(group_name="trading", kinds={"python"})
def agent_catalog(context: dg.AssetExecutionContext, trading: TradingResource) -> dg.MaterializeResult:
    """The node types (built-in, team and `quantlake.agents` plugins): role, cost class, inputs, outputs,
    data read and JSON-schema config; and the configured pipeline's graph."""
    from trading.agents.registry import catalog, catalog_markdown
    from trading.graph import mermaid

    types = catalog()
    pipeline = trading.pipeline()
    graph = mermaid(pipeline.graph_spec())
    context.log.info(f"{len(types)} node types; pipeline {pipeline.name!r}")
    return dg.MaterializeResult(
        metadata={
            "types": len(types),
            "catalog": dg.MetadataValue.md(catalog_markdown(types)),
            "pipeline": pipeline.name,
            "pipeline_graph": dg.MetadataValue.md(f"```mermaid\n{graph}\n```"),
            "config_schemas": dg.MetadataValue.json({t["type"]: t["config_schema"] for t in types}),
        }
    )
