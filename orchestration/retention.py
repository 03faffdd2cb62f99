"""Retention: what a deployment left alone deletes, archives or keeps, weekly (`retention_job`).

Settings (days; -1 keeps forever), read from the environment when the job runs (orchestration/settings.py validates them):
- QUANTLAKE_RETENTION_RUNS_DAYS (90): finished Dagster runs and their event logs. Never a run in
  progress, never the last run of a job, never a run holding the latest materialization of an asset
  partition (the UI's asset status and the lake's partition history read it).
- QUANTLAKE_RETENTION_QUARANTINE_DAYS (365): the lake's quarantined rows, by partition date.
- QUANTLAKE_RETENTION_REPORTS_DAYS (365): the end-of-day reports, by their day.
- QUANTLAKE_RETENTION_LLM_CACHE_DAYS (90): cached model answers (QUANTLAKE_LLM_CACHE), by record time.
- QUANTLAKE_RETENTION_LEDGER_ARCHIVE_DAYS (30): ledger events older than this are copied, verified,
  to Parquet under <lake>/archive/ledger/.
- QUANTLAKE_RETENTION_LEDGER_COMPACT_DAYS (-1: never): archived ledger events older than this, and
  folded into the projection snapshot, are removed from the live table (trading/ledger/compaction.py);
  at least the archive's days. Off by default: raw reads of the ledger (analytics, audits, replays
  of the whole history) then need the archive, a choice a deployment makes knowingly.
- QUANTLAKE_RETENTION_CHECKPOINT_DAYS (7): the agent graph's threads in the decide runs' default
  checkpoint (<ledger>.graph.sqlite; a PostgreSQL ledger's own database; else graph_checkpoints.sqlite
  in the instance's storage) and in the pipeline file's own `checkpoint:` (a SQLite file or a
  PostgreSQL database), by their newest checkpoint: one only matters to rerun a cycle that died, within days.
Schedule ticks are purged by the daemon itself (orchestration/default_instance.yaml).
On an object-store lake (QUANTLAKE_LAKE_URL) quarantine and reports are pruned in the store as on
disk, and the ledger archive is written, verified and compacted from <lake>/archive/ledger/ in the
store (each file staged and copied into place whole).
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import cast

import dagster as dg
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from assets.clock import run_now
from assets.resources import LakeResource, TradingResource
from assets.run_limits import max_runtime
from assets.trading import checkpoint_file
from lake.filesystem import ObjectPath
from lake.retention import Removed, prune_quarantine, prune_reports
from orchestration.settings import settings
from trading.ledger.archive import archive_events
from trading.ledger.compaction import compact_ledger
from trading.ledger.store import redact_url
from trading.retention import checkpoint_store, prune_checkpoints, prune_llm_cache

KEEP = -1
PARTITION_TAG = "dagster/partition"
FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]
ENV = {
    "runs_days": "QUANTLAKE_RETENTION_RUNS_DAYS",
    "quarantine_days": "QUANTLAKE_RETENTION_QUARANTINE_DAYS",
    "reports_days": "QUANTLAKE_RETENTION_REPORTS_DAYS",
    "llm_cache_days": "QUANTLAKE_RETENTION_LLM_CACHE_DAYS",
    "ledger_archive_days": "QUANTLAKE_RETENTION_LEDGER_ARCHIVE_DAYS",
    "ledger_compact_days": "QUANTLAKE_RETENTION_LEDGER_COMPACT_DAYS",
    "checkpoint_days": "QUANTLAKE_RETENTION_CHECKPOINT_DAYS",
}


class RetentionPolicy(BaseModel):
    """Days each kind of record is kept (-1: forever)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    runs_days: int = Field(90, description="Finished Dagster runs and their event logs.")
    quarantine_days: int = Field(365, description="Quarantined rows in the lake, by partition date.")
    reports_days: int = Field(365, description="End-of-day reports, by their day.")
    llm_cache_days: int = Field(90, description="Cached model answers, by when they were recorded.")
    ledger_archive_days: int = Field(30, description="Ledger events older than this are archived to Parquet.")
    ledger_compact_days: int = Field(KEEP, description="Archived ledger events older than this leave the live table.")
    checkpoint_days: int = Field(7, description="Agent graph threads in the default checkpoint and the pipeline file's own (SQLite or PostgreSQL), by their newest checkpoint.")

    @field_validator("*")
    @classmethod
    def _days(cls, value: int) -> int:
        if value != KEEP and value < 1:
            raise ValueError(f"{value} days: expected at least 1, or -1 to keep forever")
        return value

    @model_validator(mode="after")
    def _compaction_needs_the_archive(self) -> "RetentionPolicy":
        if self.ledger_compact_days != KEEP and (self.ledger_archive_days == KEEP or self.ledger_compact_days < self.ledger_archive_days):
            raise ValueError(
                f"QUANTLAKE_RETENTION_LEDGER_COMPACT_DAYS={self.ledger_compact_days}: compaction removes archived events only; "
                f"set it to at least QUANTLAKE_RETENTION_LEDGER_ARCHIVE_DAYS ({self.ledger_archive_days}, which must not be -1)"
            )
        return self


