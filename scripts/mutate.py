"""Mutation testing of the core rules with cosmic-ray: does a test fail when a rule breaks?

    .venv/bin/python scripts/mutate.py                       # every module below
    .venv/bin/python scripts/mutate.py backtests/metrics.py  # one (or several)
    MUTATE_LIMIT=600 .venv/bin/python scripts/mutate.py ...  # seconds per module (default 900)
    MUTATE_RERUN=1 .venv/bin/python scripts/mutate.py ...    # only the last run's survivors (tests added)
    MUTATE_BEFORE=1 .venv/bin/python scripts/mutate.py ...   # without the test_mutants_* files
    MUTATE_SKIP=31 .venv/bin/python scripts/mutate.py ...    # continue a time-limited sample after its first 31
    MUTATE_NUMBA_SEED=0 .venv/bin/python scripts/mutate.py ...  # numba modules: every mutant compiles all
    MUTATE_NUMBA_SEED=files .venv/bin/python scripts/mutate.py ...  # numba modules: stale whole files, not functions
    MUTATE_NUMBA_INTERPRET=0 .venv/bin/python scripts/mutate.py ...  # numba modules: compiled only (no interpreted first pass)
    .venv/bin/python scripts/mutate.py --changed REV         # CI: only what a change touched (below)

Each module is mutated with its own focused tests only (MODULES below), so a module takes
minutes. The mutants run in a scratch copy of the working tree (never in it: another process may be
importing the real files), one at a time, each mutant followed by `pytest -x` on the module's tests.
Mutants run in a pseudo-random order (a hash of each mutant): when a module's time limit stops it, the ones that
ran are a random sample and the report says how many of how many.

Operators: cosmic-ray's core set without the ones that only make noise (arithmetic swapped for bit
shifts, powers or modulo; `is` for `<`; variable inserters; removed decorators, where removing
`@njit` changes nothing but speed, and for the same reason a numba compile flag flipped: `cache=`,
`parallel=`, `nogil=`; not `fastmath=`, which may change the last digits). Lines marked `# pragma: no mutate` are skipped.

Runner: by default one long-lived process imports the heavy third-party libraries once (numpy, polars,
pandas, pydantic, numba, pytest, hypothesis, exchange_calendars, great_expectations; never a project
module) and forks a child per mutant that runs pytest in process on the mutated file: a mutant then costs
its tests, not a fresh interpreter's imports. `MUTATE_RUNNER=subprocess` runs each mutant in a new
interpreter instead (cosmic-ray's own runner), e.g. to cross-check the fork runner. Tests that run a polars
query at import (it starts polars' thread pool, which a forked child lacks and hangs on) are collected in
each child instead, the project modules still imported once (`import_live`).

numba modules: each mutant runs interpreted first (NUMBA_DISABLE_JIT=1, numpy's RuntimeWarnings ignored),
which compiles nothing; only a test's failed assertion settles it there (killed). Every survivor and
every other failure (an exception, a timeout) is run compiled on its seeded cache, as before, and that
outcome counts. Used when the module's tests pass interpreted within the compiled baseline's time
(`interpreted_run` says why this is sound). A survivor recorded in EQUIVALENT is not run compiled again.

Writes artifacts/mutation/<module>.txt (score, then every survivor's diff) and summary.md, and
prints the summary table. By hand or with `make mutate`.

`--changed REV` (or MUTATE_BASE=REV; CI's mode): only the modules below whose source or mapped tests
differ between the merge-base of REV and HEAD and the working tree (`git diff --name-only`), within
MUTATE_BUDGET seconds in all (default 300; each module an equal share of what is left when it starts,
its baseline test run included, and a random sample of its mutants in it), and exits 1 when a module's score on its sample, not counting the survivors recorded as
equivalent (EQUIVALENT), is below its floor (FLOORS, else 90 %). No base, a base that does not
resolve (a shallow clone) or no mapped file touched: a message, and exit 0.
"""

from __future__ import annotations

import ast
import difflib
import functools
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import CodeType, FunctionType, ModuleType

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "artifacts" / "mutation"
SEED = 0

# module -> the tests that guard it (pytest arguments). Numba-compiled modules (FRESH_NUMBA_CACHE) get a
# numba cache of their own per mutant: numba's cache does not notice that a function compiled into a
# kernel changed in another file, and would run the unmutated code. It is seeded with the baseline's
# compiled entries minus those whose function can reach the mutated code (`stale_functions`, `seed_numba_cache`).
MODULES: dict[str, list[str]] = {
    "lake/validation.py": ["tests/lake/test_mutants_validation.py", "tests/lake/test_validation.py"],
    # The formulas alone: exposure and turnover are the engine's (its tests run a backtest).
    "backtests/metrics.py": ["tests/backtests/test_mutants_metrics.py", "tests/backtests/test_metrics.py", "-k", "not exposure"],
    # The rule in plain Python (the engine compiles this very function; its tests run it compiled).
    "strategies/brackets.py": [
        "tests/strategies/test_mutants_brackets.py", "tests/backtests/test_brackets.py", "-k", "mutants_brackets or bracket_step or mirror or missing_levels or touch",
    ],
    "backtests/engine.py": ["tests/backtests/test_mutants_engine.py", "tests/backtests/test_engine_costs.py", "tests/backtests/test_brackets.py", "tests/backtests/test_engine_parity.py"],
    "orchestration/observability.py": ["tests/orchestration/test_observability.py"],
    "orchestration/bulk.py": ["tests/orchestration/test_cli.py", "-k", "bulk"],
    "backtests/kernels.py": ["tests/backtests/test_mutants_kernels.py", "tests/backtests/test_brackets.py", "tests/backtests/test_engine_parity.py", "tests/backtests/test_entry_sizing.py"],
    "backtests/sweep_nb.py": ["tests/backtests/test_mutants_sweep_nb.py", "tests/backtests/test_sweep.py"],
    # The engine's per-bar loop (signals, brackets, shared cash) and the entry rule it compiles.
    # The limits path (`_decide_nb`'s running book) by hand first, then the engine's own tests.
    "backtests/order_sim.py": [
        "tests/backtests/test_mutants_order_sim.py", "tests/backtests/test_sizing_limits.py", "tests/backtests/test_shared_cash.py",
        "tests/backtests/test_brackets.py", "tests/backtests/test_engine_parity.py",
    ],
    # The rank sweep's kernel, each combination against the engine (ties, shared cash, both sizing regimes).
    "backtests/sweep_rank_nb.py": ["tests/backtests/test_sweep_rank.py"],
    # Its plain-Python functions by hand first (a mutant they kill compiles nothing), then the engine's.
    "strategies/entries.py": [
        "tests/strategies/test_mutants_entries.py", "tests/backtests/test_entry_sizing.py", "tests/backtests/test_sizing_limits.py",
        "tests/backtests/test_shared_cash.py",
    ],
    # The shared controls by hand first, then the live paths calling them (the backtest swaps take ~60 s each: left out).
    "strategies/controls.py": [
        "tests/strategies/test_mutants_controls.py", "tests/trading/test_one_rule_controls.py", "-k", "mutants_controls or every_live_path",
    ],
    "trading/risk.py": ["tests/trading/test_mutants_risk.py", "tests/trading/test_risk.py"],
    "trading/execution.py": ["tests/trading/test_mutants_execution.py", "tests/trading/test_execution.py"],
    # Plain-Python strategy rules: hand-computed values first, then the strategies' own tests.
    "strategies/sizing.py": ["tests/strategies/test_mutants_indicators.py", "tests/strategies/test_strategies.py"],
    "strategies/positions.py": ["tests/strategies/test_mutants_positions.py", "tests/strategies/test_strategies.py"],
    "strategies/base.py": ["tests/strategies/test_mutants_base.py", "tests/strategies/test_sorted_bars_and_window_nulls.py", "tests/strategies/test_strategies.py"],
    "strategies/indicators.py": [
        "tests/strategies/test_mutants_indicators.py", "tests/strategies/test_sorted_bars_and_window_nulls.py", "tests/strategies/test_window_exact.py",
        "tests/strategies/test_strategies.py", "-k", "mutants or sorted_bars or test_strategies or by_hand or restart or constant",
    ],
    "strategies/registry.py": [
        "tests/strategies/test_mutants_registry.py", "tests/strategies/test_registry_cache.py", "tests/strategies/test_strategies.py", "-k", "registry",
    ],
    # The live classes on a strategy with an exact lookback, then every built-in replayed bar by bar.
    "strategies/live.py": ["tests/strategies/test_mutants_live.py", "tests/strategies/test_parity_and_lookahead.py", "-k", "mutants_live or replay"],
    # Hand-computed signals and the parameters' edges first, then the strategies' own tests.
    "strategies/builtin.py": [
        "tests/strategies/test_mutants_builtin.py", "tests/strategies/test_strategies.py", "tests/strategies/test_parity_and_lookahead.py",
        "-k", "mutants_builtin or test_strategies or replay",
    ],
}
# Every module numba compiles into a kernel of another file (brackets, positions, controls: kernels.py
# and order_sim.py compile them) is here too: on the shared cache those kernels would run unmutated.
FRESH_NUMBA_CACHE = {
    "backtests/kernels.py", "backtests/sweep_nb.py", "backtests/order_sim.py", "backtests/sweep_rank_nb.py", "strategies/entries.py",
    "strategies/brackets.py", "strategies/positions.py", "strategies/controls.py",
}  # fmt: skip

