"""The soak's fault schedule: every fault of issue 16, on sessions spread over the period, seeded.

`fault_plan(sessions, entries, symbols, seed)` is pure: the same arguments give the same plan on any
day. Each fault lands where it has something to hit:
- the data source down, a run's worker killed mid-write, a disk full on a lake write: any session
  with a next one in the period (the next session's open and the missed-sessions sensor recover it);
  the source not on an entry session (its missing bar would be lost to the decision, not delayed);
- a broker 5xx and a model timing out: a session where the strategy enters (`entries`, derived from
  the offline source's daily bars by `entry_sessions`): an order to lose the answer of, a signal
  the model is asked about;
- the kill switch: noon of a session, its resume at noon of the next one;
- the trades-per-day breaker at 1 order a session: it trips at the decision after each entry (the
  entries are at the first decision; exits and flattens always go through: the trading is the same)
  and is lifted by its own rule at the next session, no resume needed;
- the code location reloaded on seeded-random sessions.
Faults keep `GAP` sessions apart (fewer in a short period, never on the same session), so that what
one does is not taken for another's.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

NY = ZoneInfo("America/New_York")
GAP = 3  # sessions between two faults, at least
KILL_AT, RESUME_AT = time(12, 0), time(12, 0)  # New York; the resume is the next session's
TRADES_PER_DAY = 1  # the breaker's limit: trips at the decision after a session's first order
# The kinds placed on one session each; "breaker" and "reload" are not placed this way.
DAY_FAULTS = ("broker_5xx", "model_timeout", "source_down", "killed", "disk_full", "kill_switch")
NEEDS_ENTRY = frozenset({"broker_5xx", "model_timeout"})


@dataclass(frozen=True)
class FaultPlan:
    """What goes wrong, and when (New York dates; every one a session of the period)."""

    source_down: tuple[date, ...] = ()
    broker_5xx: tuple[date, ...] = ()
    model_timeout: tuple[date, ...] = ()
    killed: tuple[tuple[date, str], ...] = ()
    disk_full: tuple[tuple[date, str], ...] = ()
    kill_switch: tuple[tuple[date, date], ...] = ()  # (thrown on, resumed on)
    breaker_days: tuple[date, ...] = ()  # sessions with an entry: the trades-per-day breaker trips there
    reload_on: tuple[date, ...] = ()
    unplaced: tuple[str, ...] = field(default=())  # kinds with no session to hit in the period

    def days(self) -> dict[str, tuple[date, ...]]:
        """Each kind's sessions."""
        return {
            "source_down": self.source_down,
            "broker_5xx": self.broker_5xx,
            "model_timeout": self.model_timeout,
            "killed": tuple(d for d, _ in self.killed),
            "disk_full": tuple(d for d, _ in self.disk_full),
            "kill_switch": tuple(d for pair in self.kill_switch for d in pair),
            "breaker": self.breaker_days,
            "reload": self.reload_on,
        }

    def actions(self) -> tuple[tuple[datetime, str, str], ...]:
        """The kill switch and its resume, launched by hand (SoakSettings.actions)."""
        out = []
        for thrown, resumed in self.kill_switch:
            kill = {"ops": {"kill_switch_op": {"config": {"reason": "soak: kill switch"}}}}
            resume = {"ops": {"resume_op": {"config": {"by": "soak", "reason": "soak: resumed after the kill switch"}}}}
            out.append((datetime.combine(thrown, KILL_AT, tzinfo=NY), "kill_switch_job", json.dumps(kill)))
            out.append((datetime.combine(resumed, RESUME_AT, tzinfo=NY), "resume_job", json.dumps(resume)))
        return tuple(out)

    def limits(self) -> dict[str, object]:
        """The pipeline file's `limits` the plan needs (the breaker's)."""
        return {"max_trades_per_day": TRADES_PER_DAY} if self.breaker_days else {}


def _segments(days: Sequence[date], n: int) -> list[list[date]]:
    size = len(days) / n
    return [list(days[round(i * size) : round((i + 1) * size)]) for i in range(n)]


