"""The built-in strategies against hand-computed signals, and their parameters at their exact edges
(strategies/builtin.py; issue 18: a changed comparison, window, side or bound must fail a test)."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pytest

from strategies.base import ChannelBreakout, StrategyError, StrategyParams
from strategies.builtin import (
    DONCHIAN_BREAKOUT,
    MOMENTUM,
    RSI_REVERSION,
    SMA_CROSS,
    DonchianParams,
    MomentumParams,
    RsiReversionParams,
    SmaCrossParams,
)

T0 = datetime(2024, 1, 2, tzinfo=UTC)
BOOLS = ("entry_long", "exit_long", "entry_short", "exit_short")


def _bars(closes: list[float], highs: list[float] | None = None, lows: list[float] | None = None, symbol: str = "AAA") -> pl.DataFrame:
    return pl.DataFrame(
        {
            "symbol": symbol,
            "ts": [T0 + timedelta(days=k) for k in range(len(closes))],
            "open": closes,
            "high": highs or closes,
            "low": lows or closes,
            "close": closes,
        }
    )


def _rows(frame: pl.DataFrame, column: str) -> list[int]:
    return [k for k, v in enumerate(frame[column].to_list()) if v]


# --- sma_cross -------------------------------------------------------------------------------------


def test_sma_cross_by_hand_both_sides() -> None:
    # fast = the close, slow = mean of 2: -, 1.5, 2.5, 2.5, 1.5, 1.5, 2.5. Above from row 1 (no
    # crossing: nothing before), below at row 3, above again at row 5.
    bars = _bars([1.0, 2.0, 3.0, 2.0, 1.0, 2.0, 3.0])
    out = SMA_CROSS.signals(bars, SMA_CROSS.params(fast=1, slow=2, atr_period=1, allow_short=True))
    assert (_rows(out, "entry_long"), _rows(out, "exit_long")) == ([5], [3])
    assert (_rows(out, "entry_short"), _rows(out, "exit_short")) == ([3], [5])
    assert out["size"].to_list() == [1.0] * 7 and out["stop"].null_count() == 7
    long_only = SMA_CROSS.signals(bars, SMA_CROSS.params(fast=1, slow=2, atr_period=1))
    assert (_rows(long_only, "entry_long"), _rows(long_only, "exit_long"), _rows(long_only, "entry_short"), _rows(long_only, "exit_short")) == ([5], [3], [], [])


def test_sma_cross_fast_must_be_below_slow() -> None:
    with pytest.raises(StrategyError, match=r"fast \(20\) must be below slow \(20\)"):
        SMA_CROSS.params(fast=20, slow=20)
    assert SMA_CROSS.params(fast=19, slow=20).fast == 19


# --- rsi_reversion ---------------------------------------------------------------------------------


def test_rsi_reversion_by_hand_both_sides() -> None:
    # changes +1 +1 -1 -2 +1 +2 +1; RSI of 2 changes (simple means): -, -, 100, 50, 0, 33.3, 100, 100.
    # Below 30 at row 4 (entry); above 70 at row 6 (short entry) and above 50 at row 6 (exit); below 50
    # at row 4 (short exit) but not at row 3, where RSI is exactly 50 (a tie is not below).
    bars = _bars([10.0, 11.0, 12.0, 11.0, 9.0, 10.0, 12.0, 13.0])
    p = RSI_REVERSION.params(period=2, lower=30.0, upper=70.0, exit_level=50.0, atr_period=1, allow_short=True)
    out = RSI_REVERSION.signals(bars, p)
    assert (_rows(out, "entry_long"), _rows(out, "exit_long"), _rows(out, "entry_short"), _rows(out, "exit_short")) == ([4], [6], [6], [4])
    long_only = RSI_REVERSION.signals(bars, p.model_copy(update={"allow_short": False}))
    assert (_rows(long_only, "entry_short"), _rows(long_only, "exit_short"), _rows(long_only, "entry_long")) == ([], [], [4])
    assert out["stop"].null_count() == 8 and out["size"].to_list() == [1.0] * 8


# --- donchian_breakout -----------------------------------------------------------------------------

# channel of the 2 bars before: upper -, -, 12, 14, 14, 13, 13; lower -, -, 9, 10, 11, 9, 9.
# true range 2, 2, 3, 2, 3, 3.5, 2; ATR of 2: -, 2, 2.5, 2.5, 2.5, 3.25, 2.75.
D_HIGH = [11.0, 12.0, 14.0, 13.0, 12.0, 13.0, 14.0]
D_LOW = [9.0, 10.0, 11.0, 11.0, 9.0, 10.0, 12.0]
D_CLOSE = [10.0, 11.0, 13.0, 12.0, 9.5, 13.0, 13.5]


def _donchian(allow_short: bool) -> pl.DataFrame:
    p = DONCHIAN_BREAKOUT.params(entry_window=2, exit_window=2, atr_period=2, stop_atr=0.5, target1_atr=2.0, target2_atr=3.0, allow_short=allow_short)
    return DONCHIAN_BREAKOUT.signals(_bars(D_CLOSE, D_HIGH, D_LOW), p)


def test_donchian_breaks_strictly_beyond_the_channel_of_the_bars_before() -> None:
    out = _donchian(allow_short=True)
    # row 5 closes exactly at the channel's top (13): not a breakout; row 6 above it is.
    assert (_rows(out, "entry_long"), _rows(out, "exit_long"), _rows(out, "entry_short"), _rows(out, "exit_short")) == ([2, 6], [4], [4], [2, 6])
    long_only = _donchian(allow_short=False)
    assert (_rows(long_only, "entry_long"), _rows(long_only, "exit_long"), _rows(long_only, "entry_short"), _rows(long_only, "exit_short")) == ([2, 6], [4], [], [])


def test_donchian_levels_face_the_entry_side() -> None:
    out = _donchian(allow_short=True)
    # a long's levels below/above the close: 13 - 0.5 x 2.5, 13 + 2 x 2.5, 13 + 3 x 2.5 (row 2)
    assert (out["stop"][2], out["target1"][2], out["target2"][2]) == (11.75, 18.0, 20.5)
    # the short entry at row 4 (close 9.5, ATR 2.5): stop above, targets below
    assert (out["stop"][4], out["target1"][4], out["target2"][4]) == (10.75, 4.5, 2.0)
    assert out["stop"][0] is None and out["stop"][1] == 10.0  # no ATR before two true ranges
    # a bar breaking neither way (row 3: close 12, ATR 2.5) faces a long, shorts on or not
    assert (out["stop"][3], out["target1"][3], out["target2"][3]) == (10.75, 17.0, 19.5)
    long_only = _donchian(allow_short=False)
    assert (long_only["stop"][4], long_only["target1"][4], long_only["target2"][4]) == (8.25, 14.5, 17.0)


def test_donchian_declares_the_channel_it_trades() -> None:
    fast_path = DONCHIAN_BREAKOUT.fast_path
    assert isinstance(fast_path, ChannelBreakout)
    got = _bars(D_CLOSE, D_HIGH, D_LOW).select(fast_path.upper(2).alias("up"), fast_path.lower(2).alias("down"))
    assert got["up"].to_list() == [None, None, 12.0, 14.0, 14.0, 13.0, 13.0]
    assert got["down"].to_list() == [None, None, 9.0, 10.0, 11.0, 9.0, 9.0]


# --- cross_sectional_momentum ----------------------------------------------------------------------

M_CLOSES = {"A": [10.0, 10.0, 11.0, 13.0, 12.0, 10.0], "B": [10.0, 10.0, 10.0, 10.0, 14.0, 15.0], "C": [10.0, 11.0, 11.0, 11.0, 11.0, 11.0]}


def _momentum_bars() -> pl.DataFrame:
    return pl.concat([_bars(closes, symbol=s) for s, closes in M_CLOSES.items()])


def test_momentum_holds_the_top_k_by_the_return_before_the_skipped_bars() -> None:
    # return over 2 bars ending 1 bar ago, from row 3: A .1, B 0, C .1 (a tie: A and C, by symbol);
    # row 4: A .3, B 0, C 0 (B before C); row 5: A 12/11 - 1, B .4, C 0.
    p = MOMENTUM.params(lookback=2, skip=1, top_k=2, vol_window=2, vol_target=0.15, max_weight=0.05)
    out = MOMENTUM.signals(_momentum_bars(), p)
    by = {s: out.filter(pl.col("symbol") == s) for s in M_CLOSES}
    assert {s: (_rows(f, "entry_long"), _rows(f, "exit_long")) for s, f in by.items()} == {"A": ([3], []), "B": ([4], []), "C": ([3], [4])}
    assert all(not out[c].any() for c in ("entry_short", "exit_short")) and out["stop"].null_count() == out.height


def test_momentum_sizes_each_position_to_the_volatility_target_capped() -> None:
    p = MOMENTUM.params(lookback=2, skip=1, top_k=2, vol_window=2, vol_target=0.15, max_weight=0.05)
    out = MOMENTUM.signals(_momentum_bars(), p)

    def expected(closes: list[float], t: int) -> float | None:
        # sample std of the last two log returns, annualized on 252 bars; target / vol / top_k, capped
        r1, r2 = math.log(closes[t - 1] / closes[t - 2]), math.log(closes[t] / closes[t - 1])
        vol = abs(r2 - r1) / math.sqrt(2.0) * math.sqrt(252.0)
        return min(0.15 / vol / 2, 0.05) if vol > 0 else None

    for s, closes in M_CLOSES.items():
        got = out.filter(pl.col("symbol") == s)["size"].to_list()
        assert got[:2] == [None, None]
        for t in range(2, 6):
            want = expected(closes, t)
            assert got[t] == (None if want is None else pytest.approx(want, rel=1e-12)), (s, t)
    # both sides of the cap occur: A at row 3 is capped, B at row 4 is not
    assert out.filter(pl.col("symbol") == "A")["size"][3] == 0.05 and out.filter(pl.col("symbol") == "B")["size"][4] < 0.05


def test_momentum_declares_its_score_as_the_past_return() -> None:
    fast_path = MOMENTUM.fast_path
    assert fast_path is not None and hasattr(fast_path, "score")
    got = _bars(M_CLOSES["A"]).select(fast_path.score(2, 1).alias("r"))["r"].to_list()  # type: ignore[union-attr]
    assert got[:3] == [None, None, None] and got[3:] == pytest.approx([0.1, 0.3, 12.0 / 11.0 - 1.0], rel=1e-12)


# --- parameters: defaults, bounds, sweep ranges, lookbacks -----------------------------------------


def test_defaults_are_the_documented_ones() -> None:
    sma, rsi, don, mom = SmaCrossParams(), RsiReversionParams(), DonchianParams(), MomentumParams()
    assert (sma.fast, sma.slow, sma.allow_short) == (10, 30, False)
    assert (rsi.period, rsi.lower, rsi.upper, rsi.exit_level, rsi.allow_short) == (14, 30.0, 70.0, 50.0, False)
    assert (don.entry_window, don.exit_window, don.stop_atr, don.target1_atr, don.target2_atr, don.allow_short) == (20, 10, 2.0, 2.0, 4.0, False)
    assert (mom.lookback, mom.skip, mom.top_k, mom.vol_window, mom.vol_target, mom.max_weight, mom.allow_short) == (60, 1, 3, 20, 0.15, 0.5, False)


EPS = 1e-9
BOUNDS: list[tuple[type[StrategyParams], str, Any, Any, Any, Any, dict[str, Any]]] = [
    # model, field, lowest bad, lowest ok, highest ok, highest bad, other fields needed to be valid
    (SmaCrossParams, "fast", 0, 1, 500, 501, {"slow": 2000}),
    (SmaCrossParams, "slow", 1, 2, 2000, 2001, {"fast": 1}),
    (RsiReversionParams, "period", 1, 2, 200, 201, {}),
    (RsiReversionParams, "lower", 0.0, EPS, 50.0 - EPS, 50.0, {}),
    (RsiReversionParams, "upper", 50.0, 50.0 + EPS, 100.0 - EPS, 100.0, {}),
    (RsiReversionParams, "exit_level", 0.0, EPS, 100.0 - EPS, 100.0, {}),
    (DonchianParams, "entry_window", 1, 2, 1000, 1001, {}),
    (DonchianParams, "exit_window", 1, 2, 1000, 1001, {}),
    (DonchianParams, "stop_atr", 0.0, EPS, 20.0, 20.0 + EPS, {}),
    (DonchianParams, "target1_atr", 0.0, EPS, 50.0, 50.0 + EPS, {}),
    (DonchianParams, "target2_atr", 0.0, EPS, 100.0, 100.0 + EPS, {}),
    (MomentumParams, "lookback", 1, 2, 1000, 1001, {}),
    (MomentumParams, "skip", -1, 0, 100, 101, {}),
    (MomentumParams, "top_k", 0, 1, 500, 501, {}),
    (MomentumParams, "vol_window", 1, 2, 500, 501, {}),
    (MomentumParams, "vol_target", 0.0, EPS, 2.0, 2.0 + EPS, {}),
    (MomentumParams, "max_weight", 0.0, EPS, 1.0, 1.0 + EPS, {}),
]


@pytest.mark.parametrize(("model", "field", "lowest_bad", "lowest_ok", "highest_ok", "highest_bad", "others"), BOUNDS, ids=[f"{b[0].__name__}.{b[1]}" for b in BOUNDS])
def test_parameter_bounds_are_exact(
    model: type[StrategyParams], field: str, lowest_bad: Any, lowest_ok: Any, highest_ok: Any, highest_bad: Any, others: dict[str, Any]
) -> None:
    for ok in (lowest_ok, highest_ok):
        assert getattr(model(**others, **{field: ok}), field) == ok
    for bad in (lowest_bad, highest_bad):
        with pytest.raises(ValueError, match=field):
            model(**others, **{field: bad})


def test_sweep_ranges_are_the_declared_ones() -> None:
    assert SmaCrossParams.sweep_ranges() == {"fast": list(range(5, 55, 5)), "slow": list(range(20, 220, 20))}
    rsi = RsiReversionParams.sweep_ranges()
    assert rsi == {"period": [5, 10, 15, 20, 25, 30], "lower": [15.0, 20.0, 25.0, 30.0, 35.0]}
    assert DonchianParams.sweep_ranges() == {"entry_window": [10, 20, 30, 40, 50, 60], "exit_window": [5, 10, 15, 20, 25, 30]}
    assert MomentumParams.sweep_ranges() == {"lookback": [20, 40, 60, 80, 100, 120], "top_k": [1, 2, 3, 4, 5]}


def test_lookbacks_are_the_bars_each_signal_reads() -> None:
    # Pinned: the live window, the decision cycle and the paper session load lookback + 1 bars. Each is
    # the furthest bar back a signal reads (sma_cross: the slow mean on the bar before, the sizing ATR;
    # rsi: `period` changes on the bar before; momentum: the return skip + lookback back, the
    # volatility's returns, the bar before for `was in`), donchian one more.
    assert SMA_CROSS.lookback(SMA_CROSS.params(fast=5, slow=20, atr_period=14)) == 21
    assert SMA_CROSS.lookback(SMA_CROSS.params(fast=5, slow=20, atr_period=30)) == 31
    assert RSI_REVERSION.lookback(RSI_REVERSION.params(period=10, atr_period=5)) == 12
    assert RSI_REVERSION.lookback(RSI_REVERSION.params(period=5, atr_period=10)) == 12
    assert DONCHIAN_BREAKOUT.lookback(DONCHIAN_BREAKOUT.params(entry_window=20, exit_window=10, atr_period=14)) == 22
    assert DONCHIAN_BREAKOUT.lookback(DONCHIAN_BREAKOUT.params(entry_window=5, exit_window=30, atr_period=14)) == 32
    assert DONCHIAN_BREAKOUT.lookback(DONCHIAN_BREAKOUT.params(entry_window=5, exit_window=6, atr_period=40)) == 42
    assert MOMENTUM.lookback(MOMENTUM.params(lookback=30, skip=2, vol_window=10)) == 33
    assert MOMENTUM.lookback(MOMENTUM.params(lookback=5, skip=1, vol_window=10)) == 12


@pytest.mark.parametrize(("entry_window", "exit_window"), [(3, 2), (2, 4)])
def test_donchian_signals_are_the_close_against_the_channel_of_the_bars_before(entry_window: int, exit_window: int) -> None:
    # Each signal by a plain loop over a random walk: the close against the highest high / lowest low of
    # exactly the `window` bars before it (not the bar itself, not one bar further back).
    rng = random.Random(7)
    closes = [100.0]
    for _ in range(59):
        closes.append(round(closes[-1] + rng.choice([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0]), 1))
    highs = [c + rng.choice([0.5, 1.0, 2.0]) for c in closes]
    lows = [c - rng.choice([0.5, 1.0, 2.0]) for c in closes]
    p = DONCHIAN_BREAKOUT.params(entry_window=entry_window, exit_window=exit_window, atr_period=2, allow_short=True)
    out = DONCHIAN_BREAKOUT.signals(_bars(closes, highs, lows), p)

    def rows(window: int, above: bool) -> list[int]:
        if above:
            return [t for t in range(window, len(closes)) if closes[t] > max(highs[t - window : t])]
        return [t for t in range(window, len(closes)) if closes[t] < min(lows[t - window : t])]

    want = {"entry_long": rows(entry_window, True), "entry_short": rows(entry_window, False), "exit_long": rows(exit_window, False), "exit_short": rows(exit_window, True)}
    assert {c: _rows(out, c) for c in BOOLS} == want
    assert all(want.values())  # every signal occurs, so each comparison above is tested


def test_a_slow_window_of_one_is_refused_by_its_own_bound() -> None:
    # Refused by the field's bound (ge=2), named as such, before the fast-below-slow rule is asked.
    with pytest.raises(ValueError, match=r"slow\n  Input should be greater than or equal to 2"):
        SmaCrossParams(fast=1, slow=1)
