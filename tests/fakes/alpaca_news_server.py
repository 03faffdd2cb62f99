"""A loopback server speaking Alpaca's news API (`GET /v1beta1/news`), for alpaca-py's `NewsClient`.

Like Alpaca: `symbols` (comma-separated, an article matches when it names any), `start`/`end`
(RFC 3339, inclusive, on `created_at`), `sort` (asc/desc, default desc), `limit` (at most 50 a
page), and an opaque `next_page_token` until the last page, then null. Articles are Alpaca's JSON
objects (id, headline, author, created_at, updated_at, summary, content, images, symbols, source,
url). Failures are scripted per request number; every request's query and headers are recorded.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from tests.fakes import JsonHandler

MAX_PAGE = 50


@dataclass
class AlpacaNewsState:
    articles: list[dict[str, Any]] = field(default_factory=list)
    page_size: int = MAX_PAGE
    failures: dict[int, tuple[int, str]] = field(default_factory=dict)  # request number (1-based) -> (status, body)
    requests: list[dict[str, Any]] = field(default_factory=list)

    def page(self, params: dict[str, str]) -> dict[str, Any]:
        wanted = set(params["symbols"].split(",")) if params.get("symbols") else None
        start, end = _instant(params.get("start")), _instant(params.get("end"))
        chosen = [
            a
            for a in self.articles
            if (wanted is None or wanted & set(a["symbols"]))
            and (start is None or _instant(a["created_at"]) >= start)  # type: ignore[operator]
            and (end is None or _instant(a["created_at"]) <= end)  # type: ignore[operator]
        ]
        chosen.sort(key=lambda a: (_instant(a["created_at"]), a["id"]), reverse=params.get("sort", "desc") == "desc")
        offset = int(base64.b64decode(params["page_token"]).decode()) if params.get("page_token") else 0
        size = min(int(params.get("limit") or self.page_size), self.page_size, MAX_PAGE)
        more = offset + size < len(chosen)
        token = base64.b64encode(str(offset + size).encode()).decode() if more else None
        return {"news": chosen[offset : offset + size], "next_page_token": token}


def _instant(value: str | None) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def article(
    id: int, symbols: list[str], created_at: str, headline: str, *, updated_at: str | None = None, summary: str = "", source: str = "benzinga"
) -> dict[str, Any]:
    """One article in Alpaca's JSON shape."""
    return {
        "id": id,
        "headline": headline,
        "author": "Newsroom",
        "created_at": created_at,
        "updated_at": updated_at or created_at,
        "summary": summary,
        "content": "",
        "images": [],
        "symbols": symbols,
        "source": source,
        "url": f"https://www.benzinga.com/news/{id}",
    }


@contextmanager
def alpaca_news_server(state: AlpacaNewsState) -> Iterator[str]:
    """Serves `state`; yields the base URL to pass as `NewsClient(url_override=...)`."""
    lock = threading.Lock()

    class Handler(JsonHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server naming
            url = urlparse(self.path)
            params = {k: v[0] for k, v in parse_qs(url.query).items()}
            with lock:
                state.requests.append({"path": url.path, **params, "_headers": dict(self.headers)})
                number = len(state.requests)
            if number in state.failures:
                status, body = state.failures[number]
                return self._send(status, body)
            if url.path != "/v1beta1/news":
                return self._send(404, json.dumps({"code": 40410000, "message": f"not found: {url.path}"}))
            if not self.headers.get("APCA-API-KEY-ID") or not self.headers.get("APCA-API-SECRET-KEY"):
                return self._send(401, json.dumps({"code": 40110000, "message": "request is not authorized"}))
            if int(params.get("limit") or 0) > MAX_PAGE:
                return self._send(422, json.dumps({"code": 42210000, "message": "invalid limit: must be between 1 and 50"}))
            self._send(200, json.dumps(state.page(params)))

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.block_on_close = False
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
