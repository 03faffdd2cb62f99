"""The entry rule's plain-Python functions by hand at their edges (strategies/entries.py; issue 18).
Run first by the mutation runner: a mutant they kill costs no numba compilation."""

from __future__ import annotations

import math

from strategies.entries import (
    MIN_SHARES,
    after_closing,
    capped_at_fill,
    capped_quantity,
    entry_shares,
    free_cash,
    position_room,
    sector_room,
)


def test_free_cash_is_what_the_other_positions_leave() -> None:
    assert free_cash(1_000.0, 300.0) == 700.0


def test_rooms_by_hand() -> None:
    assert position_room(1_000.0, 0.2, 10.0, 5.0) == 15.0  # 200 of equity at 10: 20 shares, 5 held
    assert sector_room(1_000.0, 0.5, 350.0, 10.0, 5.0) == 10.0  # (500 - 350) / 10 - 5


def test_entry_shares_takes_the_smaller_of_its_share_and_the_free_cash() -> None:
    assert entry_shares(1_000.0, 1.0, 10.0, 0.0, 0.0, True, free=500.0) == 50.0
    assert entry_shares(1_000.0, 0.3, 10.0, 0.0, 0.0, True, free=500.0) == 30.0
    for available, size, free in ((1_000.0, 0.0, 500.0), (1_000.0, 1.0, 0.0), (0.0, 1.0, 500.0)):
        assert entry_shares(available, size, 10.0, 0.0, 0.0, False, free=free) == 0.0


def test_capped_quantity_takes_float_noise_just_under_a_lot_as_the_lot() -> None:
    price = 70.0 / 13.0  # room 12.999999999999998 shares: 13 shares are 70.00000000000001, within the slack
    assert 70.0 / price < 13.0
    assert capped_quantity(1_000.0, price, 0.0, 0.0, 0.07, 1.0, 1e12, True, 1.0) == 13.0
    # 1e-10 of a share short of 13 rounds up too, but 13 shares then exceed the cap by more than the
    # slack: back to 12
    over = 70.0 / (13.0 - 1e-10)
    assert capped_quantity(1_000.0, over, 0.0, 0.0, 0.07, 1.0, 1e12, True, 1.0) == 12.0
    # the same for a buy's cash: 13 shares cost 70.00000000000001 of 70 in cash
    assert capped_quantity(1_000.0, price, 0.0, 0.0, 1.0, 1.0, 70.0, True, 1.0) == 13.0
    assert capped_quantity(1_000.0, over, 0.0, 0.0, 1.0, 1.0, 70.0, True, 1.0) == 12.0
    # and for the sector: 13 shares make the sector 100 + 70.00000000000001 of 170
    assert capped_quantity(1_000.0, price, 0.0, 100.0, 1.0, 0.17, 1e12, True, 1.0) == 13.0
    assert capped_quantity(1_000.0, over, 0.0, 100.0, 1.0, 0.17, 1e12, True, 1.0) == 12.0
    # with 2 held, the re-check counts them: 13 then exceed the cap by more than the slack, 10 are added
    assert capped_quantity(1_000.0, over, 2.0, 0.0, 0.07, 1.0, 1e12, True, 1.0) == 10.0
    assert capped_quantity(1_000.0, over, 2.0, 100.0, 1.0, 0.17, 1e12, True, 1.0) == 10.0


def test_capped_quantity_edges() -> None:
    assert capped_quantity(1_000.0, 10.0, 0.0, 0.0, 0.2, 0.5, math.nan, True, 1.0) == 0.0  # NaN cash is none
    assert capped_quantity(1_000.0, 10.0, 0.0, 0.0, 0.2, 0.5, math.nan, False, 1.0) == 20.0  # a sale needs none
    assert capped_quantity(1_000.0, 1e-320, 0.0, 0.0, 0.2, 0.5, 0.0, False, 1.0) == math.inf  # unbounded: the caller refuses
    assert capped_quantity(1_000.0, 10.0, 25.0, 0.0, 0.2, 0.5, 1e12, True, 1.0) == 0.0  # over the cap: nothing added
    assert capped_quantity(1_000.0, 10.0, 20.0, 0.0, 0.2, 0.5, 1e12, True, 1.0) == 0.0  # at the cap exactly
    assert capped_quantity(1_000.0, 3.0, 0.0, 0.0, 0.2, 0.5, 1e12, True, 0.25) == 66.5  # 66.67 in lots of 0.25
    assert capped_quantity(1_000.0, 10.0, 5.0, 380.0, 0.2, 0.5, 1e12, True, 1.0) == 7.0  # the sector binds: 12 - 5
    assert capped_quantity(1_000.0, 10.0, 0.0, 0.0, 0.2, 0.5, 55.0, True, 1.0) == 5.0  # the cash binds: 5.5 shares
    huge = capped_quantity(1e18, 1.0, 0.0, 0.0, 0.5, 1.0, 0.0, False, 1.0)  # beyond float precision: as it is
    assert huge == 5e17


