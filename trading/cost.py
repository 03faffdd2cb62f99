"""Model cost: tokens always, money when a price is known, budgets in USD and in tokens that stop a run.

Prices are per million tokens (input, output) and live in config. A model missing from the table
takes the pipeline's `default_price` when one is set; otherwise it runs *unpriced*: its tokens are
counted and recorded as unpriced (no made-up dollars), and only the token budgets can bind on it.

Tokens come from the responses' `usage`. A server that sends none gets a local estimate, marked
`estimated`: ceil(characters / 4) of the prompt and of the answer (OpenAI's rule of thumb for
English text and JSON). tiktoken is not used: it is installed (with langchain-openai) but fetches
its encodings over the internet at first use, which fails offline (checked with tiktoken 0.14:
`encoding_for_model("gpt-4o-mini")` raises ConnectionError), and a count that depends on whether a
machine once had the download would make the same run cost differently on two machines.
"""

from __future__ import annotations

import math
import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# USD per 1M tokens (input, output): public list prices, a starting point to override in config.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-5-mini": (0.25, 2.00),
    "rules": (0.0, 0.0),  # the rule-based agents cost nothing
}

CHARS_PER_TOKEN = 4

Pricing = Literal["table", "default", "unpriced"]


class CostError(ValueError):
    """A price or a budget is malformed."""


class BudgetExceeded(RuntimeError):
    """The next model call would take the run or the day over its budget."""


def estimate_tokens(chars: int) -> int:
    """The documented local estimate when a server reports no usage: ceil(characters / 4), at least 1."""
    return max(1, math.ceil(chars / CHARS_PER_TOKEN))


class Usage(BaseModel):
    model_config = ConfigDict(frozen=True)

    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    estimated: bool = False  # counted locally: the server sent no usage

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class PriceTable:
    def __init__(self, prices: Mapping[str, tuple[float, float]] | None = None, default: tuple[float, float] | None = None) -> None:
        self.prices = dict(DEFAULT_PRICES if prices is None else prices)
        self.default = default
        named = [*self.prices.items(), *([("default_price", default)] if default is not None else [])]
        for model, (inp, out) in named:
            if inp < 0 or out < 0:
                raise CostError(f"price for model {model!r} is negative: {inp}, {out}")

    def pricing(self, model: str) -> Pricing:
        if model in self.prices:
            return "table"
        return "default" if self.default is not None else "unpriced"

    def price(self, model: str) -> tuple[float, float] | None:
        return self.prices.get(model, self.default)

    def cost(self, model: str, usage: Usage) -> float | None:
        """USD for `usage`, or None when the model has no price (unpriced: tokens only)."""
        price = self.price(model)
        if price is None:
            return None
        inp, out = price
        return (usage.prompt_tokens * inp + usage.completion_tokens * out) / 1_000_000


