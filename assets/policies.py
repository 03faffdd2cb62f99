"""Retry and concurrency settings shared by assets that call outside systems."""

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from lake.errors import LakeError, TransientSourceError

# Transient faults (a data API timing out, a broker 503) retry with exponential backoff and jitter.
# Errors that a retry cannot fix raise dg.Failure(allow_retries=False).
TRANSIENT_RETRY = dg.RetryPolicy(max_retries=3, delay=2.0, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)

# Concurrency pools (limits in deploy/dagster.yaml): across all runs, at most N steps at once call
# the market-data API, and at most N the model and broker.
MARKET_DATA_POOL = "market_data"
TRADING_POOL = "broker"


# Dagster's run tag: False keeps the run-retries daemon from re-running a run its step failed.
RETRY_ON_STEP_FAILURE_TAG = "dagster/retry_on_asset_or_op_failure"


@contextmanager
def bad_input_fails_once(context: dg.AssetExecutionContext | None = None) -> Iterator[None]:
    """Bad input (a malformed file, an unknown symbol, a refused request, a bad setting) fails the
    step once with its reason: a retry would read the same bytes. With `context`, the run is tagged
    so the run-retries daemon (when a deployment enables it) does not re-run it either. Only a
    `TransientSourceError` (timeout, lost connection, HTTP 429/5xx) or another unexpected error is
    left to the retry policies."""
    try:
        yield
    except TransientSourceError:
        raise
    except (LakeError, ValueError) as exc:
        if context is not None:  # read back when the run fails, to decide whether it will retry
            context.instance.add_run_tags(context.run_id, {RETRY_ON_STEP_FAILURE_TAG: "false"})
        raise dg.Failure(str(exc), allow_retries=False) from exc


# Runs launched together (a job backfill of one run per partition, a sensor's requests) are not
# ordered: a step that needs a partition another of those runs will write waits for it by retrying.
# Up to 20 x 15 s: a year of daily bars takes seconds to a minute to fetch and validate.
WAIT_RETRIES = 20
WAIT_SECONDS = 15.0


def run_in_flight_planning(instance: dg.DagsterInstance, asset: str, partition: str, own_run_id: str) -> str | None:
    """The id of another run, not finished yet, that plans to materialize `asset`'s `partition`
    (Dagster records the plan when the run is created, before it starts); None if there is none."""
    planned = instance.get_latest_planned_materialization_info(dg.AssetKey(asset), partition)
    if planned is None or planned.run_id == own_run_id:
        return None
    run = instance.get_run_by_id(planned.run_id)
    return planned.run_id if run is not None and not run.is_finished else None
