"""Metrics a monitoring stack can scrape (Prometheus text format), collected at scrape time.

The collectors read what already records everything — the Dagster instance (runs, durations,
decision latency) and the decision ledger (equity, the session's P&L, positions, orders, fills,
rejections, interventions, halt and breaker state, model cost) — so no code path has to remember to
bump a counter, and a scrape says what the ledger says. `quantlake metrics` serves them.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import dagster as dg
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from trading.ledger import Ledger
    from trading.risk import RiskLimits

LedgerCounts = Callable[[], dict[str, float]]
Clock = Callable[[], datetime]
DECISION_JOB = "decide_job"


class DagsterRunCollector(Collector):
    """Run counts by job and status, and the duration of the most recent run of each job."""

    def __init__(self, instance: dg.DagsterInstance, recent_runs: int = 500) -> None:
        self.instance = instance
        self.recent_runs = recent_runs

    def collect(self) -> Iterable[Metric]:
        runs = self.instance.get_run_records(limit=self.recent_runs)
        counts: Counter[tuple[str, str]] = Counter()
        last_duration: dict[str, float] = {}
        decisions: list[float] = []
        for record in runs:  # newest first
            run = record.dagster_run
            counts[(run.job_name, run.status.value)] += 1
            if record.start_time and record.end_time:
                if run.job_name not in last_duration:
                    last_duration[run.job_name] = record.end_time - record.start_time
                if run.job_name == DECISION_JOB and run.status.value == "SUCCESS":
                    decisions.append(record.end_time - record.start_time)
        total = CounterMetricFamily("quantlake_runs", "Dagster runs by job and status (recent window)", labels=["job", "status"])
        for (job, status), n in sorted(counts.items()):
            total.add_metric([job, status], n)
        yield total
        duration = GaugeMetricFamily("quantlake_cycle_duration_seconds", "Duration of the last run of each job", labels=["job"])
        for job, seconds in sorted(last_duration.items()):
            duration.add_metric([job], seconds)
        yield duration
        # Run start to end of successful decision runs: what a decision takes, scheduling aside.
        latency = SummaryMetricFamily("quantlake_decision_latency_seconds", "Duration of successful decide_job runs (recent window)")
        latency.add_metric([], count_value=len(decisions), sum_value=sum(decisions))
        yield latency
        last = GaugeMetricFamily("quantlake_last_decision_latency_seconds", "Duration of the last successful decide_job run")
        if decisions:
            last.add_metric([], decisions[0])
        yield last


class LedgerCollector(Collector):
    """Counters from the decision ledger, e.g. orders, fills, limit violations, fallbacks."""

    def __init__(self, counts: LedgerCounts) -> None:
        self.counts = counts

    def collect(self) -> Iterator[Metric]:
        for name, value in sorted(self.counts().items()):
            family = CounterMetricFamily(f"quantlake_{name}", f"Ledger count of {name.replace('_', ' ')}")
            family.add_metric([], value)
            yield family


@dataclass
class LedgerReading:
    """The ledger at one moment: one pass over its money events, plus the safety controls' state."""

    equity: float | None = None  # the last reconciled mark
    cash: float | None = None
    session_open_equity: float | None = None
    positions: dict[str, float] = field(default_factory=dict)
    realized_pnl: float = 0.0
    commissions: float = 0.0
    counts: Counter[str] = field(default_factory=Counter)  # events by type
    interventions: Counter[str] = field(default_factory=Counter)  # by kind
    llm_cost_usd: float = 0.0
    llm_tokens: Counter[str] = field(default_factory=Counter)  # prompt / completion
    halted: str | None = None
    tripped_today: frozenset[str] = frozenset()
    trades_today: int = 0

    @property
    def pnl_day(self) -> float:
        """The last mark against the session's first (0 before the session has one)."""
        if self.equity is None or self.session_open_equity is None:
            return 0.0
        return self.equity - self.session_open_equity


_READ = ("deposit", "fill", "reconciliation", "order_submitted", "rejection", "intervention", "cost")
_TYPED = ("reconciliation", "intervention", "cost")  # read through their payload models; the rest only counted
REREAD = 1_000  # positions re-read behind the last one (PostgreSQL can commit a lower seq later)