# --changed: the lowest score (%) a module's sample may have, survivors recorded as equivalent aside.
DEFAULT_FLOOR = 90.0
FLOORS: dict[str, float] = {}
# Survivors shown equivalent (tests/mutation_report.md says why), as (module, original line, mutated
# line), compared without whitespace: they keep matching when other lines move.
EQUIVALENT: set[tuple[str, str, str]] = {
    # trading/risk.py (tests/mutation_report.md): `direction` is exactly 1.0 or -1.0 and only its sign is read;
    # `_result` clamps a quantity at 0 and its callers pass the flags by keyword; nothing assigns to a `_Cap`;
    # the lowest cap is always strictly below itself plus a positive slack.
    # No caller passes a negative quantity (proposals are >= 0, capped_quantity floors its room at 0).
    ("trading/risk.py", "qty = max(float(qty), 0.0)", "qty = max(float(qty), -1.0)"),
    ("trading/risk.py", '@dataclass(frozen=True)', '@dataclass(frozen=False)'),
    ("trading/risk.py", 'return _result(symbol, 0.0, violations=[f"no price for {symbol}"])', 'return _result(symbol, -1.0, violations=[f"no price for {symbol}"])'),
    ("trading/risk.py", 'return _result(symbol, 0.0, violations=[f"position {symbol} is not a finite number"])', 'return _result(symbol, -1.0, violations=[f"position {symbol} is not a finite number"])'),
    ("trading/risk.py", 'return _result(symbol, 0.0, reasons=["zero quantity requested"])', 'return _result(symbol, -1.0, reasons=["zero quantity requested"])'),
    ("trading/risk.py", 'direction = 1.0 if proposal.action is Action.BUY else -1.0', 'direction = 1.0 if proposal.action is Action.BUY else - 2.0'),
    ("trading/risk.py", 'direction = 1.0 if proposal.action is Action.BUY else -1.0', 'direction = 2.0 if proposal.action is Action.BUY else -1.0'),
    ("trading/risk.py", 'return _result(symbol, 0.0, violations=gates)', 'return _result(symbol, -1.0, violations=gates)'),
    ("trading/risk.py", 'return _result(symbol, 0.0, violations=missing)', 'return _result(symbol, -1.0, violations=missing)'),
    ("trading/risk.py", 'binding = [c for c in caps if c.max_qty <= lowest + abs(lowest) * _REL_TOL + _REL_TOL]', 'binding = [c for c in caps if c.max_qty < lowest + abs(lowest) * _REL_TOL + _REL_TOL]'),
    ("trading/risk.py", 'if direction < 0 and not limits.allow_short:', 'if direction < 1 and not limits.allow_short:'),
    ("trading/risk.py", 'if direction < 0 and not limits.allow_short:', 'if direction <= 0 and not limits.allow_short:'),
    ("trading/risk.py", 'if direction > 0:  # short sales bring cash in; only buys can overdraw', 'if direction > -1:  # short sales bring cash in; only buys can overdraw'),
    ("trading/risk.py", 'if direction > 0:  # short sales bring cash in; only buys can overdraw', 'if direction >= 0:  # short sales bring cash in; only buys can overdraw'),
    ("trading/risk.py", 'return capped_quantity(equity, px, held, others, limits.max_position_pct, limits.max_sector_pct, cash, direction > 0, step)', 'return capped_quantity(equity, px, held, others, limits.max_position_pct, limits.max_sector_pct, cash, direction > -1, step)'),
    ("trading/risk.py", 'return capped_quantity(equity, px, held, others, limits.max_position_pct, limits.max_sector_pct, cash, direction > 0, step)', 'return capped_quantity(equity, px, held, others, limits.max_position_pct, limits.max_sector_pct, cash, direction >= 0, step)'),
    ("trading/risk.py", 'symbol: str, qty: float, *, reasons: list[str] | None = None, violations: list[str] | None = None', 'symbol: str, qty: float, /, reasons: list[str] | None = None, violations: list[str] | None = None'),
    # controls.reduces reads only the sign of the side.
    (
        "trading/execution.py",
        "reducing = controls.reduces(held, 1.0 if d.side == Side.BUY else -1.0)  # a sell from flat opens a short",
        "reducing = controls.reduces(held, 1.0 if d.side == Side.BUY else - 2.0)  # a sell from flat opens a short",
    ),
    (
        "trading/execution.py",
        "reducing = controls.reduces(held, 1.0 if d.side == Side.BUY else -1.0)  # a sell from flat opens a short",
        "reducing = controls.reduces(held, 2.0 if d.side == Side.BUY else -1.0)  # a sell from flat opens a short",
    ),
    # Every caller of the private _emit passes type_ and payload by position, the rest by keyword.
    (
        "trading/execution.py",
        "def _emit(self, type_: EventType, payload: dict[str, Any], *, symbol: str | None = None, as_of: datetime | None = None, event_id: str | None = None) -> None:",
        "def _emit(self, type_: EventType, payload: dict[str, Any], /, symbol: str | None = None, as_of: datetime | None = None, event_id: str | None = None) -> None:",
    ),
    # `closing` is read only for an order that reduces; trades_spent asks about an entry.
    (
        "strategies/controls.py",
        "return not may_send(False, False, False, trades, max_trades)",
        "return not may_send(False, True, False, trades, max_trades)",
    ),
    # lake/validation.py (session 6, tests/mutation_report.md). `_sorted_unique` only picks a faster path: answering "not sorted"
    # more often sorts input that is already sorted (a stable sort by symbol, ts, arrival: the same rows, every bar increasing
    # and the first of its ts); row 0's comparisons are null, and `all()` skips nulls.
    ('lake/validation.py', 'return bool(bars.select(ordered.slice(1).all()).item())', 'return bool(bars.select(ordered.slice( 0).all()).item())'),
    ('lake/validation.py', 'ordered = (sym.shift(1) < sym) | ((sym.shift(1) == sym) & (ts.shift(1) < ts))', 'ordered = (sym.shift( 0) < sym) | ((sym.shift(1) == sym) & (ts.shift(1) < ts))'),
    ('lake/validation.py', 'ordered = (sym.shift(1) < sym) | ((sym.shift(1) == sym) & (ts.shift(1) < ts))', 'ordered = (sym.shift(1) < sym) & ((sym.shift(1) == sym) & (ts.shift(1) < ts))'),
    ('lake/validation.py', 'ordered = (sym.shift(1) < sym) | ((sym.shift(1) == sym) & (ts.shift(1) < ts))', 'ordered = (sym.shift(1) < sym) | ((sym.shift(1) == sym) & (ts.shift( 0) < ts))'),
    # polars 2.1 sorts by one key stably whether asked or not (1 M rows, 50 symbols: the same order); the flag stays for the API's sake.
    ('lake/validation.py', 'arrival = bars.with_row_index("_row").sort("symbol", maintain_order=True)', 'arrival = bars.with_row_index("_row").sort("symbol", maintain_order=False)'),
    # `starts` and its shifted copy have one length; `ne_missing` never yields a null.
    ('lake/validation.py', 'for a, b in zip(starts, [*starts[1:], len(values)], strict=True):', 'for a, b in zip(starts, [*starts[1:], len(values)], strict=False):'),
    ('lake/validation.py', 'starts = symbol.ne_missing(symbol.shift(1)).fill_null(True).arg_true().to_numpy()', 'starts = symbol.ne_missing(symbol.shift(1)).fill_null(False).arg_true().to_numpy()'),
    # polars' max_horizontal skips a NaN as it skips a null: the floor is the scale either way.
    ('lake/validation.py', 'return pl.Series("_scale", out, nan_to_null=True)', 'return pl.Series("_scale", out, nan_to_null=False)'),
    # `_split` enters only as the difference of two rows of a symbol: a constant in every row cancels.
    ('lake/validation.py', 'terms = [pl.lit(0.0)]', 'terms = [pl.lit( 1.0)]'),
    ('lake/validation.py', 'terms = [pl.lit(0.0)]', 'terms = [pl.lit( -1.0)]'),
    # A daily bar out of session falls on no session day, so it is never extended; every term is non-null where `outside` holds.
    ('lake/validation.py', 'if timeframe == "1d" or not frame.select(outside.any()).item():', 'if timeframe == "1d" and not frame.select(outside.any()).item():'),
    ('lake/validation.py', 'return (outside & local.dt.date().is_in(days.implode()) & (minute >= lo) & (minute < hi)).fill_null(False).alias("_extended")', 'return (outside & local.dt.date().is_in(days.implode()) & (minute >= lo) & (minute < hi)).fill_null(True).alias("_extended")'),
    # _missing_bars: row 0 starts a run anyway (`ne_missing` against the shifted null); a lower count of present bars or a higher
    # count of expected ones only lists more sessions bar by bar, and the anti-join gives the same missing set; a requested session
    # with no bar expects at least one (its open < until), so 0 or -1 present is short either way; one opening exactly at `until`
    # expects none (end = min(close, until) = its open).
    ('lake/validation.py', 'first_row = pl.int_range(pl.len()) == 0', 'first_row = pl.int_range(pl.len()) == -1'),
    ('lake/validation.py', 'flags = present.select(new_run.alias("new"), ((new_run | (pl.col("ts") != pl.col("ts").shift(1))) & on_grid).alias("distinct"))', 'flags = present.select(new_run.alias("new"), ((new_run & (pl.col("ts") != pl.col("ts").shift(1))) & on_grid).alias("distinct"))'),
    ('lake/validation.py', 'flags = present.select(new_run.alias("new"), ((new_run | (pl.col("ts") != pl.col("ts").shift(1))) & on_grid).alias("distinct"))', 'flags = present.select(new_run.alias("new"), ((new_run | (pl.col("ts") != pl.col("ts").shift( 0))) & on_grid).alias("distinct"))'),
    ('lake/validation.py', 'on_grid = ((pl.col("ts") - pl.col("_open")).dt.total_microseconds() % (step // timedelta(microseconds=1)) == 0) & (pl.col("ts") < end)', 'on_grid = ((pl.col("ts") - pl.col("_open")).dt.total_microseconds() % (step // timedelta(microseconds=1)) == -1) & (pl.col("ts") < end)'),
    ('lake/validation.py', 'sessions = pl.concat([sessions, absent.with_columns(pl.lit(0, pl.Int64).alias("_have")).select(list(schema))])', 'sessions = pl.concat([sessions, absent.with_columns(pl.lit( -1, pl.Int64).alias("_have")).select(list(schema))])'),
    ('lake/validation.py', 'sessions = sessions.with_columns(((end - pl.col("_open")).dt.total_microseconds() / step.total_seconds() / 1e6).ceil().alias("_want"))', 'sessions = sessions.with_columns(((end - pl.col("_open")).dt.total_microseconds() + step.total_seconds() / 1e6).ceil().alias("_want"))'),
    ('lake/validation.py', 'sessions = sessions.with_columns(((end - pl.col("_open")).dt.total_microseconds() / step.total_seconds() / 1e6).ceil().alias("_want"))', 'sessions = sessions.with_columns(((end - pl.col("_open")).dt.total_microseconds() / step.total_seconds() * 1e6).ceil().alias("_want"))'),
    ('lake/validation.py', 'sessions = sessions.with_columns(((end - pl.col("_open")).dt.total_microseconds() / step.total_seconds() / 1e6).ceil().alias("_want"))', 'sessions = sessions.with_columns(((end - pl.col("_open")).dt.total_microseconds() - step.total_seconds() / 1e6).ceil().alias("_want"))'),
    ('lake/validation.py', 'sessions = sessions.with_columns(((end - pl.col("_open")).dt.total_microseconds() / step.total_seconds() / 1e6).ceil().alias("_want"))', 'sessions = sessions.with_columns(((end - pl.col("_open")).dt.total_microseconds() * step.total_seconds() / 1e6).ceil().alias("_want"))'),
    ('lake/validation.py', 'sessions = sessions.with_columns(((end - pl.col("_open")).dt.total_microseconds() / step.total_seconds() / 1e6).ceil().alias("_want"))', 'sessions = sessions.with_columns(((end - pl.col("_open")).dt.total_microseconds() / step.total_seconds() / 999999.0).ceil().alias("_want"))'),
    ('lake/validation.py', 'sessions = sessions.with_columns(((end - pl.col("_open")).dt.total_microseconds() / step.total_seconds() / 1e6).ceil().alias("_want"))', 'sessions = sessions.with_columns(((end - pl.col("_open")).dt.total_microseconds() / step.total_seconds() + 1e6).ceil().alias("_want"))'),
    ('lake/validation.py', 'short = sessions.filter(pl.col("_have") < pl.col("_want"))  # only these are enumerated, minute by minute', 'short = sessions.filter(pl.col("_have") <= pl.col("_want"))  # only these are enumerated, minute by minute'),
    ('lake/validation.py', 'return sessions.filter((pl.col("open") >= frm) & (pl.col("open") < until)).select(pl.col("open").alias("_open"), pl.col("close").alias("_close"))', 'return sessions.filter((pl.col("open") >= frm) & (pl.col("open") <= until)).select(pl.col("open").alias("_open"), pl.col("close").alias("_close"))'),
    # The suite's cache key is only compared with keys made the same way; a null fails not_null's NotBeNull expectation anyway.
    ('lake/validation.py', 'key = json.dumps(specs, sort_keys=True)', 'key = json.dumps(specs, sort_keys=False)'),
    ('lake/validation.py', 'pl.all_horizontal([pl.col(c).is_finite() for c in FINITE_COLUMNS]).fill_null(False).alias("_finite"),', 'pl.all_horizontal([pl.col(c).is_finite() for c in FINITE_COLUMNS]).fill_null(True).alias("_finite"),'),
    # The frame of sums has one row, and one count per mask.
    ('lake/validation.py', 'counts = frame.select(m.sum() for m in mask.values()).row(0)', 'counts = frame.select(m.sum() for m in mask.values()).row( -1)'),
    ('lake/validation.py', 'failed_by_rule = dict(zip(mask, counts, strict=True))', 'failed_by_rule = dict(zip(mask, counts, strict=False))'),
    # XNYS's bounded calendar (2005-2049) has no gap between sessions above 5 days (2006-12-29 to 2007-01-03): a look-back of
    # 5 days or more finds the same session; for last == first the calendar gives the frame the table was sliced from.
    ('lake/validation.py', 'sessions = _sessions_between(first - timedelta(days=7), last, exchange)', 'sessions = _sessions_between(first - timedelta(days= 6), last, exchange)'),
    ('lake/validation.py', 'sessions = _sessions_between(first - timedelta(days=7), last, exchange)', 'sessions = _sessions_between(first - timedelta(days= 8), last, exchange)'),
    ('lake/validation.py', 'if last < first:', 'if last <= first:'),
    # From 2**52 lots on every float is a whole number: the floor below gives the same lots (with whole
    # shares the same value; with fractional lots, lots x step is the room within one ulp).
    (
        "strategies/entries.py",
        "if room / step >= 2.0**53:  # beyond float precision every value is already a whole lot",
        "if room / step > 2.0**53:  # beyond float precision every value is already a whole lot",
    ),
    (
        "strategies/entries.py",
        "if room / step >= 2.0**53:  # beyond float precision every value is already a whole lot",
        "if room / step >= 2.0**52:  # beyond float precision every value is already a whole lot",
    ),
    # A room of exactly 0 (or -0.0) floors to 0 lots either way: the same 0.0.
    ("strategies/entries.py", "if not room > 0.0:", "if not room >= 0.0:"),
    # Session 6 (tests/mutation_report.md): an entry of 0 or of a negative amount sizes to 0 shares anyway.
    ("strategies/entries.py", "if not available > 0.0 or not size > 0.0 or not free > 0.0:", "if not available >= 0.0 or not size > 0.0 or not free > 0.0:"),
    ("strategies/entries.py", "if not available > 0.0 or not size > 0.0 or not free > 0.0:", "if not available > 0.0 or not size >= 0.0 or not free > 0.0:"),
    ("strategies/entries.py", "if not available > 0.0 or not size > 0.0 or not free > 0.0:", "if not available > 0.0 or not size > 0.0 or not free > -1.0:"),
    # lots is never negative; 0 lots stay 0 either way.
    ("strategies/entries.py", "return max(lots * step, 0.0)", "return max(lots * step, -1.0)"),
    ("strategies/entries.py", "if lots > 0:", "if lots > -1:"),
    ("strategies/entries.py", "if room / step >= 2.0**53:  # beyond float precision every value is already a whole lot", "if room / step >= 2.0**54:  # beyond float precision every value is already a whole lot"),
    # With buy=False capped_quantity never reads the cash.
    (
        "strategies/entries.py",
        "return min(shares, held + capped_quantity(equity, price, held, others, max_position, max_sector, 0.0, False, step))",
        "return min(shares, held + capped_quantity(equity, price, held, others, max_position, max_sector, 1.0, False, step))",
    ),
    # engine.py `run_backtest`: nothing is held before trade_from (no order fills there), and from flat all four signals
    # at once change nothing (`next_direction`: each entry cancelled by its exit), as all four False.
    (
        "backtests/engine.py",
        'pl.when(warm).then(False).otherwise(pl.col(c)).alias(c) for c in ("entry_long", "exit_long", "entry_short", "exit_short")',
        'pl.when(warm).then(True).otherwise(pl.col(c)).alias(c) for c in ("entry_long", "exit_long", "entry_short", "exit_short")',
    ),
    # An entry is never asked for weight 0 (target 0 is an exit); at 0 it takes 0 shares either side.
    ("backtests/kernels.py", "side = 1 if weight > 0 else -1", "side = 1 if weight >= 0 else -1"),
    # The rank sweep never holds a short (it enters long only): exit_short is read only when short.
    (
        "backtests/sweep_rank_nb.py",
        "_, pending[col] = next_order_nb(side_of_nb(position[col]), in_top and not was_in[col], was_in[col] and not in_top, False, False, size)",
        "_, pending[col] = next_order_nb(side_of_nb(position[col]), in_top and not was_in[col], was_in[col] and not in_top, False, True, size)",
    ),
    # `phase` is only read as `phase > 0`, and the next entry from flat sets it to 1.
    ("backtests/sweep_nb.py", "phase = 0", "phase = -1"),
    # The first phase is never read: the bracket branch needs a position, and the fill that opens one sets phase.
    ("backtests/sweep_nb.py", "phase, entry = 0, np.nan", "phase, entry = 1, np.nan"),
    ("backtests/sweep_nb.py", "phase, entry = 0, np.nan", "phase, entry = -1, np.nan"),
    # _trade_nb with delta == 0 (the only value the moved bounds add; delta > 0 is taken first): either branch trades
    # floor(+-0) = 0 shares and returns (cash, pos, 0), as the fall-through does (a negative cash caps the buy below 0).
    ("backtests/sweep_nb.py", "if delta < 0:", "if delta < 1:"),
    ("backtests/sweep_nb.py", "if delta < 0:", "if delta <= 0:"),
    ("backtests/sweep_nb.py", "if delta > 0:", "if delta >= 0:"),
    # At cost == cash, |cost - cash| = 0 is not above REL_TOL x max(...) >= 0: no cap either way.
    (
        "backtests/sweep_nb.py",
        "if cost > cash and abs(cost - cash) > REL_TOL * max(abs(cost), abs(cash)):",
        "if cost >= cash and abs(cost - cash) > REL_TOL * max(abs(cost), abs(cash)):",
    ),
    # An entry from flat fills on its own side, so pending x pos >= 0, and 0 only when it got no shares: the mutants then
    # set a bracket on a flat position, which the bracket branch (pos != 0) never reads before the next fill resets it.
    ("backtests/sweep_nb.py", "if pending * pos > 0 and from_flat:  # an entry from flat that got shares: its bracket",
     "if pending * pos > -1 and from_flat:  # an entry from flat that got shares: its bracket"),
    ("backtests/sweep_nb.py", "if pending * pos > 0 and from_flat:  # an entry from flat that got shares: its bracket",
     "if pending * pos >= 0 and from_flat:  # an entry from flat that got shares: its bracket"),
    # `/` for `*`: the same sign wherever pos != 0; at pos == 0 (no shares) the quotient is +-inf (numpy, and numba in a
    # prange body: measured, no ZeroDivisionError), i.e. the flat-position bracket above that nothing reads.
    ("backtests/sweep_nb.py", "if pending * pos > 0 and from_flat:  # an entry from flat that got shares: its bracket",
     "if pending / pos > 0 and from_flat:  # an entry from flat that got shares: its bracket"),
    # from_flat is read only when an order is pending, and every order sets it (line 164).
    ("backtests/sweep_nb.py", "p_stop, p_t1, p_t2, from_flat = np.nan, np.nan, np.nan, False",
     "p_stop, p_t1, p_t2, from_flat = np.nan, np.nan, np.nan, True"),
    (
        "backtests/metrics.py",  # at exactly 0 both branches give -1
        "cagr = float((equity[-1] / equity[0]) ** (p / r.size) - 1.0) if equity[-1] > 0 else -1.0",
        "cagr = float((equity[-1] / equity[0]) ** (p / r.size) - 1.0) if equity[-1] >= 0 else -1.0",
    ),
    ("strategies/base.py", "yield cls(**dict(zip(names, combo, strict=True)))", "yield cls(**dict(zip(names, combo, strict=False)))"),
    # A sweep's upper end + 1 gives the same values: the next step lies beyond it.
    (
        "strategies/builtin.py",
        'period: int = Field(14, ge=2, le=200, json_schema_extra={"sweep": [5, 30, 5]})',
        'period: int = Field(14, ge=2, le=200, json_schema_extra={"sweep": [5, 31, 5]})',
    ),
    (
        "strategies/builtin.py",
        'lower: float = Field(30.0, gt=0, lt=50, json_schema_extra={"sweep": [15.0, 35.0, 5.0]})',
        'lower: float = Field(30.0, gt=0, lt=50, json_schema_extra={"sweep": [15.0, 36.0, 5.0]})',
    ),
    (
        "strategies/builtin.py",
        'entry_window: int = Field(20, ge=2, le=1000, json_schema_extra={"sweep": [10, 60, 10]})',
        'entry_window: int = Field(20, ge=2, le=1000, json_schema_extra={"sweep": [10, 61, 10]})',
    ),
    ("strategies/indicators.py", "_BLOCK = 256  # outputs per block: the block's accumulators stay in L1 while the window is added in",
     "_BLOCK = 257  # outputs per block: the block's accumulators stay in L1 while the window is added in"),
    ("strategies/indicators.py", "_BLOCK = 256  # outputs per block: the block's accumulators stay in L1 while the window is added in",
     "_BLOCK = 255  # outputs per block: the block's accumulators stay in L1 while the window is added in"),
    ("strategies/brackets.py", "if side < 0:", "if side <= 0:"),
    ("strategies/brackets.py", "if side < 0:", "if side < 1:"),
    # A universe step is one time (checked first): its first and last bars have the same ts.
    ("strategies/live.py", 'if self._steps and bars[0]["ts"] <= self._steps[-1][0]["ts"]:', 'if self._steps and bars[-1]["ts"] <= self._steps[-1][0]["ts"]:'),
    ("strategies/live.py", 'if self._steps and bars[0]["ts"] <= self._steps[-1][0]["ts"]:', 'if self._steps and bars[0]["ts"] <= self._steps[-1][-1]["ts"]:'),
    (
        "strategies/live.py",
        "raise StrategyError(f\"{self.strategy.name}: bars at {bars[0]['ts']} are not after {self._steps[-1][0]['ts']}\")",
        "raise StrategyError(f\"{self.strategy.name}: bars at {bars[-1]['ts']} are not after {self._steps[-1][0]['ts']}\")",
    ),
    (
        "strategies/live.py",
        "raise StrategyError(f\"{self.strategy.name}: bars at {bars[0]['ts']} are not after {self._steps[-1][0]['ts']}\")",
        "raise StrategyError(f\"{self.strategy.name}: bars at {bars[0]['ts']} are not after {self._steps[-1][-1]['ts']}\")",
    ),
    (
        "strategies/live.py",
        'latest = self.strategy.signals(window, self.params).filter(pl.col("ts") == bars[0]["ts"])',
        'latest = self.strategy.signals(window, self.params).filter(pl.col("ts") == bars[-1]["ts"])',
    ),
    # session 5 (h3): full runs of trading/risk.py, strategies/indicators.py, strategies/builtin.py (tests/mutation_report.md).
    # _result clamps a quantity at 0: -1.0 gives the same assessment.
    ("trading/risk.py", 'return _result(symbol, 0.0, reasons=["hold"])', 'return _result(symbol, -1.0, reasons=["hold"])'),
    ("trading/risk.py", 'symbol, 0.0, violations=[f"price {px:g} for {symbol} too small to size against limits"]',
     'symbol, -1.0, violations=[f"price {px:g} for {symbol} too small to size against limits"]'),
    # An extra output at row window - 2 subtracts a NaN mean (window_sums_nb): it stays NaN, and is masked anyway.
    ("strategies/indicators.py", "for start in range(window - 1, n, _BLOCK):", "for start in range(window - 2, n, _BLOCK):"),
    # A filled null enters only the windows that hold it, and those are voided.
    ("strategies/indicators.py", "reduced = kernel(np.ascontiguousarray(values.fill_null(0.0).to_numpy(), dtype=np.float64))",
     "reduced = kernel(np.ascontiguousarray(values.fill_null(1.0).to_numpy(), dtype=np.float64))"),
    ("strategies/indicators.py", "reduced = kernel(np.ascontiguousarray(values.fill_null(0.0).to_numpy(), dtype=np.float64))",
     "reduced = kernel(np.ascontiguousarray(values.fill_null(-1.0).to_numpy(), dtype=np.float64))"),
    # x is one-dimensional: shape[-1] is shape[0].
    ("strategies/indicators.py", "n = x.shape[0]", "n = x.shape[-1]"),
    # A sweep's upper end + 1 gives the same values when the step is above 1: the next step lies beyond it.
    ("strategies/builtin.py", 'fast: int = Field(10, ge=1, le=500, json_schema_extra={"sweep": [5, 50, 5]})',
     'fast: int = Field(10, ge=1, le=500, json_schema_extra={"sweep": [5, 51, 5]})'),
    ("strategies/builtin.py", 'slow: int = Field(30, ge=2, le=2000, json_schema_extra={"sweep": [20, 200, 20]})',
     'slow: int = Field(30, ge=2, le=2000, json_schema_extra={"sweep": [20, 201, 20]})'),
    ("strategies/builtin.py", 'exit_window: int = Field(10, ge=2, le=1000, json_schema_extra={"sweep": [5, 30, 5]})',
     'exit_window: int = Field(10, ge=2, le=1000, json_schema_extra={"sweep": [5, 31, 5]})'),
    ("strategies/builtin.py", 'lookback: int = Field(60, ge=2, le=1000, json_schema_extra={"sweep": [20, 120, 20]})',
     'lookback: int = Field(60, ge=2, le=1000, json_schema_extra={"sweep": [20, 121, 20]})'),
    # Session 9 (h2, tests/mutation_report.md): strategies/entries.py mutants 121-213.
    ('strategies/entries.py', 'if room / step >= 2.0**53:  # beyond float precision every value is already a whole lot', 'if room / step >= 3.0**53:  # beyond float precision every value is already a whole lot'),
    ('strategies/entries.py', 'return min(shares, held + capped_quantity(equity, price, held, others, max_position, max_sector, 0.0, False, step))', 'return min(shares, held + capped_quantity(equity, price, held, others, max_position, max_sector, -1.0, False, step))'),
    ('strategies/entries.py', 'cash = cash if cash == cash else 0.0  # NaN cash counts as none', 'cash = cash if cash == cash else -1.0  # NaN cash counts as none'),
    ('strategies/entries.py', 'if position * side >= 0:', 'if position / side >= 0:'),
    ('strategies/entries.py', 'if position * side >= 0:', 'if position * side > 0:'),
    ('strategies/entries.py', 'if not available > 0.0 or not size > 0.0 or not free > 0.0:', 'if not available > -1.0 or not size > 0.0 or not free > 0.0:'),
    ('strategies/entries.py', 'if lots > 0:', 'if lots >= 0:'),
    ('strategies/entries.py', 'if not available > 0.0 or not size > 0.0 or not free > 0.0:', 'if not available > 0.0 or not size > 0.0 or not free >= 0.0:'),
    ('strategies/entries.py', 'if not available > 0.0 or not size > 0.0 or not free > 0.0:', 'if not available > 0.0 or not size > -1.0 or not free > 0.0:'),
    # Session 9 (lead, tests/mutation_report.md): strategies/entries.py mutants 214-254.
    # A room in (-1, 0] floors to at most 0 lots (LIMIT_ROUND_EPS < 1) and the last line clamps lots x step at 0.
    ('strategies/entries.py', 'if not room > 0.0:', 'if not room > -1.0:'),
    # As the recorded 2.0**52 / 3.0**53: past the threshold either path gives the room's lots (whole shares: the same
    # value; fractional lots: lots x step is the room within one ulp).
    ('strategies/entries.py', 'if room / step >= 2.0**53:  # beyond float precision every value is already a whole lot', 'if room - step >= 2.0**53:  # beyond float precision every value is already a whole lot'),
    # backtests/engine.py line 219 is recorded above; its copy=False lines are killed by test_mutants_engine's views test.
}
MIN_JUDGED = 5  # a sample this small says nothing: reported, not judged

