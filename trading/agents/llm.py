"""One structured model call, done carefully: budget, cache, timeout, retries, usage, and honest failure.

Calls go through langchain-openai's `ChatOpenAI(...).with_structured_output(schema, method="json_schema")`
on chat completions, so any OpenAI-compatible server works through `base_url`. The openai client
retries 429, 5xx and timeouts with exponential backoff (`max_retries`). Whatever still goes wrong
(an error, a timeout, a refusal, a cut-off answer, JSON that does not validate) raises `ModelFailure`
with a kind, and the agent falls back to its rule-based twin, recorded as a `fallback` event.
"""

from __future__ import annotations

import json
import os
from typing import Any, TypeVar

import openai
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trading.agents.base import AgentRun
from trading.agents.cache import CacheMode, ResponseCache, cache_key
from trading.agents.tools import ToolRegistry
from trading.context import SymbolContext
from trading.cost import PriceTable, Usage, estimate_call_cost
from trading.events import EventType

T = TypeVar("T", bound=BaseModel)


class LLMConfigError(ValueError):
    """A model agent is configured in a way that cannot work (missing key, unknown model)."""


class ModelFailure(Exception):
    """The model gave no usable answer; `kind` is error | timeout | refusal | length | invalid | replay_miss."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class LLMSettings(BaseModel):
    """Per-agent model settings. The key is read from the environment variable named here, never stored."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = "gpt-4o-mini"
    temperature: float = Field(0.0, ge=0, le=2)
    base_url: str | None = Field(None, description="Any OpenAI-compatible server, e.g. http://localhost:11434/v1")
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = Field(20.0, gt=0)
    max_retries: int = Field(2, ge=0, le=10)
    max_output_tokens: int = Field(600, ge=16)
    max_tool_rounds: int = Field(0, ge=0, le=5, description="Rounds of tool lookups before the final answer.")

    def api_key(self) -> str:
        key = os.environ.get(self.api_key_env, "")
        if key:
            return key
        if self.base_url:
            return "not-needed"  # local OpenAI-compatible servers usually ignore the key
        raise LLMConfigError(f"model agent ({self.model}) needs an API key in ${self.api_key_env}, or a base_url of a local server")