class Budget(BaseModel):
    """Limits per run, day and month, in USD (priced calls) and in tokens (every call); None means unlimited.

    The day and the month are the decision bar's (its date as the ledger keys costs: for market-hours
    bars New York's date, for a daily bar its session); `per_day` and `per_month` also gate a run before
    its first model call (`pre_run_check`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    per_run: float | None = Field(default=None, ge=0)
    per_day: float | None = Field(default=None, ge=0)
    per_month: float | None = Field(default=None, ge=0)
    tokens_per_run: int | None = Field(default=None, ge=0)
    tokens_per_day: int | None = Field(default=None, ge=0)


def _agent_totals() -> dict[str, int]:
    return {"prompt": 0, "completion": 0, "calls": 0, "estimated_tokens": 0, "unpriced_tokens": 0}


def _provider_totals() -> dict[str, Any]:
    # responses: charged responses (used or not); answers: used; failures: by kind (timeout, error, invalid,
    # length, refusal, skipped, ...); fallbacks: symbols handed on to the chain's next provider; to_rules:
    # symbols this provider, the chain's last, handed to the rules.
    return {"responses": 0, "answers": 0, "cached": 0, "failures": {}, "fallbacks": 0, "to_rules": 0, "tokens": 0, "estimated_tokens": 0, "usd": 0.0}


class CostTracker:
    """Tokens and money per agent for one run, on top of what the day already spent (thread-safe)."""

    def __init__(
        self, prices: PriceTable, budget: Budget | None = None, *, spent_today: float = 0.0, tokens_today: int = 0, spent_month: float | None = None
    ) -> None:
        self.prices = prices
        self.budget = budget or Budget()
        self.spent_before_run = spent_today
        self.month_before_run = spent_today if spent_month is None else spent_month  # the month includes today
        self.tokens_before_run = tokens_today
        self._lock = threading.Lock()
        self.tokens: dict[str, dict[str, int]] = defaultdict(_agent_totals)
        self.money: dict[str, float] = defaultdict(float)
        self.unpriced_models: set[str] = set()
        self.providers: dict[str, dict[str, Any]] = defaultdict(_provider_totals)

    @property
    def run_cost(self) -> float:
        return sum(self.money.values())

    @property
    def day_cost(self) -> float:
        return self.spent_before_run + self.run_cost

    @property
    def run_tokens(self) -> int:
        return sum(t["prompt"] + t["completion"] for t in self.tokens.values())

    @property
    def day_tokens(self) -> int:
        return self.tokens_before_run + self.run_tokens

    def reserve(self, estimate: float, tokens: int = 0) -> None:
        """Raises BudgetExceeded if a call expected to cost `estimate` USD and `tokens` tokens would break a budget."""
        b = self.budget
        with self._lock:
            if b.per_run is not None and self.run_cost + estimate > b.per_run:
                raise BudgetExceeded(f"run budget ${b.per_run:.4f} would be exceeded: spent ${self.run_cost:.4f} + next call ~${estimate:.4f}")
            if b.per_day is not None and self.day_cost + estimate > b.per_day:
                raise BudgetExceeded(f"daily budget ${b.per_day:.4f} would be exceeded: spent today ${self.day_cost:.4f} + next call ~${estimate:.4f}")
            if b.per_month is not None and self.month_before_run + self.run_cost + estimate > b.per_month:
                raise BudgetExceeded(
                    f"monthly budget ${b.per_month:.4f} would be exceeded: spent this month ${self.month_before_run + self.run_cost:.4f} + next call ~${estimate:.4f}"
                )
            if b.tokens_per_run is not None and self.run_tokens + tokens > b.tokens_per_run:
                raise BudgetExceeded(f"run token budget {b.tokens_per_run} would be exceeded: used {self.run_tokens} + next call ~{tokens}")
            if b.tokens_per_day is not None and self.day_tokens + tokens > b.tokens_per_day:
                raise BudgetExceeded(f"daily token budget {b.tokens_per_day} would be exceeded: used today {self.day_tokens} + next call ~{tokens}")

    def record(self, agent: str, model: str, usage: Usage) -> float | None:
        """Counts the tokens always; returns the USD charged, or None when the model is unpriced."""
        money = self.prices.cost(model, usage)
        with self._lock:
            t = self.tokens[agent]
            t["prompt"] += usage.prompt_tokens
            t["completion"] += usage.completion_tokens
            t["calls"] += 1
            if usage.estimated:
                t["estimated_tokens"] += usage.total_tokens
            if money is None:
                t["unpriced_tokens"] += usage.total_tokens
                self.unpriced_models.add(model)
            else:
                self.money[agent] += money
        return money

    def provider_response(self, provider: str, usage: Usage, usd: float | None) -> None:
        """A response `provider` sent (used or not), with what it was charged."""
        with self._lock:
            p = self.providers[provider]
            p["responses"] += 1
            p["tokens"] += usage.total_tokens
            p["estimated_tokens"] += usage.total_tokens if usage.estimated else 0
            p["usd"] += usd or 0.0

    def provider_answer(self, provider: str, *, cached: bool = False) -> None:
        with self._lock:
            self.providers[provider]["cached" if cached else "answers"] += 1

    def provider_failure(self, provider: str, kind: str, *, to: str) -> None:
        """`provider` gave no usable answer (`kind`) and the symbol went on `to` the next provider or the rules."""
        with self._lock:
            p = self.providers[provider]
            p["failures"][kind] = p["failures"].get(kind, 0) + 1
            p["to_rules" if to == "rules" else "fallbacks"] += 1

    def summary(self) -> dict[str, object]:
        per_agent = {a: {**self.tokens[a], "usd": round(self.money[a], 6)} for a in sorted(self.tokens)}
        return {
            "run_cost_usd": round(self.run_cost, 6),  # priced calls only: see unpriced_tokens
            "day_cost_usd": round(self.day_cost, 6),
            "prompt_tokens": sum(t["prompt"] for t in self.tokens.values()),
            "completion_tokens": sum(t["completion"] for t in self.tokens.values()),
            "total_tokens": self.run_tokens,
            "day_tokens": self.day_tokens,
            "estimated_tokens": sum(t["estimated_tokens"] for t in self.tokens.values()),
            "unpriced_tokens": sum(t["unpriced_tokens"] for t in self.tokens.values()),
            "unpriced_models": sorted(self.unpriced_models),
            "model_calls": sum(t["calls"] for t in self.tokens.values()),
            "per_agent": per_agent,
            "per_provider": {name: {**p, "failures": dict(sorted(p["failures"].items())), "usd": round(p["usd"], 6)} for name, p in sorted(self.providers.items())},
        }


def estimate_call_tokens(prompt_chars: int, max_output_tokens: int) -> int:
    """Before a call: ~4 characters per token for the prompt, the output cap for the answer."""
    return estimate_tokens(prompt_chars) + max_output_tokens


def estimate_call_cost(prices: PriceTable, model: str, prompt_chars: int, max_output_tokens: int) -> float:
    """Before any history: the prompt at ~4 characters a token, the output cap for the answer; 0 if unpriced."""
    usage = Usage(prompt_tokens=estimate_tokens(prompt_chars), completion_tokens=max_output_tokens)
    return prices.cost(model, usage) or 0.0


@dataclass(frozen=True)
class ChainEstimate:
    """One call of an agent with a provider chain, before the run: the first provider's cost (what
    usually happens), the worst case (every provider asked and charged in turn: each fails after
    answering, then the rules), the costliest provider, and the providers with no price (their share
    of the worst case is unknown: their tokens still count against the token budgets)."""

    first_usd: float
    worst_usd: float
    costliest: str
    unpriced: tuple[str, ...]


def estimate_chain_call(prices: PriceTable, providers: Sequence[tuple[str, str, int]], prompt_chars: int) -> ChainEstimate:
    """`providers`: (provider name, model, max output tokens) in chain order."""
    if not providers:
        raise ValueError("a provider chain has at least one provider")
    costs = [(estimate_call_cost(prices, model, prompt_chars, out), name) for name, model, out in providers]
    unpriced = tuple(name for name, model, _ in providers if prices.price(model) is None)
    costliest = max(costs, key=lambda c: c[0])[1]
    return ChainEstimate(first_usd=costs[0][0], worst_usd=sum(c for c, _ in costs), costliest=costliest, unpriced=unpriced)


def estimate_run_cost(recent_costs_per_call: Iterable[float], calls: int, fallback_per_call: float) -> float:
    """From recent runs' mean cost per model call when there are some, else from prompt sizes."""
    recent = list(recent_costs_per_call)
    per_call = sum(recent) / len(recent) if recent else fallback_per_call
    return per_call * calls