_ARITH = {"Add", "Sub", "Mul", "Div"}
_BITS = {"BitOr", "BitAnd"}
_ORDER = {"Eq", "NotEq", "Lt", "LtE", "Gt", "GtE"}
_KEPT_COMPARISONS = {  # boundary, negation and direction: what a wrong rule looks like
    ("Lt", "LtE"), ("LtE", "Lt"), ("Gt", "GtE"), ("GtE", "Gt"),
    ("Lt", "GtE"), ("GtE", "Lt"), ("LtE", "Gt"), ("Gt", "LtE"), ("Eq", "NotEq"), ("NotEq", "Eq"),
    ("Lt", "Gt"), ("Gt", "Lt"), ("LtE", "GtE"), ("GtE", "LtE"), ("Is", "IsNot"), ("IsNot", "Is"),
}
_ANNOTATION = re.compile(r"(:|->)\s*[\w.\[\], ]+\|\s*[\w.\[\]]+\s*(=|,|\)|:|#|$)")
_DROPPED = {"core/VariableInserter", "core/VariableReplacer", "core/RemoveDecorator"}


def _order_key(spec: object) -> str:
    m = spec  # a cosmic-ray MutationSpec
    text = f"{SEED}:{m.definition_name}:{m.operator_name}:{m.occurrence}"  # type: ignore[attr-defined]
    return hashlib.sha256(text.encode()).hexdigest()


