"""What the agents see for one symbol at one decision time: point-in-time bars, features, signal, position.

Built only from bars with `ts <= as_of` (the decision bar), with the strategies' own functions, so a
decision never sees the future and its signal is the backtest's signal at that bar.

Nodes that read other timeframes of the symbol (`frames`: e.g. the daily trend under an hourly
entry) get only bars that had CLOSED when the decision bar closed: the session's daily bar is
unknown intraday (it closes with the session), the hour in progress is left out. A bar closes at
`ts + period`, never after its session's close; a daily bar at its session's close.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any

import polars as pl
from pydantic import Field

from lake.calendar import EXCHANGE_TZ, sessions_frame
from lake.errors import UnknownSymbolError
from lake.features import FEATURES, compute_features
from lake.resample import resample_bars
from lake.schema import BAR_SCHEMA, TIMEFRAMES
from lake.store import LakeRoot, read_bars
from strategies.base import Strategy
from trading.models import Frozen, PortfolioSnapshot

# How many recent bars go into a prompt: enough to read a trend, few enough to keep prompts cheap.
PROMPT_BARS = 10


class FrameView(Frozen):
    """The symbol's last closed bars of one extra timeframe, oldest first, and its features at the last one."""

    timeframe: str
    bars: list[dict[str, Any]]
    features: dict[str, float | None] = Field(default_factory=dict)

    @property
    def closes(self) -> list[float]:
        return [float(b["close"]) for b in self.bars]


class SymbolContext(Frozen):
    symbol: str
    as_of: datetime
    strategy: str
    close: float
    signal: dict[str, Any]  # the strategy's signal row at as_of (entry_long, exit_long, ..., stop, targets)
    features: dict[str, float | None]
    recent_bars: list[dict[str, Any]] = Field(default_factory=list)
    position: float = 0.0
    # Headlines about the symbol stamped at or before as_of (created_at, headline, source), filled by
    # the caller from the news lake; empty when no node reads news.
    headlines: list[dict[str, Any]] = Field(default_factory=list)
    # Reflections on the symbol's closed positions (trading/agents/reflection.py), newest last, each
    # closed and stamped (`stamped_at`: the decision bar it was written at) at or before as_of; empty
    # unless the graph has a reflection node.
    reflections: list[dict[str, Any]] = Field(default_factory=list)
    # Other timeframes of the symbol (timeframe -> closed bars), only those a node of the graph reads.
    frames: dict[str, FrameView] = Field(default_factory=dict)

    @property
    def wants(self) -> str | None:
        """BUY / SELL when the strategy signals at this bar, else None (nothing to judge)."""
        s = self.signal
        if s.get("entry_long") and self.position <= 0:
            return "BUY"
        if s.get("exit_long") and self.position > 0:
            return "SELL"
        if s.get("entry_short") and self.position >= 0:
            return "SELL"
        if s.get("exit_short") and self.position < 0:
            return "BUY"
        return None

    def prompt_view(self, frames: Mapping[str, int] | None = None) -> dict[str, Any]:
        """JSON-able summary for a model prompt (timestamps as ISO text). `frames`: the timeframes a node
        declared and how many bars of each it reads (only those go in); None: every frame the context has."""
        bars = [{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in b.items()} for b in self.recent_bars]
        view = {
            "symbol": self.symbol,
            "as_of": self.as_of.isoformat(),
            "strategy": self.strategy,
            "close": self.close,
            "signal": self.signal,
            "features": self.features,
            "position": self.position,
            "recent_bars": bars,
        }
        if self.headlines:  # only then: prompts (and cached answers) of news-free cycles stay as they were
            view["headlines"] = [{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in h.items()} for h in self.headlines]
        if self.reflections:  # likewise: memory-free prompts stay as they were
            view["reflections"] = [{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in r.items()} for r in self.reflections]
        own = self.frames if frames is None else {tf: f for tf, f in self.frames.items() if tf in frames}
        if own:  # likewise: single-timeframe prompts stay as they were
            view["frames"] = {tf: {"bars": [_iso(b) for b in (f.bars if frames is None else f.bars[-frames[tf] :])], "features": f.features} for tf, f in own.items()}
        return view


# A stand-in bar and feature value as wide as real ones print: what frames add to a prompt before any is read.
_WIDE_BAR = {"ts": "2024-01-02T14:30:00+00:00", "open": 1234.5678, "high": 1234.5678, "low": 1234.5678, "close": 1234.5678, "volume": 123456789.0}
_WIDE_FEATURE = -1234.56789012


def frames_prompt_chars(frames: Mapping[str, int]) -> int:
    """The characters declaring `frames` adds to a node's prompt, as `prompt_view` writes them (each
    timeframe's bars and its features), at a wide bar's width; 0 without frames."""
    if not frames:
        return 0
    view = {tf: {"bars": [_WIDE_BAR] * count, "features": dict.fromkeys(FEATURES, _WIDE_FEATURE)} for tf, count in frames.items()}
    return len(json.dumps({"frames": view}, sort_keys=True)) - len(json.dumps({}))