def test_capped_at_fill_holds_at_most_the_held_plus_the_room() -> None:
    assert capped_at_fill(30.0, 5.0, 1_000.0, 10.0, 0.0, 0.2, 1.0, 1.0) == 20.0  # 5 held + 15 of room
    assert capped_at_fill(12.0, 5.0, 1_000.0, 10.0, 0.0, 0.2, 1.0, 1.0) == 12.0  # within the cap: as sized
    assert capped_at_fill(30.0, 25.0, 1_000.0, 10.0, 0.0, 0.2, 1.0, 1.0) == 25.0  # over the cap: kept, not sold
    assert capped_at_fill(30.0, 0.0, 1_000.0, 10.0, 150.0, 0.2, 0.3, 1.0) == 15.0  # the sector: (300 - 150) / 10
    assert capped_at_fill(100.0, 0.0, 1_000.0, 3.0, 0.0, 0.2, 1.0, 0.5) == 66.5  # in lots of 0.5


def test_after_closing_pays_the_closing_trades_slippage_and_fees() -> None:
    # 4 long marked at 100, a short entry fills at 98: 4 x -2 slippage, fees 4 x (98 x 0.25 + 0.5)
    assert after_closing(1_000.0, 4.0, -1, 98.0, 100.0, 0.25, 0.5) == 892.0
    # 4 short marked at 100, a long entry fills at 102: -4 x 2, fees 4 x (102 x 0.25 + 0.5)
    assert after_closing(1_000.0, -4.0, 1, 102.0, 100.0, 0.25, 0.5) == 888.0
    # flat or on the same side: nothing to close
    for position, side in ((0.0, 1), (0.0, -1), (4.0, 1), (-4.0, -1)):
        assert after_closing(1_000.0, position, side, 98.0, 100.0, 0.25, 0.5) == 1_000.0


def test_entry_shares_pays_its_fees_and_floors_whole_shares() -> None:
    # one share costs 9 x 1.125 + 0.875 = 11: 500 of equity buys 45.45... shares
    assert entry_shares(1_000.0, 0.5, 9.0, 0.125, 0.875, True) == 45.0
    assert entry_shares(1_000.0, 0.5, 9.0, 0.125, 0.875, False) == 500.0 / 11.0
    # exactly MIN_SHARES is taken; half of it is dust
    assert entry_shares(MIN_SHARES, 1.0, 1.0, 0.0, 0.0, False) == MIN_SHARES
    assert entry_shares(MIN_SHARES / 2, 1.0, 1.0, 0.0, 0.0, False) == 0.0
    # negative availability, size or free cash take nothing
    for available, size, free in ((-1.0, 1.0, 500.0), (1_000.0, -1.0, 500.0), (1_000.0, 1.0, -1.0)):
        assert entry_shares(available, size, 10.0, 0.0, 0.0, False, free=free) == 0.0


def test_a_lot_exactly_at_a_cap_plus_its_slack_fits() -> None:
    """Each re-check is `<=`: a lot whose value lands exactly on the cap times (1 + LIMIT_REL_TOL) is taken."""
    edge = 0.9999999999989999  # x (1 + 1e-12) is exactly 1.0; floor(edge + 1e-9) is 1 lot
    assert edge * (1.0 + 1e-12) == 1.0 and edge < 1.0
    assert capped_quantity(edge, 1.0, 0.0, 0.0, 1.0, 2.0, 0.0, False, 1.0) == 1.0  # the position cap at its edge
    assert capped_quantity(edge, 1.0, 0.0, 0.0, 2.0, 1.0, 0.0, False, 1.0) == 1.0  # the sector cap at its edge
    assert capped_quantity(2.0, 1.0, 0.0, 0.0, 1.0, 1.0, edge, True, 1.0) == 1.0  # a buy's cash at its edge



def test_a_dollar_or_less_still_buys_at_a_price_under_a_dollar() -> None:
    """The guards are `> 0.0`, not a dollar: one dollar available, of size or free, buys two shares at 0.5."""
    assert entry_shares(1.0, 1.0, 0.5, 0.0, 0.0, True) == 2.0
    assert entry_shares(1_000.0, 1.0, 0.5, 0.0, 0.0, True, free=1.0) == 2.0
    assert entry_shares(0.5, 1.0, 0.25, 0.0, 0.0, False, free=0.75) == 2.0