# numba's compile flags on a decorator or wrapper line (`@njit(cache=True, parallel=True)`,
# `njit(cache=True)(f)`): flipping one changes where the compiled code is kept or whether a `prange`
# runs on threads, never a result (this project's `prange` bodies each write only their own slots).
# Noise, as RemoveDecorator. Not `fastmath`: it may change the last digits.
_COMPILE_FLAG = re.compile(r"\b(njit|jit)\(([^()]*\b(cache|parallel|nogil)=(True|False))")
_FLAG_OPERATORS = {"core/ReplaceTrueWithFalse", "core/ReplaceFalseWithTrue"}


def compile_flag_only(operator: str, line: str) -> bool:
    """Whether a mutant only flips a numba compile flag on its line (`_COMPILE_FLAG`)."""
    return operator in _FLAG_OPERATORS and bool(_COMPILE_FLAG.search(line))


def kept_mutant(spec: object, lines: list[str]) -> bool:
    """Whether a mutant (a cosmic-ray MutationSpec on the module's `lines`) is run: a kept operator,
    not on a `# pragma: no mutate` line, not a compile flag, not `|` in an annotation."""
    operator: str = spec.operator_name  # type: ignore[attr-defined]
    line = lines[spec.start_pos[0] - 1]  # type: ignore[attr-defined]
    if not kept_operator(operator) or "pragma: no mutate" in line or compile_flag_only(operator, line):
        return False
    # `X | None` in an annotation: a string under `from __future__ import annotations`
    return not (operator.startswith("core/ReplaceBinaryOperator_BitOr") and _ANNOTATION.search(line))


def kept_operator(name: str) -> bool:
    if name in _DROPPED:
        return False
    if m := re.fullmatch(r"core/ReplaceBinaryOperator_(\w+?)_(\w+)", name):
        a, b = m.groups()
        return (a in _ARITH and b in _ARITH) or (a in _BITS and b in _BITS)
    if m := re.fullmatch(r"core/ReplaceComparisonOperator_(\w+?)_(\w+)", name):
        return m.groups() in _KEPT_COMPARISONS
    if m := re.fullmatch(r"core/ReplaceUnaryOperator_(\w+?)_(\w+)", name):
        return m.groups() in {("USub", "UAdd"), ("Delete", "USub"), ("Delete", "Not"), ("Invert", "Not"), ("Delete", "Invert")}
    return True


@dataclass
class Outcome:
    module: str
    total: int = 0
    run: int = 0
    killed: int = 0
    survivors: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    baseline_s: float = 0.0
    elapsed_s: float = 0.0
    note: str = ""
    ran_here: int = 0  # mutants this run tested (fewer than `run` when it re-ran survivors only)
    sha256: str = ""  # of the module's source, so a re-run knows it is the same code

    @property
    def score(self) -> float:
        return 100.0 * self.killed / self.run if self.run else float("nan")


def scratch_copy() -> Path:
    """The working tree's files (tracked and new, not ignored) copied to a scratch directory."""
    work = Path(tempfile.gettempdir()) / f"quantlake-mutate-{os.getuid()}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT, check=True, capture_output=True
    ).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, work / rel)
    return work


def _module_file(name: str, root: Path) -> str | None:
    """The project file (relative to `root`) a dotted module name imports, else None (third-party)."""
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if name and candidate.is_file():
            return candidate.relative_to(root).as_posix()
    return None


def imported_files(rel: str, root: Path) -> set[str]:
    """The project files a file imports anywhere in it (function-level imports too), statically:
    `import a.b`, `from a.b import c` (a.b, and a.b.c when it is a submodule), relative imports."""
    path = root / rel
    tree = ast.parse(path.read_text(), str(path))
    package = Path(rel).parent.parts  # a relative import's level 1 (a package's __init__ included)
    found: set[str | None] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(_module_file(alias.name, root) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = list(package[: len(package) - node.level + 1]) if node.level else []
            name = ".".join([*parts, *(node.module.split(".") if node.module else [])])
            found.add(_module_file(name, root))
            found.update(_module_file(f"{name}.{alias.name}" if name else alias.name, root) for alias in node.names)
    return {f for f in found if f is not None and f != rel}


@functools.cache
def _importers(root: Path) -> dict[str, set[str]]:
    """file -> the project files importing it directly (hidden folders such as .venv left out)."""
    importers: dict[str, set[str]] = {}
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"]
        for name in names:
            if name.endswith(".py"):
                rel = (Path(folder) / name).relative_to(root).as_posix()
                for imported in imported_files(rel, root):
                    importers.setdefault(imported, set()).add(rel)
    return importers


def stale_modules(module: str, root: Path) -> set[str]:
    """`module` and every project file that imports it, directly or through others: the files whose
    compiled functions may have the module's code compiled into them (numba inlines what it calls)."""
    importers = _importers(root)
    stale, todo = {module}, [module]
    while todo:
        for importer in importers.get(todo.pop(), set()) - stale:
            stale.add(importer)
            todo.append(importer)
    return stale


def seed_numba_cache(
    shared: Path, fresh: Path, stale: set[str], root: Path, functions: set[tuple[str, str]] | None = None, module: str = ""
) -> tuple[int, int]:
    """Hard-links (or copies) the baseline's numba cache `shared` into `fresh`, leaving out every entry
    of a `stale` file: (files seeded, files left out).

    numba keeps a function of `dir/mod.py` in `<cache>/<dir's name>_<hash of its path>/mod.<qualname>-<line>.*`
    and checks only that file's own source. An entry is left out when its folder's name and its module
    match a stale file's: the path's hash is not checked, so a same-named folder elsewhere loses its
    entries too (a recompile, never a stale kernel). Links are safe: numba writes a new file and
    renames it over the old name, never into an existing file.

    With `functions` (`stale_functions` of a mutant of `module`), `stale` is not read: an entry is left
    out when its function is among them (or is `module`'s, or its name is not understood)."""
    if functions is not None:  # the files the graph reaches (a file filling another's array need not import the module)
        stale = {rel for rel, _ in functions} | {module}
    gone = {((root / rel).parent.name, Path(rel).stem) for rel in stale}
    owners: dict[tuple[str, str], list[str]] = {}
    for rel in stale:
        owners.setdefault(((root / rel).parent.name, Path(rel).stem), []).append(rel)
    seeded = left_out = 0
    for src in shared.rglob("*"):
        if not src.is_file() or ".tmp." in src.name:
            continue
        folder = src.parent.relative_to(shared)
        owner = (folder.name.rsplit("_", 1)[0], src.name.split(".", 1)[0])
        if owner in gone and (functions is None or _entry_stale(owners[owner], src.name, module, functions, root)):
            left_out += 1
            continue
        dst = fresh / folder / src.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
        seeded += 1
    return seeded, left_out


# -- Per-function staleness: a cached entry is kept unless its function can reach the mutated code.
# A node is (project file, top-level name); (file, "*") stands for anything in the file. A node references
# what its statement names (calls, constants, defaults, decorators), resolved through the file's imports
# (relative and function-level ones too) to the defining file's node: numba compiles what a function
# calls into it and freezes the globals it reads, so nothing else can put another file's code in it.
Ref = tuple[str, str]
_project_file = functools.cache(_module_file)  # the tree does not change while a module's mutants run
_ANY = "*"
# Numba's extension API finds an implementation by the type it is for, not by a name a caller reads: a
# mutated statement using it falls back to whole files (`stale_modules`).
_BY_TYPE = re.compile(r"\b(overload\w*|intrinsic|lower_\w+|type_callable|typeof_impl|register_model|make_attribute_wrapper|jitclass|structref|generated_jit)\b")
# Names reached without being written in a statement: such a file's every node may use all of it.
_OPAQUE = re.compile(r"\b(globals|vars|exec|eval|__getattr__|setattr|import_module|__import__)\s*\(|\bsys\.modules\b|\bimport\s+\*")
_CACHE_ENTRY = re.compile(r"^[^.]+\.(?P<qualname>.+)-\d+\.py\d+")  # numba's <module>.<qualname>-<line>.pyXY...


@dataclass
class _FileNames:
    """A file's top-level names, the project modules bound to some of them, and whether it is opaque."""

    rel: str
    top: set[str]
    modules: dict[str, str]  # a top-level name bound only to a project module -> its dotted name
    opaque: bool


def _import_targets(node: ast.Import | ast.ImportFrom, rel: str, root: Path) -> list[tuple[str, Ref]]:
    """(the name an import binds, the node it binds it to) for a project module's import."""
    out: list[tuple[str, Ref]] = []
    if isinstance(node, ast.Import):
        for alias in node.names:
            bound = alias.asname or alias.name.split(".")[0]
            parts = alias.name.split(".")
            for i in range(1, len(parts) + 1):  # `import a.b` binds `a` and runs a and a.b
                if (f := _project_file(".".join(parts[:i]), root)) is not None:
                    out.append((bound, (f, _ANY)))
        return out
    package = Path(rel).parent.parts
    parts = list(package[: len(package) - node.level + 1]) if node.level else []
    name = ".".join([*parts, *(node.module.split(".") if node.module else [])])
    source = _project_file(name, root)
    for alias in node.names:
        sub = _project_file(f"{name}.{alias.name}" if name else alias.name, root)
        if sub is not None:
            out.append((alias.asname or alias.name, (sub, _ANY)))
        elif source is not None:
            out.append((alias.asname or alias.name, (source, _ANY if alias.name == "*" else alias.name)))
    return out


def _bound(stmt: ast.stmt) -> set[str]:
    """The top-level names a top-level statement binds (a compound one: any name stored in it)."""
    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return {stmt.name}
    names: set[str] = set()
    for node in ast.walk(stmt):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
            names.add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update(a.asname or a.name.split(".")[0] for a in node.names if a.name != "*")
    return names


def _file_names(rel: str, tree: ast.Module, text: str, root: Path) -> _FileNames:
    top: set[str] = set()
    modules: dict[str, str] = {}
    other: set[str] = set()
    for stmt in tree.body:
        top |= _bound(stmt) or {_statement_key(stmt)}
        if isinstance(stmt, ast.ImportFrom):
            package = Path(rel).parent.parts
            parts = list(package[: len(package) - stmt.level + 1]) if stmt.level else []
            name = ".".join([*parts, *(stmt.module.split(".") if stmt.module else [])])
            for alias in stmt.names:
                dotted = f"{name}.{alias.name}" if name else alias.name
                target = modules if _project_file(dotted, root) is not None else other
                target.setdefault(alias.asname or alias.name, dotted) if target is modules else other.add(alias.asname or alias.name)
        elif isinstance(stmt, ast.Import):
            for alias in stmt.names:
                if alias.asname and _project_file(alias.name, root) is not None:
                    modules.setdefault(alias.asname, alias.name)
                else:
                    other.add(alias.asname or alias.name.split(".")[0])
        else:
            other |= _bound(stmt)
    return _FileNames(rel, top, {k: v for k, v in modules.items() if k not in other}, bool(_OPAQUE.search(text)))


def _chain(node: ast.Attribute) -> tuple[ast.expr, list[str]]:
    attrs: list[str] = []
    base: ast.expr = node
    while isinstance(base, ast.Attribute):
        attrs.insert(0, base.attr)
        base = base.value
    return base, attrs


# Calls that do not change their arguments (wrappers, constructors): `njit(cache=True)(f)` changes no f.
_PURE_CALLS = {
    "njit", "jit", "vectorize", "guvectorize", "register_jitable", "partial", "TypeVar", "NamedTuple", "dataclass", "field",
    "frozenset", "tuple", "set", "list", "dict", "len", "float", "int", "str", "bool", "array", "asarray", "cache", "lru_cache",
    "compile", "getLogger", "Path", "Field", "ConfigDict",
}  # fmt: skip


def _callee(call: ast.Call) -> str:
    func: ast.expr = call.func
    while isinstance(func, ast.Call):
        func = func.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def _resolve(node: ast.expr, names: _FileNames, root: Path, handled: set[int] | None = None) -> Ref | None:
    """The project node a name or a `module.attr` chain stands for, else None."""
    if isinstance(node, ast.Name):
        return (names.rel, node.id) if node.id in names.top else None
    if not isinstance(node, ast.Attribute):
        return None
    base, attrs = _chain(node)
    if not isinstance(base, ast.Name) or base.id not in names.modules:
        return _resolve(base, names, root) if isinstance(base, ast.Name) else None
    if handled is not None:
        handled.update(id(n) for n in (base, *_chain_nodes(node)))
    dotted = names.modules[base.id]
    for attr in attrs:
        if _project_file(f"{dotted}.{attr}", root) is None:
            return (_project_file(dotted, root) or names.rel, attr)
        dotted = f"{dotted}.{attr}"
    return (_project_file(dotted, root) or names.rel, _ANY)


def _statement_refs(stmt: ast.stmt, names: _FileNames, root: Path) -> tuple[set[Ref], set[Ref]]:
    """(what a top-level statement references, what else it may change): every project node it names
    (`module.attr` chains resolved to the attribute's file, imports anywhere in it to what they import);
    code run at import may change what it assigns into (`x.a = `, `x[k] = `), calls a method of, or
    passes to a call other than a known wrapper; a def, what its decorators and defaults may change."""
    refs: set[Ref] = set()
    handled: set[int] = set()
    for node in ast.walk(stmt):
        if isinstance(node, ast.Import | ast.ImportFrom):
            refs.update(target for _, target in _import_targets(node, names.rel, root))
        elif isinstance(node, ast.Attribute | ast.Name) and id(node) not in handled and (ref := _resolve(node, names, root, handled)) is not None:
            refs.add(ref)
    if names.opaque:
        refs.add((names.rel, _ANY))
    changes = _runs_changes(stmt, names, root)
    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):  # `global x` in its body: it assigns x
        changes.update((names.rel, n) for node in ast.walk(stmt) if isinstance(node, ast.Global) for n in node.names)
    return refs, changes