def retention_policy(environ: Mapping[str, str] | None = None) -> RetentionPolicy:
    """The policy from QUANTLAKE_RETENTION_* (unset: the defaults); a bad value names its variable."""
    env = settings(environ, only=ENV.values())  # only these: retention runs whatever else is set
    values = {name: days for name in ENV if (days := getattr(env, f"retention_{name}")) is not None}
    return RetentionPolicy(**values)


@dataclass
class RunsRemoved:
    deleted: list[str] = field(default_factory=list)  # run ids
    events: int = 0  # event log rows deleted with them
    kept_latest: int = 0  # old runs kept (see `kept_runs`)


def latest_materialization_runs(instance: dg.DagsterInstance) -> set[str]:
    """The runs holding the latest materialization of some asset partition (or unpartitioned asset)."""
    out: set[str] = set()
    for key in instance.get_asset_keys():
        out |= {r.event_log_entry.run_id for r in instance.fetch_materializations(key, limit=1).records}
        ids = sorted(instance.get_latest_storage_id_by_partition(key, dg.DagsterEventType.ASSET_MATERIALIZATION).values())
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            page = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, storage_ids=list(chunk)), limit=len(chunk))
            out |= {r.event_log_entry.run_id for r in page.records}
    return out


def kept_runs(instance: dg.DagsterInstance, old: Sequence[dg.RunRecord]) -> set[str]:
    """Of `old`, the runs retention keeps: a job's last run, a partition's last run in its job (the
    UI shows a partition failed or done from it), and any run holding the latest materialization of
    an asset partition (deleting a run deletes its materializations)."""
    keep = latest_materialization_runs(instance)
    for job in {r.dagster_run.job_name for r in old}:
        keep |= {r.run_id for r in instance.get_runs(dg.RunsFilter(job_name=job), limit=1)}
    for job, partition in {(r.dagster_run.job_name, p) for r in old if (p := r.dagster_run.tags.get(PARTITION_TAG))}:
        keep |= {r.run_id for r in instance.get_runs(dg.RunsFilter(job_name=job, tags={PARTITION_TAG: partition}), limit=1)}
    return keep


def expired_runs(instance: dg.DagsterInstance, now: datetime, days: int) -> tuple[list[dg.RunRecord], int]:
    """(the finished runs created more than `days` before `now` that may go, how many old ones stay)."""
    old = list(instance.get_run_records(dg.RunsFilter(statuses=FINISHED, created_before=now - timedelta(days=days)), ascending=True))
    if not old:
        return [], 0
    keep = kept_runs(instance, old)
    gone = [r for r in old if r.dagster_run.run_id not in keep]
    return gone, len(old) - len(gone)


def prune_runs(instance: dg.DagsterInstance, now: datetime, days: int) -> RunsRemoved:
    """Deletes the runs `expired_runs` names, with their event logs."""
    gone, kept = expired_runs(instance, now, days)
    out = RunsRemoved(kept_latest=kept)
    for record in gone:
        run_id = record.dagster_run.run_id
        out.events += len(instance.get_records_for_run(run_id, limit=None).records)
        instance.delete_run(run_id)
        out.deleted.append(run_id)
    return out


def _files_metadata(removed: Removed, root: Path | ObjectPath) -> dict[str, dg.MetadataValue]:
    return {
        "files": dg.MetadataValue.int(len(removed.files)),
        "bytes_freed": dg.MetadataValue.int(removed.bytes),
        "sample": dg.MetadataValue.text("\n".join(_relative(p, root) for p in removed.files[:20])),
    }


def _relative(path: Path | ObjectPath, root: Path | ObjectPath) -> str:
    if isinstance(path, ObjectPath) and isinstance(root, ObjectPath):
        return path.key.removeprefix(f"{root.key}/")
    return str(Path(path).relative_to(Path(root))) if isinstance(path, Path) and isinstance(root, Path) else str(path)


