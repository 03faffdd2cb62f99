"""Reflection memory: when a position closes, a lesson on the decision and its outcome goes to the
ledger (a `reflection` event); later decisions on that symbol read the last few, point in time.

- A close is the fill that brings a symbol's position to 0 or through it (the rest opens a new one),
  found by folding the ledger's fills with the portfolio's average-cost rule, so a reflection's P&L
  is the portfolio's realized P&L of that round trip.
- The lesson is deterministic text from the outcome offline; with `llm` settings a model writes it
  through the team's structured-output client (cached like every answer, so a replay asks nothing),
  falling back to the rules.
- Point in time: a step at decision bar `as_of` reflects only closes whose fill is at or before
  `as_of`, stamps the event with `as_of`, and a decision reads only reflections closed and stamped at
  or before its own bar (the decision bar's time, never the wall clock). One reflection per close
  (its event id derives from the closing fill), so reruns write nothing new and ask no model twice.

In the graph the `reflection` node only reads (notes.memory); writing happens in the trading step,
before the contexts are built, because a close is an account event, not a symbol's thread.
"""

from __future__ import annotations

import hashlib
import json
import threading
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from pydantic import Field

from trading.agents.base import AgentRun
from trading.agents.chain import ProviderChain
from trading.agents.team import TeamNodeConfig, _Out, _TeamNode
from trading.brokers.base import client_order_id
from trading.context import SymbolContext
from trading.cost import Budget, BudgetExceeded, CostTracker, PriceTable
from trading.events import Event, EventType, FillPayload, MemorySink, ReflectionPayload
from trading.ledger import Ledger
from trading.models import Mode, Side

if TYPE_CHECKING:
    from trading.pipeline import DecisionPipeline

_REL_EPS = 1e-9  # as the portfolio: |position| below this fraction of the quantities is flat
FLAT_RETURN = 0.001  # |return| below this is "flat", not a win or a loss


class ReflectionConfig(TeamNodeConfig):
    last: int = Field(3, ge=1, le=50, description="The symbol's last this many reflections reach a decision.")
    max_age_days: float = Field(
        30.0, gt=0, description="Closes older than this at the decision bar get no reflection (a long ledger's history is not sent to a model at once)."
    )


class LessonOut(_Out):
    lesson: str


@dataclass
class ClosedTrade:
    symbol: str
    side: str  # long / short
    quantity: float
    opened_at: datetime | None
    closed_at: datetime
    entry_price: float
    exit_price: float
    pnl: float
    commission: float
    open_order: str | None
    close_order: str | None
    closing_fill: str  # the closing fill's ledger event id

    @property
    def return_pct(self) -> float:
        return self.pnl / (self.entry_price * self.quantity)

    def facts(self) -> dict[str, Any]:
        """What a lesson is written from (JSON-able, stable: the model's cache key)."""
        return {
            "symbol": self.symbol,
            "side": self.side,
            "quantity": self.quantity,
            "opened_at": self.opened_at.isoformat() if self.opened_at else None,
            "closed_at": self.closed_at.isoformat(),
            "entry_price": self.entry_price,
            "exit_price": self.exit_price,
            "pnl": round(self.pnl, 6),
            "commission": round(self.commission, 6),
            "return_pct": round(self.return_pct, 6),
        }


@dataclass
class _Open:
    position: float = 0.0
    avg: float = 0.0
    opened_at: datetime | None = None
    open_order: str | None = None
    pnl: float = 0.0
    commission: float = 0.0
    closed_qty: float = 0.0
    exit_notional: float = 0.0


