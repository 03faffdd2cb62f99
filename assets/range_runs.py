"""Assets that take a backfill's range of partitions in one run, and their per-partition metadata.

Shared by the bars, ingest and derived assets (public names: they were private helpers imported
across modules)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import dagster as dg


def range_asset(**kwargs: Any) -> Callable[..., dg.AssetsDefinition]:
    """`dg.asset` with the single-run backfill policy (a beta parameter in Dagster 1.13, which we pin:
    its warning says nothing our tests or users can act on)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.asset(**kwargs, backfill_policy=dg.BackfillPolicy.single_run())


def add_partition_metadata(context: dg.AssetExecutionContext, key: str, meta: dict[str, object]) -> None:
    """`context.add_asset_metadata(meta, partition_key=key)` without its check that `key` is in the
    run's range, which recomputes the range on every call (~0.1 s for a year of sessions: a minute
    for a year's partitions). Our keys come from the run's own range. Dagster 1.13 internals, pinned;
    the public call is the fallback if they move."""
    step = getattr(context, "_step_execution_context", None)
    accumulator = getattr(step, "_metadata_accumulator", None)
    if step is None or accumulator is None or not hasattr(accumulator, "with_additional_asset_metadata"):
        context.add_asset_metadata(meta, partition_key=key)
        return
    step._metadata_accumulator = accumulator.with_additional_asset_metadata(asset_key=context.assets_def.key, metadata=meta, partition_key=key)  # noqa: SLF001
