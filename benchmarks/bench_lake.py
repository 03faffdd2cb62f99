"""Lake ingest benchmark: generate -> validate -> write 10 M one-minute bars, and a pruned read.

Prints one markdown table. Ratios are against the raw `polars.write_parquet` of the same rows
(one file per 10-symbol chunk), the floor any ingest pays. The Dagster rows ingest a year of the
first `--dagster-symbols` symbols through the `bars_1m` asset on a SQLite instance (the default
one): as a backfill with `BackfillPolicy.single_run()` runs it (one run per symbol over the year's
sessions, Dagster's split of a days x symbols range), the same with asset events batched, the same on a
PostgreSQL instance when the local server answers (QUANTLAKE_BENCH_PG_URL), and, for a
few sessions, one run per partition (schedules, the UI without the policy); then compaction of the
backfill's day files into month files and a symbol-month read from each layout. CPU seconds beside
wall seconds: on a machine shared by other work, wall time is mostly waiting. Run: `make bench` or
`.venv/bin/python benchmarks/bench_lake.py [--symbols 100] [--dagster-symbols 4]`.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("QUANTLAKE_PARTITION_START", "2024-01-02")  # the Dagster rows' sessions have partitions

from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage  # noqa: E402
from tqdm import tqdm  # noqa: E402

import orchestration  # noqa: E402,F401  importing it passes QUANTLAKE_PARTITION_START down to the assets
from lake import store  # noqa: E402
from lake.bulk import bulk_ingest  # noqa: E402
from lake.sources.synthetic import SyntheticSource  # noqa: E402
from lake.validation import validate_bars  # noqa: E402

YEAR = (datetime(2024, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC))
MONTH = (datetime(2024, 6, 1, tzinfo=UTC), datetime(2024, 7, 1, tzinfo=UTC))
RANGE = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")  # a single-run backfill's tags
CHUNK = 10  # symbols per batch: ~1 M rows, so memory stays flat whatever the universe


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def dagster_ingest(symbols: list[str], work: Path, per_partition_days: int = 5) -> dict[str, DagsterRow]:
    """The bars_1m asset through Dagster on a SQLite instance (the default one): a single-run backfill
    of the year (one run per symbol), the same with the instance's asset events written in batches
    (`BatchedSqliteEventLogStorage` below, a proposal), one run per partition over the first
    `per_partition_days` sessions of one symbol; then the backfill's lake compacted into month files."""
    import dagster as dg

    from assets.bars import bars_1m
    from assets.partitions import add_symbols, intraday_key
    from assets.resources import LakeResource, MarketDataResource
    from lake.calendar import trading_days
    from lake.compaction import compact

    days = [d.isoformat() for d in trading_days(YEAR[0].date(), (YEAR[1] - timedelta(days=1)).date())]
    year = [{RANGE[0]: str(intraday_key(days[0], s)), RANGE[1]: str(intraday_key(days[-1], s))} for s in symbols]
    out: dict[str, DagsterRow] = {}
    pg = _pg_schema()
    for label, runs, batched in (
        ("backfill", year, False),
        ("backfill, batched events", [dict(tags) for tags in year], True),
        *((("backfill, PostgreSQL", [dict(tags) for tags in year], False),) if pg else ()),
        ("per-partition", [{"partition": str(intraday_key(d, symbols[0]))} for d in days[:per_partition_days]], False),
    ):
        root, home = work / f"dagster-{label}", work / f"home-{label}"
        resources = {"lake": LakeResource(root=str(root)), "market_data": MarketDataResource(seed=1)}
        home.mkdir()
        storage: dict[str, Any] | None = None
        if batched:
            storage = {"event_log_storage": {"module": BatchedSqliteEventLogStorage.__module__, "class": "BatchedSqliteEventLogStorage", "config": {"base_dir": str(home / "history/runs")}}}
        elif label.endswith("PostgreSQL"):
            storage = {"storage": {"postgres": {"postgres_url": pg}}}
        before = os.environ.get(BATCH_ENV)
        if batched:
            os.environ[BATCH_ENV] = "100000"  # Dagster's own switch: a range run's asset events go to the storage as one batch
        try:
            with dg.instance_for_test(temp_dir=str(home), overrides=storage) as instance:
                add_symbols(instance, symbols)
                os.sync()
                start, cpu = time.perf_counter(), time.process_time()
                for tags in tqdm(runs, desc=f"dagster {label}", unit="run"):
                    key = tags.pop("partition", None)
                    dg.materialize([bars_1m], instance=instance, resources=resources, partition_key=key, tags=tags)
                seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
                done = len(instance.get_materialized_partitions(dg.AssetKey("bars_1m")))
                assert done == (len(runs) if key else len(days) * len(symbols)), done  # every partition shows
        finally:
            if before is None:
                os.environ.pop(BATCH_ENV, None)
            else:
                os.environ[BATCH_ENV] = before
        rows = store.read_bars(root, symbols if key is None else symbols[:1], "1m").height
        out[label] = DagsterRow(len(runs), rows, seconds, cpu, _files(root))
    if pg:
        _drop_pg_schema(pg)
    root = work / "dagster-backfill"
    out["read: day files"] = DagsterRow(0, 0, _month_read(root, symbols), 0.0, _files(root))
    start, cpu = time.perf_counter(), time.process_time()
    compact(root, "bars", "1m", before=YEAR[1].date())
    out["compaction"] = DagsterRow(0, out["backfill"].bars, time.perf_counter() - start, time.process_time() - cpu, _files(root))
    out["read: month files"] = DagsterRow(0, 0, _month_read(root, symbols), 0.0, _files(root))
    return out