class TradeBook:
    """Round trips folded from fills in ledger order, each ended by the fill that brought its position to
    0 or through 0; P&L by the portfolio's average-cost rule, commissions shared pro rata on a reversal."""

    def __init__(self) -> None:
        self.open: dict[str, _Open] = {}
        self.closed: list[ClosedTrade] = []

    def apply(self, event: Event) -> None:
        fill = event.typed()
        assert isinstance(fill, FillPayload)
        ts = fill.ts or event.as_of or event.recorded_at
        signed = fill.quantity if fill.side == Side.BUY else -fill.quantity
        o = self.open.setdefault(fill.symbol, _Open())
        if o.position == 0.0 or (o.position > 0) == (signed > 0):  # open or add
            if o.position == 0.0:
                self.open[fill.symbol] = o = _Open(opened_at=ts, open_order=fill.client_order_id)
            new = o.position + signed
            o.avg = (o.avg * o.position + fill.price * signed) / new
            o.position = new
            o.commission += fill.commission
            return
        sign = 1.0 if o.position > 0 else -1.0
        closing = min(abs(signed), abs(o.position))
        share = closing / abs(signed)
        o.pnl += (fill.price - o.avg) * closing * sign
        o.commission += fill.commission * share
        o.closed_qty += closing
        o.exit_notional += fill.price * closing
        new = o.position + signed
        if abs(new) > _REL_EPS * max(abs(o.position), abs(signed)) and (new > 0) == (o.position > 0):
            o.position = new  # reduced, still open
            return
        self.closed.append(
            ClosedTrade(
                fill.symbol, "long" if sign > 0 else "short", o.closed_qty, o.opened_at, ts, o.avg, o.exit_notional / o.closed_qty,
                o.pnl, o.commission, o.open_order, fill.client_order_id, event.event_id,
            )
        )  # fmt: skip
        rest = 0.0 if abs(new) <= _REL_EPS * max(abs(o.position), abs(signed)) else new
        self.open[fill.symbol] = _Open()
        if rest:  # through zero: the rest opens a new position at the fill's price
            self.open[fill.symbol] = _Open(rest, fill.price, ts, fill.client_order_id, commission=fill.commission * (1 - share))


def closed_trades(fills: Iterable[Event]) -> list[ClosedTrade]:
    """The round trips of `fills` (in ledger order): see `TradeBook`."""
    book = TradeBook()
    for event in fills:
        book.apply(event)
    return book.closed


@dataclass
class _Seen:
    """What `remember` has read of one ledger: the fills folded and the reflections, up to their seqs."""

    book: TradeBook = field(default_factory=TradeBook)
    fill_seq: int = 0
    reflections: dict[str, dict[str, Any]] = field(default_factory=dict)  # event id -> (symbol, recall entry)
    reflection_seq: int = 0


# Per Ledger object, caught up with only the newer events at each step (a session steps bar by bar on
# one ledger: a full pass over its fills each bar grew with the square of its length). SQLite only:
# its seqs commit in order; on PostgreSQL a late commit could land below a seq already read, so
# every call there reads the fills again (a few decision cycles a day).
_SEEN: weakref.WeakKeyDictionary[Ledger, _Seen] = weakref.WeakKeyDictionary()
_SEEN_LOCK = threading.Lock()


def _from_archive(ledger: Ledger) -> _Seen:
    """A first read: a compacted ledger's removed fills and reflections come from its archive (as the
    projections' fold starts there), so a position opened before the cut closes with its real entry."""
    from trading.ledger.archive import _read_rows, archived_files
    from trading.ledger.compaction import compacted

    seen = _Seen()
    state = compacted(ledger)
    if not state.up_to_seq or state.archive is None:
        return seen
    wanted = (EventType.FILL.value, EventType.REFLECTION.value)
    for first, _last, path in archived_files(state.archive):
        if first > state.up_to_seq:
            break
        for row in _read_rows(path)[0]:
            if row["seq"] > state.up_to_seq or row["type"] not in wanted:
                continue
            event = Event.model_validate({**{k: v for k, v in row.items() if k != "seq"}, "payload": json.loads(row["payload"])})
            _take(seen, row["seq"], event)
    seen.fill_seq = seen.reflection_seq = state.up_to_seq
    return seen


def _take(seen: _Seen, seq: int, event: Event) -> None:
    if event.type == EventType.FILL:
        seen.book.apply(event)
        seen.fill_seq = seq
    elif event.symbol and event.as_of is not None:
        seen.reflections[event.event_id] = {"symbol": event.symbol, **recall_entry(event)}
        seen.reflection_seq = seq


def _caught_up(ledger: Ledger) -> _Seen:
    seen = _SEEN.get(ledger) if ledger.dialect == "sqlite" else None
    seen = seen or _from_archive(ledger)
    for seq, event in ledger.events_with_seq(types=[EventType.FILL.value], after_seq=seen.fill_seq):
        _take(seen, seq, event)
    for seq, event in ledger.events_with_seq(types=[EventType.REFLECTION.value], after_seq=seen.reflection_seq):
        _take(seen, seq, event)
    if ledger.dialect == "sqlite":
        _SEEN[ledger] = seen
    return seen


def reflection_event_id(closing_fill: str) -> str:
    return hashlib.sha256(f"reflection|{closing_fill}".encode()).hexdigest()[:32]


