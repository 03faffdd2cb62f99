"""Retry and concurrency settings shared by assets that call outside systems."""

import dagster as dg

# Transient faults (a data API timing out, a broker 503) retry with exponential backoff and jitter.
# Errors that a retry cannot fix raise dg.Failure(allow_retries=False).
TRANSIENT_RETRY = dg.RetryPolicy(max_retries=3, delay=2.0, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)

# Concurrency pools (limits in deploy/dagster.yaml): across all runs, at most N steps at once call
# the market-data API, and at most N the model and broker.
MARKET_DATA_POOL = "market_data"
TRADING_POOL = "broker"
