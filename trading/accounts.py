"""Several pipelines, one account: each pipeline trades its own sub-account of the one ledger.

`SubAccount(ledger, pipeline_id)` is the ledger as one pipeline sees it: every event it writes
carries the pipeline id (payload key `pipeline`) and an event id of its own (two pipelines' initial
deposits are two events), and every read (events, payload streams, the projections' rows and
snapshots) sees that pipeline's events only. So the step, the breakers, the projections and the
executor run unchanged on a sub-account: its cash is its allocation, its positions, P&L, halts and
model spend its own. The account's own interventions (the kill switch, a resume: written with no
pipeline id) are every sub-account's: a kill switch halts every pipeline. The account's hard limits
(`AccountPlan.limits`) hold across all of them: `AccountBook`, checked after each pipeline's own. In
paper and live the pipelines share one broker account too: `trading.brokers.split` tags each order
with its pipeline and books its fills in that pipeline's sub-account (`unattributed_positions`: what
the account holds beyond the books). The plan (`AccountPlan`, a YAML or JSON file) lists the pipelines and their
capital: a share of the account (at most 1) or an amount (above 1).
"""

from __future__ import annotations

import glob
import hashlib
import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from strategies import controls
from strategies.base import Strategy, StrategyError
from strategies.registry import load_strategy
from trading.events import Event, EventType
from trading.ledger import Ledger, project
from trading.ledger.store import EVENT_ID_MAX, Snapshot
from trading.models import Action, PortfolioSnapshot, RiskAssessment, TradeProposal
from trading.risk import RiskLimits, assess

PIPELINE_KEY = "pipeline"
PIPELINE_ID = r"^[a-z0-9][a-z0-9_-]{0,31}$"
_Row = tuple[int, str, str | None, str | None, dict[str, Any] | None, int]


class PipelineSlot(BaseModel):
    """One pipeline of the plan: its sub-account's id, its file, its capital and (optionally) its own strategy and params."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=PIPELINE_ID, description="Names the sub-account in the ledger.")
    file: str | None = Field(None, description="The pipeline file (relative to the plan's folder); None: the rule-based default.")
    capital: float = Field(gt=0, description="A share of the account (0 < x <= 1) or an amount in USD (> 1).")
    paused: bool = Field(False, description="A paused pipeline does not decide (no model call, no order); its book stays as it is.")
    strategy: str | None = Field(None, description="A registered strategy name or 'package.module:ATTRIBUTE'; None: the run's strategy.")
    params: dict[str, Any] | None = Field(None, description="Its strategy's parameters (unset ones take defaults); None with no strategy: the run's.")

    @model_validator(mode="after")
    def _resolvable(self) -> PipelineSlot:
        if (own := self._own_strategy()) is not None:  # a bad name or parameter fails the plan's load
            self._with_params(own)
        return self

    def decides_with(self, strategy: Strategy[Any], params: Any) -> tuple[Strategy[Any], Any]:
        """The strategy and parameters this pipeline decides on, given the run's (used where the slot names
        none; params alone apply to the run's strategy); a bad one raises ValueError naming the pipeline and the field."""
        if self.strategy is None and self.params is None:
            return strategy, params
        chosen = self._own_strategy() or strategy
        return chosen, self._with_params(chosen)

    def _own_strategy(self) -> Strategy[Any] | None:
        try:
            return None if self.strategy is None else load_strategy(self.strategy)
        except StrategyError as exc:
            raise ValueError(f"pipeline {self.id!r}: strategy: {exc}") from None

    def _with_params(self, strategy: Strategy[Any]) -> Any:
        try:
            return strategy.params(**(self.params or {}))
        except StrategyError as exc:
            raise ValueError(f"pipeline {self.id!r}: params: {exc}") from None


