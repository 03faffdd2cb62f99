"""Model cost: tokens from the responses' usage, money from a price table, budgets that stop a run.

Prices are per million tokens (input, output) and live in config; a model missing from the table is
a configuration error, not a silent zero.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping

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


class CostError(ValueError):
    """A price is missing or a budget is malformed."""


class BudgetExceeded(RuntimeError):
    """The next model call would take the run or the day over its budget."""


class Usage(BaseModel):
    model_config = ConfigDict(frozen=True)

    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class PriceTable:
    def __init__(self, prices: Mapping[str, tuple[float, float]] | None = None) -> None:
        self.prices = dict(DEFAULT_PRICES if prices is None else prices)
        for model, (inp, out) in self.prices.items():
            if inp < 0 or out < 0:
                raise CostError(f"price for model {model!r} is negative: {inp}, {out}")

    def check(self, model: str) -> None:
        if model not in self.prices:
            raise CostError(f"no price for model {model!r}; known models: {sorted(self.prices)} (add it to the price table)")

    def cost(self, model: str, usage: Usage) -> float:
        self.check(model)
        inp, out = self.prices[model]
        return (usage.prompt_tokens * inp + usage.completion_tokens * out) / 1_000_000


class Budget(BaseModel):
    """Money limits in USD; None means unlimited."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    per_run: float | None = Field(default=None, ge=0)
    per_day: float | None = Field(default=None, ge=0)


class CostTracker:
    """Tokens and money per agent for one run, on top of what the day already spent (thread-safe)."""

    def __init__(self, prices: PriceTable, budget: Budget | None = None, *, spent_today: float = 0.0) -> None:
        self.prices = prices
        self.budget = budget or Budget()
        self.spent_before_run = spent_today
        self._lock = threading.Lock()
        self.tokens: dict[str, dict[str, int]] = defaultdict(lambda: {"prompt": 0, "completion": 0, "calls": 0})
        self.money: dict[str, float] = defaultdict(float)

    @property
    def run_cost(self) -> float:
        return sum(self.money.values())

    @property
    def day_cost(self) -> float:
        return self.spent_before_run + self.run_cost

    def reserve(self, estimate: float) -> None:
        """Raises BudgetExceeded if a call expected to cost `estimate` would break a budget."""
        with self._lock:
            if self.budget.per_run is not None and self.run_cost + estimate > self.budget.per_run:
                raise BudgetExceeded(
                    f"run budget ${self.budget.per_run:.4f} would be exceeded: spent ${self.run_cost:.4f} + next call ~${estimate:.4f}"
                )
            if self.budget.per_day is not None and self.day_cost + estimate > self.budget.per_day:
                raise BudgetExceeded(
                    f"daily budget ${self.budget.per_day:.4f} would be exceeded: spent today ${self.day_cost:.4f} + next call ~${estimate:.4f}"
                )

    def record(self, agent: str, model: str, usage: Usage) -> float:
        money = self.prices.cost(model, usage)
        with self._lock:
            t = self.tokens[agent]
            t["prompt"] += usage.prompt_tokens
            t["completion"] += usage.completion_tokens
            t["calls"] += 1
            self.money[agent] += money
        return money

    def summary(self) -> dict[str, object]:
        return {
            "run_cost_usd": round(self.run_cost, 6),
            "day_cost_usd": round(self.day_cost, 6),
            "prompt_tokens": sum(t["prompt"] for t in self.tokens.values()),
            "completion_tokens": sum(t["completion"] for t in self.tokens.values()),
            "model_calls": sum(t["calls"] for t in self.tokens.values()),
            "per_agent": {a: {**self.tokens[a], "usd": round(self.money[a], 6)} for a in sorted(self.tokens)},
        }


def estimate_call_cost(prices: PriceTable, model: str, prompt_chars: int, max_output_tokens: int) -> float:
    """Before any history: ~4 characters per token for the prompt, the output cap for the answer."""
    return prices.cost(model, Usage(prompt_tokens=max(1, prompt_chars // 4), completion_tokens=max_output_tokens))


def estimate_run_cost(recent_costs_per_call: Iterable[float], calls: int, fallback_per_call: float) -> float:
    """From recent runs' mean cost per model call when there are some, else from prompt sizes."""
    recent = list(recent_costs_per_call)
    per_call = sum(recent) / len(recent) if recent else fallback_per_call
    return per_call * calls