class LedgerTally:
    """The ledger's money events folded incrementally: a scrape reads only what was written since the
    last one (plus a re-read window, deduplicated by event id), not the whole ledger again."""

    def __init__(self) -> None:
        from trading.ledger import Portfolio

        self.portfolio = Portfolio()
        self.counts: Counter[str] = Counter()
        self.interventions: Counter[str] = Counter()
        self.llm_cost_usd = 0.0
        self.llm_tokens: Counter[str] = Counter()
        self.mark: tuple[int, float, Any] | None = None  # (seq, equity, cash) of the last reconciled mark
        self.floor = -1  # positions up to here were folded in bulk (no ids kept): never re-read
        self.seq = 0
        self.recent: dict[str, int] = {}  # event id -> seq, within the re-read window

    def _apply(self, type_: str, payload: dict[str, Any], v: int, seq: int) -> None:
        from trading.events import CostPayload, InterventionPayload, ReconciliationPayload, validate_payload

        self.counts[type_] += 1
        if type_ in ("deposit", "fill"):  # the hot path, read as the projections read it (validated on write)
            self.portfolio.apply_payload(type_, payload)
            return
        if type_ not in _TYPED:
            return  # only counted
        p = validate_payload(type_, payload, v)
        if isinstance(p, ReconciliationPayload):
            if p.ok and p.equity is not None and (self.mark is None or seq >= self.mark[0]):  # the bulk pass (seq 0) is in order
                self.mark = (seq, p.equity, p.cash)
        elif isinstance(p, InterventionPayload):
            self.interventions[str(p.kind)] += 1
        elif isinstance(p, CostPayload) and p.scope == "run":
            self.llm_cost_usd += p.run_cost_usd
            self.llm_tokens["prompt"] += p.prompt_tokens
            self.llm_tokens["completion"] += p.completion_tokens

    def update(self, ledger: Ledger) -> None:
        if self.floor < 0:  # first read: the bulk in one streamed pass, the last window with ids
            self.floor = max(0, ledger.last_seq() - REREAD)
            for type_, payload, v in ledger.versioned_payloads(_READ, until_seq=self.floor):
                self._apply(type_, payload, v, 0)
            self.seq = self.floor
        for seq, event in ledger.events_with_seq(types=_READ, after_seq=max(self.floor, self.seq - REREAD)):
            if event.event_id in self.recent:
                continue
            self._apply(event.type.value, event.payload, event.v, seq)
            self.recent[event.event_id] = seq
            self.seq = max(self.seq, seq)
        self.recent = {k: v for k, v in self.recent.items() if v > self.seq - REREAD}

    def reading(self, ledger: Ledger, now: datetime, limits: RiskLimits) -> LedgerReading:
        from trading.safety import read_state, session_of

        state = read_state(ledger, session_of(now, limits))
        p = self.portfolio
        return LedgerReading(
            equity=self.mark[1] if self.mark else None,
            cash=self.mark[2] if self.mark else None,
            session_open_equity=state.session_open_equity,
            positions={s: q for s, q in p.positions.items() if q},
            realized_pnl=p.realized_pnl,
            commissions=p.commissions,
            counts=Counter(self.counts),
            interventions=Counter(self.interventions),
            llm_cost_usd=self.llm_cost_usd,
            llm_tokens=Counter(self.llm_tokens),
            halted=state.halted,
            tripped_today=state.tripped_today,
            trades_today=state.trades_today,
        )


def read_ledger(ledger: Ledger, now: datetime, limits: RiskLimits, tally: LedgerTally | None = None) -> LedgerReading:
    """What the metrics report, read from the ledger as of `now` (its session: the exchange's date)."""
    tally = tally or LedgerTally()
    tally.update(ledger)
    return tally.reading(ledger, now, limits)


BREAKERS = ("daily_loss", "trades_per_day", "flatten")