def month_of(day: date) -> str:
    """The budget month of a decision bar's date: "YYYY-MM"."""
    return f"{day.year:04d}-{day.month:02d}"


def spent_in_month(spent_by_day: Mapping[str, float], day: date) -> float:
    """USD spent by the runs whose decision bar falls in `day`'s month (`spent_by_day`: ISO date -> USD)."""
    month = month_of(day)
    return sum(usd for d, usd in spent_by_day.items() if d[:7] == month)


@dataclass(frozen=True)
class BudgetCheck:
    """Before a run: its worst case against what is left of the day and the month (None: no limit)."""

    run_worst_usd: float
    spent_today: float
    spent_month: float
    left_today: float | None
    left_month: float | None
    month: str
    reason: str | None  # set: the run must not start its model calls

    def as_dict(self) -> dict[str, Any]:
        return {
            "month": self.month,
            "run_worst_case_usd": round(self.run_worst_usd, 6),
            "spent_today_usd": round(self.spent_today, 6),
            "spent_month_usd": round(self.spent_month, 6),
            "left_today_usd": None if self.left_today is None else round(self.left_today, 6),
            "left_month_usd": None if self.left_month is None else round(self.left_month, 6),
            # How many more runs like this one fit, at their worst case (None: no limit or a free run).
            "runs_left_today": runs_that_fit(self.left_today, self.run_worst_usd),
            "runs_left_month": runs_that_fit(self.left_month, self.run_worst_usd),
            "blocked": self.reason,
        }


def runs_that_fit(left: float | None, run_usd: float) -> int | None:
    if left is None or run_usd <= 0:
        return None
    return max(0, math.floor(left / run_usd + 1e-9))


def period_estimate(run_usd: float, run_worst_usd: float, runs_per_day: int, sessions_in_month: int) -> dict[str, float]:
    """A pipeline's expected and worst-case spend per run, day and month, from one run's estimate and
    how often it runs (a schedule's runs per session, the exchange's sessions in the month)."""
    if runs_per_day < 0 or sessions_in_month < 0:
        raise CostError(f"runs per day and sessions per month are counts: {runs_per_day}, {sessions_in_month}")
    day, worst_day = run_usd * runs_per_day, run_worst_usd * runs_per_day
    return {
        "run_usd": run_usd,
        "run_usd_worst_case": run_worst_usd,
        "day_usd": day,
        "day_usd_worst_case": worst_day,
        "month_usd": day * sessions_in_month,
        "month_usd_worst_case": worst_day * sessions_in_month,
    }


def pre_run_check(budget: Budget, run_worst_usd: float, *, day: date, spent_today: float, spent_month: float) -> BudgetCheck:
    """Whether a run whose worst case is `run_worst_usd` fits what is left of the daily and monthly budgets.

    The worst case, not the expected cost: a run that could overspend does not start, rather than stop
    half-way with some symbols judged and the budget gone (the per-call `reserve` still guards the rest)."""
    left_today = None if budget.per_day is None else budget.per_day - spent_today
    left_month = None if budget.per_month is None else budget.per_month - spent_month
    reason = None
    if left_today is not None and run_worst_usd > left_today:
        reason = (
            f"daily budget ${budget.per_day:.4f} would be exceeded: spent on {day.isoformat()} ${spent_today:.4f}, "
            f"left ${max(left_today, 0.0):.4f}, this run's worst case ${run_worst_usd:.4f}"
        )
    elif left_month is not None and run_worst_usd > left_month:
        reason = (
            f"monthly budget ${budget.per_month:.4f} would be exceeded: spent in {month_of(day)} ${spent_month:.4f}, "
            f"left ${max(left_month, 0.0):.4f}, this run's worst case ${run_worst_usd:.4f}"
        )
    return BudgetCheck(run_worst_usd, spent_today, spent_month, left_today, left_month, month_of(day), reason)
