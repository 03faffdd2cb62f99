"""Trading benchmark: one decision step for 50 symbols, and replaying a 1,000,000-event ledger.

Rows (one run, one table, ratios first):
- **ledger reads of one cycle**: what a decision step asked the ledger before the projections (the
  old per-question passes: portfolio replay, safety state per `Safety.state()` call, spend, tokens,
  recent decisions; `--old-passes` of them) against one projection pass, on the same 1 M-event
  ledger. The ratio is the row to read first.
- **replay, 1 M events**: the projection pass (`trading.ledger.projections.project`: portfolio,
  halts, marks, orders, spend, day summary) over a ledger shaped like a trading one (signals,
  decisions, orders, fills, marks, interventions, costs), and over bench_ledger's shape (70 % fills,
  every payload decoded); `replay_portfolio` (deposits and fills only) beside them. Target < 5 s.
  The projection's portfolio must equal the fills' own replay.
- **a new process on the ledger, from its snapshot**: the projection stored in the ledger
  (`ledger_snapshots`) plus `--tail` events written after it, read by a fresh `Ledger` (what a new
  process pays), against the full pass; the snapshot's save time and size beside it. The other
  rows run with snapshots off, so they stay full passes.
- **decision step, 50 symbols, rule agents**: `trading.step.trading_step` in simulation (simulated
  broker, reconcile, breakers, contexts, pipeline, executor, ledger) plus the cycle's projection
  reads, on a ledger that already holds `--history` events: the first step (pays the projection pass
  of the history) and the median of the next ones (catch up only). Target < 300 ms.
No timing is asserted anywhere in the tests; this script is where the figures come from.
Run: `.venv/bin/python benchmarks/bench_trading.py [--events 1000000] [--history 20000]`.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lake.sources.synthetic import SyntheticSource  # noqa: E402
from strategies.builtin import SMA_CROSS  # noqa: E402
from trading.brokers.simulated import SimulatedBroker  # noqa: E402
from trading.events import Event, EventType  # noqa: E402
from trading.ledger import Ledger, Portfolio, project, replay_portfolio  # noqa: E402
from trading.ledger.projections import Projection  # noqa: E402
from trading.models import Mode  # noqa: E402
from trading.pipeline import DecisionPipeline, PipelineConfig  # noqa: E402
from trading.risk import RiskLimits  # noqa: E402
from trading.step import trading_step  # noqa: E402

N_SYMBOLS = 50
SYMBOLS = [f"S{i:03d}" for i in range(N_SYMBOLS)]
START = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
BATCH = 10_000
STEP_TARGET_MS = 300.0
REPLAY_TARGET_S = 5.0
# A trading ledger's mix (per 100 events), by what a cycle of 50 symbols writes.
TRADING_MIX = [(EventType.SIGNAL, 30), (EventType.RISK_ASSESSMENT, 15), (EventType.DECISION, 20), (EventType.ORDER_SUBMITTED, 8),
               (EventType.FILL, 12), (EventType.RECONCILIATION, 6), (EventType.INTERVENTION, 2), (EventType.COST, 7)]  # fmt: skip
FILLS_MIX = [(EventType.FILL, 70), (EventType.DECISION, 15), (EventType.COST, 15)]  # bench_ledger's shape


@dataclass
class Row:
    what: str
    figure: str
    target: str = ""
    ok: bool | None = None

    def line(self) -> str:
        mark = "" if self.ok is None else ("yes" if self.ok else "**no**")
        return f"| {self.what} | {self.figure} | {self.target} | {mark} |"


def _payload(kind: EventType, rng: random.Random, i: int, symbol: str, ts: datetime, prices: dict[str, float]) -> dict[str, Any]:
    session = ts.date().isoformat()
    price = round(prices[symbol], 2)
    if kind == EventType.FILL:
        prices[symbol] *= math.exp(rng.gauss(0, 0.002))
        qty = float(rng.randint(1, 200))
        return {"fill_id": uuid.UUID(int=rng.getrandbits(128)).hex, "client_order_id": f"ql-{i:032x}", "symbol": symbol,
                "side": rng.choice(["buy", "sell"]), "quantity": qty, "price": price, "commission": round(qty * 0.005, 4),
                "ts": ts.isoformat().replace("+00:00", "Z")}  # fmt: skip
    if kind == EventType.DECISION:
        return {"run_id": "r", "strategy": "sma_cross", "symbol": symbol, "decided_at": ts.isoformat(), "verdict": rng.choice(["EXECUTE", "HOLD"]),
                "side": "buy", "quantity": 10.0, "entry": price, "stop": round(price * 0.95, 2), "target1": round(price * 1.05, 2),
                "target2": round(price * 1.1, 2), "rationale": "fast SMA crossed above slow; trend and volume agree"}  # fmt: skip
    if kind == EventType.ORDER_SUBMITTED:
        return {"client_order_id": f"ql-{i:032x}", "broker_order_id": f"b-{i}", "symbol": symbol, "side": "buy", "quantity": 10.0,
                "status": "filled", "session": session}  # fmt: skip
    if kind == EventType.RECONCILIATION:
        return {"ok": True, "source": "simulated", "cash": 1e6, "equity": 1e6 * (1 + rng.gauss(0, 0.01)), "positions": {symbol: 10.0}, "session": session}
    if kind == EventType.INTERVENTION:
        return {"kind": rng.choice(["blocked", "flatten", "daily_loss", "resume"]), "reason": "bench", "session": session}
    if kind == EventType.COST:
        return {"scope": "run", "run_cost_usd": 0.0012, "model_calls": 3, "prompt_tokens": 2400, "completion_tokens": 240}
    if kind == EventType.RISK_ASSESSMENT:
        return {"stage": "hard", "symbol": symbol, "approved": True, "quantity": 10.0, "reasons": [], "hard_violations": []}
    return {"wants": "BUY", "signal": {"entry_long": True, "exit_long": False, "close": price}}


def events(n: int, mix: list[tuple[EventType, int]], seed: int = 1) -> Iterator[list[Event]]:
    """Batches of `n` events (a deposit first), one second apart; no wall clock."""
    rng = random.Random(seed)
    kinds = [k for k, weight in mix for _ in range(weight)]
    prices = {s: rng.uniform(20, 500) for s in SYMBOLS}
    batch = [Event(type=EventType.DEPOSIT, run_id="r", mode=Mode.SIMULATION, payload={"amount": 1e7}, as_of=START, recorded_at=START)]
    for i in range(1, n):
        ts = START + timedelta(seconds=i)
        kind, symbol = rng.choice(kinds), rng.choice(SYMBOLS)
        payload = _payload(kind, rng, i, symbol, ts, prices)
        batch.append(Event(type=kind, run_id=f"run-{i // 5_000:05d}", mode=Mode.SIMULATION, symbol=symbol, as_of=ts, recorded_at=ts, payload=payload))
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def fill_ledger(url: str, n: int, mix: list[tuple[EventType, int]]) -> tuple[Ledger, float]:
    ledger = Ledger(url)
    start = time.perf_counter()
    for batch in events(n, mix):
        ledger.append_many(batch)
    return ledger, time.perf_counter() - start


def old_cycle_reads(ledger: Ledger, safety_reads: int) -> None:
    """The passes a cycle made before the projections (each a full read of its event types)."""
    replay_portfolio(ledger, until_seq=ledger.last_seq())  # held symbols (until_seq: the targeted replay, not the projection)
    replay_portfolio(ledger, until_seq=ledger.last_seq())  # the step's reconcile
    for _ in range(safety_reads):  # Safety.state(): breakers, snapshot, execute, flatten, reconcile
        for _ in ledger.payloads([EventType.INTERVENTION, EventType.RECONCILIATION, EventType.ORDER_SUBMITTED]):
            pass
    for _ in range(2):  # spent_on, tokens_on: Event models of every COST
        for _ in ledger.events(types=[EventType.COST]):
            pass
    for _ in ledger.events(types=[EventType.DECISION]):  # recent decisions for the tools
        pass


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[float, Any]:
    """Wall seconds of `fn(*args)` (its CPU seconds go to CPU below: the machine is shared)."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    CPU.append(time.process_time() - cpu)
    return time.perf_counter() - start, out