def report_to_instance(written: list[tuple[str, str]], work: Path, alone: int = 1000) -> dict[str, tuple[int, float, float]]:
    """`quantlake ingest --bulk`'s report of the day partitions it wrote to a SQLite instance:
    (partitions, wall seconds, CPU seconds) in batches (`orchestration.event_batches`, what it does) and one
    `report_runless_asset_event` each (what it did before) for the first `alone` of them."""
    import dagster as dg
    from dagster._core.definitions.partitions.utils.multi import get_tags_from_multi_partition_key

    from assets.partitions import intraday_key
    from orchestration.event_batches import report_materializations

    def materialization(symbol: str, day: str) -> dg.AssetMaterialization:
        key = intraday_key(day, symbol)
        return dg.AssetMaterialization(asset_key="bars_1m", partition=key, metadata={"source": "bulk backfill"}, tags=get_tags_from_multi_partition_key(key))

    out = {}
    for label, todo in (("batches", written), ("one by one", written[:alone])):
        home = work / f"report-{label.replace(' ', '-')}"
        home.mkdir()
        with dg.instance_for_test(temp_dir=str(home)) as instance:
            events = [materialization(symbol, day) for symbol, day in todo]
            start, cpu = time.perf_counter(), time.process_time()
            if label == "batches":
                report_materializations(instance, events)
            else:
                for event in tqdm(events, desc="report one by one", unit="partition"):
                    instance.report_runless_asset_event(event)
            out[label] = (len(events), time.perf_counter() - start, time.process_time() - cpu)
            assert len(instance.get_materialized_partitions(dg.AssetKey("bars_1m"))) == len(events)
    return out


