"""News sources: Alpaca's news API through alpaca-py's NewsClient (loopback server) and a file import."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from lake.errors import SourceError, TransientSourceError
from lake.news.alpaca import AlpacaNewsSource
from lake.news.files import NewsFileSource
from lake.news.validation import NewsWindow, validate_news
from tests.fakes.alpaca_news_server import AlpacaNewsState, alpaca_news_server, article

START, END = NewsWindow.of("2024-11-27").start, NewsWindow.of("2024-11-27").end  # 05:00Z Wed to 05:00Z Fri


def _source(url: str) -> AlpacaNewsSource:
    return AlpacaNewsSource("key-id", "secret-key", url_override=url, retry_attempts=1, retry_wait=0, timeout_s=5)


def _stamp(i: int) -> str:
    return f"2024-11-27T{14 + i // 60:02d}:{i % 60:02d}:00Z"


def test_alpaca_news_pages_through_every_article_once() -> None:
    articles = [article(1000 + i, ["AAPL", "TSLA"] if i % 3 else ["MSFT"], _stamp(i), f"headline {i}") for i in range(123)]
    articles.append(article(5000, ["AAPL"], "2024-11-29T05:00:00Z", "at the window's end: the next partition's"))
    articles.append(article(5001, ["XOM"], _stamp(1), "not asked for"))
    state = AlpacaNewsState(articles=articles)
    with alpaca_news_server(state) as url:
        news = _source(url).fetch_news(["MSFT", "AAPL"], START, END)
    assert [r["path"] for r in state.requests] == ["/v1beta1/news"] * 3  # 50 + 50 + 23
    assert [r.get("page_token") is not None for r in state.requests] == [False, True, True]
    first = state.requests[0]
    assert first["symbols"] == "AAPL,MSFT" and first["limit"] == "50" and first["sort"] == "asc"
    assert datetime.fromisoformat(first["start"]) == START and datetime.fromisoformat(first["end"]) == END
    assert first["_headers"]["APCA-API-KEY-ID"] == "key-id"
    assert news.height == 123 and news.select("id", "symbol").is_unique().all()
    assert set(news["symbol"]) == {"AAPL", "MSFT"}, "TSLA is the article's, not ours"
    row = news.filter(pl.col("id") == "1001").row(0, named=True)
    assert row["created_at"] == datetime(2024, 11, 27, 14, 1, tzinfo=UTC) and row["headline"] == "headline 1"
    assert row["source"] == "benzinga" and row["url"] == "https://www.benzinga.com/news/1001"
    assert validate_news(news, NewsWindow.of("2024-11-27"), ["AAPL", "MSFT"]).passed


def test_an_edited_article_keeps_its_update_time() -> None:
    state = AlpacaNewsState(articles=[article(7, ["AAPL"], _stamp(0), "v2", updated_at="2024-11-27T20:00:00Z")])
    with alpaca_news_server(state) as url:
        news = _source(url).fetch_news(["AAPL"], START, END)
    assert news["updated_at"].to_list() == [datetime(2024, 11, 27, 20, tzinfo=UTC)]


@pytest.mark.parametrize(
    ("status", "error", "text"),
    [
        (429, TransientSourceError, "HTTP 429: too many requests"),
        (503, TransientSourceError, "HTTP 503"),
        (403, SourceError, "HTTP 403: forbidden"),
    ],
)
def test_alpaca_failures_name_the_status_and_never_the_key(status: int, error: type[Exception], text: str) -> None:
    body = json.dumps({"code": status * 100000, "message": text.split(": ", 1)[-1] if ": " in text else "unavailable"})
    state = AlpacaNewsState(articles=[article(1, ["AAPL"], _stamp(0), "h")], failures={1: (status, body), 2: (status, body)})
    with alpaca_news_server(state) as url, pytest.raises(error) as caught:
        _source(url).fetch_news(["AAPL"], START, END)
    assert text in str(caught.value) and "['AAPL']" in str(caught.value)
    assert "secret-key" not in str(caught.value)
    if error is SourceError:
        assert not isinstance(caught.value, TransientSourceError), "bad input is not retried"


def test_a_malformed_answer_is_a_source_error() -> None:
    state = AlpacaNewsState(failures={1: (200, json.dumps({"news": [{"id": 1, "headline": "no times"}], "next_page_token": None}))})
    with alpaca_news_server(state) as url, pytest.raises(SourceError, match=r"article 1 lacks \['created_at', 'symbols'\]"):
        _source(url).fetch_news(["AAPL"], START, END)


# --- files ---------------------------------------------------------------------------------------

def test_csv_and_json_lines_import(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text(
        "id,symbol,created_at,headline,updated_at,summary,source,url\n"
        "1,AAPL,2024-11-27T10:00:00-05:00,Apple up,,s,wire,https://x/1\n"
        "2,MSFT,2024-11-27 11:30,Naive is New York,2024-11-27T17:00:00Z,,wire,\n"
        "3,AAPL,2024-12-02T10:00:00Z,another day's,,,,\n"
    )
    saved = {**article(9, ["AAPL", "XOM"], "2024-11-27T16:00:00Z", "saved from Alpaca"), "content": "<p>ignored</p>"}
    (tmp_path / "b.jsonl").write_text(json.dumps(saved) + "\n\n")
    news = NewsFileSource(str(tmp_path / "*")).fetch_news(["AAPL"], START, END)
    assert list(zip(news["id"], news["symbol"], strict=True)) == [("1", "AAPL"), ("9", "AAPL"), ("9", "XOM"), ("2", "MSFT")]
    assert news["created_at"].to_list()[::3] == [datetime(2024, 11, 27, 15, tzinfo=UTC), datetime(2024, 11, 27, 16, 30, tzinfo=UTC)]
    assert news["updated_at"][0] == news["created_at"][0], "an empty updated_at is the creation time"
    report = validate_news(news, NewsWindow.of("2024-11-27"), ["AAPL", "MSFT"])
    assert report.quarantine["reason"].to_list() == ["symbol XOM is not in the universe"]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.csv", "id,symbol,created_at,headline\n1,AAPL,2024-11-27T10:00:00Z,ok\n2,AAPL,yesterday,h\n", "line 3, column 'created_at': cannot parse 'yesterday'"),
        ("none.csv", "id,symbol,created_at,headline\n1,AAPL,,h\n", "line 2: no created_at"),
        ("cols.csv", "id,ticker,created_at,headline\n1,AAPL,2024-11-27T10:00:00Z,h\n", "lacks column(s) ['symbol']"),
        ("bad.jsonl", '{"id": 1}\nnot json\n', "line 2: not JSON"),
    ],
)
def test_a_file_that_cannot_be_read_is_named_with_its_line(tmp_path: Path, name: str, text: str, message: str) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(SourceError) as caught:
        NewsFileSource(str(tmp_path / name)).fetch_news(["AAPL"], START, END)
    assert message in str(caught.value) and name in str(caught.value)


def test_no_file_matches_is_named(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no file matches"):
        NewsFileSource(str(tmp_path / "*.csv")).fetch_news(["AAPL"], START, END)
