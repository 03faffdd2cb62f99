"""The one Definitions, resources, jobs, schedules, sensors and the command line."""

import os

# A range run (a single-run backfill) stores its partitions' materializations as one batch, Dagster's
# own switch (read per event, so run workers that import this package get it): on PostgreSQL one
# insert for the batch instead of a round trip per partition. A storage without batch writes (SQLite)
# stores them one by one, as before. An explicit value (0: off) is kept.
os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", "1000")

from orchestration.kernel_cache import key_kernel_cache

key_kernel_cache()  # first: importing the settings imports compiled kernels (trading.risk -> strategies)

from orchestration.settings import pass_settings_down  # noqa: E402

# Before any asset module loads through orchestration: the assets read their settings from here.
pass_settings_down()
