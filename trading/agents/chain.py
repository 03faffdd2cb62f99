"""A provider fallback chain: model A, then model B (another server), ..., then the agent's rules.

Each provider is a `StructuredCaller`. When one gives no usable answer the next is asked, and a
`fallback` event says from which provider to which and why; after the last, the failure goes up
and the agent falls back to its rule-based twin (its own `fallback` event, `to: rules`). The
response event of the answer used names the provider that gave it.

A provider that failed for its transport (HTTP error, timeout) is skipped for the rest of the cycle
(the run's decision bar: a paper session's next bar asks it again), so a server that is down costs
one timeout per cycle rather than one per symbol; each skip is a
`fallback` event of kind `skipped` with the earlier failure. An answer-level failure (cut off,
invalid, refused) is about that answer only: the provider is asked again for the next symbol.
A budget stop is not a failure: it goes straight up and the cycle stops.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel

from trading.agents.base import AgentRun
from trading.agents.llm import LLMSettings, ModelFailure, StructuredCaller
from trading.agents.tools import ToolRegistry
from trading.context import SymbolContext
from trading.cost import ChainEstimate, PriceTable, estimate_chain_call
from trading.events import EventType

T = TypeVar("T", bound=BaseModel)

DOWN_KINDS = ("error", "timeout")  # the server, not the answer, failed: skip it for the run


class ProviderChain:
    """Calls the providers in order; thread-safe (a cycle keeps several symbols in flight)."""

    def __init__(self, agent: str, callers: Sequence[StructuredCaller]) -> None:
        if not callers:
            raise ValueError(f"agent {agent!r}: a provider chain needs at least one provider")
        self.agent = agent
        self.callers = list(callers)
        self._lock = threading.Lock()
        self._cycle: tuple[str, datetime] | None = None  # (run id, decision bar)
        self._down: dict[int, str] = {}  # provider index -> why it is skipped for the current cycle

    @property
    def settings(self) -> LLMSettings:
        """The first provider's settings (what a run is estimated with)."""
        return self.callers[0].settings

    @property
    def calls(self) -> int:
        return sum(c.calls for c in self.callers)

    def estimate_call(self, prices: PriceTable, prompt_chars: int) -> ChainEstimate:
        """Before a run: one call's cost on the first provider, and the worst case over the chain."""
        return estimate_chain_call(prices, [(c.settings.provider, c.settings.model, c.settings.max_output_tokens) for c in self.callers], prompt_chars)

    def call(
        self,
        schema: type[T],
        messages: list[dict[str, Any]],
        ctx: SymbolContext,
        run: AgentRun,
        tools: ToolRegistry | None = None,
        check: Callable[[T], object] | None = None,
    ) -> T:
        last: ModelFailure | None = None
        for i, caller in enumerate(self.callers):
            nxt = self.callers[i + 1].settings.provider if i + 1 < len(self.callers) else "rules"
            cycle = (run.run_id, ctx.as_of)
            down = self._is_down(cycle, i)
            if down is not None:
                last = ModelFailure("skipped", f"{caller.settings.provider} failed earlier in this cycle: {down}")
                run.costs.provider_failure(caller.settings.provider, last.kind, to=nxt)
                if nxt != "rules":  # the agent's own fallback event records the step to the rules
                    self._step(run, ctx, caller, nxt, last)
                continue
            try:
                return caller.call(schema, messages, ctx, run, tools, check)
            except ModelFailure as failure:
                if failure.kind in DOWN_KINDS:
                    self._mark_down(cycle, i, f"{failure.kind}: {failure.detail}")
                last = failure
                run.costs.provider_failure(caller.settings.provider, failure.kind, to=nxt)
                if nxt != "rules":
                    self._step(run, ctx, caller, nxt, failure)
        assert last is not None
        raise ModelFailure(last.kind, last.detail, provider=self.callers[-1].settings.provider)

    def _step(self, run: AgentRun, ctx: SymbolContext, caller: StructuredCaller, to: str, failure: ModelFailure) -> None:
        payload: dict[str, object] = {"agent": self.agent, "kind": failure.kind, "detail": failure.detail, "from": caller.settings.provider, "to": to}
        run.emit(EventType.FALLBACK, ctx, payload)

    def _is_down(self, cycle: tuple[str, datetime], index: int) -> str | None:
        with self._lock:
            if self._cycle != cycle:  # a new cycle: every provider gets asked again
                self._cycle, self._down = cycle, {}
            return self._down.get(index)

    def _mark_down(self, cycle: tuple[str, datetime], index: int, why: str) -> None:
        with self._lock:
            if self._cycle == cycle:
                self._down.setdefault(index, why)
