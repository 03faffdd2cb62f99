"""The screener asset: per trading day, the symbols of the universe the day's decisions look at.

Partition D is screened from the daily bars of the sessions before D (lake.screener), so it can run
once D-1 has closed; the gap filter also needs D's open, taken from D's 1-minute bars stamped before
the run's now (run it after the open when the gap filter is on). Writes <lake>/screener/date=D/, on
local disk or the object store alike (the lake's `location`).

Settings (README), read by orchestration/settings.py and passed down (`use_settings`), asked for at
every run: QUANTLAKE_SCREENER=1 makes decide runs (decision_cycle with no explicit symbols) decide
only the day's chosen symbols, and fail with the reason when the day has no screen;
QUANTLAKE_SCREENER_LOOKBACK, _MIN_DOLLAR_VOLUME, _MIN_PRICE, _MAX_PRICE, _MAX_GAP, _MIN_MOMENTUM,
_MAX_SYMBOLS set the filters (unset: off, every symbol with bars is kept). The pipeline file's
`screener:` section (trading.pipeline.ScreenerSection) sets the same fields: the ones it gives win.

Lineage: the asset depends on every `bars_1d` partition (AllPartitionMapping: a day reads the years
of its lookback for the whole universe, which no year x symbol mapping of a single day expresses).
A symbol whose `bars_1d` partition lacks the prior session is rejected naming that partition; when
no symbol has it, the run fails naming them (the daily ingest has not run yet).
"""

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from assets.clock import run_now
from assets.metadata import markdown_table
from assets.partitions import daily_key, exchange, trading_day_partitions, universe
from assets.resources import LakeResource, TradingResource
from lake.calendar import get_calendar, session_bounds, trading_days
from lake.filesystem import ObjectPath
from lake.schema import TIMEFRAMES, check_timeframe, empty_bars
from lake.screener import ScreenerRules, chosen_symbols, screen, write_screen
from lake.store import read_bars
from trading.pipeline import ScreenerSection


@dataclass(frozen=True)
class ScreenerSettings:
    """The values orchestration's settings pass down to the screener."""

    enabled: bool = False  # decide runs decide only the day's chosen symbols
    rules: ScreenerRules = field(default_factory=ScreenerRules)


_source: Callable[[], ScreenerSettings] | None = None


def use_settings(source: Callable[[], ScreenerSettings]) -> None:
    """Orchestration hands over where the values come from (orchestration/settings.py `pass_settings_down`)."""
    global _source
    _source = source


def screener_settings() -> ScreenerSettings:
    """The values of the moment; a bad one raises ValueError naming its variable."""
    if _source is None:
        raise RuntimeError("assets.screener has no settings: import orchestration first (it passes QUANTLAKE_SCREENER* down)")
    return _source()


def with_section(base: ScreenerSettings, section: ScreenerSection | None) -> ScreenerSettings:
    """The settings with the pipeline file's `screener:` section over them (its given fields win).
    A combination that does not hold (min_price above max_price) raises ValueError naming both."""
    if section is None:
        return base
    merged = section.over({"enabled": base.enabled, **vars(base.rules)})
    enabled = bool(merged.pop("enabled"))
    return ScreenerSettings(enabled=enabled, rules=ScreenerRules(**merged))


def _known(root: Path | ObjectPath, timeframe: str, symbols: list[str]) -> list[str]:
    return [s for s in symbols if (root / "bars" / f"timeframe={timeframe}" / f"symbol={s}").is_dir()]


def _opens(root: Path | ObjectPath, symbols: list[str], day: date, now: datetime, exch: str) -> dict[str, float]:
    """D's first 1-minute open per symbol, from bars that began before `now` (none before the open)."""
    open_, close = session_bounds(day, exch)
    known = _known(root, "1m", symbols)
    if now <= open_ or not known:
        return {}
    bars = read_bars(root, known, "1m", open_, min(now, close))
    first = bars.group_by("symbol").agg(pl.col("open").sort_by("ts").first())
    return {r["symbol"]: float(r["open"]) for r in first.iter_rows(named=True)}


def _missing_prior(bars: pl.DataFrame, symbols: list[str], prior: date, exch: str) -> dict[str, str]:
    """Symbol -> the `bars_1d` partition that should hold the prior session's bar and does not."""
    stamp = session_bounds(prior, exch)[0]  # a daily bar is stamped at its session's open
    present = set(bars.filter(pl.col("ts") == stamp)["symbol"].to_list())
    return {s: str(daily_key(str(prior.year), s)) for s in symbols if s not in present}


