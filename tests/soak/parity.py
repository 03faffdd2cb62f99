"""The soak's simulated account against the backtest the README says it equals, session by session.

What the deployment does on daily bars (trading/cycle.py, trading/step.py, the simulated broker): a
session's daily bar reaches the lake at the next session's open (`market_open_schedule`), so every
decide run of session s (the new-bar sensor's after the open, 11:00, 14:30, the window's end)
decides on bar s-1, the newest bar complete by its now, all with the same client order ids. An order
fills at the open of the first bar that opens at or after the instant it was sent (README, modes):
bar s+1. That is `run_backtest` (next open) on the same daily bars with the strategy's signals and
the closes one bar late (`one_bar_late`): at bar s it decides on bar s-1's signal and sizes and caps
on bar s-1's closes, as the decide runs of session s do, and fills at bar s+1's open. (Signals alone
made late are not it: the hard limits' cut at the decision then reads bar s's closes, and a
faulted quarter bought MSFT 3 where the account bought 4.) The rest is the deployment's config:
the ledger's deposit as the initial cash, the simulated broker's costs and fill model
(`trading.session.backtest_config`), the pipeline's hard limits (`trading.session.sizing_limits`).

Constraints read from the ledger (what happened to the account that the bars alone do not say):
- a bar never decided on (the source down at the next open: the bar arrives with the following one)
  has its signals dropped;
- a close the deployment sent (the window's flatten, the kill switch: `close-` client ids) is an exit
  of that symbol at that session's bar;
- a session whose every decision run inside the window found trading halted (kill switch, drawdown:
  until a resume; daily loss: that session) has no entry at its bar; the engine's own breakers are
  lifted (they would measure the account a bar later than the deployment's marks do);
- a session with a flatten or kill switch has no entry at its bar (they cancel every open order).

Compared, at each session's bar up to the first one that cannot be: every fill (bar, symbol, side,
quantity, price, commission) against the backtest's orders, and the account's equity (the ledger's
fills replayed, marked at the bar's closes; at the end, the simulated broker's own cash and
positions) against the backtest's, to 1e-9 relative. Sessions that cannot be compared are in
`uncompared` with the reason, and said once among the problems: never skipped silently. The account
at bar s is its cash and positions after bar s's fills marked at bar s-1's closes, as the backtest's
(`decision_closes`). A flatten (or kill switch) with an order in flight (sent in an earlier session,
so by the fill rule filled at this session's open, a bar the simulated broker lives through only the
next session) keeps that order and closes the position it makes (`SimulatedBroker.close_all`), as
the backtest does: that order's entry at the bar before, the close an exit at this one. An order the
broker canceled after its fill bar had opened anyway would part the two from there: found
(`_cut_by_close_all`), and the sessions from it said uncompared, never compared wrongly.

Where the two could still part (a fill or the equity would differ: a problem): the backtest's book at
bar s has the fills of bar s's open, which the deployment learns of only at the next session; the
decision's cut (cash, position and sector shares) then reads a different book. With the window's
flatten on, that needs entries in two symbols on consecutive sessions while nothing is held (else
the flatten cancels the second: the case above); not seen in a month or a faulted quarter.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl

from backtests.engine import BacktestResult, run_backtest
from lake.calendar import session_bounds
from lake.store import read_bars
from strategies.base import Strategy
from strategies.registry import load_strategy
from tests.soak.harness import SoakResult, environment
from trading.brokers.simulated import SimConfig, SimulatedBroker
from trading.events import Event, EventType
from trading.ledger import Ledger
from trading.pipeline import load_pipeline_config
from trading.risk import RiskLimits
from trading.session import backtest_config, sizing_limits

NY = ZoneInfo("America/New_York")
TOLERANCE = 1e-9  # relative, on equity, fill prices, quantities and commissions
SIGNALS = ("entry_long", "exit_long", "entry_short", "exit_short")
HALTS, RESUME = ("kill_switch", "drawdown"), "resume"  # halted until a resume
SESSION_HALTS = ("daily_loss",)  # no new risk for the rest of the session
CLOSE_ALL = ("flatten", "kill_switch")  # interventions that cancel every open order (SimulatedBroker.close_all)


@dataclass
class Parity:
    compared: list[date] = field(default_factory=list)  # sessions whose bar was compared
    uncompared: dict[date, str] = field(default_factory=dict)  # session -> why it could not be
    fills: int = 0  # the account's fills compared with the backtest's orders
    max_abs: float = 0.0  # the largest equity difference over the compared sessions
    max_rel: float = 0.0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # constraints taken from the ledger

    def as_dict(self) -> dict[str, object]:
        return {
            "parity_sessions_compared": len(self.compared),
            "parity_sessions_uncompared": len(self.uncompared),
            "parity_fills_compared": self.fills,
            "parity_max_abs_equity_diff": self.max_abs,
            "parity_max_rel_equity_diff": self.max_rel,
        }


def one_bar_late(strategy: Strategy[Any]) -> Strategy[Any]:
    """`strategy` as the deployment acts on it: bar s carries bar s-1's signals and close, so the
    backtest decides at bar s on what the decide runs of session s see (bar s-1, the newest in the
    lake), sizes and caps on its closes, and fills at bar s+1's open. The opens stay: every fill and
    every at-the-open equity is at the real prices. (No look-ahead: shifts towards the future only;
    the first bar, before any trade, keeps its own close.)"""
    columns = (*SIGNALS, "size", "stop", "target1", "target2")

    def compute(bars: pl.DataFrame, params: Any) -> pl.DataFrame:
        out = strategy.signals(bars, params)
        return out.with_columns(
            *(pl.col(c).shift(1).over("symbol") for c in columns),
            pl.col("close").shift(1).over("symbol").fill_null(pl.col("close")),
        )

    return replace(strategy, compute=compute, lookback=lambda p: strategy.lookback(p) + 1, fast_path=None)


def decision_closes(bars: pl.DataFrame) -> dict[tuple[datetime, str], float]:
    """(bar, symbol) -> the close the deployment marks the account at by then: the previous bar's."""
    late = bars.sort("symbol", "ts").with_columns(pl.col("close").shift(1).over("symbol").fill_null(pl.col("close")))
    return {(r["ts"], r["symbol"]): r["close"] for r in late.select("ts", "symbol", "close").iter_rows(named=True)}