def rules_lesson(trade: ClosedTrade, rationale: str = "") -> str:
    """Deterministic text from the outcome: what it made, in how long, and what to ask next time."""
    r = trade.return_pct
    days = (trade.closed_at - trade.opened_at).days if trade.opened_at else None
    held = f" in {days} days" if days is not None else ""
    why = f" (entered on: {rationale})" if rationale else ""
    head = f"{trade.symbol} {trade.side} {trade.quantity:g} @ {trade.entry_price:.2f} -> {trade.exit_price:.2f}{held}: {r:+.2%}, P&L {trade.pnl:+.2f}{why}."
    if r >= FLAT_RETURN:
        return f"{head} Won: the case held; hold the next {trade.symbol} entry to its plan's targets."
    if r <= -FLAT_RETURN:
        return f"{head} Lost: the case did not hold; ask more of the next {trade.symbol} entry (a stronger debate balance, a tighter stop)."
    return f"{head} Flat: costs ate the move; the next {trade.symbol} entry needs more expected move than its costs."


def recall_entry(event: Event) -> dict[str, Any]:
    """A reflection as a context carries it (datetimes; `stamped_at` is the event's decision bar)."""
    p = event.typed()
    assert isinstance(p, ReflectionPayload) and event.as_of is not None
    keys = ("side", "quantity", "opened_at", "closed_at", "entry_price", "exit_price", "pnl", "return_pct", "rationale", "lesson", "by")
    return {"stamped_at": event.as_of, **{k: getattr(p, k) for k in keys}}


def visible(ctx: SymbolContext, last: int) -> list[dict[str, Any]]:
    """The context's reflections closed and stamped at or before its decision bar, the newest `last`."""
    seen = [r for r in ctx.reflections if r["stamped_at"] <= ctx.as_of and r["closed_at"] <= ctx.as_of]
    return sorted(seen, key=lambda r: (r["closed_at"], r["stamped_at"]))[-last:]


class ReflectionMemory(_TeamNode):
    """The team's memory: reads the symbol's last reflections into notes.memory; writes the lessons."""

    ROLE = "You review a closed trade. From the decision's rationale and its outcome, write one short, concrete lesson for the next decision on this symbol."
    calls_per_symbol = 0  # in the graph it only reads; lessons are written when a position closes

    def __init__(self, name: str, config: ReflectionConfig, caller: ProviderChain | None = None) -> None:
        super().__init__(name, caller)
        self.config = config

    def research(self, ctx: SymbolContext, notes: Mapping[str, Any], run: AgentRun) -> dict[str, Any]:
        shown = visible(ctx, self.config.last)
        if not shown:
            return {"memory": {"reflections": 0, "summary": "no closed trades"}}
        lessons = [{"closed_at": r["closed_at"].isoformat(), "side": r["side"], "return_pct": round(float(r["return_pct"]), 6), "lesson": r["lesson"]} for r in shown]
        wins = sum(1 for r in shown if r["return_pct"] >= FLAT_RETURN)
        last = shown[-1]
        summary = f"{len(shown)} closed {ctx.symbol} trades, {wins} won; last {last['side']} {float(last['return_pct']):+.2%}"
        return {"memory": {"reflections": len(shown), "summary": summary, "lessons": lessons}}

    def lesson(self, trade: ClosedTrade, rationale: str, ctx: SymbolContext, run: AgentRun, by_rules: bool = False) -> tuple[str, str, str | None]:
        """(lesson, by, model): the model's through the structured client, else (or `by_rules`: the budget
        gate refused the lessons' model calls) the rules'."""
        caller: ProviderChain | None = getattr(self, "caller", None)
        if caller is not None and not by_rules:
            try:
                out = self.ask(LessonOut, self.ROLE, {"trade": trade.facts(), "rationale": rationale}, ctx, run)
            except BudgetExceeded as exc:  # a lesson is not worth breaking a budget: the rules write it
                run.emit(EventType.FALLBACK, ctx, {"agent": self.name, "kind": "budget", "detail": str(exc), "to": "rules"})
                out = None
            if out is not None:
                return str(out.lesson), "model", caller.settings.model
        return rules_lesson(trade, rationale), "rules", None


def memory_of(decider: DecisionPipeline) -> ReflectionMemory | None:
    """The pipeline graph's reflection node, if it has one (then the step reflects and recalls)."""
    return next((a for a in decider.graph.agents.values() if isinstance(a, ReflectionMemory)), None)


@dataclass
class Recalled:
    reflections: dict[str, list[dict[str, Any]]]  # symbol -> last `last`, point in time, for the contexts
    written: int  # reflection events written now
    usd: float  # spent on lessons now
    tokens: int


def _pending(seen: _Seen, memory: ReflectionMemory, as_of: datetime) -> list[ClosedTrade]:
    # Fills come in time order: a close at or before as_of is final whatever fills came after it.
    since = as_of - timedelta(days=memory.config.max_age_days)
    return [t for t in seen.book.closed if since <= t.closed_at <= as_of and reflection_event_id(t.closing_fill) not in seen.reflections]