class AccountPlan(BaseModel):
    """The pipelines that share the account, each with its capital."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pipelines: list[PipelineSlot] = Field(min_length=1)
    limits: RiskLimits | None = Field(
        None, description="Hard limits for the account as a whole (its sizing caps: position, sector, open positions, shorts), over every pipeline's book."
    )
    folder: Path = Path(".")  # where the pipeline files are (set by `load_account_plan`)
    source: Path | None = None  # the file it was loaded from (set by `load_account_plan`)

    @model_validator(mode="after")
    def _consistent(self) -> AccountPlan:
        ids = [p.id for p in self.pipelines]
        if len(set(ids)) != len(ids):
            raise ValueError(f"pipeline ids must differ: {ids}")
        shares = sum(p.capital for p in self.pipelines if p.capital <= 1)
        if shares > 1 + 1e-12:
            raise ValueError(f"the pipelines' shares of the account add up to {shares:g}, more than 1")
        return self

    def allocations(self, account_cash: float) -> dict[str, float]:
        """Each pipeline's capital in USD; the amounts and the shares together cannot exceed the account."""
        out = {p.id: p.capital * account_cash if p.capital <= 1 else p.capital for p in self.pipelines}
        if sum(out.values()) > account_cash * (1 + 1e-12):
            raise ValueError(f"the pipelines' capital ${sum(out.values()):,.2f} exceeds the account's ${account_cash:,.2f}: {out}")
        return out

    def file_of(self, slot: PipelineSlot) -> Path | None:
        return None if slot.file is None else self.folder / slot.file