CPU: list[float] = []  # CPU seconds of each `timed` call, in order


def snapshot_rows(ledger: Ledger, n: int, full_s: float, tail: int) -> list[Row]:
    """A new process on `ledger` after a snapshot: the snapshot plus `tail` newer events, not a full pass."""
    from trading.ledger import projections

    projections.SNAPSHOT_EVERY = SNAPSHOTS_ON
    try:
        base = Ledger(ledger.url)
        projection = project(base)  # a full pass, then the snapshot saved
        save_s, _ = timed(projections._save_snapshot, base, projection)  # the save alone, again
        size = len(projections.to_json(projection))
        for batch in events(tail, TRADING_MIX, seed=2):
            ledger.append_many(batch)
        fresh = Ledger(ledger.url)  # a new process: nothing kept
        seconds, caught_up = timed(project, fresh)
        full = Projection()
        full.apply_rows(ledger.rows(payload_types=projections.PAYLOAD_TYPES))  # the same ledger in one pass
        assert caught_up == full, "snapshot + tail differs from a full pass"
        base.close()
        fresh.close()
    finally:
        projections.SNAPSHOT_EVERY = SNAPSHOTS_OFF
    return [
        Row(f"a new process, {n:,} events: full pass / snapshot + {tail:,} newer events", f"{full_s / seconds:.1f}x ({full_s:.2f} s vs {seconds:.2f} s)"),
        Row("saving the snapshot (JSON in ledger_snapshots)", f"{save_s:.2f} s, {size / 1e6:.1f} MB"),
    ]