def _session(ts: datetime) -> date:
    return ts.astimezone(NY).date()


def deployment_limits(result: SoakResult) -> RiskLimits:
    """The hard limits the soak's decide runs read: the pipeline file of its environment, else the default."""
    env = {**os.environ, **environment(result.settings)}
    return load_pipeline_config(env.get("QUANTLAKE_PIPELINE") or None).limits


def _halted_at(interventions: list[Event], at: datetime) -> bool:
    """Whether new risk was refused at `at`: a kill switch or drawdown not resumed, a daily loss that session."""
    halted, day_halt = False, None
    for e in interventions:
        if e.recorded_at > at:
            break
        kind = e.payload.get("kind")
        if kind in HALTS:
            halted = True
        elif kind in SESSION_HALTS:
            day_halt = _session(e.recorded_at)
        elif kind == RESUME:
            halted, day_halt = False, None
    return halted or day_halt == _session(at)


def build_backtest(result: SoakResult, out: Parity) -> tuple[BacktestResult, pl.DataFrame, float] | None:
    """The backtest the account is held to, on the lake's daily bars: (its result, the bars, the initial cash)."""
    settings, symbols = result.settings, list(result.settings.symbols)
    env = {**os.environ, **environment(settings)}
    strategy = load_strategy(env.get("QUANTLAKE_STRATEGY", "sma_cross"))
    params = strategy.params(**json.loads(env.get("QUANTLAKE_STRATEGY_PARAMS") or "{}"))
    limits = deployment_limits(result)
    sim = SimConfig(**json.loads(result.sim_state.read_text())["config"]) if result.sim_state.exists() else SimConfig()
    with Ledger(result.ledger_url) as ledger:
        deposits = list(ledger.events(types=[EventType.DEPOSIT.value]))
        decisions = list(ledger.events(types=[EventType.DECISION.value]))
        decided = {e.as_of for e in decisions if e.as_of is not None}
        decision_times = sorted({e.recorded_at for e in decisions})
        closes = [e for e in ledger.events(types=[EventType.ORDER_SUBMITTED.value]) if str(e.payload["client_order_id"]).startswith("close-")]
        interventions = list(ledger.events(types=[EventType.INTERVENTION.value]))
    if not deposits:
        out.notes.append("no deposit in the ledger: the deployment never traded")
        return None
    cash = float(deposits[0].payload["amount"])
    bars = read_bars(result.lake, symbols, "1d").sort("symbol", "ts")
    bars = bars.filter(pl.col("ts").dt.convert_time_zone("America/New_York").dt.date() <= settings.end)
    stamps = bars["ts"].unique().sort().to_list()
    trading = [t for t in stamps if _session(t) >= settings.start]
    if not trading:
        out.notes.append("no daily bar of the soak's sessions in the lake")
        return None
    # Signals one bar late; then the ledger's constraints on the late frame (bar s = session s).
    late = one_bar_late(strategy)
    previous = {t: stamps[i - 1] for i, t in enumerate(stamps) if i}
    never = sorted(t for t in trading if previous.get(t) is not None and previous[t] not in decided)
    if never:
        out.notes.append(f"bars never decided on (their signals dropped): {[f'{previous[t]:%Y-%m-%d}' for t in never]}")
    exits = {(_session(e.recorded_at), e.symbol) for e in closes}
    if exits:
        out.notes.append(f"closes sent by the deployment (exits at their session's bar): {sorted((d.isoformat(), s) for d, s in exits)}")
    # A session's entries are refused when trading was halted at every decision run it had inside the window.
    runs: dict[date, list[datetime]] = {}
    for t in decision_times:
        if t < session_bounds(_session(t))[1] - _lead(limits):
            runs.setdefault(_session(t), []).append(t)
    halted = {d for d, times in runs.items() if all(_halted_at(interventions, t) for t in times)}
    if halted:
        out.notes.append(f"sessions halted at every decision (no entry): {sorted(d.isoformat() for d in halted)}")
    # A flatten or kill switch cancels every open order: the session's entries (their fill bar is the next one) too.
    flattened = {_session(e.recorded_at) for e in interventions if e.payload.get("kind") in CLOSE_ALL}
    if flattened - halted:
        out.notes.append(f"sessions whose entries a flatten or kill switch canceled: {sorted(d.isoformat() for d in flattened - halted)}")
    halted |= flattened
    never_set = set(never)

    def constrained(frame: pl.DataFrame, p: Any) -> pl.DataFrame:
        sig = late.signals(frame, p)
        day = pl.col("ts").dt.convert_time_zone("America/New_York").dt.date()
        dropped = pl.col("ts").is_in(list(never_set)) if never_set else pl.lit(False)
        closed = pl.struct(day.alias("d"), pl.col("symbol").alias("s")).is_in([{"d": d, "s": s} for d, s in exits]) if exits else pl.lit(False)
        no_entry = day.is_in(list(halted)) if halted else pl.lit(False)
        return sig.with_columns(
            *(pl.when(dropped).then(False).otherwise(pl.col(c)).alias(c) for c in SIGNALS),
        ).with_columns(
            pl.col("exit_long") | (closed & ~dropped),
            pl.col("exit_short") | (closed & ~dropped),
            pl.when(no_entry | closed).then(False).otherwise(pl.col("entry_long")).alias("entry_long"),
            pl.when(no_entry | closed).then(False).otherwise(pl.col("entry_short")).alias("entry_short"),
        )

    held_to = replace(late, compute=constrained)
    # The breakers as the ledger has them (above): the engine's own would measure a bar later than the
    # deployment's marks (the account is marked at the decision bar's closes, a session after them).
    lifted = limits.model_copy(update={"max_drawdown_pct": 1.0, "daily_loss_limit_pct": 1.0})
    backtest = run_backtest(bars, held_to, params, backtest_config(sim, cash, "1d"), trade_from=trading[0], limits=sizing_limits(lifted, symbols))
    return backtest, bars, cash