def pending_lessons(ledger: Ledger, memory: ReflectionMemory, as_of: datetime) -> list[ClosedTrade]:
    """The closes (fills at or before `as_of`, within the memory's age) that have no reflection yet: the
    lessons `remember` would write at `as_of`. Reads only (the step prices them before any model call)."""
    with _SEEN_LOCK:
        return _pending(_caught_up(ledger), memory, as_of)


def remember(
    ledger: Ledger,
    memory: ReflectionMemory,
    *,
    as_of: datetime,
    run_id: str,
    mode: Mode,
    strategy: str,
    prices: PriceTable,
    budget: Budget,
    spent_today: float = 0.0,
    tokens_today: int = 0,
    by_rules: bool = False,
) -> Recalled:
    """At decision bar `as_of`: reflections for the closes (fills at or before `as_of`) that have none,
    written to the ledger in one transaction, then each symbol's last reflections as of `as_of`.
    `by_rules`: every lesson by the rules, no model asked (the pre-run gate refused the lessons' calls)."""
    with _SEEN_LOCK:
        seen = _caught_up(ledger)
        have = dict(seen.reflections)
        todo = _pending(seen, memory, as_of)
    costs = CostTracker(prices, budget, spent_today=spent_today, tokens_today=tokens_today)
    sink = MemorySink()  # the lessons' prompts, answers, costs, fallbacks: written with the reflections
    run = AgentRun(run_id=run_id, mode=mode, sink=sink, costs=costs)
    decisions = _opening_decisions(ledger, {t.symbol for t in todo})
    new: list[Event] = []
    for trade in todo:
        opened = decisions.get(trade.open_order or "")
        rationale = str(opened.payload.get("rationale") or "") if opened else ""
        ctx = SymbolContext(symbol=trade.symbol, as_of=as_of, strategy=strategy, close=trade.exit_price, signal={}, features={})
        lesson, by, model = memory.lesson(trade, rationale, ctx, run, by_rules)
        payload = ReflectionPayload(
            **{k: v for k, v in trade.facts().items() if k not in ("opened_at", "closed_at")},
            opened_at=trade.opened_at, closed_at=trade.closed_at, open_order=trade.open_order, close_order=trade.close_order,
            closing_fill=trade.closing_fill, decision_run_id=opened.run_id if opened else None,
            decision_event_id=opened.event_id if opened else None, rationale=rationale, lesson=lesson, by=by, model=model,
        )  # fmt: skip
        event_id = reflection_event_id(trade.closing_fill)
        new.append(Event(type=EventType.REFLECTION, run_id=run_id, mode=mode, symbol=trade.symbol, as_of=as_of, payload=payload.model_dump(mode="json"), event_id=event_id))
    summary = costs.summary()
    calls, tokens, usd = cast(int, summary["model_calls"]), cast(int, summary["total_tokens"]), cast(float, summary["run_cost_usd"])
    extra = list(sink.events)
    if calls or tokens:  # the day's spend counts the lessons too
        extra.append(Event(type=EventType.COST, run_id=run_id, mode=mode, as_of=as_of, payload={"scope": "run", "stage": "reflection", **summary}))
    written = ledger.append_many([*extra, *new]) if new else 0
    for event in new:  # read back at the next catch-up too; the dict keeps one per id
        have[event.event_id] = {"symbol": event.symbol, **recall_entry(event)}
    by_symbol: dict[str, list[dict[str, Any]]] = {}
    for kept in have.values():
        entry = {k: v for k, v in kept.items() if k != "symbol"}
        if entry["stamped_at"] <= as_of and entry["closed_at"] <= as_of:
            by_symbol.setdefault(kept["symbol"], []).append(entry)
    last = memory.config.last
    recalled = {s: sorted(rs, key=lambda r: (r["closed_at"], r["stamped_at"]))[-last:] for s, rs in by_symbol.items()}
    return Recalled(recalled, written, usd, tokens)


def _opening_decisions(ledger: Ledger, symbols: set[str]) -> dict[str, Event]:
    """Executed decisions of `symbols` by the client order id their order got (the executor's rule)."""
    out: dict[str, Event] = {}
    for symbol in sorted(symbols):
        for event in ledger.events(types=[EventType.DECISION.value], symbol=symbol):
            p = event.payload
            if p.get("verdict") != "EXECUTE" or not p.get("side") or not p.get("decided_at"):
                continue
            cid = client_order_id(str(p.get("strategy")), symbol, datetime.fromisoformat(str(p["decided_at"])), Side(p["side"]))
            out[cid] = event
    return out
