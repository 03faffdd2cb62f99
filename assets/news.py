"""Headlines per trading day for the universe, validated, written to the news lake.

One partition per session (the intraday bars' trading days): the day's window runs from 00:00 New
York of the session's day to 00:00 of the next session's day, so weekend and holiday news belongs
to the session before and every headline lands in exactly one partition. A partition of today
holds the headlines so far: no source is asked for time that has not happened.
"""

from collections.abc import Iterator
from typing import Any, Literal

import dagster as dg
import polars as pl
from pydantic import Field

from assets.clock import run_now
from assets.metadata import markdown_table
from assets.partitions import trading_day_partitions, universe
from assets.policies import MARKET_DATA_POOL, TRANSIENT_RETRY, bad_input_fails_once
from assets.resources import LakeResource
from assets.run_limits import max_runtime
from lake.errors import SourceError
from lake.news.base import NewsSource
from lake.news.store import write_news_day
from lake.news.validation import RULES, NewsWindow, validate_news
from lake.validation import ValidationReport


class NewsResource(dg.ConfigurableResource):
    """Chooses the news source: the offline generator, Alpaca's news API, or local files
    (built from the settings by orchestration/resources.py: QUANTLAKE_NEWS_*)."""

    source: Literal["synthetic", "alpaca", "files"] = "synthetic"
    seed: int = 7
    exchange: str = "XNYS"
    alpaca_api_key: str | None = None
    alpaca_secret_key: str | None = None
    alpaca_url_override: str | None = None
    files_glob: str | None = None
    files_timezone: str = Field(default="America/New_York", description="Timezone of the files' times without an offset.")

    def build(self) -> NewsSource:
        if self.source == "synthetic":
            from lake.news.synthetic import SyntheticNewsSource

            return SyntheticNewsSource(seed=self.seed, exchange=self.exchange)
        if self.source == "files":
            if not self.files_glob:
                raise ValueError("news: source 'files' needs files_glob (QUANTLAKE_NEWS_FILES_GLOB)")
            from lake.news.files import NewsFileSource

            return NewsFileSource(self.files_glob, timezone=self.files_timezone)
        if not (self.alpaca_api_key and self.alpaca_secret_key):
            raise ValueError("news: source 'alpaca' needs ALPACA_API_KEY and ALPACA_SECRET_KEY")
        from lake.news.alpaca import AlpacaNewsSource  # imported only when used: alpaca-py is slow to import

        return AlpacaNewsSource(self.alpaca_api_key, self.alpaca_secret_key, url_override=self.alpaca_url_override)


NEWS_CHECKS = [
    dg.AssetCheckSpec(name=rule.name, asset="news", blocking=rule.blocking, description=rule.description) for rule in RULES
]


def _check_results(report: ValidationReport) -> Iterator[dg.AssetCheckResult]:
    for outcome in report.results:
        examples = markdown_table(pl.DataFrame(outcome.examples)) if outcome.examples else "_none_"
        yield dg.AssetCheckResult(
            check_name=outcome.name,
            passed=outcome.passed,
            severity=dg.AssetCheckSeverity.ERROR if outcome.blocking else dg.AssetCheckSeverity.WARN,
            metadata={"failed_rows": outcome.failed_rows, "examples": dg.MetadataValue.md(examples)},
        )


@dg.asset(
    partitions_def=trading_day_partitions,
    check_specs=NEWS_CHECKS,
    group_name="market_data",
    kinds={"polars", "parquet"},
    retry_policy=TRANSIENT_RETRY,
    pool=MARKET_DATA_POOL,
)
def news(
    context: dg.AssetExecutionContext, lake: LakeResource, news_source: NewsResource
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Headlines of the universe for one trading day (through the night and days off after it),
    validated; failing rows go to the news quarantine with their reason."""
    with bad_input_fails_once(context):
        window = NewsWindow.of(context.partition_key, news_source.exchange)
        end = min(window.end, run_now(context))
        if end <= window.start:
            raise SourceError(f"news {window.day}: the day has not begun yet")
        symbols = universe()
        report = validate_news(news_source.build().fetch_news(symbols, window.start, end), window, symbols)
        path = write_news_day(lake.location, window.day, report.clean, report.quarantine)
    failed = [o.name for o in report.results if not o.passed]
    context.log.info(f"news {window.day}: {report.clean.height} rows written, {report.quarantine.height} quarantined, failed checks: {failed or 'none'}")
    meta: dict[str, Any] = {
        "dagster/row_count": report.clean.height,
        "quarantined_rows": report.quarantine.height,
        "symbols_with_news": report.clean["symbol"].n_unique(),
        "window": f"{window.start.isoformat()} to {end.isoformat()}",
        "preview": dg.MetadataValue.md(markdown_table(report.clean.select("created_at", "symbol", "headline", "source"))),
    }
    if path is not None:
        meta["path"] = dg.MetadataValue.path(str(path))
    yield dg.MaterializeResult(metadata=meta)
    yield from _check_results(report)


ingest_news_job = dg.define_asset_job(
    "ingest_news_job",
    selection=dg.AssetSelection.assets("news"),
    partitions_def=trading_day_partitions,
    description="Headlines for one trading day: fetch, validate, write (failing rows quarantined with their reason).",
    tags=max_runtime("ingest"),
)