SNAPSHOTS_ON, SNAPSHOTS_OFF = 50_000, 10**15  # the module's default; "never" for the full-pass rows


def replay_rows(tmp: Path, n: int, old_passes: int, tail: int = 10_000) -> list[Row]:
    rows: list[Row] = []
    for label, mix in (("trading mix", TRADING_MIX), ("bench_ledger mix, 70 % fills", FILLS_MIX)):
        ledger, append_s = fill_ledger(f"sqlite:///{tmp / (label.split()[0] + '.sqlite')}", n, mix)
        try:
            seconds, projection = timed(project, Ledger(ledger.url))  # a fresh Ledger: no projection kept yet
            cpu = CPU[-1]
            replay_s, portfolio = timed(replay_portfolio, ledger, until_seq=ledger.last_seq())
            assert isinstance(projection, Projection) and isinstance(portfolio, Portfolio)
            assert projection.portfolio == portfolio, "the projection's portfolio differs from the fills' replay"
            target = f"< {REPLAY_TARGET_S:.0f} s"
            rows.append(Row(f"projection pass, {n:,} events ({label})", f"{seconds:.2f} s wall, {cpu:.2f} s CPU ({n / seconds:,.0f} events/s)", target, seconds < REPLAY_TARGET_S))
            rows.append(Row(f"replay_portfolio (deposits, fills), same ledger ({label})", f"{replay_s:.2f} s wall, {CPU[-1]:.2f} s CPU", target, replay_s < REPLAY_TARGET_S))
            rows.append(Row(f"append {n:,} events, validated on write ({label})", f"{append_s:.1f} s ({n / append_s:,.0f} events/s, building the events included)"))
            if mix is TRADING_MIX:
                rows[:0] = snapshot_rows(ledger, n, seconds, tail)
                old_s, _ = timed(old_cycle_reads, ledger, old_passes)
                fresh = Ledger(ledger.url)
                project(fresh)
                catch_s, _ = timed(project, fresh)
                ratio = f"{old_s / seconds:.1f}x ({old_s:.2f} s vs {seconds:.2f} s)"
                rows.insert(0, Row(f"ledger reads of one cycle, {n:,} events: the old passes / one projection pass", ratio))
                rows.insert(1, Row("a later read in the same process (catch up, nothing new)", f"{catch_s * 1e3:.1f} ms"))
        finally:
            ledger.close()
    return rows


