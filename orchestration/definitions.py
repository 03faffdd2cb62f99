"""The one Definitions of the code location (loaded by workspace.yaml and `dagster dev`)."""

from __future__ import annotations

import dagster as dg

from assets import agents, bars, compaction, derived, news, research, screener, trading
from orchestration.alert_sensors import ALERT_SENSORS
from orchestration.executors import build_executor
from orchestration.fanout import CHUNKED_SWEEP_SPEC, chunked_sweep_job
from orchestration.jobs import JOBS
from orchestration.news_schedule import build_news_schedule
from orchestration.resources import build_resources
from orchestration.retention import retention_job, retention_schedule
from orchestration.schedules import build_schedules
from orchestration.sensors import SENSORS
from orchestration.trade_manager_sensor import TRADE_MANAGER_SENSORS

defs = dg.Definitions(
    assets=[*dg.load_assets_from_modules([agents, bars, compaction, derived, news, research, screener, trading]), CHUNKED_SWEEP_SPEC],
    jobs=[*JOBS, news.ingest_news_job, chunked_sweep_job, retention_job],
    schedules=[*build_schedules(), retention_schedule, build_news_schedule()],
    sensors=[*SENSORS, *TRADE_MANAGER_SENSORS, *ALERT_SENSORS],
    resources=build_resources(),
    executor=build_executor(),
)