@dg.asset(
    partitions_def=trading_day_partitions,
    group_name="research",
    kinds={"polars", "parquet"},
    deps=[dg.AssetDep("bars_1d", partition_mapping=dg.AllPartitionMapping())],
)
def screener(context: dg.AssetExecutionContext, lake: LakeResource, trading: TradingResource) -> dg.MaterializeResult:
    """The universe screened for one trading day by liquidity, price, gap and momentum, from the
    sessions before it: chosen symbols with their scores, rejected ones with their reason."""
    day, exch, now = date.fromisoformat(context.partition_key), exchange(), run_now(context)
    try:
        rules = with_section(screener_settings(), trading.pipeline().screener).rules
    except ValueError as exc:
        raise dg.Failure(str(exc), allow_retries=False) from exc
    [prior] = trading_days(day - timedelta(days=10), day - timedelta(days=1), exch)[-1:]
    if session_bounds(prior, exch)[1] > now:
        raise dg.Failure(f"screener {day}: the previous session ({prior}) has not closed at {now.isoformat()}", allow_retries=False)
    symbols, root = universe(), lake.location
    known = _known(root, "1d", symbols)
    # Enough sessions for the lookback (calendar days with room for holidays); none of D or later.
    start = day - timedelta(days=int(rules.lookback * 1.6) + 15)
    bars = read_bars(root, known, "1d", start, session_bounds(day, exch)[0]) if known else empty_bars()
    missing = _missing_prior(bars, symbols, prior, exch)
    if missing and len(missing) == len(symbols):
        raise dg.Failure(
            f"screener {day}: no bars_1d of the prior session {prior} for any symbol; materialize bars_1d {', '.join(sorted(missing.values()))} first",
            allow_retries=False,
        )
    # A stale symbol is screened on nothing rather than on old closes, and says which input it lacks.
    bars = bars.filter(~pl.col("symbol").is_in(list(missing)))
    opens = _opens(root, symbols, day, now, exch) if rules.max_gap is not None else None
    frame = screen(bars, symbols, day, rules, opens, exch)
    frame = frame.with_columns(
        reason=pl.col("symbol").replace_strict(
            {s: f"input: bars_1d {key} has no bar of the prior session {prior}" for s, key in missing.items()}, default=pl.col("reason")
        )
    )
    path = write_screen(root, day, frame)
    chosen = frame.filter("chosen")
    rejected = {r["symbol"]: r["reason"] for r in frame.filter(~pl.col("chosen")).iter_rows(named=True)}
    context.log.info(f"screener {day}: {chosen.height} of {frame.height} chosen")
    meta: dict[str, Any] = {
        "dagster/row_count": chosen.height,
        "chosen": dg.MetadataValue.json(chosen["symbol"].to_list()),
        "rejected": dg.MetadataValue.json(rejected),
        "rules": dg.MetadataValue.json({k: (None if v == math.inf else v) for k, v in vars(rules).items()}),
        "gap_opens_known": len(opens) if opens is not None else 0,
        "missing_bars_1d": dg.MetadataValue.json(sorted(missing.values())),
        "preview": dg.MetadataValue.md(markdown_table(frame, max_rows=50)),
        "path": dg.MetadataValue.path(str(path)),
    }
    return dg.MaterializeResult(metadata=meta)


def screened_universe(
    root: Path | ObjectPath, now: datetime, as_of: datetime | None, timeframe: str = "1d", section: ScreenerSection | None = None
) -> list[str]:
    """The symbols a decide run with no explicit symbols decides: the universe, or with the screener
    on (the settings, or the pipeline file's `section`), the chosen symbols of the decision's day: the
    session in which the as_of bar ends (a daily bar: the next session), else now's session or the next
    one. No screen for that day: LakeError (never a silent fall back to the whole universe)."""
    if not with_section(screener_settings(), section).enabled:
        return universe()
    exch = exchange()
    tz = get_calendar(exch).tz
    moment = now if as_of is None else as_of + TIMEFRAMES[check_timeframe(timeframe)]
    local = moment.astimezone(tz).date()
    day = trading_days(local, local + timedelta(days=10), exch)[0]
    return [s for s in chosen_symbols(root, day) if s in set(universe())]