def _lead(limits: RiskLimits) -> timedelta:
    """From the close to the last instant an entry may be sent (the window's end, exclusive)."""
    return timedelta(minutes=limits.flatten_before_close_min, microseconds=1)


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= TOLERANCE * max(1.0, abs(a), abs(b))


def _cut_by_close_all(result: SoakResult) -> dict[date, str]:
    """Orders the simulated broker canceled in a flatten or kill switch of a later session than the one
    they were sent in: by the fill rule they had filled at that session's open, but the broker had not
    lived through that bar yet. The sessions from which the account parts from the rule, and why."""
    if not result.sim_state.exists():
        return {}
    with Ledger(result.ledger_url) as ledger:
        cancels = [e.recorded_at for e in ledger.events(types=[EventType.INTERVENTION.value]) if e.payload.get("kind") in CLOSE_ALL]
    out: dict[date, str] = {}
    for item in json.loads(result.sim_state.read_text())["orders"]:
        state, not_before = item["state"], item.get("not_before")
        if state["status"] != "canceled" or state.get("reason") != "cancel all" or not not_before:
            continue
        sent_at = datetime.fromisoformat(not_before)
        sent = _session(sent_at)
        if any(sent_at <= c and _session(c) == sent for c in cancels):
            continue  # canceled in the session it was sent in, before its fill bar: the backtest holds that entry too
        later = [_session(c) for c in cancels if _session(c) > sent]
        day = min(later) if later else sent
        out.setdefault(
            day,
            f"{item['request']['symbol']} order {item['request']['client_order_id'][:14]} sent {sent} was canceled by the flatten or kill "
            f"switch of {day}, after its fill bar (the open of the session after {sent}) had opened, where it had filled by "
            "the fill rule (SimulatedBroker.close_all must keep such an order)",
        )
    return out


