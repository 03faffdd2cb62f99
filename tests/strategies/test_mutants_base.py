"""The strategy contract at its edges (strategies/base.py): sweep ranges, the signal frame, bad bars
and crossings at exact ties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from pydantic import Field, ValidationError

from strategies.base import (
    SIGNAL_COLUMNS,
    ChannelBreakout,
    CrossSectionalRank,
    MovingAverageCross,
    Strategy,
    StrategyError,
    StrategyParams,
    ThresholdCross,
    check_bars,
    crossed_above,
    crossed_below,
    no_levels,
    no_shorts,
    rank_across,
    sorted_by_symbol_ts,
)


class _Ranged(StrategyParams):
    a: float = Field(0.1, json_schema_extra={"sweep": [0.1, 0.3, 0.1]})  # float steps: 0.3 is reached
    b: int = Field(1, ge=1, json_schema_extra={"sweep": [0, 2, 1]})  # 0 is not a valid b
    c: int = 5  # no sweep


def test_sweep_ranges_include_the_upper_bound_and_skip_fields_without_one() -> None:
    ranges = _Ranged.sweep_ranges()
    assert list(ranges) == ["a", "b"]
    assert ranges["a"] == pytest.approx([0.1, 0.2, 0.3]) and ranges["b"] == [0, 1, 2]


def test_grid_skips_invalid_combinations_and_takes_overrides() -> None:
    grid = list(_Ranged.grid())
    assert [(round(p.a, 9), p.b) for p in grid] == [(0.1, 1), (0.1, 2), (0.2, 1), (0.2, 2), (0.3, 1), (0.3, 2)]
    assert [p.b for p in _Ranged.grid(a=[0.5], b=[2, 3])] == [2, 3]


def _bars(closes: list[float], symbol: str = "AAA") -> pl.DataFrame:
    start = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
    return pl.DataFrame(
        {
            "symbol": symbol,
            "ts": [start + timedelta(days=k) for k in range(len(closes))],
            "open": closes,
            "high": closes,
            "low": closes,
            "close": closes,
        }
    )


def _partial(bars: pl.DataFrame, p: _Ranged) -> pl.DataFrame:
    """Entries on the second bar only, nulls elsewhere (to be read as False), sizes as integers."""
    second = pl.int_range(pl.len()) == 1
    return bars.with_columns(
        pl.when(second).then(True).alias("entry_long"),
        pl.lit(None, pl.Boolean).alias("exit_long"),
        *no_shorts(),
        pl.lit(1, pl.Int64).alias("size"),
        *no_levels(),
    )


def test_signals_fill_missing_booleans_as_false_and_cast_the_levels() -> None:
    strategy = Strategy(name="partial", params_model=_Ranged, compute=_partial, lookback=lambda p: 1)
    out = strategy.signals(_bars([1.0, 2.0, 3.0]), _Ranged())
    assert out["entry_long"].to_list() == [False, True, False] and out["exit_long"].to_list() == [False] * 3
    assert {c: out.schema[c] for c in SIGNAL_COLUMNS} == SIGNAL_COLUMNS


def test_signals_name_the_columns_a_strategy_did_not_produce() -> None:
    strategy = Strategy(name="lazy", params_model=_Ranged, compute=lambda b, p: b.with_columns(*no_shorts()), lookback=lambda p: 1)
    with pytest.raises(StrategyError, match=r"lazy: signal function did not produce \['entry_long', 'exit_long', 'size', 'stop', 'target1', 'target2'\]"):
        strategy.signals(_bars([1.0, 2.0]), _Ranged())


def test_bad_bars_are_named() -> None:
    with pytest.raises(StrategyError, match="who: no bars"):
        check_bars(_bars([1.0]).clear(), "who")
    with pytest.raises(StrategyError, match=r"who: bars lack column\(s\) \['high', 'low'\]"):
        check_bars(_bars([1.0]).drop("high", "low"), "who")
    for bad in (float("inf"), float("nan"), None):
        frame = _bars([1.0, 2.0]).with_columns(pl.when(pl.int_range(pl.len()) == 1).then(bad).otherwise(pl.col("low")).alias("low"))
        with pytest.raises(StrategyError, match=r"who: 1 bar\(s\) with NaN/null prices, first AAA at 2024-01-03"):
            check_bars(frame, "who")
    check_bars(_bars([1.0, 2.0]), "who")  # good bars pass


def test_crossings_at_exact_ties() -> None:
    a = pl.col("a")
    frame = pl.DataFrame({"a": [1.0, 2.0, 2.0, 3.0, 2.0, 1.0], "b": [2.0, 2.0, 2.0, 2.0, 2.0, 2.0]})
    # above only from row 3 (a tie is not above); below from row 5 (a tie is not below)
    got = frame.select(crossed_above(a, pl.col("b")).alias("up"), crossed_below(a, pl.col("b")).alias("down"))
    assert got["up"].to_list() == [False, False, False, True, False, False]  # row 0: not above, whatever came before
    assert got["down"].to_list() == [None, False, False, False, False, True]
    level = frame.select(crossed_above(a, 2.0).alias("up"), crossed_below(a, 2.0).alias("down"))
    assert level["up"].to_list() == got["up"].to_list() and level["down"].to_list() == got["down"].to_list()


def test_a_crossing_of_a_moving_series_compares_each_row_with_its_own_previous_row() -> None:
    # b moves: row 2 is above b now (3 > 2.5) and was at or below b's previous value (2 <= 2); row 4 is
    # above b (1 > 0.5) and was below it (3 <= 4): crossings only when b's previous row is read (not this
    # row, not two back).
    a, b = pl.col("a"), pl.col("b")
    frame = pl.DataFrame({"a": [1.0, 2.0, 3.0, 3.0, 1.0], "b": [0.0, 2.0, 2.5, 4.0, 0.5]})
    got = frame.select(crossed_above(a, b).alias("up"), crossed_below(a, b).alias("down"))
    assert got["up"].to_list() == [None, False, True, False, True]
    # row 3: below now (3 < 4) and not below b's previous value before (3 >= 2.5)
    assert got["down"].to_list() == [False, False, False, True, False]
    mirrored = pl.DataFrame({"a": [-x for x in frame["a"]], "b": [-x for x in frame["b"]]})
    got_mirror = mirrored.select(crossed_below(a, b).alias("down"), crossed_above(a, b).alias("up"))
    assert got_mirror["down"].to_list() == got["up"].to_list() and got_mirror["up"].to_list() == got["down"].to_list()


def test_no_shorts_means_false_short_columns_and_no_levels_null_ones() -> None:
    out = pl.DataFrame({"x": [1, 2]}).with_columns(*no_shorts(), *no_levels())
    assert out["entry_short"].to_list() == [False, False] and out["exit_short"].to_list() == [False, False]
    assert all(out[c].to_list() == [None, None] and out.schema[c] == pl.Float64 for c in ("stop", "target1", "target2"))


class _Tolerant(StrategyParams):
    # the last value lands exactly 1e-12 above hi: still in (the slack is inclusive)
    a: float = Field(1.0, json_schema_extra={"sweep": [1.0 + 1e-12, 1.0, 1.0]})


def test_sweep_ranges_keep_a_value_exactly_at_the_float_slack() -> None:
    assert _Tolerant.sweep_ranges() == {"a": [1.0 + 1e-12]}


def test_bad_bars_name_the_first_bad_bar_of_several() -> None:
    frame = _bars([1.0, 2.0, 3.0, 4.0]).with_columns(
        pl.when(pl.int_range(pl.len()) >= 2).then(float("nan")).otherwise(pl.col("close")).alias("close")
    )
    with pytest.raises(StrategyError, match=r"who: 2 bar\(s\) with NaN/null prices, first AAA at 2024-01-04"):
        check_bars(frame, "who")


def test_parameters_and_declarations_are_frozen() -> None:
    import dataclasses

    p = _Ranged()
    with pytest.raises(ValidationError, match="frozen"):
        p.a = 0.2  # type: ignore[misc]
    strategy = Strategy(name="s", params_model=_Ranged, compute=_partial, lookback=lambda p: 1)
    declarations = [
        strategy,
        MovingAverageCross(average=lambda w: pl.col("close")),
        ThresholdCross(indicator=lambda w: pl.col("close")),
        ChannelBreakout(upper=lambda w: pl.col("high"), lower=lambda w: pl.col("low"), atr=lambda w: pl.col("close")),
        CrossSectionalRank(score=lambda lookback, skip: pl.col("close"), volatility=lambda w: pl.col("close")),
    ]
    for declaration in declarations:
        with pytest.raises(dataclasses.FrozenInstanceError):
            declaration.name = "other"  # type: ignore[attr-defined]


def test_a_strategy_is_per_symbol_unless_declared_cross_sectional() -> None:
    strategy = Strategy(name="s", params_model=_Ranged, compute=_partial, lookback=lambda p: 1)
    assert strategy.cross_sectional is False and strategy.fast_path is None


def test_rank_across_ranks_each_time_highest_first_ties_by_row_order_and_no_score_unranked() -> None:
    frame = pl.DataFrame(
        {
            "symbol": ["A", "B", "C", "A", "B", "C"],
            "ts": [1, 1, 1, 2, 2, 2],
            "score": [0.5, 2.0, 0.5, None, -1.0, 3.0],
        }
    )
    got = frame.with_columns(rank_across(pl.col("score")).alias("rank"))["rank"].to_list()
    # ts 1: B first, then A before C (a tie, by row order); ts 2: C, B, and A has no score
    assert got == [2, 1, 3, None, 2, 1]


def test_a_frame_whose_ts_falls_one_step_inside_a_symbol_is_not_sorted() -> None:
    # A's ts 1, 3, 2: the fall is against the row just before (not two back: 2 > 1), then B starts at 0
    frame = pl.DataFrame({"symbol": ["A", "A", "A", "B"], "ts": [1, 3, 2, 0]})
    assert not sorted_by_symbol_ts(frame)
    assert sorted_by_symbol_ts(pl.DataFrame({"symbol": ["A", "A", "B", "B"], "ts": [1, 3, 0, 2]}))
    # a fall on a symbol's second row is inside the symbol too (the row two back is another symbol's)
    assert not sorted_by_symbol_ts(pl.DataFrame({"symbol": ["A", "B", "B"], "ts": [5, 3, 1]}))


def test_a_repeated_ts_inside_a_symbol_is_still_in_order() -> None:
    # (symbol, ts) order is non-decreasing: A's two bars at ts 1 are in order, so the rows are taken as
    # they came (no sort, whose order among equal keys polars does not promise); ts falls only where B starts
    assert sorted_by_symbol_ts(pl.DataFrame({"symbol": ["A", "A", "B", "B"], "ts": [1, 1, 0, 2]}))
    assert sorted_by_symbol_ts(pl.DataFrame({"symbol": ["A", "B", "B", "B"], "ts": [4, 0, 2, 2]}))
