"""The one news schema: one row per (article, symbol) the article is about.

Columns: id (the vendor's article id, as text), symbol, created_at and updated_at (UTC,
microseconds), headline, summary, source, url (nullable). An article about three symbols is three
rows with the same id; `(id, symbol)` is the key.
"""

from __future__ import annotations

from typing import Final

import polars as pl

from lake.errors import LakeError
from lake.schema import TS_DTYPE


class NewsSchemaError(LakeError):
    """News rows that do not fit the news schema (missing column, naive timestamp, bad type)."""


NEWS_SCHEMA: Final[dict[str, pl.DataType]] = {
    "id": pl.String(),
    "symbol": pl.String(),
    "created_at": TS_DTYPE,
    "updated_at": TS_DTYPE,
    "headline": pl.String(),
    "summary": pl.String(),
    "source": pl.String(),
    "url": pl.String(),
}
REQUIRED: Final = ("id", "symbol", "created_at", "headline")
TIME_COLUMNS: Final = ("created_at", "updated_at")
SORT_KEY: Final = ("created_at", "id", "symbol")


def empty_news() -> pl.DataFrame:
    return pl.DataFrame(schema=NEWS_SCHEMA)


def conform_news(df: pl.DataFrame, *, where: str = "news") -> pl.DataFrame:
    """`df` in the news schema (column order, dtypes), or NewsSchemaError naming what is wrong.

    A missing `updated_at` is the creation time (never edited); other optional columns become
    nulls; extra columns are dropped. Timestamps must be timezone-aware: a naive one is ambiguous.
    Nulls in present columns are kept (validation quarantines them with the reason)."""
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise NewsSchemaError(f"{where}: missing required column(s) {missing}; got {df.columns}")
    for column in (c for c in TIME_COLUMNS if c in df.columns):
        dtype = df.schema[column]
        if not isinstance(dtype, pl.Datetime):
            raise NewsSchemaError(f"{where}: column {column!r} must be a datetime, got {dtype}")
        if dtype.time_zone is None:
            raise NewsSchemaError(f"{where}: column {column!r} is timezone-naive; localize it first")
    if "updated_at" not in df.columns:
        df = df.with_columns(pl.col("created_at").alias("updated_at"))
    exprs: list[pl.Expr] = []
    for name, dtype in NEWS_SCHEMA.items():
        if name in TIME_COLUMNS:
            exprs.append(pl.col(name).dt.convert_time_zone("UTC").dt.cast_time_unit("us"))
        elif name in df.columns:
            exprs.append(pl.col(name).cast(dtype).alias(name))
        else:
            exprs.append(pl.lit(None, dtype=dtype).alias(name))
    return df.select(exprs)