def _runs_changes(stmt: ast.stmt, names: _FileNames, root: Path) -> set[Ref]:
    """What the code a top-level statement runs at import may change (a def's or method's body runs later)."""
    runs: list[ast.AST] = [stmt]
    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
        runs = [*stmt.decorator_list, *stmt.args.defaults, *(d for d in stmt.args.kw_defaults if d is not None)]
    elif isinstance(stmt, ast.ClassDef):
        body = [s for s in stmt.body if not isinstance(s, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)]
        runs = [*stmt.decorator_list, *stmt.bases, *(k.value for k in stmt.keywords), *body]
        nested: set[Ref] = set()
        for s in stmt.body:
            if isinstance(s, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                nested |= _runs_changes(s, names, root)
    changes: set[Ref] = set()
    for part in runs:
        for node in ast.walk(part):
            touched: list[ast.expr] = []
            if isinstance(node, ast.Attribute | ast.Subscript) and isinstance(node.ctx, ast.Store | ast.Del):
                touched.append(node.value)
            elif isinstance(node, ast.Call):
                if isinstance(node.func, ast.Attribute):
                    touched.append(node.func.value)  # x.append(...), module.setup(...)
                if _callee(node) not in _PURE_CALLS:
                    touched += [*node.args, *(k.value for k in node.keywords)]
            elif isinstance(node, ast.Global):
                changes.update((names.rel, n) for n in node.names)
            for expr in touched:
                while isinstance(expr, ast.Subscript | ast.Starred):
                    expr = expr.value
                if (ref := _resolve(expr, names, root)) is not None:
                    changes.add(ref)
    return changes | (nested if isinstance(stmt, ast.ClassDef) else set())


def _chain_nodes(node: ast.Attribute) -> list[ast.Attribute]:
    out: list[ast.Attribute] = []
    current: ast.expr = node
    while isinstance(current, ast.Attribute):
        out.append(current)
        current = current.value
    return out


def _statement_key(stmt: ast.stmt) -> str:
    return f"<line {stmt.lineno}>"  # the node of a statement that binds no name


@dataclass
class _Graph:
    names: dict[str, _FileNames]
    refs: dict[Ref, set[Ref]]  # node -> the nodes it references
    users: dict[Ref, set[Ref]] = field(default_factory=dict)  # node -> the nodes referencing it
    imports: dict[Ref, set[Ref]] = field(default_factory=dict)  # a name an import binds -> what it imports

    def origins(self, ref: Ref) -> set[Ref]:
        """`ref` and, when an import binds it, what it was imported from (through re-exports too): an
        object changed in place through an imported name is the defining file's object."""
        out, todo = {self.node(ref)}, [self.node(ref)]
        while todo:
            for target in self.imports.get(todo.pop(), set()):
                if (node := self.node(target)) not in out:
                    out.add(node)
                    todo.append(node)
        return out

    def node(self, ref: Ref) -> Ref:
        """`ref` as a node of the graph: a name its file does not define at top level is the whole file."""
        f, name = ref
        return ref if f in self.names and (name == _ANY or name in self.names[f].top) else (f, _ANY)


def _add_statement(graph: _Graph, rel: str, stmt: ast.stmt, root: Path) -> None:
    names = graph.names[rel]
    if isinstance(stmt, ast.Import | ast.ImportFrom):  # each name it binds is what it imports, no more
        for bound in _bound(stmt):
            graph.refs.setdefault((rel, bound), set())
        for bound, target in _import_targets(stmt, rel, root):
            graph.refs[(rel, bound)].add(target)
            graph.imports.setdefault((rel, bound), set()).add(target)
        return
    refs, changes = _statement_refs(stmt, names, root)
    for name in _bound(stmt) or {_statement_key(stmt)}:
        graph.refs.setdefault((rel, name), set()).update(refs)
    for changed in {o for c in changes for o in graph.origins(c)}:  # what it changes depends on it
        graph.refs.setdefault(graph.node(changed), set()).update(refs | {(rel, n) for n in _bound(stmt) or {_statement_key(stmt)}})


@functools.cache
def _call_graph(root: Path) -> _Graph:
    """Every top-level node of the project's files (hidden folders left out) and what it references."""
    trees: dict[str, ast.Module] = {}
    graph = _Graph({}, {})
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"]
        for name in files:
            if name.endswith(".py"):
                rel = (Path(folder) / name).relative_to(root).as_posix()
                text = (root / rel).read_text()
                try:
                    trees[rel] = ast.parse(text, rel)
                except SyntaxError:
                    continue
                graph.names[rel] = _file_names(rel, trees[rel], text, root)
    for imports in (True, False):  # every file's imports first: what a statement changes is followed through them
        for rel, tree in trees.items():
            for stmt in tree.body:
                if isinstance(stmt, ast.Import | ast.ImportFrom) == imports:
                    _add_statement(graph, rel, stmt, root)
    for rel, names in graph.names.items():
        graph.refs[(rel, _ANY)] = {(rel, n) for n in names.top}
    for node, refs in graph.refs.items():
        for ref in refs:
            graph.users.setdefault(graph.node(ref), set()).add(node)
    return graph


def changed_nodes(module: str, original: str, mutated: str, root: Path) -> set[Ref] | None:
    """The nodes of `module` a mutation changes: the top-level statements whose code differs (line
    numbers aside), by the names they bind and what they may change. None when that cannot be told
    (statements added or removed, a file reached by names no statement shows, numba's extension API)."""
    try:
        before, after = ast.parse(original).body, ast.parse(mutated).body
    except SyntaxError:
        return None
    graph = _call_graph(root)
    if len(before) != len(after) or module not in graph.names or graph.names[module].opaque:
        return None
    changed: set[Ref] = set()
    for a, b in zip(before, after, strict=True):
        if ast.dump(a) == ast.dump(b):
            continue
        if _BY_TYPE.search(ast.unparse(a)) or _BY_TYPE.search(ast.unparse(b)):
            return None
        for stmt in (a, b):
            changed |= {(module, n) for n in _bound(stmt) or {_statement_key(stmt)}}
            changed |= {o for r in _statement_refs(stmt, graph.names[module], root)[1] for o in graph.origins(r)}
    return changed


def stale_functions(module: str, original: str, mutated: str, root: Path) -> set[Ref] | None:
    """Every node that can reach what the mutation changed (`changed_nodes`), through the references
    of the whole tree; None when the change cannot be placed (then whole files: `stale_modules`)."""
    start = changed_nodes(module, original, mutated, root)
    if start is None:
        return None
    graph = _call_graph(root)
    reached, todo = set(start) | {(module, _ANY)}, [*start, (module, _ANY)]
    while todo:
        for user in graph.users.get(todo.pop(), set()) - reached:
            reached.add(user)
            todo.append(user)
    return reached


def _entry_stale(owners: list[str], entry: str, module: str, functions: set[Ref], root: Path) -> bool:
    """Whether a cache file of a function defined in one of `owners` (the files its folder and module
    name could be) may embed the mutated code: its top-level function (a method's class, a nested
    function's outermost one) reached, or the entry not understood."""
    match = _CACHE_ENTRY.match(entry)
    if match is None or module in owners:
        return True
    graph = _call_graph(root)
    top = match.group("qualname").split(".")[0]
    return any(graph.node((rel, top)) in functions for rel in owners)


# Imported once by the fork runner's parent (third-party only: a project module imported here would be
# the unmutated one in every child).
PRELOAD = ("numpy", "polars", "pandas", "pyarrow", "pydantic", "numba", "pytest", "pytest_timeout", "hypothesis", "exchange_calendars", "great_expectations", "dagster")


def module_tests(module: str) -> list[str]:
    """The module's pytest arguments; MUTATE_BEFORE=1 leaves out the test_mutants_* files (written
    for earlier survivors), to score the tests as they were before them."""
    tests = MODULES[module]
    if os.environ.get("MUTATE_BEFORE"):
        tests = [t for t in tests if "/test_mutants_" not in t]
    return tests


def pytest_args(tests: list[str]) -> list[str]:
    # No per-test timeout (pyproject's 600 s): a test still compiling on a loaded machine would fail by
    # pytest-timeout and count as a kill unseen; the runner's own limit ends a hang as "timeout", an error
    # the report lists (counted caught, as a mutant that loops forever is).
    return ["-x", "-q", "-p", "no:cacheprovider", "-p", "pytest_timeout", "-o", "timeout=0", *tests]


def preload() -> None:
    import importlib

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            continue


class _FirstFailure:
    """A pytest plugin writing how the first failing test failed: its phase, then "AssertionError" when
    what it raised is one (an `assert`, pytest.approx, a hypothesis falsifying example), else the type."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.raised: dict[tuple[str, str], str] = {}

    def pytest_runtest_makereport(self, item: object, call: object) -> None:
        excinfo = getattr(call, "excinfo", None)
        if excinfo is not None:
            kind = "AssertionError" if issubclass(excinfo.type, AssertionError) else excinfo.type.__qualname__
            self.raised[(getattr(item, "nodeid", ""), getattr(call, "when", ""))] = kind

    def pytest_runtest_logreport(self, report: object) -> None:
        if getattr(report, "failed", False) and not self.path.exists():
            when = getattr(report, "when", "")
            self.path.write_text(f"{when}\n{self.raised.get((getattr(report, 'nodeid', ''), when), '')}")


def failed_on_an_assertion(failure_log: Path) -> bool:
    """Whether the first failure `_FirstFailure` wrote was a test's call failing an assertion (not an
    exception from the code, a fixture, a warning turned error or a timeout)."""
    if not failure_log.exists():
        return False
    when, _, kind = failure_log.read_text().partition("\n")
    return when == "call" and kind == "AssertionError"


def run_forked(
    tests: list[str],
    timeout: float,
    log_path: Path,
    numba_cache: str | None = None,
    prepare: Callable[[], None] | None = None,
    env: dict[str, str] | None = None,
    failure_log: Path | None = None,
) -> tuple[str, str]:
    """pytest on `tests` in a forked child of this (preloaded) process, with `env` set there and after
    `prepare()`: ("passed" | "failed" | "timeout" | "error", its output). "failed" is any non-zero exit
    but 5 (no tests collected). With `failure_log`, the first failure's phase and crash line go there."""
    if failure_log is not None:
        failure_log.unlink(missing_ok=True)
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 3
        try:
            fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            if numba_cache is not None:
                os.environ["NUMBA_CACHE_DIR"] = numba_cache
            os.environ.update(env or {})
            if (numba_cache is not None or env) and "numba" in sys.modules:
                from numba.core import config

                config.reload_config()  # numba read the variables when the parent imported it
            if prepare is not None:
                prepare()
            import pytest

            plugins = [_FirstFailure(failure_log)] if failure_log is not None else []
            code = int(pytest.main(pytest_args(tests), plugins=plugins))
        except BaseException:  # noqa: BLE001 - whatever happens, the child must exit here
            import traceback

            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    deadline = time.monotonic() + timeout
    status = None
    while status is None:
        done, raw = os.waitpid(pid, os.WNOHANG)
        if done:
            status = raw
        elif time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            return "timeout", log_path.read_text(errors="replace")[-3000:]
        else:
            time.sleep(0.02)
    output = log_path.read_text(errors="replace")[-3000:]
    code = os.waitstatus_to_exitcode(status)
    if code == 0:
        return "passed", output
    return ("error" if code == 5 else "failed"), output