def fault_plan(sessions: Sequence[date], entries: dict[date, frozenset[str]], symbols: Sequence[str], seed: int = 16, reloads: int | None = None) -> FaultPlan:
    """One session for each of DAY_FAULTS, spread over `sessions` (one segment of the period each, in
    a seeded order), `GAP` sessions apart; the breaker on (it trips on the entry sessions); and
    `reloads` (default: one every 40 sessions, at least 2) code-location reloads on random sessions."""
    days = sorted(sessions)
    rng = random.Random(seed)
    index = {d: i for i, d in enumerate(days)}
    inner = days[1:-1]  # every fault needs a session after it (recovery, the resume, the fill)
    entering = sorted(d for d in entries if d in index)
    kinds = list(DAY_FAULTS)
    rng.shuffle(kinds)
    chosen: dict[str, date] = {}

    def eligible(kind: str, pool: Sequence[date]) -> list[date]:
        """The sessions of `pool` where `kind` has something to hit, as far from the others as the period allows."""

        def fits(d: date) -> bool:
            return d in entries if kind in NEEDS_ENTRY else d not in entries if kind == "source_down" else True

        for gap in range(GAP, -1, -1):  # a short period: closer, never on the same session
            if found := [d for d in pool if fits(d) and all(abs(index[d] - index[c]) > gap for c in chosen.values())]:
                return found
        return []

    # The kinds that need an entry choose first; each prefers its own segment of the period.
    segment_of = dict(zip(kinds, _segments(inner, len(kinds)), strict=True))
    unplaced = []
    for kind in sorted(kinds, key=lambda k: k not in NEEDS_ENTRY):
        # A short period may have one entry for both: the 5xx and the model's timeout then share it.
        pool = eligible(kind, segment_of[kind]) or eligible(kind, inner) or ([d for d in inner if d in entries] if kind in NEEDS_ENTRY else [])
        if pool:
            chosen[kind] = rng.choice(pool)
        else:
            unplaced.append(kind)
    n_reloads = max(2, len(days) // 40) if reloads is None else reloads
    reload_on = tuple(sorted(rng.sample(days, min(n_reloads, len(days)))))
    symbol = {kind: rng.choice(list(symbols)) for kind in ("killed", "disk_full")}

    def one(kind: str) -> tuple[date, ...]:
        return (chosen[kind],) if kind in chosen else ()

    kill = one("kill_switch")
    return FaultPlan(
        source_down=one("source_down"),
        broker_5xx=one("broker_5xx"),
        model_timeout=one("model_timeout"),
        killed=tuple((d, symbol["killed"]) for d in one("killed")),
        disk_full=tuple((d, symbol["disk_full"]) for d in one("disk_full")),
        kill_switch=tuple((d, days[index[d] + 1]) for d in kill),
        breaker_days=tuple(entering),
        reload_on=reload_on,
        unplaced=tuple(sorted(unplaced + ([] if entering else ["breaker"]))),
    )


def entry_sessions(sessions: Sequence[date], symbols: Sequence[str], strategy_params: str, seed: int = 7) -> dict[date, frozenset[str]]:
    """The sessions on which the strategy enters, per the offline source's daily bars: a cross on one
    session's bar is decided on at the next session (its daily bar arrives at that open)."""
    from lake.sources.synthetic import SyntheticSource
    from strategies.registry import load_strategy

    days = sorted(sessions)
    first = datetime.combine(days[0] - timedelta(days=400), time(0), tzinfo=UTC)
    last = datetime.combine(days[-1] + timedelta(days=1), time(0), tzinfo=UTC)
    bars = SyntheticSource(seed=seed).fetch(list(symbols), "1d", first, last).sort("symbol", "ts")
    strategy = load_strategy("sma_cross")
    signals = strategy.signals(bars, strategy.params(**json.loads(strategy_params)))
    out: dict[date, set[str]] = {}
    after = {d: n for d, n in zip(days, days[1:], strict=False)}
    for row in signals.filter(signals["entry_long"]).iter_rows(named=True):
        bar_day = row["ts"].astimezone(NY).date()
        if bar_day in after:
            out.setdefault(after[bar_day], set()).add(row["symbol"])
    return {d: frozenset(s) for d, s in out.items()}


def rules_answer(view: dict[str, Any]) -> dict[str, object]:
    """What the rule analyst (trading.agents.rules, default config) proposes for this prompt's context:
    a model that agrees with the rules, so a soak with a model trades as one without."""
    signal, position, close = view.get("signal") or {}, float(view.get("position") or 0.0), view.get("close")
    wants = (("entry_long", position <= 0, "BUY"), ("exit_long", position > 0, "SELL"), ("entry_short", position >= 0, "SELL"), ("exit_short", position < 0, "BUY"))
    want = next((side for column, holds, side in wants if signal.get(column) and holds), None)  # SymbolContext.wants
    if want is None:
        return {"action": "HOLD", "confidence": 1.0, "rationale": "model: no signal", "entry": None, "stop": None, "target1": None, "target2": None}
    exiting = (want == "SELL" and position > 0) or (want == "BUY" and position < 0)
    levels = {k: None if exiting else signal.get(k) for k in ("stop", "target1", "target2")}
    return {"action": want, "confidence": 1.0 if exiting else 0.6, "rationale": f"model: {view.get('strategy')} {want.lower()} signal", "entry": close, **levels}


def rules_model(timeout_days: Sequence[date]) -> Callable[[dict[str, Any]], Any]:
    """A loopback OpenAI server's responder: the rules' answer, except on `timeout_days` (the simulated
    New York date), when it answers nothing for a minute (the client times out first)."""
    from tests.fakes.openai_server import Reply, auto_reply

    days = frozenset(timeout_days)

    def respond(body: dict[str, Any]) -> Reply:
        if datetime.now(NY).date() in days:
            return Reply(delay=60.0)
        if "response_format" not in body:
            return auto_reply(body)
        view = json.loads(body["messages"][-1]["content"])
        return Reply(content=json.dumps(rules_answer(view)))

    return respond