def _iso(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}


class ContextError(ValueError):
    """No usable bars for a symbol at the decision time."""


def build_contexts(
    bars: pl.DataFrame,
    strategy: Strategy[Any],
    params: Any,
    as_of: datetime,
    snapshot: PortfolioSnapshot,
    headlines: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    reflections: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    frames: Mapping[str, pl.DataFrame] | None = None,
    frame_bars: Mapping[str, int] | None = None,
) -> tuple[list[SymbolContext], dict[str, str]]:
    """One context per symbol in `bars`, from bars at or before `as_of` only (and headlines of
    `headlines[symbol]` created at or before `as_of`: a later one is dropped here, whoever read it;
    likewise reflections of `reflections[symbol]` closed or stamped after `as_of`).
    `frames`: bars of other timeframes (any symbols, any times); each context gets, for every timeframe
    of `frame_bars`, the last `frame_bars[tf]` of them closed when the decision bar closed (`closed_by`).

    A symbol whose last bar is older than `as_of` (halted, missing data) is not judged on stale
    prices: it is returned in the second value with the reason, and the others go on.
    """
    past = bars.filter(pl.col("ts") <= as_of).sort("symbol", "ts")
    if past.is_empty():
        raise ContextError(f"no bars at or before {as_of.isoformat()}")
    signals = strategy.signals(past, params)
    features = compute_features(past)
    feature_names = [c for c in features.columns if c not in past.columns]
    views = frame_views(frames or {}, frame_bars or {}, decision_close(past, as_of)) if frame_bars else {}
    out: list[SymbolContext] = []
    skipped: dict[str, str] = {}
    for symbol in sorted(past["symbol"].unique().to_list()):
        sig = signals.filter(pl.col("symbol") == symbol)
        last_ts = sig["ts"][-1]
        if last_ts != as_of:
            skipped[symbol] = f"stale data: last bar {last_ts.isoformat()} is before the decision bar {as_of.isoformat()}"
            continue
        row = sig.row(-1, named=True)
        feats = features.filter(pl.col("symbol") == symbol).select(feature_names).row(-1, named=True)
        recent = past.filter(pl.col("symbol") == symbol).tail(PROMPT_BARS).select("ts", "open", "high", "low", "close", "volume")
        out.append(
            SymbolContext(
                symbol=symbol,
                as_of=as_of,
                strategy=strategy.name,
                close=float(row["close"]),
                signal={k: row[k] for k in ("entry_long", "exit_long", "entry_short", "exit_short", "size", "stop", "target1", "target2")},
                features={k: (None if v is None else float(v)) for k, v in feats.items()},
                recent_bars=recent.to_dicts(),
                position=snapshot.positions.get(symbol, 0.0),
                headlines=[dict(h) for h in (headlines or {}).get(symbol, ()) if h["created_at"] <= as_of],
                reflections=[dict(r) for r in (reflections or {}).get(symbol, ()) if r["stamped_at"] <= as_of and r["closed_at"] <= as_of],
                frames=views.get(symbol, {}),
            )
        )
    return out, skipped


@lru_cache(maxsize=64)
def _sessions(first: date, last: date) -> pl.DataFrame:
    """The calendar's sessions (date, open, close); a session's steps ask for the same days every bar."""
    return sessions_frame(first, last)


def bar_closes(bars: pl.DataFrame) -> pl.Series:
    """When each bar (of its `timeframe` column) closed: `ts + period`, never after its session's
    close; a daily bar at its session's close (half days early). Off-session bars: `ts + period`."""
    if bars.is_empty():
        return pl.Series("closes_at", [], dtype=bars.schema["ts"])
    local_day = pl.col("ts").dt.convert_time_zone(EXCHANGE_TZ).dt.date()
    days = bars.select(local_day.alias("d"))["d"]
    sessions = _sessions(days.min(), days.max()).select(pl.col("date").alias("_day"), pl.col("close").alias("_session_close"))  # type: ignore[arg-type]
    period = pl.col("timeframe").replace_strict({tf: d for tf, d in TIMEFRAMES.items()}, return_dtype=pl.Duration("us"))
    nominal = pl.col("ts") + period
    closes = (
        pl.when(pl.col("_session_close").is_null())
        .then(nominal)
        .when(pl.col("timeframe") == "1d")
        .then(pl.col("_session_close"))
        .otherwise(pl.min_horizontal(nominal, pl.col("_session_close")))
    )
    joined = bars.select("ts", "timeframe", local_day.alias("_day")).join(sessions, on="_day", how="left", maintain_order="left")
    return joined.select(closes.alias("closes_at"))["closes_at"]


def closed_by(bars: pl.DataFrame, moment: datetime) -> pl.DataFrame:
    """The bars that had closed at or before `moment` (the point-in-time rule of every frame)."""
    return bars.filter(bar_closes(bars) <= moment)


def decision_close(bars: pl.DataFrame, as_of: datetime) -> datetime:
    """When the decision bar `as_of` closed (its frames may hold bars closed by then, no later)."""
    row = bars.filter(pl.col("ts") == as_of).head(1)
    if row.is_empty():
        raise ContextError(f"no decision bar at {as_of.isoformat()}")
    moment: datetime = bar_closes(row)[0]
    return moment