def test_command(tests: list[str]) -> str:
    import shlex

    # Plugins are not autoloaded (langsmith's and hypothesis' cost a second or two per mutant);
    # pytest-timeout is loaded by name because pyproject sets its `timeout`.
    return shlex.join([sys.executable, "-m", "pytest", *pytest_args(tests)])


_CO_NEWLOCALS = 0x2  # set on functions (and comprehensions, lambdas), not on module or class bodies


def _shallow_key(code: CodeType) -> tuple[object, ...]:
    """What a code object does, its nested code objects named only (line numbers left out)."""
    consts = tuple(("<code>", c.co_qualname) if isinstance(c, CodeType) else (type(c).__name__, repr(c)) for c in code.co_consts)
    return (code.co_code, consts, code.co_names, code.co_varnames, code.co_freevars, code.co_cellvars, code.co_flags,
            code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount)  # fmt: skip


def _nested(code: CodeType) -> list[CodeType]:
    return [c for c in code.co_consts if isinstance(c, CodeType)]


def _full_key(code: CodeType) -> tuple[object, ...]:
    return (_shallow_key(code), tuple(_full_key(c) for c in _nested(code)))


def _changed_functions(original: CodeType, mutated: CodeType) -> list[tuple[CodeType, CodeType]] | None:
    """The outermost functions whose code the mutation changed, as (original, mutated) pairs; None
    when it changed module- or class-level code (what runs at import: defaults, constants, bodies)."""
    if _shallow_key(original) != _shallow_key(mutated):
        return None
    pairs = list(zip(_nested(original), _nested(mutated), strict=True))
    changed: list[tuple[CodeType, CodeType]] = []
    for o, m in pairs:
        if _full_key(o) == _full_key(m):
            continue
        if o.co_flags & _CO_NEWLOCALS:
            changed.append((o, m))
        else:  # a class body: its methods may be patched, its own statements may not
            inner = _changed_functions(o, m)
            if inner is None:
                return None
            changed += inner
    return changed


_FUNCTIONS: dict[str, dict[tuple[str, int], list[FunctionType]]] = {}


def _live_functions(module: ModuleType, code: CodeType) -> list[FunctionType]:
    """The imported function objects `code` was compiled for (same qualified name and first line in
    the module's file), found among all live objects: lambdas in tables and decorated functions too."""
    filename = module.__file__ or ""
    if filename not in _FUNCTIONS:
        import gc

        index: dict[tuple[str, int], list[FunctionType]] = {}
        for obj in gc.get_objects():
            if isinstance(obj, FunctionType) and obj.__code__.co_filename == filename:
                index.setdefault((obj.__code__.co_qualname, obj.__code__.co_firstlineno), []).append(obj)
        _FUNCTIONS[filename] = index
    found = _FUNCTIONS[filename].get((code.co_qualname, code.co_firstlineno), [])
    # One definition (however many function objects share its code), or it is not safe to patch.
    return found if len({id(f.__code__) for f in found}) == 1 and _full_key(found[0].__code__) == _full_key(code) else []


def code_patches(module: ModuleType, path: Path, original: str, mutated: str) -> list[tuple[FunctionType, CodeType]] | None:
    """How to run a mutant without re-importing anything: the live functions whose `__code__` to
    replace by the mutated file's. None when that is not the same program (a change at import
    time, a function not found alive or defined twice on one line)."""
    try:
        filename = module.__file__ or str(path)
        changed = _changed_functions(compile(original, filename, "exec"), compile(mutated, filename, "exec"))
    except (SyntaxError, ValueError):
        return None
    if not changed:
        return None
    patches = []
    for o, m in changed:
        live = _live_functions(module, o)
        if not live or len(live[0].__code__.co_freevars) != len(m.co_freevars):
            return None
        patches += [(f, m) for f in live]
    return patches


def _apply(patches: list[tuple[FunctionType, CodeType]]) -> None:
    for function, code in patches:
        function.__code__ = code


def _forget_project(work: Path) -> None:
    """Drops every module imported from the scratch copy, so the next import reads the files."""
    root = str(work)
    for name, mod in list(sys.modules.items()):
        if (getattr(mod, "__file__", None) or "").startswith(root):
            del sys.modules[name]


def _mutant_outcome(
    item: object,
    tests: list[str],
    timeout: float,
    work: Path,
    numba_cache: str | None,
    live: ModuleType | None,
    env: dict[str, str] | None = None,
    failure_log: Path | None = None,
) -> tuple[str, str, str]:
    """Applies one mutant in the scratch copy, runs `tests`, restores the file: (kind, output, diff)
    with kind "killed", "survived", "error" (could not run: counted as caught) or "none" (no mutant).

    With `live` (the module, imported unmutated with its tests in this process), a mutant inside a
    function runs by swapping that function's code in a forked child (`code_patches`): no import at
    all. Any other mutant runs on a fresh import of the mutated file (and, with MUTATE_CONFIRM=1,
    every survivor again, to rule out a survival only patching allows)."""
    from cosmic_ray.mutating import mutate_and_test
    from cosmic_ray.plugins import get_operator
    from cosmic_ray.work_item import WorkerOutcome

    if os.environ.get("MUTATE_RUNNER", "fork") == "subprocess":
        if numba_cache is not None:
            os.environ["NUMBA_CACHE_DIR"] = numba_cache
        result = mutate_and_test(item.mutations, test_command(tests), timeout)  # type: ignore[attr-defined]
        if result.worker_outcome == WorkerOutcome.NO_TEST:
            return "none", "", ""
        if result.worker_outcome != WorkerOutcome.NORMAL:
            return "error", result.output or "", result.diff or ""
        return ("killed" if result.is_killed else "survived"), result.output or "", result.diff or ""
    spec = item.mutations[0]  # type: ignore[attr-defined]
    operator = get_operator(spec.operator_name)(**getattr(spec, "operator_args", {}))
    path = Path(spec.module_path)
    stamp = path.stat()
    try:
        return _fork_mutant(path, operator, spec.occurrence, tests, timeout, work, numba_cache, live, env, failure_log)
    finally:
        # The restored file gets its original time back: numba's on-disk cache of the module's
        # unmutated kernels (keyed by the file's time and size) stays valid for the next mutant.
        os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))


def _fork_mutant(
    path: Path,
    operator: object,
    occurrence: int,
    tests: list[str],
    timeout: float,
    work: Path,
    numba_cache: str | None,
    live: ModuleType | None,
    env: dict[str, str] | None = None,
    failure_log: Path | None = None,
) -> tuple[str, str, str]:
    from cosmic_ray.mutating import use_mutation

    with use_mutation(path, operator, occurrence) as (original, mutated):
        if mutated is None:
            return "none", "", ""
        diff = "\n".join(difflib.unified_diff(original.splitlines(), mutated.splitlines(), str(path), str(path), lineterm=""))
        patches = code_patches(live, path, original, mutated) if live is not None else None
        status = ""
        if patches is not None:
            status, output = run_forked(tests, timeout, work / "mutant.log", numba_cache, lambda: _apply(patches), env, failure_log)
        if status == "" or (status == "passed" and os.environ.get("MUTATE_CONFIRM")):
            # No patch (or, with MUTATE_CONFIRM, a survivor to confirm): a fresh import of the mutated
            # file. Patching can only err towards survival (a call made at import time runs unmutated).
            prepare = (lambda: _forget_project(work)) if live is not None else None
            status, output = run_forked(tests, timeout, work / "mutant.log", numba_cache, prepare, env, failure_log)
    if status == "passed":
        return "survived", output, diff
    if status == "failed":
        return "killed", output, diff
    return "error", f"{status}\n{output}", diff


def run_module(module: str, work: Path, limit_s: float) -> Outcome:
    """One module's mutants, in a process of its own (what it imports dies with it)."""
    if os.environ.get("MUTATE_RUNNER", "fork") == "subprocess":
        return _run_module_here(module, work, limit_s)
    outcome = _in_child(lambda: asdict(_run_module_here(module, work, limit_s)), work / "outcome.json", math.inf)
    if not isinstance(outcome, dict):
        return Outcome(module, note="the module's worker process failed (see its output)")
    return Outcome(**outcome)


def _import_tests(tests: list[str], work: Path) -> None:
    """Imports the tests (and through them the project's modules) into this process, unmutated."""
    import pytest

    saved = os.dup(1), os.dup(2)
    fd = os.open(work / "collect.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    try:
        pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", "-p", "pytest_timeout", *tests])
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)


def _polars_works_in_a_fork(timeout: float = 20.0) -> bool:
    """Whether a forked child can still run polars: a process that ran polars before forking hands
    its children a thread pool whose threads they do not have, and they hang on their first query.
    A hang is told by the timeout (a 50,000-row group-by takes milliseconds; a slow answer only makes
    the runner take the slower, safe path)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            import polars as pl

            frame = pl.DataFrame({"g": [i % 7 for i in range(50_000)], "x": [float(i) for i in range(50_000)]})
            code = 0 if frame.group_by("g").agg(pl.col("x").sum()).sort("g").height == 7 else 1
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status) == 0
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return False


def _thread_count() -> int:
    """This process's threads, native ones too (polars' pool is not Python's `threading`); 0 where unknown."""
    task = Path("/proc/self/task")
    return len(os.listdir(task)) if task.is_dir() else 0