def test_a_room_under_one_lot_takes_nothing() -> None:
    """Half a share of room (a 5 cap of 1,000 at 10) floors to 0 lots: 0 shares, not one lot."""
    assert capped_quantity(1_000.0, 10.0, 0.0, 0.0, 0.005, 1.0, 1e12, True, 1.0) == 0.0
    assert capped_at_fill(7.0, 0.0, 1_000.0, 10.0, 0.0, 0.005, 1.0, 1.0) == 0.0


def test_a_room_just_under_two_to_the_53_is_still_whole_lots() -> None:
    """The "already whole" shortcut applies only when the room counts 2**53 lots or more: a room of
    2**53 - 50 shares in lots of 100 is 90,071,992,547,409 lots, floored like any other room."""
    room = float(2**53 - 50)  # exact: every integer below 2**53 is a float
    got = capped_quantity(room, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, False, 100.0)  # a sell: cash does not bind
    assert got == 9_007_199_254_740_900.0 and got % 100.0 == 0.0


def test_the_re_check_weighs_the_lot_it_would_take_in_lots_other_than_one_share() -> None:
    """The re-check values the rounded-up quantity, lots x step: in half shares, float noise just
    under 26 lots (12.999999999999998 shares of a 70 cap at 70 / 13) is 13 shares, within the slack;
    in lots of 2, 1e-10 of a lot short of 7 lots is 14 shares, over the cap by more than the slack: 6
    lots. Weighing lots / step instead refuses the first (12.5) and lets the second through (14)."""
    assert capped_quantity(1_000.0, 70.0 / 13.0, 0.0, 0.0, 0.07, 1.0, 1e12, True, 0.5) == 13.0
    assert capped_quantity(1_000.0, 140.0 / (14.0 - 2e-10), 0.0, 0.0, 0.14, 1.0, 1e12, True, 2.0) == 12.0


def test_nan_cash_buys_nothing_even_at_a_price_under_a_dollar() -> None:
    """NaN cash counts as none: at 0.50 a share a dollar of cash would buy 2 shares, NaN buys 0 (whole
    or fractional); a sale reads no cash."""
    assert capped_quantity(1_000.0, 0.5, 0.0, 0.0, 0.2, 0.5, math.nan, True, 1.0) == 0.0
    assert capped_quantity(1_000.0, 0.5, 0.0, 0.0, 0.2, 0.5, math.nan, True, 1e-9) == 0.0
    assert capped_quantity(1_000.0, 0.5, 0.0, 0.0, 0.2, 0.5, math.nan, False, 1.0) == 400.0


def test_a_single_lot_is_re_checked_too() -> None:
    """1e-10 of a share short of one lot rounds up to 1 lot, which exceeds the 70 cap by more than the
    slack: 0 shares, as for any other count of lots; a room of exactly one lot takes it."""
    assert capped_quantity(1_000.0, 70.0 / (1.0 - 1e-10), 0.0, 0.0, 0.07, 1.0, 1e12, True, 1.0) == 0.0
    assert capped_quantity(1_000.0, 70.0, 0.0, 0.0, 0.07, 1.0, 1e12, True, 1.0) == 1.0


def test_a_same_side_position_under_one_share_costs_nothing_to_keep() -> None:
    """Half a share held on the entry's side is not closed: the equity stays as it is (a fractional
    position, long or short)."""
    for position, side in ((0.5, 1), (-0.5, -1), (1e-6, 1)):
        assert after_closing(1_000.0, position, side, 98.0, 100.0, 0.25, 0.5) == 1_000.0


def test_a_nan_free_cash_or_size_sizes_nothing() -> None:
    """Nothing free (a NaN mark elsewhere makes free cash NaN) or a NaN size: 0 shares, not what
    `min(amount, nan)` would leave of the amount."""
    assert entry_shares(1_000.0, 1.0, 10.0, 0.0, 0.0, False, free=math.nan) == 0.0
    assert entry_shares(1_000.0, 1.0, 10.0, 0.0, 0.0, True, free=math.nan) == 0.0
    assert entry_shares(1_000.0, math.nan, 10.0, 0.0, 0.0, False, free=500.0) == 0.0


def test_nothing_available_sizes_nothing_whatever_the_size_even_nan() -> None:
    """Each of the three guards alone returns 0 (kills line 72's `or` -> `and` between `available` and
    `size`): a NaN or negative `available` with a positive size is 0 shares, in whole shares too, where
    the plain-Python path (the live one) would otherwise floor a NaN and raise."""
    for whole in (False, True):
        assert entry_shares(math.nan, 0.5, 10.0, 0.0, 0.0, whole) == 0.0
        assert entry_shares(-1_000.0, 0.5, 10.0, 0.0, 0.0, whole) == 0.0
        assert entry_shares(1_000.0, -0.5, 10.0, 0.0, 0.0, whole) == 0.0
