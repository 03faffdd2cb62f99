"""A loopback server speaking Alpaca's market-data API (`GET /v2/stocks/bars`), for the real alpaca-py client.

It pages like Alpaca: at most `min(limit, page_size)` bars per response across symbols in symbol
order, a `next_page_token` until the last page, then null. Failures are scripted per request number.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from tests.fakes import JsonHandler


@dataclass
class AlpacaDataState:
    bars: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # symbol -> Alpaca bar objects, sorted by t
    page_size: int = 10_000
    # request number (1-based) -> (status, body) to answer instead of bars.
    failures: dict[int, tuple[int, str]] = field(default_factory=dict)
    hangs: dict[int, float] = field(default_factory=dict)  # request number -> seconds to stall first
    requests: list[dict[str, Any]] = field(default_factory=list)  # query params (first value each) + headers

    def page(self, params: dict[str, str]) -> dict[str, Any]:
        symbols = params["symbols"].split(",")
        start, end = _instant(params.get("start")), _instant(params.get("end"))
        rows = [
            (symbol, bar)
            for symbol in symbols
            for bar in self.bars.get(symbol, [])
            # Alpaca's window is inclusive at both ends.
            if (start is None or _instant(bar["t"]) >= start) and (end is None or _instant(bar["t"]) <= end)  # type: ignore[operator]
        ]
        offset = int(params.get("page_token") or 0)
        size = min(int(params.get("limit") or self.page_size), self.page_size)
        chunk = rows[offset : offset + size]
        out: dict[str, list[dict[str, Any]]] = {}
        for symbol, bar in chunk:
            out.setdefault(symbol, []).append(bar)
        more = offset + size < len(rows)
        return {"bars": out, "next_page_token": str(offset + size) if more else None}


def _instant(value: str | None) -> datetime | None:
    """RFC 3339 text as an aware UTC datetime (alpaca-py sends naive UTC; bars carry a Z)."""
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@contextmanager
def alpaca_data_server(state: AlpacaDataState) -> Iterator[str]:
    """Serves `state`; yields the base URL to pass as alpaca-py's `url_override`."""
    lock = threading.Lock()

    class Handler(JsonHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server naming
            url = urlparse(self.path)
            params = {k: v[0] for k, v in parse_qs(url.query).items()}
            with lock:
                state.requests.append({"path": url.path, **params, "_headers": dict(self.headers)})
                number = len(state.requests)
            if number in state.hangs:
                time.sleep(state.hangs[number])
            if number in state.failures:
                status, body = state.failures[number]
                return self._send(status, body)
            if url.path != "/v2/stocks/bars" or "symbols" not in params:
                return self._send(404, json.dumps({"code": 40410000, "message": f"not found: {url.path}"}))
            if not self.headers.get("APCA-API-KEY-ID") or not self.headers.get("APCA-API-SECRET-KEY"):
                return self._send(401, json.dumps({"code": 40110000, "message": "request is not authorized"}))
            self._send(200, json.dumps(state.page(params)))

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.block_on_close = False  # a stalled handler must not hold up the test's exit
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def alpaca_bars_from_frame(bars: Any) -> dict[str, list[dict[str, Any]]]:
    """Turns lake bars (polars, one or more symbols) into Alpaca's JSON bar objects per symbol."""
    out: dict[str, list[dict[str, Any]]] = {}
    for row in bars.sort("symbol", "ts").iter_rows(named=True):
        out.setdefault(row["symbol"], []).append(
            {
                "t": row["ts"].strftime("%Y-%m-%dT%H:%M:%SZ"),
                "o": row["open"],
                "h": row["high"],
                "l": row["low"],
                "c": row["close"],
                "v": row["volume"],
                "n": row["trade_count"],
                "vw": row["vwap"],
            }
        )
    return out