def _pg_schema() -> str | None:
    """A fresh schema on the local PostgreSQL server (QUANTLAKE_BENCH_PG_URL), or None without one:
    the row of a PostgreSQL instance, where Dagster writes a range run's materializations as one
    batch (DAGSTER_EVENT_BATCH_SIZE, which `orchestration` turns on)."""
    import sqlalchemy as sa

    url = os.environ.get("QUANTLAKE_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
    schema = f"ql_bench_{os.getpid()}"
    try:
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.execute(sa.text(f'drop schema if exists "{schema}" cascade; create schema "{schema}"'))
        engine.dispose()
    except Exception as exc:  # no server: the row is left out, and says why
        print(f"no PostgreSQL row: {url} unreachable ({type(exc).__name__})")
        return None
    return f"{url}?options=-csearch_path%3D{schema}"


def _drop_pg_schema(url: str) -> None:
    import sqlalchemy as sa

    base, schema = url.split("?")[0], url.rsplit("%3D", 1)[1]
    engine = sa.create_engine(base)
    with engine.begin() as conn:
        conn.execute(sa.text(f'drop schema if exists "{schema}" cascade'))
    engine.dispose()


@dataclass(frozen=True)
class DagsterRow:
    runs: int
    bars: int
    seconds: float
    cpu: float
    files: int


def _files(root: Path) -> int:
    return sum(1 for _ in (root / "bars").rglob("*.parquet"))


def _month_read(root: Path, symbols: list[str]) -> float:
    """Median seconds of 7 reads of one symbol-month."""
    times = []
    for i in range(7):
        start = time.perf_counter()
        month = store.read_bars(root, [symbols[i % len(symbols)]], "1m", *MONTH)
        times.append(time.perf_counter() - start)
    assert month.height == 19 * 390, month.height
    return statistics.median(times)


BATCH_ENV = "DAGSTER_EVENT_BATCH_SIZE"


class BatchedSqliteEventLogStorage(SqliteEventLogStorage):
    """A proposal measured here: Dagster's SQLite event log writes a batch of asset events (a range
    run's planned and done materializations, one per partition) one row at a time, each in its own
    connection and transaction; this writes each batch in one transaction per database, as Dagster's
    PostgreSQL storage does (the asset's row keeps the batch's last event of each kind)."""

    _BATCHED = frozenset({"ASSET_MATERIALIZATION", "ASSET_MATERIALIZATION_PLANNED"})

    @classmethod
    def from_config_value(cls, inst_data: Any, config_value: Any) -> BatchedSqliteEventLogStorage:
        return cls(inst_data=inst_data, **config_value)

    def store_event_batch(self, events: Sequence[Any]) -> None:
        from dagster._core.storage.event_log.schema import SqlEventLogStorageTable

        batch = [e for e in events if e.get_dagster_event().event_type_value in self._BATCHED]
        for event in events:
            if event.get_dagster_event().event_type_value not in self._BATCHED:
                self.store_event(event)
        if not batch or len({e.run_id for e in batch}) > 1:
            super().store_event_batch(batch)
            return
        rows = [self._event_to_row(e) for e in batch]
        with self.run_connection(batch[0].run_id) as conn:
            conn.execute(SqlEventLogStorageTable.insert(), rows)
        with self.index_transaction() as conn:
            ids = [conn.execute(SqlEventLogStorageTable.insert().values(**row)).inserted_primary_key[0] for row in rows]  # type: ignore[index]
            self._store_asset_event_tags(conn, batch, ids)
            last = {e.get_dagster_event().event_type_value: i for i, e in enumerate(batch)}
            for i in sorted(last.values()):
                self._store_asset_event(conn, batch[i], ids[i])


def run(n_symbols: int, work: Path, dagster_symbols: int = 4) -> None:
    symbols = [f"S{i:03d}" for i in range(n_symbols)]
    chunks = [symbols[i : i + CHUNK] for i in range(0, n_symbols, CHUNK)]
    source = SyntheticSource(seed=1)
    validate_bars(source.fetch(symbols[:1], "1m", *MONTH), timeframe="1m")  # warm imports and GX once
    steps: dict[str, float] = defaultdict(float)
    rows = 0

    def timed(label: str, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        steps[label] += time.perf_counter() - start
        return out

    # Each step alone, chunk by chunk, on the same frames.
    os.sync()
    for chunk in tqdm(chunks, desc="steps", unit="chunk"):
        bars = timed("generate", source.fetch, chunk, "1m", *YEAR)
        rows += bars.height
        clean = timed("validate (polars rules)", validate_bars, bars, timeframe="1m", engine="polars").clean
        timed("validate (great-expectations)", validate_bars, bars, timeframe="1m")
        timed("write: raw polars.write_parquet", bars.write_parquet, work / "raw.parquet", compression="zstd")
        timed("write: lake, symbol x year files", store.replace_partitions, work / "steps-y", "bars", "1m", clean, period="year")
        timed("write: lake, symbol x day files", store.replace_partitions, work / "steps-d", "bars", "1m", clean, period="date")

    # The real ingest path, on the wall clock: lake.bulk overlaps fetch, validate and write.
    walls: dict[str, float] = {}
    for engine, period in (("polars", "year"), ("great_expectations", "year"), ("polars", "date")):
        os.sync()  # the previous pass's dirty pages must not be flushed on this one's clock
        bar = tqdm(total=rows, desc=f"bulk {engine} {period}", unit="bar", unit_scale=True)
        start = time.perf_counter()
        summary = bulk_ingest(source, symbols, "1m", *YEAR, work / f"bulk-{engine}-{period}", period=period,
                              chunk_symbols=CHUNK, engine=engine, on_chunk=lambda part, bar=bar: bar.update(part.rows))
        walls[f"{engine}/{period}"] = time.perf_counter() - start
        bar.close()
    peak = peak_rss_gb()
    reports = report_to_instance(sorted(summary.written), work) if dagster_symbols else {}
    dagster = dagster_ingest(symbols[:dagster_symbols], work) if dagster_symbols else {}

    reads: dict[str, list[float]] = defaultdict(list)
    for period in ("year", "date"):
        for i in range(7):
            start = time.perf_counter()
            month = store.read_bars(work / f"bulk-polars-{period}", [symbols[i % n_symbols]], "1m", *MONTH)
            reads[period].append(time.perf_counter() - start)
        assert month.height == 19 * 390, month.height  # June 2024: 19 sessions

    raw = steps["write: raw polars.write_parquet"]
    table = [
        ("end-to-end: lake.bulk generate + validate (polars rules) + write, symbol x year", walls["polars/year"], ">= 2.0 M/s"),
        ("end-to-end: lake.bulk generate + validate (great-expectations) + write, symbol x year", walls["great_expectations/year"], ""),
        ("end-to-end: lake.bulk generate + validate (polars rules) + write, symbol x day (Dagster layout)", walls["polars/date"], ""),
        ("generate + write, no validation, one after the other, symbol x year", steps["generate"] + steps["write: lake, symbol x year files"], ""),
        *((label, s, "<= raw write" if label.startswith("validate (polars") else "") for label, s in steps.items()),
    ]
    print(f"\n{rows:,} one-minute bars, {n_symbols} symbols, {len(chunks)} chunks; peak RSS {peak:.2f} GB (target < 4 GB)\n")
    print("| step | seconds | bars/s | x raw write time | target |")
    print("|---|---:|---:|---:|---|")
    for label, s, target in table:
        print(f"| {label} | {s:.2f} | {rows / s / 1e6:.2f} M | {s / raw:.2f} | {target} |")
    for period, label in (("year", "symbol x year files"), ("date", "symbol x day files")):
        ms = statistics.median(reads[period]) * 1e3
        print(f"| read one symbol x one month ({label}), median of 7 | {ms:.1f} ms | | | < 20 ms |")
    if reports:
        print("\n| `ingest --bulk`: its day partitions reported to a SQLite instance | partitions | wall s | CPU s | ms a partition (wall) | x the ingest's own wall time, a partition |")
        print("|---|---:|---:|---:|---:|---:|")
        ingest_per_partition = walls["polars/date"] / len(summary.written)
        for label, (count, seconds, cpu) in reports.items():
            what = "in batches (orchestration.event_batches)" if label == "batches" else "one `report_runless_asset_event` each (before), the first partitions"
            print(f"| {what} | {count:,} | {seconds:.2f} | {cpu:.2f} | {seconds / count * 1e3:.2f} | {seconds / count / ingest_per_partition:.2f} |")
    if dagster:
        bulk = rows / walls["polars/date"]
        print("\n| Dagster, bars_1m asset (a SQLite instance unless named) | runs | bars | wall s | CPU s | bars/s wall | bars/s CPU | x lake.bulk (day files, wall) | files | target |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for label, what, target in (
            ("backfill", "backfill, BackfillPolicy.single_run (one run per symbol-year), day files", ">= 1.5 M/s"),
            ("backfill, batched events", "the same, asset events written in batches (proposal: BatchedSqliteEventLogStorage)", ""),
            ("backfill, PostgreSQL", "the same on a PostgreSQL instance (Dagster writes each run's materializations as one batch)", ""),
            ("per-partition", "one run per partition (symbol x day)", ""),
            ("compaction", "compaction of the backfill's lake into month files (lake.compaction)", ""),
        ):
            if label not in dagster:
                continue
            r = dagster[label]
            print(f"| {what} | {r.runs} | {r.bars:,} | {r.seconds:.2f} | {r.cpu:.2f} | {r.bars / r.seconds / 1e6:.3f} M | "
                  f"{r.bars / r.cpu / 1e6:.3f} M | {r.bars / r.seconds / bulk:.3f} | {r.files:,} | {target} |")
        for label in ("read: day files", "read: month files"):
            r = dagster[label]
            print(f"| {label[6:]}: read one symbol x one month, median of 7 | | | {r.seconds * 1e3:.1f} ms | | | | | {r.files:,} | < 20 ms |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--dagster-symbols", type=int, default=4, help="symbols the Dagster rows ingest (0: none)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="quantlake-bench-"))
    try:
        run(args.symbols, work, min(args.dagster_symbols, args.symbols))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