@dg.op(description="Applies the retention policy (QUANTLAKE_RETENTION_*) as of the run's now.")
def apply_retention(context: dg.OpExecutionContext, lake: LakeResource, trading: TradingResource) -> dg.Output[dict[str, int]]:
    now = run_now(context)
    policy = retention_policy()
    root = lake.location  # quarantine and reports are pruned on a local lake or an object store alike
    meta: dict[str, dg.RawMetadataValue] = {"now": now.isoformat(), "policy": dg.MetadataValue.json(policy.model_dump())}
    counts: dict[str, int] = {}
    freed = 0
    for kind, days, prune in (("quarantine", policy.quarantine_days, prune_quarantine), ("report", policy.reports_days, prune_reports)):
        if days == KEEP:
            continue
        removed = prune(root, now, days)
        counts[f"{kind}_files"], freed = len(removed.files), freed + removed.bytes
        meta |= {f"{kind}_{k}": v for k, v in _files_metadata(removed, root).items()}
    if trading.cache_dir and policy.llm_cache_days != KEEP:
        folder = Path(trading.cache_dir)
        removed = prune_llm_cache(folder, now, policy.llm_cache_days)
        counts["llm_cache_files"], freed = len(removed.files), freed + removed.bytes
        meta |= {f"llm_cache_{k}": v for k, v in _files_metadata(removed, folder).items()}
    if policy.ledger_archive_days != KEEP:
        archive = root / "archive" / "ledger"
        with trading.ledger() as ledger:
            archived = archive_events(ledger, archive, now - timedelta(days=policy.ledger_archive_days))
            if policy.ledger_compact_days != KEEP:
                compacted = compact_ledger(ledger, archive, now - timedelta(days=policy.ledger_compact_days))
                counts["ledger_events_compacted"] = compacted.removed
                meta["ledger_compacted_up_to_seq"] = dg.MetadataValue.int(compacted.up_to_seq)
        counts["ledger_events_archived"] = archived.events
        meta |= {"ledger_archive_file": str(archived.path or ""), "ledger_archive_bytes": archived.bytes}
    if policy.checkpoint_days != KEEP:
        with trading.ledger() as ledger:
            stores = {"checkpoint_file": checkpoint_store(checkpoint_file(ledger, cast(dg.AssetExecutionContext, context)))}  # reads only its instance
        try:
            stores["pipeline_checkpoint_file"] = checkpoint_store(trading.pipeline().checkpoint)
        except ValueError as exc:  # a bad pipeline file: decide runs fail on it too; the rest of retention goes on
            meta["pipeline_checkpoint_error"] = str(exc)
            context.log.warning(f"the pipeline's own checkpoint is not pruned: {exc}")
        if _same_store(stores.get("pipeline_checkpoint_file"), stores["checkpoint_file"]):
            del stores["pipeline_checkpoint_file"]
        for key, store in stores.items():
            if store is None or (isinstance(store, Path) and not store.is_file()):
                continue
            threads = prune_checkpoints(store, now, policy.checkpoint_days)
            counts["checkpoint_threads_deleted"] = counts.get("checkpoint_threads_deleted", 0) + threads.threads
            counts["checkpoints_deleted"] = counts.get("checkpoints_deleted", 0) + threads.checkpoints
            meta[key] = str(store) if isinstance(store, Path) else redact_url(store)  # a database: never its password
    if policy.runs_days != KEEP:
        runs = prune_runs(context.instance, now, policy.runs_days)
        counts |= {"runs_deleted": len(runs.deleted), "run_events_deleted": runs.events, "old_runs_kept": runs.kept_latest}
    meta |= {k: dg.MetadataValue.int(v) for k, v in counts.items()}
    meta["bytes_freed"] = dg.MetadataValue.int(freed)  # files only: a database reuses its freed pages
    context.log.info(f"retention as of {now:%Y-%m-%d %H:%M} UTC: {counts}, {freed:,} bytes of files freed")
    return dg.Output(counts, metadata=meta)


def _same_store(a: Path | str | None, b: Path | str | None) -> bool:
    """The pipeline file's own checkpoint is the default one: pruned once."""
    if isinstance(a, Path) and isinstance(b, Path):
        return a.resolve() == b.resolve()
    return a is not None and a == b


@dg.job(description="Retention (weekly): old runs, quarantine, reports, cached model answers and graph checkpoints deleted; old ledger events archived to Parquet (and compacted when QUANTLAKE_RETENTION_LEDGER_COMPACT_DAYS is set).", tags={"quantlake/kind": "maintenance", **max_runtime("maintenance")})
def retention_job() -> None:
    apply_retention()


retention_schedule = dg.ScheduleDefinition(
    name="retention_schedule",
    job=retention_job,
    cron_schedule="0 3 * * 0",  # Sundays 03:00 New York: no session, nothing else runs
    execution_timezone="America/New_York",
    description="Weekly retention: QUANTLAKE_RETENTION_* days of runs, quarantine, reports, model answers; the ledger archived.",
)