def load_account_plan(path: str | Path) -> AccountPlan:
    """The plan from a YAML or JSON file; a bad file or field raises ValueError naming both."""
    import yaml  # JSON is YAML too

    file = Path(path)
    try:
        raw = yaml.safe_load(file.read_text()) or {}
    except OSError as exc:
        raise ValueError(f"pipelines plan {file}: {exc.strerror}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"pipelines plan {file}: expected a mapping at the top, got {type(raw).__name__}")
    try:
        return AccountPlan.model_validate({**raw, "folder": file.parent, "source": file})
    except ValidationError as exc:
        fields = "; ".join(".".join(str(p) for p in e["loc"]) + f": {e['msg']}" for e in exc.errors())
        raise ValueError(f"pipelines plan {file}: {fields}") from None


_plan_source: Callable[[], Path | None] | None = None


def use_plan_source(source: Callable[[], Path | None]) -> None:
    """Where the configured plan's file comes from, asked at each use (orchestration passes its setting
    QUANTLAKE_PIPELINES down: orchestration/settings.py `pass_settings_down`); this layer reads no environment."""
    global _plan_source
    _plan_source = source


def configured_plan_file() -> Path | None:
    """The plan decide runs use when their config names none; None: the one pipeline on the whole account."""
    if _plan_source is None:  # a plan that never arrived would trade the whole account with one pipeline
        raise RuntimeError("trading.accounts has no plan source: import orchestration first (it passes QUANTLAKE_PIPELINES down)")
    return _plan_source()


def pipeline_state_file(account_state: Path, pipeline_id: str) -> Path:
    """A pipeline's simulated broker state, beside the account's and named by the pipeline (`sim.json` -> `sim.bold.json`)."""
    return account_state.with_name(f"{account_state.stem}.{pipeline_id}{account_state.suffix}")


def pipeline_state_files(account_state: Path) -> dict[str, Path]:
    """Every pipeline's simulated broker state beside the account's, by pipeline id: found on disk, not
    read from a plan, so a kill switch reaches every book any plan ever opened."""
    prefix, suffix = f"{account_state.stem}.", account_state.suffix
    found = {}
    for path in sorted(account_state.parent.glob(f"{glob.escape(prefix)}*{glob.escape(suffix)}")):
        pipeline_id = path.name[len(prefix) : len(path.name) - len(suffix)]
        if re.fullmatch(PIPELINE_ID, pipeline_id) and path.is_file():
            found[pipeline_id] = path
    return found


class AccountBook:
    """The whole account while its pipelines decide in turn: the ledger's portfolio (every sub-account)
    plus what the pipelines before in this run passed (booked at its decision price, as not yet filled).
    `check` runs the account's limits on it after a pipeline's own limits passed an order: they can only
    cut. Breakers (daily loss, drawdown) and trades per day stay per pipeline."""

    def __init__(self, ledger: Ledger, limits: RiskLimits) -> None:
        self.ledger, self.limits = ledger, limits
        self.marks: dict[str, float] = {}
        self.pending: dict[str, float] = {}  # signed quantities passed in this run
        self.pending_cash = 0.0

    def mark(self, marks: dict[str, float]) -> None:
        self.marks.update(marks)

    def snapshot(self) -> PortfolioSnapshot:
        held = project(self.ledger).portfolio
        positions = {s: q for s in {*held.positions, *self.pending} if (q := held.positions.get(s, 0.0) + self.pending.get(s, 0.0))}
        cash = held.cash + self.pending_cash
        equity = cash + sum(q * self.marks[s] for s, q in positions.items() if s in self.marks)
        return PortfolioSnapshot(cash=cash, equity=equity, positions=positions, prices=dict(self.marks))

    def check(self, proposal: TradeProposal, quantity: float, price: float, *, fractional: bool = False) -> RiskAssessment:
        """The account's verdict on `quantity` of `proposal` at `price`; what it passes is booked."""
        book = self.snapshot()
        unmarked = sorted(s for s in book.positions if s not in self.marks)
        reducing = controls.reduces(book.positions.get(proposal.symbol, 0.0), 1.0 if proposal.action == Action.BUY else -1.0)
        if unmarked and not reducing:  # an equity without them would be wrong: fail closed
            return RiskAssessment(symbol=proposal.symbol, approved=False, quantity=0.0, hard_violations=[f"no mark for {unmarked} held by the account"])
        verdict = assess(proposal.model_copy(update={"quantity": quantity}), book, self.limits, price=price, fractional=fractional)
        signed = verdict.quantity if proposal.action == Action.BUY else -verdict.quantity
        self.pending[proposal.symbol] = self.pending.get(proposal.symbol, 0.0) + signed
        self.pending_cash -= signed * price
        return verdict


class SubAccount(Ledger):
    """One pipeline's view of a shared ledger (same engine, same table): writes are stamped with the
    pipeline id, reads see that pipeline's events only (filtered as they stream, on the stamp)."""

    def __init__(self, ledger: Ledger, pipeline_id: str) -> None:  # no new engine, no migration
        self.parent, self.pipeline_id = ledger, pipeline_id
        self.engine, self.dialect, self._password = ledger.engine, ledger.dialect, ledger._password
        self.url = f"{ledger.url}#pipeline={pipeline_id}"

    def close(self) -> None:
        """The parent owns the engine: closing the view closes nothing."""

    def stamp(self, event: Event) -> Event:
        own = hashlib.sha256(f"{self.pipeline_id}|{event.event_id}".encode()).hexdigest()[:EVENT_ID_MAX]
        return event.model_copy(update={"payload": {**event.payload, PIPELINE_KEY: self.pipeline_id}, "event_id": own})

    def _mine(self, type_: str, payload: dict[str, Any] | None) -> bool:
        if payload is None:
            return False
        owner = payload.get(PIPELINE_KEY)
        return owner == self.pipeline_id or (owner is None and type_ == EventType.INTERVENTION.value)  # the account's controls

    def append_many(self, events: Iterable[Event], *, batch: int = 10_000) -> int:
        return super().append_many((self.stamp(e) for e in events), batch=batch)

    def events_with_seq(self, **kw: Any) -> Iterator[tuple[int, Event]]:
        return ((seq, e) for seq, e in super().events_with_seq(**kw) if self._mine(e.type.value, e.payload))

    def payloads(self, types: Iterable[EventType | str], **kw: Any) -> Iterator[tuple[str, dict[str, Any]]]:
        return ((t, p) for t, p in super().payloads(types, **kw) if self._mine(t, p))

    def versioned_payloads(self, types: Iterable[EventType | str], **kw: Any) -> Iterator[tuple[str, dict[str, Any], int]]:
        return ((t, p, v) for t, p, v in super().versioned_payloads(types, **kw) if self._mine(t, p))

    def rows(self, *, after_seq: int = 0, payload_types: Iterable[EventType | str] | None = None, chunk: int = 50_000) -> Iterator[_Row]:
        """Every row's payload is read to know whose it is; those the caller did not ask for are left out again."""
        wanted = None if payload_types is None else {EventType(t).value for t in payload_types}
        for seq, type_, stamp, as_of, payload, v in super().rows(after_seq=after_seq, chunk=chunk):
            if self._mine(type_, payload):
                yield (seq, type_, stamp, as_of, payload, v) if wanted is None or type_ in wanted else (seq, type_, stamp, as_of, None, 1)

    def count(self, *, until_seq: int | None = None) -> int:
        return sum(1 for row in self.rows() if until_seq is None or row[0] <= until_seq)

    def load_snapshot(self, name: str) -> Snapshot | None:
        found = super().load_snapshot(f"{name}@{self.pipeline_id}")
        return None if found is None else replace(found, name=name)

    def save_snapshot(self, snapshot: Snapshot) -> None:
        super().save_snapshot(replace(snapshot, name=f"{snapshot.name}@{self.pipeline_id}"))


def ledger_pipelines(ledger: Ledger) -> list[str]:
    """Every pipeline with a book in the ledger (its deposit carries its id), whatever plan opened it:
    what a kill switch on a split account closes."""
    return sorted({str(p[PIPELINE_KEY]) for _t, p in ledger.payloads([EventType.DEPOSIT]) if p.get(PIPELINE_KEY)})


def unattributed_positions(account: dict[str, float], ledger: Ledger, pipeline_ids: Iterable[str]) -> dict[str, float]:
    """What the broker's account holds beyond the sum of the pipelines' books, by symbol (0 left out):
    a trade by hand, or a fill not booked yet. The split's own reconciliation of the whole account."""
    books = [project(SubAccount(ledger, p)).portfolio.positions for p in pipeline_ids]
    symbols = {*account, *(s for b in books for s in b)}
    gaps = {s: account.get(s, 0.0) - sum(b.get(s, 0.0) for b in books) for s in sorted(symbols)}
    return {s: gap for s, gap in gaps.items() if abs(gap) > 1e-9}


def equity_curves(ledger: Ledger, pipeline_ids: Iterable[str], *, start: datetime | None = None, end: datetime | None = None) -> pl.DataFrame:
    """Each pipeline's equity as its sub-account was marked at each run (the reconciliation marks), in
    [start, end): pipeline, ts, equity."""
    rows = []
    for pipeline_id in pipeline_ids:
        for event in SubAccount(ledger, pipeline_id).events(types=[EventType.RECONCILIATION.value]):
            ts, equity = event.as_of or event.recorded_at, event.payload.get("equity")
            if equity is not None and (start is None or ts >= start) and (end is None or ts < end):
                rows.append((pipeline_id, ts, float(equity)))
    schema: dict[str, pl.DataType] = {"pipeline": pl.String(), "ts": pl.Datetime("us", "UTC"), "equity": pl.Float64()}
    return pl.DataFrame(rows, schema=schema, orient="row").sort("pipeline", "ts")


def compare_pipelines(ledger: Ledger, pipeline_ids: Iterable[str], *, start: datetime | None = None, end: datetime | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Per pipeline over [start, end): capital, last equity, return, Sharpe (daily closes of its marks,
    252 a year), max drawdown, fills, model cost and the return net of it; and the equity curves."""
    ids = list(pipeline_ids)
    curves = equity_curves(ledger, ids, start=start, end=end)
    rows = []
    for pipeline_id in ids:
        sub = SubAccount(ledger, pipeline_id)
        capital = sum(float(e.payload["amount"]) for e in sub.events(types=[EventType.DEPOSIT.value]))
        inside = [e for e in sub.events(types=[EventType.FILL.value, EventType.COST.value]) if _within(e, start, end)]
        fills = sum(1 for e in inside if e.type == EventType.FILL)
        cost = sum(float(e.payload.get("run_cost_usd") or 0.0) for e in inside if e.type == EventType.COST and e.payload.get("scope") == "run")
        equity = curves.filter(pl.col("pipeline") == pipeline_id)["equity"]
        first = float(equity[0]) if equity.len() else capital
        last = float(equity[-1]) if equity.len() else capital
        rows.append({
            "pipeline": pipeline_id, "capital": capital, "equity": last,
            "return": last / first - 1 if first else 0.0, "sharpe": _sharpe(curves.filter(pl.col("pipeline") == pipeline_id)),
            "max_drawdown": _max_drawdown(equity),
            "fills": fills, "model_cost_usd": cost, "return_net_of_model_cost": (last - cost) / first - 1 if first else 0.0,
        })  # fmt: skip
    return pl.DataFrame(rows), curves


def _within(event: Event, start: datetime | None, end: datetime | None) -> bool:
    ts = event.as_of or event.recorded_at
    return (start is None or ts >= start) and (end is None or ts < end)


def _max_drawdown(equity: pl.Series) -> float:
    """The deepest fall from a running peak, as a negative fraction (0.0: none, or no marks)."""
    return min(0.0, *(float(x) for x in (equity / equity.cum_max() - 1).to_list())) if equity.len() else 0.0


def _sharpe(curve: pl.DataFrame) -> float | None:
    """Annualized Sharpe of the daily returns of the last mark of each day; None under two returns or no spread."""
    daily = curve.sort("ts").group_by(pl.col("ts").dt.date(), maintain_order=True).agg(pl.col("equity").last())["equity"]
    returns = daily.pct_change().drop_nulls()
    std = returns.std() if returns.len() >= 2 else None
    return None if not std else float(returns.mean()) / float(std) * math.sqrt(252)  # type: ignore[arg-type]
