"""Declared corporate actions: read from the lake, and a bad declaration is named by its line."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from lake.corporate_actions import corporate_actions_path, load_corporate_actions
from lake.errors import LakeError


def _write(root: Path, text: str) -> None:
    path = corporate_actions_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_no_file_is_no_actions(tmp_path: Path) -> None:
    assert load_corporate_actions(tmp_path).is_empty()


def test_actions_are_read_and_normalised(tmp_path: Path) -> None:
    _write(tmp_path, "symbol,ex_date,ratio\naapl ,2020-08-31, 4\nXYZ,2024-06-03,0.01\n")
    actions = load_corporate_actions(tmp_path)
    assert actions.rows() == [("AAPL", date(2020, 8, 31), 4.0), ("XYZ", date(2024, 6, 3), 0.01)]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("symbol,date,ratio\nAAPL,2020-08-31,4\n", r"lacks column\(s\) \['ex_date'\]"),
        ("symbol,ex_date,ratio\nAAPL,2020-08-31,4\nMSFT,31/08/2020,2\n", r"line 3: .*MSFT.* is not \(symbol, YYYY-MM-DD, ratio > 0\)"),
        ("symbol,ex_date,ratio\nAAPL,2020-08-31,0\n", r"line 2"),
        ("symbol,ex_date,ratio\nAAPL,2020-08-31,four\n", r"line 2"),
    ],
)
def test_a_bad_declaration_names_its_line(tmp_path: Path, text: str, words: str) -> None:
    _write(tmp_path, text)
    with pytest.raises(LakeError, match=words):
        load_corporate_actions(tmp_path)
