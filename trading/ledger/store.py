"""The append-only, event-sourced ledger: every `Event` in one table, in the order it was written.

SQLite (one file, the default) or PostgreSQL (a URL; may share the Dagster database: the table and
the Alembic version table have their own names). The schema is owned by the Alembic migrations in
`migrations/`; `Ledger()` brings the database to head. Nothing is ever updated, and nothing deleted
by the application: there is no API for it and a database trigger rejects it. The one exception is
the opt-in maintenance of `compaction.py` (retention_job, `QUANTLAKE_RETENTION_LEDGER_COMPACT_DAYS`):
it lifts the trigger inside one transaction to remove events already archived and verified and folded
into a snapshot. Appending an event whose `event_id` is already stored is a no-op, so a re-run that
emits the same events writes nothing twice (for events still in the table).

`seq` is the order of writing. On PostgreSQL, sequence values of concurrent transactions can
commit out of order, so a reader polling with `after_seq` may see seq 101 before seq 100 exists;
readers that need "exactly once" should re-read a small window or run after the writers finish.
"""

from __future__ import annotations

import functools
import io
import itertools
import json
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.pool import StaticPool

from trading.events import LEGACY_VERSION, VERSION_KEY, Event, EventType, PayloadError, validate_payload

REPO_ROOT = Path(__file__).resolve().parents[2]
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "ledger_alembic_version"
TABLE = "ledger_events"
EVENT_ID_MAX = 32
_MIGRATE_LOCK_KEY = 0x51_4C_45_44  # "QLED": serialises concurrent migrations on PostgreSQL


class LedgerError(RuntimeError):
    """The ledger could not be opened or written; the message names the URL (never its password)."""


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware datetimes on every backend: stored as UTC, read back as UTC.

    SQLite has no timezone type (SQLAlchemy stores a naive string), so values are converted to UTC
    before storing and UTC is re-attached on read. Naive datetimes are taken to be UTC.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = sa.MetaData()

