"""News validation, in the bars' shape: a table of rules, each a polars row mask and a reason.

Blocking rules quarantine their rows with the check's name and a reason a person can act on;
nothing is dropped silently. A day's partition holds the headlines created in its window
(`lake.calendar.day_window`: 00:00 New York of the session's day to 00:00 of the next session's
day, so nights, weekends and holidays belong to the session before and the windows tile time).

The key is (id, symbol). When a key repeats (a page fetched twice, an article edited between two
requests), the row last updated is kept and the others are quarantined as duplicates. There is no
great-expectations suite here: the rules are few and the masks are the definition.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime

import polars as pl

from lake.calendar import EXCHANGE_TZ, day_window
from lake.news.schema import NEWS_SCHEMA, SORT_KEY, conform_news
from lake.validation import EXAMPLES, CheckOutcome, Rule, ValidationReport

KEY_COLUMNS = ("id", "symbol", "created_at", "updated_at")


def _local(column: str) -> pl.Expr:
    return pl.col(column).dt.convert_time_zone(EXCHANGE_TZ).dt.strftime("%Y-%m-%d %H:%M %Z")


RULES: tuple[Rule, ...] = (
    Rule(
        "not_null",
        True,
        "id, symbol, created_at and updated_at are present.",
        lambda: pl.any_horizontal([pl.col(c).is_null() for c in KEY_COLUMNS]),
        lambda: pl.format(
            "missing {}",
            pl.concat_str([pl.when(pl.col(c).is_null()).then(pl.lit(c)) for c in KEY_COLUMNS], separator=", ", ignore_nulls=True),
        ),
    ),
    Rule(
        "headline_present",
        True,
        "The headline is not empty.",
        lambda: pl.col("headline").is_null() | (pl.col("headline").str.strip_chars() == ""),
        lambda: pl.format("news {} for {} has an empty headline", pl.col("id"), pl.col("symbol")),
    ),
    Rule(
        "symbol_known",
        True,
        "The symbol is in the configured universe.",
        lambda: ~pl.col("_known").fill_null(False),
        lambda: pl.format("symbol {} is not in the universe", pl.col("symbol")),
    ),
    Rule(
        "in_window",
        True,
        "created_at lies in the partition's window (00:00 New York of the session's day to 00:00 of the next session's day).",
        lambda: (pl.col("created_at") < pl.col("_from")) | (pl.col("created_at") >= pl.col("_until")),
        lambda: pl.format(
            "created {} is outside the partition's window ({} to {})", _local("created_at"), _local("_from"), _local("_until")
        ),
    ),
    Rule(
        "updated_after_created",
        True,
        "updated_at is not before created_at.",
        lambda: pl.col("updated_at") < pl.col("created_at"),
        lambda: pl.format("updated {} before it was created {}", _local("updated_at"), _local("created_at")),
    ),
    Rule(
        "id_unique",
        True,
        "One row per (id, symbol); the version updated last is kept, the others are quarantined.",
        lambda: ~pl.col("_latest"),
        lambda: pl.format("duplicate of news {} for {} (the version updated last is kept)", pl.col("id"), pl.col("symbol")),
    ),
)
RULES_BY_NAME = {rule.name: rule for rule in RULES}


@dataclass(frozen=True)
class NewsWindow:
    """The partition a frame is validated for: its session day and the window of creation times."""

    day: date
    start: datetime
    end: datetime

    @classmethod
    def of(cls, day: date | str, exchange: str = "XNYS") -> NewsWindow:
        d = date.fromisoformat(day) if isinstance(day, str) else day
        start, end = day_window(d, exchange)
        return cls(d, start, end)


def _helpers(news: pl.DataFrame, window: NewsWindow, known: Iterable[str]) -> pl.DataFrame:
    """Adds the window bounds, `_known` and `_latest` (this row is its key's last-updated version:
    ties keep the first to arrive)."""
    ranked = news.with_row_index("_row").with_columns(
        pl.lit(window.start).cast(NEWS_SCHEMA["created_at"]).alias("_from"),
        pl.lit(window.end).cast(NEWS_SCHEMA["created_at"]).alias("_until"),
        pl.col("symbol").is_in(sorted(set(known))).alias("_known"),
    )
    order = ranked.sort(["id", "symbol", "updated_at", "_row"], descending=[False, False, True, False], nulls_last=True)
    first = order.select("_row", pl.int_range(pl.len()).over("id", "symbol").eq(0).alias("_latest"))
    return ranked.join(first, on="_row", how="left").sort("_row")


def validate_news(news: pl.DataFrame, window: NewsWindow, known_symbols: Iterable[str]) -> ValidationReport:
    """Checks `news` against every rule for `window`'s partition; returns the outcomes, the clean
    rows (sorted by created_at, id, symbol) and the quarantined rows (plus `check` and `reason`)."""
    news = conform_news(news, where=f"validate news {window.day}")
    frame = _helpers(news, window, known_symbols)
    frame = frame.with_columns(rule.failing().fill_null(False).alias(f"_fails_{rule.name}") for rule in RULES)  # type: ignore[misc]
    results: list[CheckOutcome] = []
    for rule in RULES:
        failing = frame.filter(pl.col(f"_fails_{rule.name}"))
        examples = failing.head(EXAMPLES).select("id", "symbol", "created_at", "headline", rule.reason().alias("reason")).to_dicts()  # type: ignore[misc]
        results.append(CheckOutcome(rule.name, failing.height == 0, rule.blocking, failing.height, rule.description, examples))
    masks = [pl.col(f"_fails_{rule.name}") for rule in RULES]
    checks = pl.concat_str([pl.when(m).then(pl.lit(r.name)) for m, r in zip(masks, RULES, strict=True)], separator=",", ignore_nulls=True)
    reasons = pl.concat_str([pl.when(m).then(r.reason()) for m, r in zip(masks, RULES, strict=True)], separator="; ", ignore_nulls=True)  # type: ignore[misc]
    bad = pl.any_horizontal(masks)
    columns = list(NEWS_SCHEMA)
    quarantine = frame.filter(bad).select(*columns, checks.alias("check"), reasons.alias("reason"))
    clean = frame.filter(~bad).select(columns).sort(list(SORT_KEY))
    return ValidationReport(results, clean, quarantine)
