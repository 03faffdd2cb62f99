"""The signal-to-side rule on the short side (strategies/positions.py): only a short's exit closes a short."""

from __future__ import annotations

import pytest

from strategies.positions import next_direction


@pytest.mark.parametrize(
    ("held", "signals", "after"),
    [
        (-1, (False, False, False, True), 0),  # a short's exit closes the short
        (1, (False, False, False, True), 1),  # ... and leaves a long alone
        (0, (False, False, False, True), 0),  # ... and a flat book flat
        (-1, (False, False, False, False), -1),  # no signal: hold the short
        (-1, (True, False, False, False), 1),  # a long entry reverses a short
    ],
)
def test_short_side_signal_to_side_rule(held: int, signals: tuple[bool, bool, bool, bool], after: int) -> None:
    assert next_direction(held, *signals) == after
