"""Compaction of the 1-minute bars: each closed month's day files folded into one file per symbol.

A year of day partitions is 252 files per symbol; compacted it is 12, and a symbol-month reads
from one file. Ingest is unchanged (a day partition is still one atomic file, re-runnable after
compaction: lake/compaction.py says why readers see every bar once in any state), on a local lake
or an object store. Months are "closed" as of the run's clock (`assets.clock.run_now`), so a
replayed run compacts what it would have.
"""

import dagster as dg

from assets.clock import run_now
from assets.resources import LakeResource
from lake.compaction import compact


@dg.asset(group_name="market_data", kinds={"parquet"}, deps=["bars_1m"])
def bars_1m_compaction(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    """Folds the day files of every month before the run's month into month files (bars, 1m)."""
    done = compact(lake.location, "bars", "1m", run_now(context).date())  # a local folder or an object store
    folded, kept = sum(c.folded for c in done), sum(c.kept for c in done)
    context.log.info(f"compacted {len(done)} symbol-months: {folded} day files folded, {kept} kept as days")
    return dg.MaterializeResult(
        metadata={"symbol_months": len(done), "day_files_folded": folded, "day_files_kept": kept, "rows": sum(c.rows for c in done)}
    )