class StructuredCaller:
    """Makes one agent's structured calls; thread-safe, so a cycle can keep several in flight."""

    def __init__(self, agent: str, settings: LLMSettings, prices: PriceTable, cache: ResponseCache | None = None) -> None:
        prices.check(settings.model)  # an unknown model fails at load, not mid-run
        self.agent = agent
        self.settings = settings
        self.prices = prices
        self.cache = cache
        self._chat: Any = None
        self.calls = 0  # model calls actually sent (cache hits excluded)

    def _client(self) -> Any:
        if self._chat is None:
            from langchain_openai import ChatOpenAI  # imported on first use: the offline path never needs it

            s = self.settings
            self._chat = ChatOpenAI(
                model=s.model,
                temperature=s.temperature,
                base_url=s.base_url,
                api_key=s.api_key(),  # type: ignore[arg-type]
                timeout=s.timeout_s,
                max_retries=s.max_retries,
                max_completion_tokens=s.max_output_tokens,
                use_responses_api=False,
            )
        return self._chat

    def call(
        self, schema: type[T], messages: list[dict[str, Any]], ctx: SymbolContext, run: AgentRun, tools: ToolRegistry | None = None
    ) -> T:
        key = cache_key(self.agent, self.settings.model, schema.__name__, messages)
        cached = self.cache.get(key) if self.cache else None
        if cached is not None:
            run.emit(EventType.RESPONSE, ctx, {"agent": self.agent, "model": self.settings.model, "cached": True, "parsed": cached})
            return schema.model_validate(cached)
        if self.cache is not None and self.cache.mode == CacheMode.REPLAY:
            raise ModelFailure("replay_miss", f"{self.agent}: no cached answer for {ctx.symbol} at {ctx.as_of.isoformat()}")
        prompt_chars = len(json.dumps(messages, default=str))
        run.costs.reserve(estimate_call_cost(self.prices, self.settings.model, prompt_chars, self.settings.max_output_tokens))
        run.emit(EventType.PROMPT, ctx, {"agent": self.agent, "model": self.settings.model, "schema": schema.__name__, "messages": messages})
        convo = list(messages)
        if tools is not None and self.settings.max_tool_rounds:
            convo = self._tool_rounds(convo, tools, ctx, run)
        parsed = self._structured(schema, convo, ctx, run)
        if self.cache is not None:
            self.cache.put(key, parsed.model_dump(mode="json"))
        return parsed

    def _structured(self, schema: type[T], messages: list[Any], ctx: SymbolContext, run: AgentRun) -> T:
        runnable = self._client().with_structured_output(schema, method="json_schema", include_raw=True)
        out = self._invoke(runnable, messages, ctx, run)
        raw = out.get("raw")
        self._record(raw, ctx, run)
        finish = (getattr(raw, "response_metadata", None) or {}).get("finish_reason")
        refusal = (getattr(raw, "additional_kwargs", None) or {}).get("refusal")
        if refusal:
            raise ModelFailure("refusal", str(refusal)[:300])
        if finish == "length":
            raise ModelFailure("length", f"answer cut off at {self.settings.max_output_tokens} tokens")
        if out.get("parsing_error") is not None or out.get("parsed") is None:
            raise ModelFailure("invalid", f"answer does not match {schema.__name__}: {out.get('parsing_error')}"[:400])
        parsed = out["parsed"]
        return parsed if isinstance(parsed, schema) else schema.model_validate(parsed)

    def _tool_rounds(self, messages: list[Any], tools: ToolRegistry, ctx: SymbolContext, run: AgentRun) -> list[Any]:
        from langchain_core.messages import ToolMessage

        bound = self._client().bind_tools(tools.schemas())
        convo = list(messages)
        for _ in range(self.settings.max_tool_rounds):
            reply = self._invoke(bound, convo, ctx, run)
            self._record(reply, ctx, run)
            if not getattr(reply, "tool_calls", None):
                break
            convo.append(reply)
            for call in reply.tool_calls:
                result = tools.call(call["name"], call.get("args") or {})
                run.emit(EventType.TOOL_CALL, ctx, {"agent": self.agent, "tool": call["name"], "args": call.get("args"), "result": result})
                convo.append(ToolMessage(content=json.dumps(result, default=str), tool_call_id=call["id"]))
        return convo

    def _invoke(self, runnable: Any, messages: list[Any], ctx: SymbolContext, run: AgentRun) -> Any:
        self.calls += 1
        try:
            return runnable.invoke(messages)
        except openai.APITimeoutError as exc:
            raise ModelFailure("timeout", f"no answer within {self.settings.timeout_s}s after {self.settings.max_retries} retries") from exc
        except openai.LengthFinishReasonError as exc:
            usage = getattr(exc.completion, "usage", None)
            if usage is not None:
                self._charge(Usage(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens), ctx, run)
            raise ModelFailure("length", f"answer cut off at {self.settings.max_output_tokens} tokens") from exc
        except openai.ContentFilterFinishReasonError as exc:
            raise ModelFailure("refusal", "content filter") from exc
        except openai.APIStatusError as exc:
            raise ModelFailure("error", f"HTTP {exc.status_code}: {_short(exc.message)}") from exc
        except openai.APIError as exc:
            raise ModelFailure("error", f"{type(exc).__name__}: {_short(str(exc))}") from exc
        except (ValidationError, ValueError) as exc:  # langchain raises on some unparsable answers
            raise ModelFailure("invalid", _short(str(exc))) from exc

    def _record(self, message: Any, ctx: SymbolContext, run: AgentRun) -> None:
        usage = getattr(message, "usage_metadata", None)
        money = 0.0
        if usage:
            money = self._charge(Usage(prompt_tokens=usage["input_tokens"], completion_tokens=usage["output_tokens"]), ctx, run)
        run.emit(
            EventType.RESPONSE,
            ctx,
            {
                "agent": self.agent,
                "model": self.settings.model,
                "content": getattr(message, "content", None),
                "tool_calls": getattr(message, "tool_calls", None),
                "finish_reason": (getattr(message, "response_metadata", None) or {}).get("finish_reason"),
                "usage": dict(usage) if usage else None,
                "cost_usd": money,
            },
        )

    def _charge(self, usage: Usage, ctx: SymbolContext, run: AgentRun) -> float:
        money = run.costs.record(self.agent, self.settings.model, usage)
        run.emit(EventType.COST, ctx, {"agent": self.agent, "model": self.settings.model, **usage.model_dump(), "usd": money})
        return money


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