def check_equity_vs_backtest(result: SoakResult) -> Parity:
    """The simulated account (the ledger's fills and the broker's end state) against the backtest, per session."""
    out = Parity()
    built = build_backtest(result, out)
    if built is None:
        return out
    backtest, bars, cash = built
    with Ledger(result.ledger_url) as ledger:
        fills = sorted(  # by bar only (two fills of one bar: the ledger's order; their payloads do not compare)
            ((datetime.fromisoformat(str(e.payload["ts"]).replace("Z", "+00:00")), e.payload) for e in ledger.events(types=[EventType.FILL.value])),
            key=lambda f: f[0],
        )
    cut = _cut_by_close_all(result)
    stop_at = min(cut) if cut else None
    closes = decision_closes(bars)  # the backtest marks bar s at bar s-1's closes, as the late frame has them
    want = {(r["ts"], r["symbol"]): r for r in backtest.orders.iter_rows(named=True)}
    got: dict[tuple[datetime, str], dict[str, Any]] = {}
    for ts, p in fills:
        key = (ts, str(p["symbol"]))
        if key in got:  # partial fills of one order on one bar: one row, as the backtest's
            got[key] = {**got[key], "quantity": got[key]["quantity"] + float(p["quantity"]), "commission": got[key]["commission"] + float(p["commission"])}
        else:
            got[key] = {"side": str(p["side"]), "quantity": float(p["quantity"]), "price": float(p["price"]), "commission": float(p["commission"])}
    positions: dict[str, float] = {}
    equity_rows = backtest.equity.filter(pl.col("ts") >= min(t for t in backtest.equity["ts"] if _session(t) >= result.settings.start))
    for row in equity_rows.iter_rows(named=True):
        ts, day = row["ts"], _session(row["ts"])
        if stop_at is not None and day >= stop_at:
            out.uncompared[day] = cut.get(day, f"after {stop_at}: {cut[stop_at]}")
            continue
        for symbol in result.settings.symbols:
            mine, theirs = got.get((ts, symbol)), want.get((ts, symbol))
            if mine is None and theirs is None:
                continue
            if mine is None or theirs is None:
                out.problems.append(f"parity {day} {symbol}: the account {'has no fill' if mine is None else 'filled ' + _fill(mine)}, the backtest {'none' if theirs is None else _order(theirs)}")
            elif not (mine["side"] == theirs["side"] and _close(mine["quantity"], theirs["size"]) and _close(mine["price"], theirs["price"]) and _close(mine["commission"], theirs["fees"])):
                out.problems.append(f"parity {day} {symbol}: the account filled {_fill(mine)}, the backtest {_order(theirs)}")
            else:
                out.fills += 1
            if mine is not None:
                sign = 1.0 if mine["side"] == "buy" else -1.0
                positions[symbol] = positions.get(symbol, 0.0) + sign * mine["quantity"]
                cash -= sign * mine["quantity"] * mine["price"] + mine["commission"]
        equity = cash
        for s in sorted(positions):  # the broker's order: positions in symbol order, then the cash
            equity += positions[s] * closes.get((ts, s), 0.0)
        diff = abs(equity - row["equity"])
        out.max_abs, out.max_rel = max(out.max_abs, diff), max(out.max_rel, diff / max(1.0, abs(row["equity"])))
        if not _close(equity, row["equity"]):
            out.problems.append(f"parity {day}: the account's equity {equity:,.6f} != the backtest's {row['equity']:,.6f} (cash {cash:,.6f} vs {row['cash']:,.6f})")
        out.compared.append(day)
    out.problems += _broker_end(result, cash, positions, stop_at)
    if stop_at is not None:  # not the backtest's rule any more: a problem of the deployment, said once
        days = sorted(out.uncompared)
        out.problems.append(f"parity: sessions {days[0]} .. {days[-1]} not compared ({len(days)}): {cut[stop_at]}")
    return out


def _broker_end(result: SoakResult, cash: float, positions: dict[str, float], stop_at: date | None) -> list[str]:
    """The simulated broker's own cash and positions equal the replay's at the last bar it lived through."""
    if stop_at is not None or not result.sim_state.exists():
        return []
    broker = SimulatedBroker.from_state(json.loads(result.sim_state.read_text()))
    held = {s: q for s, q in broker.positions().items() if abs(q) > 1e-9}
    mine = {s: q for s, q in positions.items() if abs(q) > 1e-9}
    problems = []
    if not _close(broker.cash, cash):
        problems.append(f"parity at the end: the simulated broker's cash {broker.cash:,.6f} != the fills' {cash:,.6f}")
    if set(held) != set(mine) or any(not _close(held[s], mine[s]) for s in held):
        problems.append(f"parity at the end: the simulated broker holds {held}, the fills {mine}")
    return problems


def _fill(f: dict[str, Any]) -> str:
    return f"{f['side']} {f['quantity']:g} at {f['price']:.6f} (commission {f['commission']:.6f})"


def _order(o: dict[str, Any]) -> str:
    return f"{o['side']} {o['size']:g} at {o['price']:.6f} (fees {o['fees']:.6f})"
