"""Corporate actions a user declares, so a split's price jump is explained rather than blocked.

One CSV per lake: `<lake>/reference/corporate_actions.csv` with the header `symbol,ex_date,ratio`:
`ratio` is shares after per share before (a 4-for-1 split: 4; a 1-for-100 reverse split: 0.01), and
`ex_date` the first session (YYYY-MM-DD, New York) that trades at the new price. Validation scales
the return across the ex-date by the ratio before its jump rules look at it. No file: no actions.
"""

from __future__ import annotations

import io
from pathlib import Path, PurePosixPath
from typing import overload

import polars as pl

from lake.errors import LakeError
from lake.filesystem import ObjectPath

RELATIVE_PATH = PurePosixPath("reference") / "corporate_actions.csv"
SCHEMA = {"symbol": pl.String(), "ex_date": pl.Date(), "ratio": pl.Float64()}


@overload
def corporate_actions_path(root: Path) -> Path: ...
@overload
def corporate_actions_path(root: ObjectPath) -> ObjectPath: ...
def corporate_actions_path(root: Path | ObjectPath) -> Path | ObjectPath:
    return root / RELATIVE_PATH


def load_corporate_actions(root: Path | ObjectPath) -> pl.DataFrame:
    """The lake's declared actions (empty if none), or an error naming the line that is wrong."""
    path = corporate_actions_path(root)
    if not path.exists():
        return pl.DataFrame(schema=SCHEMA)
    try:
        # An object is read whole (a few lines): polars' CSV reader takes no object-store options.
        source = io.BytesIO(path.read_bytes()) if isinstance(path, ObjectPath) else path
        raw = pl.read_csv(source, infer_schema=False)
    except pl.exceptions.PolarsError as exc:
        raise LakeError(f"{path}: cannot read it as CSV: {exc}") from exc
    missing = [c for c in SCHEMA if c not in raw.columns]
    if missing:
        raise LakeError(f"{path}: lacks column(s) {missing}; the header is symbol,ex_date,ratio")
    actions = raw.select(
        pl.col("symbol").str.strip_chars().str.to_uppercase(),
        pl.col("ex_date").str.strip_chars().str.to_date("%Y-%m-%d", strict=False),
        pl.col("ratio").str.strip_chars().cast(pl.Float64, strict=False),
    )
    bad = actions.with_row_index("line", offset=2).filter(
        pl.col("symbol").is_null() | (pl.col("symbol") == "") | pl.col("ex_date").is_null() | ~(pl.col("ratio") > 0) | pl.col("ratio").is_null()
    )
    if not bad.is_empty():
        line = int(bad["line"][0])
        raise LakeError(f"{path} line {line}: {raw.row(line - 2)} is not (symbol, YYYY-MM-DD, ratio > 0)")
    return actions