class LedgerStateCollector(Collector):
    """The trading account and its controls, from the ledger at scrape time (`clock` gives now)."""

    def __init__(self, ledger: Ledger, clock: Clock, limits: RiskLimits) -> None:
        self.ledger, self.clock, self.limits = ledger, clock, limits
        self.tally = LedgerTally()
        self._lock = threading.Lock()  # the HTTP server scrapes from its own threads

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            r = read_ledger(self.ledger, self.clock(), self.limits, self.tally)

        def gauge(name: str, doc: str, value: float | None) -> GaugeMetricFamily:
            family = GaugeMetricFamily(f"quantlake_{name}", doc)
            if value is not None:  # no sample rather than a made-up 0 (no mark yet)
                family.add_metric([], value)
            return family

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(f"quantlake_{name}", doc, value=value)

        yield gauge("equity", "Account equity at the last reconciled mark", r.equity)
        yield gauge("cash", "Cash at the last reconciled mark", r.cash)
        yield gauge("pnl_day", "Equity at the last mark less the session's opening mark", r.pnl_day)
        yield gauge("realized_pnl", "Realized P&L before commissions, replayed from the fills", r.realized_pnl)
        yield gauge("open_positions", "Symbols with a position", len(r.positions))
        position = GaugeMetricFamily("quantlake_position", "Signed quantity held", labels=["symbol"])
        for symbol, qty in sorted(r.positions.items()):
            position.add_metric([symbol], qty)
        yield position
        yield counter("orders", "Orders submitted (ledger)", r.counts["order_submitted"])
        yield counter("fills", "Fills (ledger)", r.counts["fill"])
        yield counter("rejections", "Orders rejected (ledger)", r.counts["rejection"])
        yield counter("commissions", "Commissions paid", r.commissions)
        interventions = CounterMetricFamily("quantlake_interventions", "Interventions by kind (breaker trips, kill switch, resume, ...)", labels=["kind"])
        for kind, n in sorted(r.interventions.items()):
            interventions.add_metric([kind], n)
        yield interventions
        yield gauge("trading_halted", "1 while a kill switch or drawdown halt is in force (until resume)", float(r.halted is not None))
        tripped = GaugeMetricFamily("quantlake_breaker_tripped", "1 when the breaker tripped in the current session", labels=["breaker"])
        for breaker in BREAKERS:
            tripped.add_metric([breaker], float(breaker in r.tripped_today))
        yield tripped
        yield gauge("trades_today", "Orders sent in the current session", r.trades_today)
        yield counter("llm_cost_usd", "Model spend recorded by the decision cycles", r.llm_cost_usd)
        tokens = CounterMetricFamily("quantlake_llm_tokens", "Model tokens (reported or estimated)", labels=["kind"])
        for kind in ("prompt", "completion"):
            tokens.add_metric([kind], r.llm_tokens[kind])
        yield tokens


def build_registry(
    instance: dg.DagsterInstance,
    ledger_counts: LedgerCounts | None = None,
    *,
    ledger: Ledger | None = None,
    clock: Clock | None = None,
    limits: RiskLimits | None = None,
) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(DagsterRunCollector(instance))
    if ledger_counts is not None:
        registry.register(LedgerCollector(ledger_counts))
    if ledger is not None:
        from trading.risk import RiskLimits

        registry.register(LedgerStateCollector(ledger, clock or _wall_clock, limits or RiskLimits()))
    return registry


def _wall_clock() -> datetime:
    from datetime import UTC

    return datetime.now(UTC)


def serve(registry: CollectorRegistry, port: int, addr: str = "127.0.0.1") -> Any:
    """Starts the scrape endpoint in a background thread; returns (server, thread)."""
    return start_http_server(port, addr=addr, registry=registry)


def run_metrics(port: int, addr: str = "127.0.0.1", once: bool = False) -> int:
    """`quantlake metrics`: the instance at DAGSTER_HOME and the configured ledger, served (or printed once)."""
    import sys
    import time

    from prometheus_client import generate_latest

    from orchestration.resources import trading_resource

    trading = trading_resource()
    ledger = trading.ledger()
    registry = build_registry(dg.DagsterInstance.get(), ledger=ledger, limits=trading.pipeline().limits)
    try:
        if once:
            sys.stdout.write(generate_latest(registry).decode())
            return 0
        server, thread = serve(registry, port, addr)
        print(f"serving Prometheus metrics on http://{addr}:{port}/metrics (Ctrl-C stops)", flush=True)
        try:
            while thread.is_alive():
                time.sleep(1.0)
        except KeyboardInterrupt:
            server.shutdown()
        return 0
    finally:
        ledger.close()
