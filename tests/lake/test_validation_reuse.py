"""great-expectations' suite is built once per process and reused: it must validate exactly as a
fresh suite of GX's own expectation classes does, and never serve a suite for other rules."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import polars as pl
import pytest

import lake.validation as validation
from lake.validation import (
    _GreatExpectations,
    expectation_specs,
    great_expectations_view,
    run_suite,
    validate_bars,
)

ROW = 17
Fault = Callable[[pl.DataFrame], pl.DataFrame]


def _at_row(column: str, value: pl.Expr) -> Fault:
    return lambda df: df.with_columns(pl.when(pl.int_range(pl.len()) == ROW).then(value).otherwise(pl.col(column)).alias(column))


# Each breaks an expectation that is not the first of its GX class in the suite (volume is the last
# not-null column, high >= close the second pair): a configuration shared between instances shows.
FAULTS: dict[str, Fault] = {
    "clean": lambda df: df,
    "null volume": _at_row("volume", pl.lit(None, pl.Float64)),
    "high below close": _at_row("high", pl.col("close") - 0.01),
    "negative volume": _at_row("volume", pl.lit(-5.0)),
    "duplicate bars": lambda df: pl.concat([df, df.slice(ROW, 2)]),
    "bad tick": _at_row("close", pl.col("close") * 100.0),
}


@pytest.fixture(scope="module")
def frames(day_bars: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """The frames validate_bars hands to great-expectations (bars plus helper columns), per fault."""
    seen: list[pl.DataFrame] = []
    real = validation.run_great_expectations

    def recording(frame: pl.DataFrame) -> dict[str, bool]:
        seen.append(frame)
        return real(frame)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(validation, "run_great_expectations", recording)
        for fault in FAULTS.values():
            validate_bars(fault(day_bars), timeframe="1m")
    return dict(zip(FAULTS, seen, strict=True))


def _outcomes(result: Any) -> list[tuple[str, str, str, bool]]:
    """Per expectation: rule, GX type, arguments and success (our subclasses named as GX's own)."""
    return sorted(
        (
            r.expectation_config.meta["rule"],
            r.expectation_config.type.removeprefix("quantlake_"),
            json.dumps({k: v for k, v in r.expectation_config.kwargs.items() if k != "batch_id"}, sort_keys=True),
            bool(r.success),
        )
        for r in result.results
    )


def test_the_cached_suite_validates_as_a_fresh_suite_of_gx_classes(frames: dict[str, pl.DataFrame]) -> None:
    cached = _GreatExpectations.suite(expectation_specs())
    fresh = _GreatExpectations.build(expectation_specs(), memo=False)  # GX's own classes, a new context
    # A clean frame between faults: nothing one validation leaves may change the next.
    for name in [name for fault in FAULTS for name in (fault, "clean")]:
        view = great_expectations_view(frames[name])
        expected = _outcomes(fresh.batch.get_batch(batch_parameters={"dataframe": view}).validate(fresh.suite, result_format="BOOLEAN_ONLY"))
        got = _outcomes(run_suite(cached, view))
        assert got == expected, name
        assert len(got) == len(expectation_specs())
        assert all(ok for *_, ok in got) == (name == "clean"), name


def test_one_suite_per_spec_built_once(day_bars: pl.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _GreatExpectations.suite(expectation_specs()) is _GreatExpectations.suite(expectation_specs())
    before = _GreatExpectations.suite(expectation_specs())
    # A 3 % minute and back: an outlier at the default threshold (12), not at 100.
    moved = day_bars.with_columns(
        pl.when(pl.int_range(pl.len()) == ROW).then(pl.col(c) * 1.03).otherwise(pl.col(c)).alias(c) for c in ("open", "high", "low", "close")
    )
    assert not validate_bars(moved, timeframe="1m").outcome("outlier_jumps").passed
    # polars reads the threshold at every call; a stale suite would still fail the rule where polars
    # passes it, and validate_bars raises on the disagreement.
    monkeypatch.setattr(validation, "JUMP_Z", 100.0)
    assert _GreatExpectations.suite(expectation_specs()) is not before
    assert validate_bars(moved, timeframe="1m", engine="great_expectations").outcome("outlier_jumps").passed


def test_a_changed_expectation_forgets_its_configuration() -> None:
    expectation = validation._memo_class("ExpectColumnValuesToBeBetween")(column="low", min_value=0)
    assert expectation.configuration is expectation.configuration  # computed once
    assert expectation.configuration.kwargs["min_value"] == 0
    expectation.min_value = 5
    assert expectation.configuration.kwargs["min_value"] == 5
    assert expectation.configuration.type == "quantlake_expect_column_values_to_be_between"
