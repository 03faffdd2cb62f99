"""What the lake holds besides bars, on an S3-compatible object store (moto's S3 server on a loopback
port): research reports, the declared corporate actions, news. Each works on an object-store lake as
on a local folder, or refuses with an error that names the feature."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from polars.testing import assert_frame_equal

from backtests.reports import fan_chart_png, save_report
from lake.corporate_actions import corporate_actions_path, load_corporate_actions
from lake.errors import LakeError
from lake.filesystem import ObjectPath
from lake.store import write_bytes_atomic, write_text_atomic
from tests.lake.test_s3_lake import _objects, endpoint, s3_root  # noqa: F401  # fixtures: moto's server, a fresh prefix

ACTIONS_CSV = "symbol,ex_date,ratio\naapl, 2024-06-10 ,4\nMSFT,2024-11-26,0.5\n"


def test_a_report_is_written_into_the_bucket_as_into_a_folder(s3_root: ObjectPath, tmp_path: Path) -> None:  # noqa: F811
    pngs = {"fan": fan_chart_png({5: np.array([1.0, 0.9, 0.8]), 50: np.array([1.0, 1.0, 1.1]), 95: np.array([1.0, 1.2, 1.4])})}
    written = save_report(s3_root / "research/x/report", pngs)
    local = save_report(tmp_path / "research/x/report", pngs)
    assert written == [s3_root / "research/x/report/fan.png", s3_root / "research/x/report/index.html"]
    assert _objects(s3_root) == ["research/x/report/fan.png", "research/x/report/index.html"], "no staged object left"
    for remote, here in zip(written, local, strict=True):
        assert remote.read_bytes() == here.read_bytes()
    save_report(s3_root / "research/x/report", {"fan": pngs["fan"], "again": pngs["fan"]})  # rewritten in place
    assert _objects(s3_root) == ["research/x/report/again.png", "research/x/report/fan.png", "research/x/report/index.html"]
    assert b"again.png" in (s3_root / "research/x/report/index.html").read_bytes()


def test_atomic_writers_take_bytes_and_text_on_both(s3_root: ObjectPath, tmp_path: Path) -> None:  # noqa: F811
    for root in (s3_root, tmp_path):
        assert write_bytes_atomic(root / "a/b.bin", b"\x00\x01") == root / "a/b.bin"
        assert write_text_atomic(root / "a/c.txt", "é\n") == root / "a/c.txt"
        assert (root / "a/b.bin").read_bytes() == b"\x00\x01" and (root / "a/c.txt").read_bytes() == "é\n".encode()
    assert _objects(s3_root) == ["a/b.bin", "a/c.txt"]


def test_corporate_actions_are_read_from_the_bucket(s3_root: ObjectPath, tmp_path: Path) -> None:  # noqa: F811
    assert load_corporate_actions(s3_root).is_empty()  # no file: no actions
    for root in (s3_root, tmp_path):
        write_text_atomic(corporate_actions_path(root), ACTIONS_CSV)
    assert corporate_actions_path(s3_root) == s3_root / "reference/corporate_actions.csv"
    actions = load_corporate_actions(s3_root)
    assert actions.equals(load_corporate_actions(tmp_path))
    assert actions["symbol"].to_list() == ["AAPL", "MSFT"] and actions["ratio"].to_list() == [4.0, 0.5]
    write_text_atomic(corporate_actions_path(s3_root), "symbol,ex_date,ratio\nAAPL,2024-13-01,2\n")
    with pytest.raises(LakeError, match=r"s3://.*corporate_actions.csv line 2"):
        load_corporate_actions(s3_root)


def test_news_days_are_written_and_read_as_of_a_time_from_the_bucket(s3_root: ObjectPath, tmp_path: Path) -> None:  # noqa: F811
    from lake.news.store import news_days, news_path, read_news, read_news_quarantine, write_news_day
    from lake.news.synthetic import SyntheticNewsSource
    from lake.news.validation import NewsWindow, validate_news

    days = [date(2024, 11, 25), date(2024, 11, 26), date(2024, 11, 27)]
    source = SyntheticNewsSource(seed=7)
    for day in days:
        window = NewsWindow.of(day)
        news = source.fetch_news(["AAPL", "MSFT"], window.start, window.end)
        report = validate_news(news, window, ["AAPL"])  # MSFT's headlines are out of this universe: quarantined
        for root in (s3_root, tmp_path):
            assert write_news_day(root, day, report.clean, report.quarantine) == news_path(root, day)
    assert news_days(s3_root) == news_days(tmp_path) == days
    for day in days:
        key = f"news/date={day}/part.parquet"
        assert (s3_root / key).read_bytes() == (tmp_path / key).read_bytes()
        assert_frame_equal(read_news_quarantine(s3_root, day), read_news_quarantine(tmp_path, day))
    assert not read_news_quarantine(s3_root, days[0]).is_empty()

    until = datetime(2024, 11, 27, 16, tzinfo=UTC)
    for lookback in (timedelta(hours=5), timedelta(days=3)):
        remote, local = read_news(s3_root, ["AAPL"], until, lookback), read_news(tmp_path, ["AAPL"], until, lookback)
        assert_frame_equal(remote, local)
    assert read_news(s3_root, ["AAPL"], until, timedelta(days=3))["created_at"].dt.date().unique().len() >= 2

    write_news_day(s3_root, days[0], read_news(s3_root, None, until).head(0), read_news_quarantine(s3_root, days[0]).head(0))
    assert news_days(s3_root) == days[1:], "an empty day removes its objects"
    assert not any(key.startswith(f"quarantine/news/date={days[0]}") for key in _objects(s3_root))


def test_retention_removes_the_same_expired_quarantine_and_reports_from_the_bucket(s3_root: ObjectPath, tmp_path: Path) -> None:  # noqa: F811
    """The same files and bytes go as from a local lake, by the date in their names; the news
    quarantine, undated files and recent ones stay."""
    from lake.retention import prune_quarantine, prune_reports

    files = {
        "quarantine/timeframe=1m/symbol=AAPL/date=2025-12-01/part.parquet": b"PAR1 old day",
        "quarantine/timeframe=1m/symbol=AAPL/date=2026-11-20/part.parquet": b"PAR1 recent day",
        "quarantine/timeframe=1d/symbol=MSFT/year=2024/part.parquet": b"PAR1 an old year",
        "quarantine/timeframe=1d/symbol=MSFT/year=2026/part.parquet": b"PAR1 this year",
        "quarantine/news/date=2024-01-02/part.parquet": b"PAR1 news quarantine: news retention is not this",
        "quarantine/timeframe=1m/symbol=AAPL/notes.txt": b"undated",
        "reports/eod/2025-11-01.md": b"# old",
        "reports/eod/2026-11-27.md": b"# recent",
        "reports/eod/readme.md": b"undated",
    }
    for root in (s3_root, tmp_path):
        for name, data in files.items():
            write_bytes_atomic(root / name, data)
    now, days = datetime(2026, 11, 30, 12, tzinfo=UTC), 300
    removed = {"quarantine": prune_quarantine(s3_root, now, days), "reports": prune_reports(s3_root, now, days)}
    local = {"quarantine": prune_quarantine(tmp_path, now, days), "reports": prune_reports(tmp_path, now, days)}
    for kind, gone in removed.items():
        assert [str(p)[len(str(s3_root)) + 1 :] for p in gone.files] == [str(p.relative_to(tmp_path)) for p in local[kind].files]
        assert gone.bytes == local[kind].bytes > 0
    expired = {"quarantine/timeframe=1m/symbol=AAPL/date=2025-12-01/part.parquet", "quarantine/timeframe=1d/symbol=MSFT/year=2024/part.parquet", "reports/eod/2025-11-01.md"}
    assert _objects(s3_root) == sorted(set(files) - expired)
    assert prune_quarantine(s3_root, now, days).files == [] and prune_reports(s3_root, now, days).files == []