def _is_test_file(filename: str) -> bool:
    name = Path(filename).name
    return name.startswith("test_") or name == "conftest.py"


def _in_child(task: Callable[[], object], result: Path, timeout: float = 1800.0) -> object | None:
    """`task()` in a forked child (what it imports dies with it): its result through JSON in `result`,
    None when it failed or outlived `timeout` seconds."""
    result.unlink(missing_ok=True)
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            result.write_text(json.dumps(task()))
            code = 0
        except BaseException:  # noqa: BLE001 - whatever happens, the child must exit here
            import traceback

            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    deadline = time.monotonic() + timeout
    while not os.waitpid(pid, os.WNOHANG)[0]:
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            return None
        time.sleep(0.05)
    return json.loads(result.read_text()) if result.exists() else None


def _collected(tests: list[str], work: Path) -> tuple[list[str], bool]:
    """(the project modules, test files aside, that collecting `tests` imports, in import order; whether a
    fork still runs polars after the collection: not when it started a thread, else a fork tells). Run in a probe child."""
    before = _thread_count()
    _import_tests(tests, work)
    root = str(work)
    modules = [
        name for name, mod in list(sys.modules.items())
        if (f := getattr(mod, "__file__", None) or "").startswith(root) and not _is_test_file(f) and name != "__main__"
    ]  # fmt: skip
    return modules, _thread_count() <= before and _polars_works_in_a_fork()


def _fork_safe_prefix(modules: list[str]) -> list[str]:
    """The longest prefix of `modules` whose imports start no thread (polars' pool, or any other a forked
    child would lack; the worker checks the prefix again with a fork running polars). Run in a probe child:
    the import that starts one cannot be undone."""
    import importlib

    safe: list[str] = []
    for name in modules:
        before = _thread_count()
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a module the probe cannot import by name is left to the children
            break
        if _thread_count() > before:
            break
        safe.append(name)
    return safe


def import_live(module: str, tests: list[str], work: Path) -> tuple[ModuleType | None, str]:
    """Imports into this worker, unmutated, what its forked children can share, and returns the mutated
    module's live object (None: each child imports it fresh) and a note for the report.

    Normally that is the tests and, through them, the project: a mutant inside a function is then a
    swap of that function's code in the child, no import at all. polars does not survive that: a process
    that ran a polars query hands its forked children a thread pool whose threads they lack, and they hang
    on their first query (POLARS_MAX_THREADS=1 does not help: a pool of one is still a thread the child
    lacks). When collecting the tests runs one (tests/lake/test_validation.py builds
    `pl.lit(datetime(..., tzinfo=UTC))` at import, which starts the pool), a probe child finds the project
    modules the collection imports and the prefix of them whose imports start no thread; the worker
    imports that prefix (the mutated module among it: still live, still patched), and each mutant's child
    collects the test files itself, so its polars pool is its own. The mutated module's own import
    starting a thread: the worker imports nothing, each child imports everything (still forked). Only
    when a fork cannot run polars even then (never seen): fresh interpreters, as before."""
    name = module.removesuffix(".py").replace("/", ".")
    probe = _in_child(lambda: _collected(tests, work), work / "probe.json")
    # Collected without running polars (or the probe failed: the tests' import is checked below, as before).
    unsafe: list[str] = [str(m) for m in probe[0]] if isinstance(probe, list) and not probe[1] else []
    if not unsafe:
        _import_tests(tests, work)
        live, note = sys.modules.get(name), ""
    else:
        import importlib

        found = _in_child(lambda: _fork_safe_prefix(unsafe), work / "probe.json")
        prefix = [str(m) for m in found] if isinstance(found, list) and name in found else []
        for imported in prefix:
            importlib.import_module(imported)
        live = sys.modules.get(name) if prefix else None
        test_files = sorted({t.split("::")[0] for t in tests if t.split("::")[0].endswith(".py")})
        note = (
            f"collecting the tests runs polars: the worker imported {len(prefix)} of the {len(unsafe)} project modules they import "
            f"(no thread started), each mutant's forked child collects {', '.join(test_files)} itself"
        )
    if not _polars_works_in_a_fork():
        # Something imported here ran polars: every forked child would hang. Fresh interpreters.
        os.environ["MUTATE_RUNNER"] = "subprocess"
        return None, "the tests' import runs polars: each mutant ran in a fresh interpreter"
    return live, note


# A numba module's mutants run interpreted first (`interpreted_run`): numba's decorators return the plain
# functions, and numpy's RuntimeWarnings are ignored (a compiled kernel wraps uint64 products and divides
# by zero without a warning; pytest turns warnings into errors).
INTERPRETED_ENV = {"NUMBA_DISABLE_JIT": "1"}
INTERPRETED_ARGS = ["-W", "ignore::RuntimeWarning"]


def interpreted_run(module: str, tests: list[str], work: Path, out: Outcome) -> tuple[list[str], float] | None:
    """(pytest arguments, timeout) to run a numba module's mutants interpreted first, or None: compiled only.

    Sound because interpretation only ever settles a mutant as killed, and only by a test's assertion:
    the kernels' arithmetic is the same IEEE float64 and wrapping int64 and uint64 numpy scalar
    arithmetic either way, so a mutant whose values fail an assertion interpreted computes the same
    values compiled. Where the two differ, the failure is not an assertion and the mutant is run compiled:
    an index past the end (an IndexError interpreted, an unchecked read compiled), a division by zero
    (numba's Python error model raises where a numpy scalar warns), a type numba cannot compile, a
    timeout. Every survivor is run compiled too, so none is an artefact of interpretation (numba may
    refuse a mutant that Python runs). Used only when the module's tests pass interpreted, within the time
    the compiled baseline took (which compiles every kernel they touch): else (or MUTATE_NUMBA_INTERPRET=0,
    or fresh interpreters) compiled only, as before."""
    if module not in FRESH_NUMBA_CACHE or os.environ.get("MUTATE_NUMBA_INTERPRET", "auto") == "0":
        return None
    if os.environ.get("MUTATE_RUNNER", "fork") != "fork":
        return None
    args = [*tests, *INTERPRETED_ARGS]
    started = time.monotonic()
    empty = str(work / ".numba_cache" / "baseline-interpreted")
    status, _ = run_forked(args, max(out.baseline_s, 60.0), work / "baseline_interpreted.log", empty, env=INTERPRETED_ENV)
    took = time.monotonic() - started
    shutil.rmtree(empty, ignore_errors=True)
    out.baseline_s += took
    if status != "passed":
        out.note = f"interpreted baseline {status} in {took:.0f} s (compiled {out.baseline_s - took:.0f} s): compiled only"
        return None
    out.note = f"interpreted first (NUMBA_DISABLE_JIT=1; baseline {took:.0f} s, compiled {out.baseline_s - took:.0f} s)"
    return args, 3 * took + 30


def _run_module_here(module: str, work: Path, limit_s: float) -> Outcome:
    from cosmic_ray.commands.init import init
    from cosmic_ray.work_db import WorkDB, use_db

    out = Outcome(module)
    tests = module_tests(module)
    numba_root = work / ".numba_cache"
    os.environ["NUMBA_CACHE_DIR"] = str(numba_root / "shared")
    started = time.monotonic()
    live = None
    # Compiled modules are never patched: numba compiles from the source, not from `__code__`.
    if os.environ.get("MUTATE_RUNNER", "fork") == "fork" and module not in FRESH_NUMBA_CACHE:
        live, out.note = import_live(module, tests, work)
    if os.environ.get("MUTATE_RUNNER", "fork") == "subprocess":
        from cosmic_ray.testing import run_tests
        from cosmic_ray.work_item import TestOutcome

        outcome, output = run_tests(test_command(tests), 1800)
        status = "passed" if outcome == TestOutcome.SURVIVED else "failed"
    else:
        status, output = run_forked(tests, 1800, work / "baseline.log", str(numba_root / "shared"))
    out.baseline_s = time.monotonic() - started
    if status != "passed":
        out.note = "baseline tests fail: not mutated"
        out.errors.append(output[-3000:])
        return out
    timeout = 3 * out.baseline_s + 30
    interpreted = interpreted_run(module, tests, work, out)

    db_path = work / f"{module.replace('/', '_')}.sqlite"
    with use_db(str(db_path), WorkDB.Mode.create) as db:
        init([Path(module)], db, {})
        lines = (work / module).read_text().splitlines()
        items = [item for item in db.pending_work_items if kept_mutant(item.mutations[0], lines)]
    # A pseudo-random order keyed by each mutant alone: a time-limited run is a random sample, and
    # the same mutant keeps its place when the module's other lines or the filter change.
    items.sort(key=lambda i: _order_key(i.mutations[0]))
    out.total = len(items)
    source = (work / module).read_text()
    out.sha256 = hashlib.sha256(source.encode()).hexdigest()
    if (skip := int(os.environ.get("MUTATE_SKIP", "0"))) and not os.environ.get("MUTATE_RERUN"):
        # A time-limited run's sample continued: the first `skip` in the hash order ran before.
        items = items[skip:]
        out.note = "; ".join(filter(None, [out.note, f"the first {skip} mutants in the hash order skipped (MUTATE_SKIP: run before)"]))
    if os.environ.get("MUTATE_RERUN") and (before := previous_survivors(module, out.sha256)) is not None:
        # Same source, tests only added: what was killed stays killed; only the survivors run again.
        killed, run, total, diffs = before
        items = [i for i in items if _diff_of(i, source, Path(module)) in diffs]
        found = len(items)
        # A survivor recorded as equivalent survives again by definition: listed, not re-run (a numba
        # module's survivor costs a full recompile of the kernels its tests touch).
        for item in [i for i in items if is_equivalent(module, "\n" + _diff_of(i, source, Path(module)))]:
            spec = item.mutations[0]  # type: ignore[attr-defined]
            out.survivors.append(f"line {spec.start_pos[0]} ({spec.definition_name or 'module'}): {spec.operator_name}\n{_diff_of(item, source, Path(module))}")
            items.remove(item)
        rerun = f"re-ran the {len(items)} survivors of the last run ({killed} killed of {run}) on the same source"
        rerun += f", {found - len(items)} recorded equivalent not re-run" if found > len(items) else ""
        if found != len(diffs) or total != out.total:
            rerun += f" (found {found} of {len(diffs)} survivors, {out.total} of {total} mutants)"
        out.note = "; ".join(filter(None, [out.note, rerun]))
        out.run, out.killed = run - len(items), killed
    deadline = started + limit_s
    # What a mutant's own numba cache starts from: the baseline's, less what may embed the module.
    # Per function (`stale_functions`); MUTATE_NUMBA_SEED=files leaves out whole files (`stale_modules`),
    # MUTATE_NUMBA_SEED=0 starts each from empty (everything recompiled: the old, slow way).
    stale = stale_modules(module, work) if os.environ.get("MUTATE_NUMBA_SEED", "1") != "0" else None
    settled_interpreted = rechecked = 0
    for item in items:
        if time.monotonic() > deadline:
            out.note = "; ".join(filter(None, [out.note, f"time limit {limit_s:.0f} s: a random sample of {out.run} of {out.total} mutants ran"]))
            break
        fresh = str(numba_root / item.job_id) if module in FRESH_NUMBA_CACHE else None
        seeded = kind = ""
        if interpreted is not None and fresh is not None:
            # Interpreted first: only a failed assertion settles it; anything else is run compiled below.
            empty = f"{fresh}-interpreted"  # a ufunc would still compile: never into the shared cache
            kind, output, diff = _mutant_outcome(item, interpreted[0], interpreted[1], work, empty, live, INTERPRETED_ENV, work / "failure.txt")
            shutil.rmtree(empty, ignore_errors=True)
            if kind == "killed" and failed_on_an_assertion(work / "failure.txt"):
                settled_interpreted += 1
                seeded = " interpreted"
            elif kind == "survived" and is_equivalent(module, "\n" + diff):
                seeded = " interpreted: recorded equivalent (EQUIVALENT), not re-checked compiled"  # as MUTATE_RERUN lists them
            elif kind != "none":
                why = "survived" if kind == "survived" else f"{kind}, not on an assertion"
                kind, seeded = "", f" interpreted: {why}, re-checked compiled;"
                rechecked += 1
        if kind == "":
            if fresh is not None and stale is not None:
                functions = _mutant_functions(item, module, source, work) if os.environ.get("MUTATE_NUMBA_SEED") != "files" else None
                kept, gone = seed_numba_cache(numba_root / "shared", Path(fresh), stale, work, functions, module)
                seeded += f" cache {kept} kept, {gone} left out{'' if functions is not None else ' (whole files)'}"
            kind, output, diff = _mutant_outcome(item, tests, timeout, work, fresh, live)
        if fresh is not None:
            shutil.rmtree(fresh, ignore_errors=True)
        if kind == "none":
            out.total -= 1
            continue
        out.run += 1
        out.ran_here += 1
        spec = item.mutations[0]
        where = f"line {spec.start_pos[0]} ({spec.definition_name or 'module'}): {spec.operator_name}"
        if kind == "error":
            out.errors.append(f"{where}\n{output[-1500:]}")
            out.killed += 1  # the mutant could not run: counted as caught, listed under errors
        elif kind == "killed":
            out.killed += 1
        else:
            out.survivors.append(f"{where}\n{diff}")
        print(f"  {module}: {out.run}/{out.total} run, {len(out.survivors)} survived", end="\r", flush=True)
        with (work / "progress.log").open("a") as progress:  # one line a mutant, for `tail -f`
            progress.write(f"{time.monotonic() - started:7.1f}s {kind:8} {where}{seeded}\n")
    if interpreted is not None:
        out.note = "; ".join(
            filter(None, [out.note, f"{settled_interpreted} killed interpreted on an assertion, {rechecked} re-checked compiled"])
        )
    out.elapsed_s = time.monotonic() - started
    print()
    return out


