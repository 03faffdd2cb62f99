"""Alpaca's news API (`GET /v1beta1/news`) through alpaca-py's `NewsClient`.

The client pages by itself (50 articles a page, following `next_page_token` until there is none)
and returns the articles as plain dicts (`raw_data=True`). An article lists every symbol it is about;
the lake keeps one row per (article, requested symbol). An article that names none of the requested
symbols (Alpaca should not send one) keeps a row per symbol it names, so validation quarantines it
with the reason rather than it vanishing. Alpaca's window is inclusive at both ends; the lake's is
[start, end), so the end is filtered here.

Failures raise `SourceError` naming Alpaca and the symbols, never a key: timeouts, lost
connections and HTTP 429/5xx (after the client's own retries) are `TransientSourceError`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import polars as pl
from alpaca.common.exceptions import APIError
from alpaca.data.historical.news import NewsClient
from alpaca.data.requests import NewsRequest

from lake.errors import SourceError, TransientSourceError
from lake.http import install_timeout
from lake.news.schema import NEWS_SCHEMA, SORT_KEY, NewsSchemaError, conform_news, empty_news

_ARTICLE_KEYS = ("id", "headline", "created_at", "symbols")


class AlpacaNewsSource:
    name = "alpaca"

    def __init__(
        self,
        api_key: str,
        secret_key: str,
        *,
        url_override: str | None = None,
        retry_attempts: int = 3,
        retry_wait: float = 3.0,
        timeout_s: float = 30.0,
    ) -> None:
        if not (api_key and secret_key):
            raise SourceError("alpaca news: api_key and secret_key are both required")
        self._client = NewsClient(api_key, secret_key, raw_data=True, url_override=url_override)
        # The client retries 429/504 itself; these knobs are private attributes in alpaca-py 0.44.
        self._client._retry = retry_attempts
        self._client._retry_wait = retry_wait  # type: ignore[assignment]  # alpaca-py types it int
        install_timeout(self._client._session, timeout_s)  # alpaca-py sets none

    def fetch_news(self, symbols: Sequence[str], start: datetime, end: datetime) -> pl.DataFrame:
        if start.tzinfo is None or end.tzinfo is None:
            raise SourceError("alpaca news: start and end must be timezone-aware")
        wanted = sorted({s.upper() for s in symbols})
        if not wanted or start >= end:
            return empty_news()
        articles = self._request(wanted, start, end)
        rows = [row for article in articles for row in _rows(article, wanted)]
        if not rows:
            return empty_news()
        try:
            news = conform_news(pl.DataFrame(rows, schema={**NEWS_SCHEMA}), where=f"alpaca news for {wanted}")
        except (pl.exceptions.PolarsError, NewsSchemaError) as exc:
            raise SourceError(f"alpaca news for {wanted}: malformed articles: {exc}") from None
        return news.filter((pl.col("created_at") >= start) & (pl.col("created_at") < end)).sort(list(SORT_KEY))

    def _request(self, symbols: list[str], start: datetime, end: datetime) -> list[dict[str, Any]]:
        where = f"alpaca news for {symbols}"
        request = NewsRequest(symbols=",".join(symbols), start=start, end=end, sort="asc")
        try:
            raw = self._client.get_news(request)
        except APIError as exc:
            status = exc.status_code if exc.response is not None else None
            error = TransientSourceError if status is None or status == 429 or status >= 500 else SourceError
            raise error(f"{where}: HTTP {status or '?'}: {_api_message(exc)}") from None
        except json.JSONDecodeError as exc:
            raise SourceError(f"{where}: {type(exc).__name__}: {exc}") from None
        except OSError as exc:  # timeouts and connection errors (requests' exceptions are OSErrors)
            raise TransientSourceError(f"{where}: {type(exc).__name__}: {exc}") from None
        except ValueError as exc:  # a body with no (or several) known data keys
            raise SourceError(f"{where}: {type(exc).__name__}: {exc}") from None
        articles = raw.get("news", []) if isinstance(raw, dict) else None
        if not isinstance(articles, list) or not all(isinstance(a, dict) for a in articles):
            raise SourceError(f"{where}: expected {{'news': [article, ...]}}, got {str(raw)[:120]}")
        for article in articles:
            absent = [k for k in _ARTICLE_KEYS if k not in article]
            if absent:
                raise SourceError(f"{where}: article {article.get('id', '?')} lacks {absent}")
        return articles


def _rows(article: dict[str, Any], wanted: list[str]) -> list[dict[str, Any]]:
    listed: list[str | None] = [str(s).upper() for s in article["symbols"] or []]
    ours = [s for s in listed if s in wanted] or listed or [None]  # no symbol at all: quarantined as such
    created = _instant(article["created_at"])
    updated = _instant(article.get("updated_at")) or created
    return [
        {
            "id": str(article["id"]),
            "symbol": symbol,
            "created_at": created,
            "updated_at": updated,
            "headline": article["headline"],
            "summary": article.get("summary"),
            "source": article.get("source"),
            "url": article.get("url") or None,
        }
        for symbol in ours
    ]


def _instant(value: Any) -> datetime | None:
    """RFC 3339 text (Alpaca: `2024-11-27T15:04:05Z`) as an aware datetime."""
    if value in (None, ""):
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise SourceError(f"alpaca news: cannot parse time {value!r}") from None
    if parsed.tzinfo is None:
        raise SourceError(f"alpaca news: time {value!r} has no offset")
    return parsed


def _api_message(exc: APIError) -> str:
    """Alpaca's own error message without echoing request headers (which carry the keys)."""
    try:
        return str(json.loads(str(exc)).get("message", exc))
    except (ValueError, AttributeError):
        return str(exc)[:200]