def step_rows(tmp: Path, history: int, steps: int) -> list[Row]:
    bars = SyntheticSource(seed=1).fetch(SYMBOLS, "1d", datetime(2023, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC))
    stamps = bars["ts"].unique().sort().to_list()
    params = SMA_CROSS.params(fast=5, slow=20)
    limits = RiskLimits(max_open_positions=N_SYMBOLS, max_sector_pct=1.0, max_position_pct=0.02, max_trades_per_day=1000)
    ledger, _ = fill_ledger(f"sqlite:///{tmp / 'steps.sqlite'}", history, TRADING_MIX)
    ledger.close()
    ledger = Ledger(ledger.url)  # a new process's ledger: no projection yet
    broker = SimulatedBroker(cash=1e7)
    decider = DecisionPipeline(PipelineConfig(limits=limits))

    def step(k: int, ledger: Ledger) -> Any:
        as_of = stamps[-steps - 1 + k]
        now = stamps[-steps + k] + timedelta(hours=1)  # 10:30 New York on the next session: inside the window
        window = bars.filter(bars["ts"] >= stamps[-steps - 61 + k])  # what load_window reads: lookback and more
        projection = project(ledger)  # what run_decision_cycle reads before the step
        spent, per_call = projection.spent_on(as_of.date())
        return trading_step(ledger=ledger, broker=broker, decider=decider, strategy=SMA_CROSS, params=params, bars=window, as_of=as_of, now=now,
                            mode=Mode.SIMULATION, run_id=f"step-{k}", spent_today=spent, tokens_today=projection.tokens_on(as_of.date()),
                            per_call_costs=per_call)  # fmt: skip

    times, cpus, decisions, orders = [], [], 0, 0
    for k in range(steps - 1):  # the first one warms the process up (calendars, numba, imports)
        seconds, report = timed(step, k, ledger)
        times.append(seconds)
        cpus.append(CPU[-1])
        decisions += len(report.result.decisions)
        orders += len(report.orders)
    ledger.close()
    cold, _ = timed(step, steps - 1, Ledger(ledger.url))  # as a new run's process: the projection pass first
    warm, warm_cpu = statistics.median(times[1:]) * 1e3, statistics.median(cpus[1:]) * 1e3
    target = f"< {STEP_TARGET_MS:.0f} ms"
    return [
        Row(f"decision step, {N_SYMBOLS} symbols, rule agents, simulation: median of {steps - 2} steps", f"{warm:.0f} ms wall, {warm_cpu:.0f} ms CPU", target, warm < STEP_TARGET_MS),
        Row(f"a step with a fresh Ledger on {history:,} events (pays the projection pass)", f"{cold * 1e3:.0f} ms wall, {CPU[-1] * 1e3:.0f} ms CPU", target, cold * 1e3 < STEP_TARGET_MS),
        Row("decisions / orders over the steps", f"{decisions} / {orders}"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--history", type=int, default=20_000, help="events in the ledger before the decision steps")
    parser.add_argument("--steps", type=int, default=11)
    parser.add_argument("--old-passes", type=int, default=5, help="Safety.state() calls of one old step")
    parser.add_argument("--tail", type=int, default=10_000, help="events written after the snapshot")
    args = parser.parse_args()
    from trading.ledger import projections

    projections.SNAPSHOT_EVERY = SNAPSHOTS_OFF  # full passes, except in the snapshot rows
    with tempfile.TemporaryDirectory(prefix="bench_trading_") as tmp:
        rows = replay_rows(Path(tmp), args.events, args.old_passes, args.tail) + step_rows(Path(tmp), args.history, args.steps)
    print("\n| what | figure | target | met |\n|---|---|---|---|")
    for row in rows:
        print(row.line())


if __name__ == "__main__":
    main()
