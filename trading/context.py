"""What the agents see for one symbol at one decision time: point-in-time bars, features, signal, position.

Built only from bars with `ts <= as_of` (the decision bar), with the strategies' own functions, so a
decision never sees the future and its signal is the backtest's signal at that bar.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import polars as pl
from pydantic import Field

from lake.features import compute_features
from strategies.base import Strategy
from trading.models import Frozen, PortfolioSnapshot

# How many recent bars go into a prompt: enough to read a trend, few enough to keep prompts cheap.
PROMPT_BARS = 10


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

    def prompt_view(self) -> dict[str, Any]:
        """JSON-able summary for a model prompt (timestamps as ISO text)."""
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
        return view


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
) -> tuple[list[SymbolContext], dict[str, str]]:
    """One context per symbol in `bars`, from bars at or before `as_of` only (and headlines of
    `headlines[symbol]` created at or before `as_of`: a later one is dropped here, whoever read it;
    likewise reflections of `reflections[symbol]` closed or stamped after `as_of`).

    A symbol whose last bar is older than `as_of` (halted, missing data) is not judged on stale
    prices: it is returned in the second value with the reason, and the others go on.
    """
    past = bars.filter(pl.col("ts") <= as_of).sort("symbol", "ts")
    if past.is_empty():
        raise ContextError(f"no bars at or before {as_of.isoformat()}")
    signals = strategy.signals(past, params)
    features = compute_features(past)
    feature_names = [c for c in features.columns if c not in past.columns]
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
            )
        )
    return out, skipped
