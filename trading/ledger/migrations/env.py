"""Alembic environment of the ledger.

`Ledger.migrate()` passes its open connection in `config.attributes["connection"]` (no alembic.ini).
From the command line, the URL comes from `sqlalchemy.url` in the config or the ledger's default.
The version table is `ledger_alembic_version`, so a database shared with Dagster (which has its own
`alembic_version`) keeps the two histories apart.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from trading.ledger.store import VERSION_TABLE, default_url

config = context.config


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or default_url()


def run_offline() -> None:
    context.configure(url=_url(), literal_binds=True, version_table=VERSION_TABLE)
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: sa.Connection) -> None:
    context.configure(connection=connection, version_table=VERSION_TABLE)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = sa.create_engine(_url(), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