def _mutant_functions(item: object, module: str, source: str, root: Path) -> set[tuple[str, str]] | None:
    """`stale_functions` of one cosmic-ray mutant of `module` (None: whole files)."""
    from cosmic_ray.mutating import mutate_code
    from cosmic_ray.plugins import get_operator

    spec = item.mutations[0]  # type: ignore[attr-defined]
    mutated = mutate_code(source, get_operator(spec.operator_name)(**getattr(spec, "operator_args", {})), spec.occurrence)
    return None if mutated is None else stale_functions(module, source, mutated, root)


def _report_path(module: str) -> Path:
    return OUT / f"{module.replace('/', '_').removesuffix('.py')}.txt"


def previous_survivors(module: str, sha256: str) -> tuple[int, int, int, set[str]] | None:
    """(killed, run, total, survivors' diffs) of the module's last run on this very source, else None
    (no report, or the source changed since). After a sampled run, the re-run scores that sample."""
    path = _report_path(module)
    if not path.exists():
        return None
    text = path.read_text()
    score = re.search(r"^score: \S+ \((\d+) killed of (\d+) run; (\d+) mutants", text, re.M)
    source = re.search(r"^sha256: (\w+)$", text, re.M)
    if score is None or (source is not None and source.group(1) != sha256):
        return None
    body = text.split("\nsurvivors (", 1)[1].split("\n", 1)[1].split("\n\n--- error:", 1)[0]
    diffs = {_plain_diff(chunk.split("\n", 1)[1]) for chunk in re.split(r"\n--- (?=line \d+ \()", body) if chunk.startswith("line ") and "\n" in chunk}
    killed, run, total = (int(g) for g in score.groups())
    return killed, run, total, diffs


def _plain_diff(diff: str) -> str:
    """A survivor's diff as the fork runner writes it: cosmic-ray's own runner (the fresh-interpreter
    fallback) adds a header line and a/ b/ prefixes, so MUTATE_RERUN found none of its survivors."""
    lines = [ln for ln in diff.strip().splitlines() if ln != "--- mutation diff ---"]
    lines = ["--- " + ln[6:] if ln.startswith("--- a/") else "+++ " + ln[6:] if ln.startswith("+++ b/") else ln for ln in lines]
    return "\n".join(lines).strip()


def _diff_of(item: object, source: str, path: Path) -> str:
    from cosmic_ray.mutating import mutate_code
    from cosmic_ray.plugins import get_operator

    spec = item.mutations[0]  # type: ignore[attr-defined]
    mutated = mutate_code(source, get_operator(spec.operator_name)(**getattr(spec, "operator_args", {})), spec.occurrence)
    return "" if mutated is None else "\n".join(difflib.unified_diff(source.splitlines(), mutated.splitlines(), str(path), str(path), lineterm="")).strip()


def write_report(out: Outcome) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    head = [
        f"module: {out.module}",
        f"tests: {' '.join(module_tests(out.module))}",
        f"score: {out.score:.1f}% ({out.killed} killed of {out.run} run; {out.total} mutants after the operator filter)",
        f"sha256: {out.sha256}",
        f"time: {out.elapsed_s:.0f} s (baseline test run {out.baseline_s:.1f} s; "
        f"{(out.elapsed_s - out.baseline_s) / max(out.ran_here, 1):.1f} s per mutant; runner {os.environ.get('MUTATE_RUNNER', 'fork')})",
        *([f"note: {out.note}"] if out.note else []),
        "",
        f"survivors ({len(out.survivors)}):",
    ]
    body = [f"\n--- {s}" for s in out.survivors]
    errors = [f"\n--- error: {e}" for e in out.errors]
    _report_path(out.module).write_text("\n".join([*head, *body, *errors]) + "\n")


def summary(outcomes: list[Outcome]) -> str:
    rows = ["| module | score | killed / run | mutants | survivors | time (s) | note |", "|---|---:|---:|---:|---:|---:|---|"]
    for o in outcomes:
        rows.append(f"| {o.module} | {o.score:.1f}% | {o.killed} / {o.run} | {o.total} | {len(o.survivors)} | {o.elapsed_s:.0f} | {o.note} |")
    return "\n".join(rows)


def changed_files(base: str, root: Path = ROOT) -> list[str] | None:
    """Paths (relative to `root`) that differ between the merge-base of `base` and HEAD and the
    working tree, committed or not; None when `base` does not resolve (no such ref, a shallow clone)."""

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)

    merge_base = git("merge-base", base, "HEAD")
    if merge_base.returncode != 0:
        return None
    diff = git("diff", "--name-only", "--no-renames", merge_base.stdout.strip())
    if diff.returncode != 0:
        return None
    untracked = git("ls-files", "--others", "--exclude-standard")  # new files: a diff does not list them
    return sorted({line for line in (diff.stdout + untracked.stdout).splitlines() if line})


def touched_modules(files: list[str]) -> list[str]:
    """The MODULES whose source, or one of whose mapped test files, is among `files`: a weakened
    test leaves its module's mutants alive just as a changed rule does."""
    touched = set(files)
    return [m for m, tests in MODULES.items() if m in touched or any(t.split("::")[0] in touched for t in tests)]


def _squeezed(text: str) -> str:
    return "".join(text.split())  # cosmic-ray writes `shift( 0)`: compare without whitespace


def _changed_line(diff: str) -> tuple[str, str]:
    """A one-line mutant's (original, mutated) line, whitespace left out, from its unified diff."""
    removed = [_squeezed(line[1:]) for line in diff.splitlines() if line.startswith("-") and not line.startswith("---")]
    added = [_squeezed(line[1:]) for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
    return "".join(removed), "".join(added)


def is_equivalent(module: str, survivor: str) -> bool:
    """Whether a survivor (its report entry: where, then its diff) is recorded in EQUIVALENT."""
    return (module, *_changed_line(survivor.split("\n", 1)[-1])) in {(m, _squeezed(a), _squeezed(b)) for m, a, b in EQUIVALENT}


def judged_score(out: Outcome) -> float:
    """The sample's score with the survivors recorded as equivalent (EQUIVALENT) counted as killed."""
    equivalent = sum(1 for s in out.survivors if is_equivalent(out.module, s))
    return 100.0 * (out.killed + equivalent) / out.run if out.run else float("nan")


def verdicts(outcomes: list[Outcome]) -> tuple[bool, list[str]]:
    """(all passed, one line per module): below its floor fails; too small a sample is only reported."""
    ok, lines = True, []
    for o in outcomes:
        floor = FLOORS.get(o.module, DEFAULT_FLOOR)
        if o.run < MIN_JUDGED:
            lines.append(f"{o.module}: only {o.run} mutant(s) ran in the budget: not judged ({o.note or 'no note'})")
            continue
        score = judged_score(o)
        passed = score >= floor
        ok = ok and passed
        lines.append(f"{o.module}: {score:.1f}% of {o.run} sampled mutants killed or equivalent; floor {floor:.0f}%: {'ok' if passed else 'BELOW'}")
    return ok, lines


def run_changed(base: str | None) -> int:
    """CI's mode (module docstring): the touched modules within MUTATE_BUDGET, 1 when one is below its floor."""
    if not base:
        print("mutation: no base to compare with (--changed REV or MUTATE_BASE): nothing mutated")
        return 0
    files = changed_files(base)
    if files is None:
        print(f"mutation: base {base!r} does not resolve here (shallow clone?): nothing mutated")
        return 0
    modules = touched_modules(files)
    if not modules:
        print(f"mutation: no mutated module or its tests changed since {base}: nothing mutated")
        return 0
    budget = float(os.environ.get("MUTATE_BUDGET", "300"))
    print(f"mutation: {len(modules)} module(s) touched since {base}, {budget:.0f} s in all: {', '.join(modules)}")
    outcomes = mutate(modules, budget)
    ok, lines = verdicts(outcomes)
    print("\n".join(lines))
    for o in outcomes:
        for survivor in o.survivors:
            if not is_equivalent(o.module, survivor):
                print(f"survivor in {o.module}: {survivor}")
    return 0 if ok and all(not o.errors or o.run for o in outcomes) else 1


def main(argv: list[str]) -> int:
    if argv[:1] == ["--changed"]:
        if len(argv) > 2:
            print("usage: mutate.py --changed [REV]", file=sys.stderr)
            return 2
        return run_changed(argv[1] if len(argv) == 2 else os.environ.get("MUTATE_BASE"))
    modules = argv or list(MODULES)
    unknown = [m for m in modules if m not in MODULES]
    if unknown:
        print(f"no tests mapped for {', '.join(unknown)}; known: {', '.join(MODULES)}", file=sys.stderr)
        return 2
    outcomes = mutate(modules)
    return 0 if all(not o.errors or o.run for o in outcomes) else 1


def mutate(modules: list[str], budget_s: float | None = None) -> list[Outcome]:
    """Each module's mutants in a scratch copy, MUTATE_LIMIT seconds each or, with `budget_s`, an
    equal share of what is left of it when the module starts (baseline included); writes the reports."""
    limit = float(os.environ.get("MUTATE_LIMIT", "900"))
    budget_end = time.monotonic() + budget_s if budget_s is not None else None
    cwd = os.getcwd()
    work = scratch_copy()
    os.chdir(work)
    os.environ["PYTHONPATH"] = str(work)  # the copy, not the editable install of the real tree
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    os.environ["QUANTLAKE_MUTATION_RUN"] = "1"  # tests/conftest.py: property tests draw the same examples every run
    # A mutant that keeps the file's size, written in the second its original was, would otherwise
    # be run from the original's cached bytecode.
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
    sys.dont_write_bytecode = True
    sys.path.insert(0, str(work))  # the fork runner's children import the copy too
    if os.environ.get("MUTATE_RUNNER", "fork") != "subprocess":
        preload()
    outcomes = []
    for i, module in enumerate(modules):
        print(f"{module}: {' '.join(module_tests(module))}")
        if budget_end is not None:
            limit = max(budget_end - time.monotonic(), 0.0) / (len(modules) - i)
        outcome = run_module(module, work, limit)
        write_report(outcome)
        outcomes.append(outcome)
    shutil.rmtree(work, ignore_errors=True)
    table = summary(outcomes)
    OUT.mkdir(parents=True, exist_ok=True)
    # The summary keeps the rows of modules run before (each row is a module's latest run).
    summary_path = OUT / "summary.md"
    kept = summary_path.read_text().splitlines()[2:] if summary_path.exists() else []
    rows = [r for r in kept if r.split("|")[1].strip() not in {o.module for o in outcomes}]
    table = "\n".join([*table.splitlines()[:2], *rows, *table.splitlines()[2:]])
    summary_path.write_text(table + "\n")
    print(table)
    print(f"survivors and their diffs: {OUT.relative_to(ROOT)}/<module>.txt")
    os.chdir(cwd)
    return outcomes


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
