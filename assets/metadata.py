"""Metadata helpers: what the Dagster UI shows beside a materialization."""

from __future__ import annotations

import base64
from typing import Any

import dagster as dg
import polars as pl


def markdown_table(df: pl.DataFrame, max_rows: int = 10) -> str:
    """A small markdown table (no extra dependency); floats to 4 decimals."""
    if df.is_empty():
        return "_no rows_"
    head = df.head(max_rows)
    cols = head.columns

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4f}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in head.iter_rows()]
    if df.height > max_rows:
        lines.append(f"\n_{df.height - max_rows} more rows_")
    return "\n".join(lines)


def png_markdown(png: bytes, alt: str) -> dg.MetadataValue:
    """Embeds a PNG in markdown metadata, which the UI renders as an image."""
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


def bars_metadata(bars: pl.DataFrame, path: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"dagster/row_count": bars.height, "preview": dg.MetadataValue.md(markdown_table(bars))}
    if bars.height:
        meta["first_ts"] = str(bars["ts"].min())
        meta["last_ts"] = str(bars["ts"].max())
    if path:
        meta["path"] = dg.MetadataValue.path(path)
    return meta