def frame_views(frames: Mapping[str, pl.DataFrame], frame_bars: Mapping[str, int], moment: datetime) -> dict[str, dict[str, FrameView]]:
    """symbol -> timeframe -> its last `frame_bars[tf]` bars closed by `moment` (features over every closed bar)."""
    out: dict[str, dict[str, FrameView]] = {}
    for tf, count in sorted(frame_bars.items()):
        source = frames.get(tf)
        if source is None:
            raise ContextError(f"a node reads {tf} bars but none were given for that timeframe")
        closed = closed_by(source.filter(pl.col("timeframe") == tf), moment)
        if closed.is_empty():
            continue
        featured = compute_features(closed)
        names = [c for c in featured.columns if c not in closed.columns]
        for (symbol,), rows in featured.partition_by("symbol", as_dict=True, maintain_order=True).items():
            last = rows.row(-1, named=True)
            out.setdefault(str(symbol), {})[tf] = FrameView(
                timeframe=tf,
                bars=rows.tail(count).select("ts", "open", "high", "low", "close", "volume").to_dicts(),
                features={k: (None if last[k] is None else float(last[k])) for k in names},
            )
    return out


def frames_from(bars: pl.DataFrame, timeframes: Sequence[str]) -> dict[str, pl.DataFrame]:
    """Each timeframe from the step's own bars: the same timeframe as is, a coarser one resampled
    from 1m bars (the closed rule applies to the resampled bars: a bucket in progress is left out;
    a first bucket the minutes start inside of is left out too)."""
    base = set(bars["timeframe"].unique().to_list())
    out: dict[str, pl.DataFrame] = {}
    for tf in timeframes:
        if base == {tf}:
            out[tf] = bars
        elif base == {"1m"} and tf in ("5m", "15m", "1h", "1d"):
            out[tf] = _whole_bars(resample_bars(bars, tf), bars, tf)  # type: ignore[arg-type]  # tf checked against CoarseTimeframe
        else:
            raise ContextError(f"a node reads {tf} bars; the step has only {sorted(base)} bars and no {tf} frame was read (trading.context.read_frames)")
    return out


def _whole_bars(resampled: pl.DataFrame, minutes: pl.DataFrame, timeframe: str) -> pl.DataFrame:
    """Drops a symbol's first bar when its minutes start after that bar's start (a window cut mid-hour
    or mid-session): a bar missing its first minutes has the wrong open, high and low."""
    if resampled.is_empty():
        return resampled
    first = minutes.group_by("symbol").agg(pl.col("ts").min().alias("_first"))
    marked = resampled.join(first, on="symbol", how="left")
    if timeframe == "1d":  # a daily bar is stamped at its first minute: compare with its session's open
        local_day = pl.col("ts").dt.convert_time_zone(EXCHANGE_TZ).dt.date()
        days = marked.select(local_day.alias("d"))["d"]
        opens = _sessions(days.min(), days.max()).select(pl.col("date").alias("_day"), pl.col("open").alias("_start"))  # type: ignore[arg-type]
        marked = marked.with_columns(local_day.alias("_day")).join(opens, on="_day", how="left", maintain_order="left")
        marked = marked.with_columns(pl.coalesce("_start", "ts").alias("_start"))
    else:
        marked = marked.with_columns(pl.col("ts").alias("_start"))
    partial = (pl.col("ts") == pl.col("ts").min().over("symbol")) & (pl.col("_first") > pl.col("_start"))
    return marked.filter(~partial).select(resampled.columns)


def read_frames(
    lake_root: LakeRoot, symbols: Sequence[str], frame_bars: Mapping[str, int], until: datetime, first: datetime | None = None
) -> dict[str, pl.DataFrame]:
    """From the lake, enough bars of each timeframe of `frame_bars` before `until` (stored, else
    resampled from 1m bars) for a decision at `until`, or at every bar from `first` (a session: one
    read, each step cuts its own point in time); nothing is read when no node reads another timeframe."""
    out: dict[str, pl.DataFrame] = {}
    for tf, count in frame_bars.items():
        per_day = 1 if tf == "1d" else max(1, int(timedelta(minutes=390) / TIMEFRAMES[tf]))
        start = (first or until) - timedelta(days=int(count / per_day * 1.6) + 10)  # weekends and holidays
        dataset = "resampled" if tf in ("5m", "15m", "1h") else "bars"
        try:
            stored = read_bars(lake_root, symbols, tf, start, until, dataset=dataset)
        except UnknownSymbolError:  # not stored for every symbol: all from the minutes, one rule
            stored = pl.DataFrame(schema=BAR_SCHEMA)
        if stored.is_empty() and tf != "1m":  # not stored: from the minutes, same closed rule
            minutes = read_bars(lake_root, symbols, "1m", start, until)
            stored = frames_from(minutes, [tf])[tf] if not minutes.is_empty() else stored
        out[tf] = stored
    return out