# Mirrors migrations/versions/0001_ledger_events.py (the migration is what creates it).
ledger_events = sa.Table(
    TABLE,
    metadata,
    sa.Column(
        "seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
    ),
    sa.Column("event_id", sa.String(EVENT_ID_MAX), nullable=False),
    sa.Column("type", sa.String(), nullable=False),
    sa.Column("run_id", sa.String(), nullable=False),
    sa.Column("trace_id", sa.String(), nullable=False),
    sa.Column("mode", sa.String(), nullable=False),
    sa.Column("symbol", sa.String(), nullable=True),
    sa.Column("as_of", UTCDateTime(), nullable=True),
    sa.Column("recorded_at", UTCDateTime(), nullable=False),
    sa.Column("payload", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
    sa.UniqueConstraint("event_id", name="uq_ledger_events_event_id"),
    sa.Index("ix_ledger_events_run_id", "run_id"),
    sa.Index("ix_ledger_events_symbol", "symbol"),
    sa.Index("ix_ledger_events_type_seq", "type", "seq"),
)

# Mirrors migrations/versions/0002_ledger_snapshots.py: projection checkpoints (derived, replaceable).
SNAPSHOTS = "ledger_snapshots"
ledger_snapshots = sa.Table(
    SNAPSHOTS,
    metadata,
    sa.Column("name", sa.String(), primary_key=True),
    sa.Column("version", sa.String(), nullable=False),
    sa.Column("last_seq", sa.BigInteger(), nullable=False),
    sa.Column("applied", sa.BigInteger(), nullable=False),
    sa.Column("data", sa.Text(), nullable=False),
)
# One row per name; a snapshot replaces an older one of its version, and any one of another version.
_SAVE_SNAPSHOT = sa.text(
    f"INSERT INTO {SNAPSHOTS} (name, version, last_seq, applied, data) VALUES (:name, :version, :last_seq, :applied, :data) "
    "ON CONFLICT (name) DO UPDATE SET version = excluded.version, last_seq = excluded.last_seq, "
    f"applied = excluded.applied, data = excluded.data WHERE {SNAPSHOTS}.version <> excluded.version "
    f"OR {SNAPSHOTS}.last_seq < excluded.last_seq"
)


@dataclass(frozen=True)
class Snapshot:
    """A projection's state as of `last_seq` (`applied` events folded), by the code `version` that wrote it."""

    name: str
    version: str
    last_seq: int
    applied: int
    data: str


_EVENT_COLUMNS = [c for c in ledger_events.c if c.name != "seq"]

# Strict JSON: NaN/inf are rejected on every backend (PostgreSQL's JSONB would refuse them anyway).
_json_dumps = functools.partial(json.dumps, allow_nan=False, separators=(",", ":"))

try:  # orjson (installed with langchain/langsmith) parses ~5x faster: it is what makes replays quick
    import orjson
except ImportError:  # pragma: no cover - the standard library is the fallback
    orjson = None  # type: ignore[assignment]


def _json_loads(text: str | bytes) -> Any:
    if orjson is None:  # pragma: no cover
        return json.loads(text)
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # e.g. integers beyond 64 bits, which json reads
        return json.loads(text)


def default_url(path: str | Path | None = None) -> str:
    """`sqlite:///` + `path`, or `data/ledger.sqlite` under the repository root. The deployment's
    choice (QUANTLAKE_LEDGER_PATH, QUANTLAKE_LEDGER_URL) is read in orchestration/ and passed down."""
    where = Path(path) if path else REPO_ROOT / "data" / "ledger.sqlite"
    return f"sqlite:///{where.expanduser().resolve()}"


def redact_url(url: str | URL) -> str:
    """The URL with its password replaced by `***`; works on URLs SQLAlchemy cannot parse too."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", url)


def _password(url: str) -> str | None:
    try:
        return make_url(url).password
    except Exception:
        found = re.search(r"://[^/@:]*:([^/@]*)@", url)
        return found.group(1) if found else None


def _reason(exc: BaseException, password: str | None) -> str:
    """A one-paragraph cause without SQLAlchemy's statement/parameter dump and without the password."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    text = text.split("\n[SQL:")[0].split("\n(Background on this error")[0].strip()
    if password:
        text = text.replace(password, "***")
    return f"{type(orig if orig is not None else exc).__name__}: {text}"


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _sqlite_ts(value: datetime | None) -> str | None:
    """SQLAlchemy's SQLite DATETIME storage format ("YYYY-MM-DD HH:MM:SS.ffffff"), in UTC."""
    utc = _utc(value)
    return None if utc is None else utc.replace(tzinfo=None).isoformat(" ", "microseconds")


def _check_id(event: Event) -> None:
    if len(event.event_id) > EVENT_ID_MAX:
        raise LedgerError(f"event_id {event.event_id!r} is longer than {EVENT_ID_MAX} characters")


def _stored_payload(e: Event) -> dict[str, Any]:
    """The payload as stored: validated against its type's model, with its schema version under "v"."""
    if VERSION_KEY in e.payload:
        raise PayloadError(f"invalid {e.type.value} payload of event {e.event_id}: the key {VERSION_KEY!r} is reserved for the schema version")
    try:
        validate_payload(e.type, e.payload, e.v)
    except PayloadError as exc:
        raise PayloadError(f"{exc} (event {e.event_id})") from None
    return {**e.payload, VERSION_KEY: e.v}


def _read_payload(payload: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """A stored payload and its schema version (no "v": written before versions, i.e. version 1)."""
    return payload, int(payload.pop(VERSION_KEY, LEGACY_VERSION))


def _row(e: Event, ts: Callable[[datetime | None], Any]) -> tuple[Any, ...]:
    """One event as an insert row; `ts` renders its times the way the dialect stores them."""
    _check_id(e)
    times = (ts(e.as_of), ts(e.recorded_at))
    return (e.event_id, e.type.value, e.run_id, e.trace_id, e.mode.value, e.symbol, *times, _json_dumps(_stored_payload(e)))


def _sqlite_row(e: Event) -> tuple[Any, ...]:
    return _row(e, _sqlite_ts)


def _postgres_row(e: Event) -> tuple[Any, ...]:
    return _row(e, _utc)


_COLUMN_LIST = ", ".join(c.name for c in _EVENT_COLUMNS)
# The write path goes to the driver directly (rows serialised once, here): SQLAlchemy's per-row
# parameter processing costs more than the database's own insert work. Reads use the Core table.
_SQLITE_INSERT = (
    f"INSERT INTO {TABLE} ({_COLUMN_LIST}) VALUES ({', '.join('?' * len(_EVENT_COLUMNS))}) "
    "ON CONFLICT (event_id) DO NOTHING"
)
# PostgreSQL: COPY into a temporary staging table (this session's; emptied after each batch and at
# commit), then INSERT ... SELECT in COPY's order (`ord`), so seqs follow the events' order; the
# row count is exactly the rows inserted (duplicates skipped by ON CONFLICT, within a batch too).
_STAGING = "ledger_events_incoming"
_STAGING_CREATE = (
    f"CREATE TEMP TABLE IF NOT EXISTS {_STAGING} ON COMMIT DELETE ROWS AS "
    f"SELECT 0::bigint AS ord, {_COLUMN_LIST} FROM {TABLE} WITH NO DATA"
)
_STAGING_COPY = f"COPY {_STAGING} (ord, {_COLUMN_LIST}) FROM STDIN"
_STAGING_INSERT = (
    f"INSERT INTO {TABLE} ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} FROM {_STAGING} ORDER BY ord "
    "ON CONFLICT (event_id) DO NOTHING"
)
_STAGING_CLEAR = f"TRUNCATE {_STAGING}"
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_copy_count = itertools.count()


def _copy_field(value: Any) -> str:
    """One value in COPY's text format: NULL as \\N, backslash and control characters escaped."""
    if value is None:
        return "\\N"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value).translate(_COPY_ESCAPES)


def _copy_line(row: tuple[Any, ...]) -> str:
    return "\t".join([str(next(_copy_count)), *map(_copy_field, row)]) + "\n"


class Ledger:
    """The event store. An `EventSink`: `emit` appends one event, `append_many` a batch atomically."""

    def __init__(self, url: str | None = None, *, migrate: bool = True) -> None:
        raw = url or default_url()
        self._password = _password(raw)
        self.url = redact_url(raw)
        try:
            parsed = make_url(raw)
            backend = parsed.get_backend_name()
            if backend not in ("sqlite", "postgresql"):
                raise ValueError(f"unsupported backend {backend!r} (sqlite or postgresql)")
            kwargs: dict[str, Any] = {"json_serializer": _json_dumps, "json_deserializer": _json_loads}
            in_memory = backend == "sqlite" and parsed.database in (None, "", ":memory:")
            if in_memory:  # one shared connection, or every connection would see its own empty database
                kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
            self.engine: Engine = sa.create_engine(parsed, **kwargs)
        except Exception as exc:  # the cause may quote the raw URL: not chained
            raise LedgerError(f"invalid ledger URL {self.url}: {_reason(exc, self._password)}") from None
        database = parsed.database
        if backend == "sqlite" and not in_memory and database and not database.startswith("file:"):
            try:
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise LedgerError(f"cannot create the directory of the ledger at {self.url}: {exc}") from exc
        self.dialect = self.engine.dialect.name
        if self.dialect == "sqlite":
            _configure_sqlite(self.engine)
        if migrate:
            self.migrate()
        else:
            self._check_connection()

    def __repr__(self) -> str:
        return f"Ledger({self.url!r})"

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.engine.dispose()

    def _error(self, what: str, exc: BaseException) -> LedgerError:
        return LedgerError(f"{what} ledger at {self.url}: {_reason(exc, self._password)}")

    def _check_connection(self) -> None:
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.text("select 1"))
        except Exception as exc:
            raise self._error("cannot open", exc) from None

    def _write_connection(self, conn: Connection) -> Connection:
        # SQLite: take the write lock at BEGIN, so a read-then-write transaction cannot fail mid-way.
        return conn.execution_options(sqlite_begin="IMMEDIATE") if self.dialect == "sqlite" else conn

    # -- schema --------------------------------------------------------------------------------------

    def migrate(self) -> None:
        """Runs the Alembic migrations to head in one transaction (a no-op when already there)."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
        config.set_main_option("path_separator", "os")
        try:
            connection = self.engine.connect()
        except Exception as exc:  # connection errors can quote the DSN: not chained
            raise self._error("cannot open", exc) from None
        try:
            with connection as conn:
                conn = self._write_connection(conn)
                with conn.begin():
                    if self.dialect == "postgresql":
                        conn.execute(
                            sa.text("select pg_advisory_xact_lock(:key)"), {"key": _MIGRATE_LOCK_KEY}
                        )
                    config.attributes["connection"] = conn
                    command.upgrade(config, "head")
        except Exception as exc:
            raise self._error("cannot migrate", exc) from exc

    # -- writing -------------------------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        self.append_many([event])

    def append_many(self, events: Iterable[Event], *, batch: int = 10_000) -> int:
        """Appends `events` in one transaction (executemany per `batch`); returns how many were new.

        Events whose `event_id` is already stored (or repeated in `events`) are skipped. If anything
        fails, nothing of the call is written and `LedgerError` says why.
        """
        written = 0
        iterator = iter(events)
        try:
            with self.engine.connect() as conn:
                conn = self._write_connection(conn)
                with conn.begin():
                    while chunk := list(islice(iterator, batch)):
                        written += self._insert(conn, chunk)
        except LedgerError:
            raise
        except Exception as exc:
            raise self._error("append failed (nothing written) to", exc) from exc
        return written

    def _insert(self, conn: Connection, events: list[Event]) -> int:
        if self.dialect == "sqlite":
            # executemany; SQLite's rowcount counts only the rows actually inserted.
            return int(conn.exec_driver_sql(_SQLITE_INSERT, [_sqlite_row(e) for e in events]).rowcount)
        # COPY the batch into a session-private staging table, then one INSERT ... SELECT in the
        # batch's order: psycopg2's execute_values quoted every value of every row (`mogrify`, the
        # largest client cost of an append); COPY's text format is one string for the whole batch.
        text = "".join(_copy_line(_postgres_row(e)) for e in events)
        driver = conn.connection.dbapi_connection
        assert driver is not None
        cursor = driver.cursor()
        try:
            cursor.execute(_STAGING_CREATE)
            cursor.copy_expert(_STAGING_COPY, io.StringIO(text))
            cursor.execute(_STAGING_INSERT)
            inserted = cursor.rowcount
            cursor.execute(_STAGING_CLEAR)
        finally:
            cursor.close()
        return int(inserted)

    # -- reading -------------------------------------------------------------------------------------

    def events(
        self,
        *,
        run_id: str | None = None,
        types: EventType | str | Iterable[EventType | str] | None = None,
        symbol: str | None = None,
        after_seq: int = 0,
        batch: int = 10_000,
    ) -> Iterator[Event]:
        """Events in `seq` order, read `batch` at a time (no connection is held between batches)."""
        for _seq, event in self.events_with_seq(
            run_id=run_id, types=types, symbol=symbol, after_seq=after_seq, batch=batch
        ):
            yield event

    def events_with_seq(
        self,
        *,
        run_id: str | None = None,
        types: EventType | str | Iterable[EventType | str] | None = None,
        symbol: str | None = None,
        after_seq: int = 0,
        batch: int = 10_000,
    ) -> Iterator[tuple[int, Event]]:
        """Like `events`, with each event's `seq` (to resume from with `after_seq`)."""
        t = ledger_events
        where = _filters(run_id=run_id, types=types, symbol=symbol)
        last = after_seq
        while True:
            stmt = (
                sa.select(t.c.seq, *_EVENT_COLUMNS)
                .where(t.c.seq > last, *where)
                .order_by(t.c.seq)
                .limit(batch)
            )
            with self.engine.connect() as conn:
                rows = conn.execute(stmt).all()
            for row in rows:
                data = row._asdict()
                data["payload"], data["v"] = _read_payload(data["payload"])
                yield data.pop("seq"), Event.model_validate(data)
            if len(rows) < batch:
                return
            last = rows[-1].seq

    def payloads(
        self,
        types: Iterable[EventType | str],
        *,
        run_id: str | None = None,
        until_seq: int | None = None,
        chunk: int = 50_000,
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """(type, payload) in `seq` order, streamed from one cursor: the fast path for replays.

        The Core statement is run on the driver's own cursor (server-side on PostgreSQL, `chunk` rows
        per fetch) and the payload is fetched as JSON text and decoded here: SQLAlchemy's row and JSON
        processing would otherwise be most of a replay's time.
        """
        t = ledger_events
        text_type = sa.Text()
        payload = (
            sa.cast(t.c.payload, text_type)
            if self.dialect == "postgresql"
            else sa.type_coerce(t.c.payload, text_type)
        )
        # SQLite: scan in seq order rather than the (type, seq) index plus a sort of most of the table
        # (`type || ''` is not indexable; replaying ~1 M events this is 2x faster).
        type_column = t.c.type + "" if self.dialect == "sqlite" and run_id is None else None
        stmt = sa.select(t.c.type, payload).where(
            *_filters(run_id=run_id, types=types, symbol=None, type_column=type_column)
        )
        if until_seq is not None:
            stmt = stmt.where(t.c.seq <= until_seq)
        for type_, data, _v in self._payloads(stmt.order_by(t.c.seq), chunk):
            yield type_, data

    def versioned_payloads(
        self, types: Iterable[EventType | str], *, until_seq: int | None = None, chunk: int = 50_000
    ) -> Iterator[tuple[str, dict[str, Any], int]]:
        """(type, payload, schema version) in `seq` order: `payloads` for readers that validate
        (`trading.events.validate_payload(type, payload, v)`)."""
        t = ledger_events
        stmt = sa.select(t.c.type, self._payload_text()).where(*_filters(run_id=None, types=types, symbol=None))
        if until_seq is not None:
            stmt = stmt.where(t.c.seq <= until_seq)
        return self._payloads(stmt.order_by(t.c.seq), chunk)

    def _payload_text(self) -> sa.ColumnElement[Any]:
        t, text_type = ledger_events, sa.Text()
        return sa.cast(t.c.payload, text_type) if self.dialect == "postgresql" else sa.type_coerce(t.c.payload, text_type)

    def _payloads(self, stmt: sa.Select[Any], chunk: int) -> Iterator[tuple[str, dict[str, Any], int]]:
        loads = _json_loads
        for rows in self._fetch(stmt, chunk, "ledger_payloads"):
            for type_, text in rows:
                payload = loads(text)
                yield type_, payload, int(payload.pop(VERSION_KEY, LEGACY_VERSION))

    def _fetch(self, stmt: sa.Select[Any], chunk: int, name: str) -> Iterator[list[Any]]:
        """`stmt`'s rows in batches of `chunk` from the driver's own cursor (server-side on PostgreSQL):
        SQLAlchemy's row and JSON processing would otherwise be most of a replay's time."""
        compiled = stmt.compile(dialect=self.engine.dialect, compile_kwargs={"render_postcompile": True})
        params = compiled.params
        args = tuple(params[key] for key in compiled.positiontup or ()) if compiled.positional else params
        with self.engine.connect() as conn:
            driver = conn.connection.driver_connection
            assert driver is not None
            if self.dialect == "postgresql":
                cursor = driver.cursor(name=f"{name}_{uuid.uuid4().hex}")
                cursor.itersize = chunk
            else:
                cursor = driver.cursor()
            try:
                cursor.execute(str(compiled), args)
                while rows := cursor.fetchmany(chunk):
                    yield rows
            finally:
                cursor.close()

    def rows(
        self, *, after_seq: int = 0, payload_types: Iterable[EventType | str] | None = None, chunk: int = 50_000
    ) -> Iterator[tuple[int, str, str | None, str | None, dict[str, Any] | None, int]]:
        """(seq, type, stamp minute, as_of minute, payload, v) after `after_seq`, in `seq` order, from one cursor.

        The projections' read. Minutes are UTC "YYYY-MM-DD HH:MM" strings computed by the database
        (the stamp is `as_of`, else `recorded_at`; `as_of`'s own minute for COST events only); only `payload_types` have their payload decoded
        (the others' payload is None: counted, not read, so big prompts and responses cost nothing).
        """
        t = ledger_events
        text_type = sa.Text()
        payload: sa.ColumnElement[Any] = (
            sa.cast(t.c.payload, text_type) if self.dialect == "postgresql" else sa.type_coerce(t.c.payload, text_type)
        )
        if payload_types is not None:
            wanted = [EventType(x).value for x in payload_types]
            payload = sa.case((t.c.type.in_(wanted), payload), else_=sa.null())

        def minute(column: sa.ColumnElement[Any]) -> sa.ColumnElement[str]:
            if self.dialect == "postgresql":
                return sa.func.to_char(sa.func.timezone("UTC", column), "YYYY-MM-DD HH24:MI")
            return sa.func.substr(sa.type_coerce(column, text_type), 1, 16)  # stored as "YYYY-MM-DD HH:MM:SS.ffffff" UTC

        stamp = minute(sa.func.coalesce(t.c.as_of, t.c.recorded_at))
        # `as_of`'s own minute only where it is read (model costs, by the day of their decision bar).
        as_of = sa.case((t.c.type == EventType.COST.value, minute(t.c.as_of)), else_=sa.null())
        stmt = sa.select(t.c.seq, t.c.type, stamp, as_of, payload).where(t.c.seq > after_seq).order_by(t.c.seq)
        loads = _json_loads
        for fetched in self._fetch(stmt, chunk, "ledger_rows"):
            for seq, type_, stamp_minute, as_of_minute, text in fetched:
                if text is None:
                    yield seq, type_, stamp_minute, as_of_minute, None, LEGACY_VERSION
                else:
                    data = loads(text)
                    yield seq, type_, stamp_minute, as_of_minute, data, data.pop(VERSION_KEY, LEGACY_VERSION)

    # -- projection snapshots (derived data beside the events) ------------------------------------------

    def load_snapshot(self, name: str) -> Snapshot | None:
        t = ledger_snapshots
        try:
            with self.engine.connect() as conn:
                row = conn.execute(sa.select(t.c.version, t.c.last_seq, t.c.applied, t.c.data).where(t.c.name == name)).first()
        except Exception as exc:
            raise self._error("cannot read a snapshot from the", exc) from None
        return None if row is None else Snapshot(name, str(row[0]), int(row[1]), int(row[2]), str(row[3]))

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Stores `snapshot` unless one of its version covering more events is there (one statement)."""
        params = {"name": snapshot.name, "version": snapshot.version, "last_seq": snapshot.last_seq, "applied": snapshot.applied, "data": snapshot.data}
        try:
            with self.engine.connect() as conn:
                conn = self._write_connection(conn)
                with conn.begin():
                    conn.execute(_SAVE_SNAPSHOT, params)
        except Exception as exc:
            raise self._error("cannot save a snapshot to the", exc) from None

    def count(self, *, until_seq: int | None = None) -> int:
        """How many events are stored (with `seq <= until_seq`)."""
        stmt = sa.select(sa.func.count()).select_from(ledger_events)
        if until_seq is not None:
            stmt = stmt.where(ledger_events.c.seq <= until_seq)
        with self.engine.connect() as conn:
            return int(conn.execute(stmt).scalar_one())

    def last_seq(self) -> int:
        """The highest `seq` written, 0 for an empty ledger."""
        with self.engine.connect() as conn:
            return int(
                conn.execute(sa.select(sa.func.coalesce(sa.func.max(ledger_events.c.seq), 0))).scalar_one()
            )


def _filters(
    *,
    run_id: str | None,
    types: EventType | str | Iterable[EventType | str] | None,
    symbol: str | None,
    type_column: sa.ColumnElement[str] | None = None,
) -> list[sa.ColumnElement[bool]]:
    t = ledger_events
    where: list[sa.ColumnElement[bool]] = []
    if run_id is not None:
        where.append(t.c.run_id == run_id)
    if types is not None:
        wanted: Sequence[EventType | str] = [types] if isinstance(types, str) else list(types)
        where.append(
            (t.c.type if type_column is None else type_column).in_([EventType(x).value for x in wanted])
        )
    if symbol is not None:
        where.append(t.c.symbol == symbol)
    return where


def _configure_sqlite(engine: Engine) -> None:
    """WAL + synchronous=NORMAL, and real transactions (pysqlite's own BEGIN handling skips DDL)."""

    @sa_event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA cache_size=-65536")  # 64 MiB: the event_id index of a big ledger stays hot
        finally:
            cursor.close()

    @sa_event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")
