"""The pipeline file's `screener:` section: every field loads, a bad one is named
(tests/orchestration/test_screener_section.py: how it combines with the settings)."""

from __future__ import annotations

from pathlib import Path

import pytest

from trading.pipeline import ScreenerSection, load_pipeline_config


def _load(tmp_path: Path, text: str) -> ScreenerSection | None:
    file = tmp_path / "pipeline.yaml"
    file.write_text(text)
    return load_pipeline_config(file).screener


def test_the_section_loads_every_field(tmp_path: Path) -> None:
    section = _load(
        tmp_path,
        "screener:\n  enabled: true\n  lookback: 5\n  min_dollar_volume: 1e6\n  min_price: 5\n  max_price: 500\n"
        "  max_gap: 0.03\n  min_momentum: -0.1\n  max_symbols: 4\n",
    )
    assert section == ScreenerSection(enabled=True, lookback=5, min_dollar_volume=1e6, min_price=5, max_price=500, max_gap=0.03, min_momentum=-0.1, max_symbols=4)
    assert _load(tmp_path, "name: x\n") is None, "no section: the settings alone"


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ("  lookback: 0\n", "screener.lookback: Input should be greater than or equal to 1"),
        ("  max_symbols: 0\n", "screener.max_symbols: Input should be greater than or equal to 1"),
        ("  max_gap: -0.1\n", "screener.max_gap: Input should be greater than or equal to 0"),
        ("  min_price: cheap\n", "screener.min_price: Input should be a valid number"),
        ("  min_volume: 10\n", "screener.min_volume: Extra inputs are not permitted"),
        ("  min_price: 10\n  max_price: 5\n", "screener: Value error, min_price 10.0 is above max_price 5.0"),
    ],
)
def test_a_bad_field_is_named(tmp_path: Path, body: str, named: str) -> None:
    with pytest.raises(ValueError, match="pipeline config") as err:
        _load(tmp_path, "screener:\n" + body)
    assert named in str(err.value)
