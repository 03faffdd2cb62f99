"""A corpus of malformed bar files (generated here, no clock): each is refused with its line, or
read whole with every row either written or quarantined with its reason; great-expectations and
polars agree on every one (validation raises if they do not)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

from lake.calendar import day_window, session_bounds
from lake.errors import LakeError, SourceError
from lake.sources.files import FileSource
from lake.sources.synthetic import SyntheticSource
from lake.validation import validate_bars

DAY = "2024-11-22"  # a Friday: its partition's window runs to Monday 00:00 New York
HEADER = "ts,open,high,low,close,volume"
Edit = Callable[[list[str]], list[str]]


def _clean_lines() -> list[str]:
    """Header + the session's first 30 minutes of AAPL, New York wall-clock time, as a vendor writes them."""
    open_, _ = session_bounds(DAY)
    bars = SyntheticSource(seed=5).fetch(["AAPL"], "1m", open_, open_ + timedelta(minutes=30))
    local = bars.select(
        pl.col("ts").dt.convert_time_zone("America/New_York").dt.strftime("%Y-%m-%d %H:%M"), "open", "high", "low", "close", "volume"
    )
    return [HEADER, *(",".join(map(str, row)) for row in local.iter_rows())]


def _line(n: int, edit: Callable[[list[str]], list[str]]) -> Edit:
    """Edits the fields of line n (1 = the header)."""
    def apply(lines: list[str]) -> list[str]:
        out = list(lines)
        out[n - 1] = ",".join(edit(out[n - 1].split(",")))
        return out
    return apply


def _set(index: int, value: str) -> Callable[[list[str]], list[str]]:
    return lambda cells: [*cells[:index], value, *cells[index + 1 :]]


def _append(text: str) -> Edit:
    return lambda lines: [*lines, text]


# name -> (edit, (check, rows quarantined, words in the reason)) for files read whole
QUARANTINED: dict[str, tuple[Edit, tuple[str, int, str]]] = {
    "too_few_fields": (_line(5, lambda c: c[:4]), ("not_null", 1, "in close, volume")),
    "ts_only": (_line(6, lambda c: c[:1]), ("not_null", 1, "in open, high, low, close, volume")),
    "empty_close": (_line(7, _set(4, "")), ("not_null", 1, "in close")),
    "nan_close": (_line(7, _set(4, "NaN")), ("not_null", 1, "non-finite value in close")),
    "inf_high": (_line(8, _set(2, "inf")), ("not_null", 1, "in high")),
    "nan_volume": (_line(9, _set(5, "nan")), ("not_null", 1, "in volume")),  # NaN is null to pandas, not to polars
    "inf_volume": (_line(13, _set(5, "inf")), ("not_null", 1, "in volume")),
    "high_below_low": (_line(10, lambda c: [c[0], c[1], str(float(c[3]) - 1), *c[3:]]), ("ohlc_consistent", 1, "high")),
    "zero_low": (_line(11, _set(3, "0")), ("ohlc_consistent", 1, "not positive")),
    "negative_volume": (_line(12, _set(5, "-3")), ("volume_non_negative", 1, "volume -3")),
    "repeated_row": (lambda lines: [*lines[:14], lines[13], *lines[14:]], ("ts_unique", 1, "duplicate bar")),
    "after_the_close": (_append("2024-11-22 17:45,100,101,99,100,10"), ("in_session", 1, "outside the AAPL session hours")),
    "saturday_bar": (_append("2024-11-23 10:00,100,101,99,100,10"), ("in_session", 1, "2024-11-23 10:00 EST is outside the AAPL session hours (2024-11-22 09:30 to 16:00 EST)")),
    "bad_tick_100x": (
        _line(16, lambda c: [c[0], *(str(float(v) * 100) for v in c[1:5]), c[5]]),
        ("price_jump", 2, "x the previous close"),
    ),
}

# name -> (edit, words of the error: file and line)
REFUSED: dict[str, tuple[Edit, str]] = {
    "extra_field": (_line(4, lambda c: [*c, "17"]), r"line 4: 7 fields where the header"),
    "unparseable_price": (_line(9, _set(2, "1O1.5")), r"line 9, column 'high': cannot parse '1O1.5'"),
    "unparseable_time": (_line(3, _set(0, "22/11/2024 09:31")), r"line 3, column 'ts'"),
    "no_time": (_line(6, _set(0, "")), r"line 6: no timestamp"),
    "missing_column": (lambda lines: [line.rsplit(",", 1)[0] for line in lines], r"lacks column\(s\) \['volume'\]"),
}


def _read(tmp_path: Path, lines: list[str]) -> pl.DataFrame:
    path = tmp_path / "aapl.csv"
    path.write_text("\n".join(lines) + "\n")
    return FileSource(str(path)).fetch(["AAPL"], "1m", *day_window(DAY))


def test_the_clean_file_is_clean(tmp_path: Path) -> None:
    lines = _clean_lines()
    bars = _read(tmp_path, lines)
    assert bars.height == len(lines) - 1 == 30
    report = validate_bars(bars, timeframe="1m")
    assert report.passed and report.quarantine.is_empty()


@pytest.mark.parametrize("engine", ["great_expectations", "polars"])
@pytest.mark.parametrize("case", sorted(QUARANTINED))
def test_a_bad_row_is_quarantined_with_its_reason(case: str, engine: str, tmp_path: Path) -> None:
    edit, (check, rows, words) = QUARANTINED[case]
    lines = edit(_clean_lines())
    bars = _read(tmp_path, lines)
    assert bars.height == len(lines) - 1, "every row of the file is read"
    report = validate_bars(bars, timeframe="1m", engine=engine)  # GX and polars must agree, or this raises
    assert report.clean.height + report.quarantine.height == bars.height, "written or quarantined, none lost"
    assert report.quarantine.height == rows and not report.passed
    assert set(report.quarantine["check"]) == {check}
    assert all(words in reason for reason in report.quarantine["reason"]), report.quarantine["reason"].to_list()


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_malformed_file_is_refused_naming_its_line(case: str, tmp_path: Path) -> None:
    edit, words = REFUSED[case]
    with pytest.raises(SourceError, match=words) as caught:
        _read(tmp_path, edit(_clean_lines()))
    assert "aapl.csv" in str(caught.value)
    assert isinstance(caught.value, LakeError)
