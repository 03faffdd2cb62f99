"""One structured model call, done carefully: budget, cache, timeout, retries, usage, and honest failure.

Calls go through langchain-openai's `ChatOpenAI` on chat completions, so any OpenAI-compatible server
works through `base_url`. The answer format degrades per (server, model), remembered (`FormatMemory`; the
ledger keeps it for the next cycle, with the calls made since, so a re-check is counted across processes):
`json_schema` first; a server that refuses it (HTTP 400/422 naming the response format) gets JSON mode
with the schema in the prompt, then a plain prompt with the schema. Whatever the format, the answer
is read by `trading.agents.structured.read_answer` (the JSON alone, in a ```json fence, or after
prose) and validated against the same schema.

Every response is a `response` event with its usage and outcome (used, rejected, cut_off, refused)
and is charged: by the server's usage, or by a local estimate marked `estimated` when it sent none.
The openai client retries 429, 5xx and timeouts with exponential backoff (`max_retries`). Whatever
still goes wrong raises `ModelFailure` with a kind, and the agent falls back to its rule-based twin,
recorded as a `fallback` event.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, Protocol, TypeVar

import openai
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic.json_schema import SkipJsonSchema

from trading.agents.base import AgentRun
from trading.agents.cache import CacheMode, ResponseCache, cache_key
from trading.agents.structured import json_schema_format, read_answer, schema_instruction
from trading.agents.tools import ToolRegistry
from trading.context import SymbolContext
from trading.cost import PriceTable, Usage, estimate_call_cost, estimate_call_tokens, estimate_tokens
from trading.events import Event, EventType

T = TypeVar("T", bound=BaseModel)

Format = Literal["json_schema", "json_object", "prompt"]
FORMATS: tuple[Format, ...] = ("json_schema", "json_object", "prompt")

KeyLookup = Callable[[str], SecretStr | None]  # a variable's name -> its value (orchestration reads the environment)


class LLMConfigError(ValueError):
    """A model agent is configured in a way that cannot work (missing key, unknown model)."""


class ModelFailure(Exception):
    """The model gave no usable answer; `kind` is error | timeout | refusal | length | invalid | replay_miss | skipped."""

    def __init__(self, kind: str, detail: str, *, provider: str | None = None) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail
        self.provider = provider  # the last provider asked (a chain's), when known


class ProviderOverride(BaseModel):
    """One fallback provider: what differs from the agent's own settings (at least the model or the server)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    key: SkipJsonSchema[SecretStr | None] = Field(None, exclude=True, repr=False, description="The key api_key_env names, filled in by `with_keys`.")
    temperature: float | None = Field(None, ge=0, le=2)
    timeout_s: float | None = Field(None, gt=0)
    max_retries: int | None = Field(None, ge=0, le=10)
    max_output_tokens: int | None = Field(None, ge=16)

    @model_validator(mode="after")
    def _names_a_provider(self) -> ProviderOverride:
        if self.model is None and self.base_url is None:
            raise ValueError("a fallback names a model or a base_url (else it is the same provider again)")
        return self


class LLMSettings(BaseModel):
    """Per-agent model settings. `api_key_env` names the key's variable; orchestration looks it up and
    passes the value in `key` (`with_keys`): this layer never reads the environment, and a key is never
    written in a file, dumped or shown by a repr."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = "gpt-4o-mini"
    temperature: float = Field(0.0, ge=0, le=2)
    base_url: str | None = Field(None, description="Any OpenAI-compatible server, e.g. http://localhost:11434/v1")
    api_key_env: str = "OPENAI_API_KEY"
    key: SkipJsonSchema[SecretStr | None] = Field(None, exclude=True, repr=False, description="The key api_key_env names, filled in by `with_keys`.")
    timeout_s: float = Field(20.0, gt=0)
    max_retries: int = Field(2, ge=0, le=10)
    max_output_tokens: int = Field(600, ge=16)
    max_tool_rounds: int = Field(0, ge=0, le=5, description="Rounds of tool lookups before the final answer.")
    format_recheck_days: float | None = Field(7.0, gt=0, description="Days after a server refused json_schema before one call asks again (None: never by time).")
    format_recheck_calls: int | None = Field(500, ge=1, description="Calls in the lesser format before one asks for json_schema again (None: never by count).")
    fallbacks: tuple[ProviderOverride, ...] = Field(
        (), description="Providers tried in order after this one fails (another model, another base_url); then the rules."
    )
    # Like trend_filter's: the cycle reads these point in time (bars closed by the decision bar's close)
    # and the node's prompt carries them (`SymbolContext.prompt_view(frames=...)`); used by the llm_* nodes.
    frames: dict[Literal["5m", "15m", "1h", "1d"], Annotated[int, Field(ge=1, le=500)]] = Field(
        default_factory=dict, description="Other timeframes the node reads, and how many closed bars of each, e.g. {'1h': 24, '1d': 20}."
    )

    @property
    def provider(self) -> str:
        """How events name this provider: model@server (the default server is OpenAI's)."""
        return f"{self.model}@{self.base_url or 'openai'}"

    def chain(self) -> list[LLMSettings]:
        """This provider, then each fallback: these settings with what the fallback names replaced."""
        first = self.model_copy(update={"fallbacks": ()})
        base = first.model_dump()  # `key` is excluded from dumps: passed on below
        chain = [first]
        for f in self.fallbacks:
            settings = LLMSettings.model_validate({**base, **f.model_dump(exclude_none=True)})
            chain.append(settings.model_copy(update={"key": f.key if f.api_key_env is not None else self.key}))
        return chain

    def api_key(self) -> str:
        if self.key is not None and self.key.get_secret_value():
            return self.key.get_secret_value()
        if self.base_url:
            return "not-needed"  # local OpenAI-compatible servers usually ignore the key
        raise LLMConfigError(f"model agent ({self.model}) needs an API key in ${self.api_key_env}, or a base_url of a local server")


def with_keys(config: Mapping[str, Any], lookup: KeyLookup) -> dict[str, Any]:
    """A model agent's config (as written in a pipeline file) with the keys its `api_key_env` and its
    fallbacks' name, looked up by `lookup`; a key written in the file itself is refused."""
    fallbacks = config.get("fallbacks") or []
    if "key" in config or any(isinstance(f, Mapping) and "key" in f for f in fallbacks):
        raise LLMConfigError("a model key is never written in a pipeline file: name its environment variable in api_key_env")
    out = dict(config)
    if (key := lookup(str(config.get("api_key_env") or LLMSettings.model_fields["api_key_env"].default))) is not None:
        out["key"] = key
    if isinstance(fallbacks, list | tuple) and fallbacks:
        out["fallbacks"] = [{**f, "key": lookup(str(f["api_key_env"]))} if isinstance(f, Mapping) and f.get("api_key_env") else f for f in fallbacks]
    return out


@dataclass(frozen=True)
class Recheck:
    """When a remembered lesser format is due for one more try of `json_schema` (servers get upgraded):
    `after_days` since it was learnt (by the caller's clock: the decision bar; the ledger keeps when),
    or `after_calls` calls made in it since then, by every process: a memory rebuilt from the ledger
    (`FormatMemory.from_ledger`) starts from the calls the ledger's `response` events record, so
    scheduled cycles (one process each) add up; None turns that trigger off."""

    after_days: float | None = 7.0
    after_calls: int | None = 500

    def due(self, learnt_at: datetime | None, calls: int, now: datetime | None) -> bool:
        by_time = self.after_days is not None and learnt_at is not None and now is not None and now - learnt_at >= timedelta(days=self.after_days)
        return by_time or (self.after_calls is not None and calls >= self.after_calls)


class FormatMemory:
    """The answer format each (base_url, model) accepts, learnt from refusals; thread-safe.

    Each refusal is a `fallback` event of kind `format` naming the server and the model, so the
    ledger keeps what was learnt: `from_events` rebuilds the memory from it, and the next cycle (a new
    process) does not ask that server for `json_schema` again, until the lesson is due for a re-check
    (`Recheck`): then one call asks for `json_schema` again. The calls made in the lesser format are
    counted from the `response` events after the lesson (each names its format and server), so the
    count is the ledger's, not one process's: nothing is incremented, so no count is lost between
    processes and a re-run whose events are already stored adds nothing. Accepted, the memory goes back to it (a
    `format` event with `recheck: true`, `to: json_schema`); refused, the lesser format stays and its
    clock starts again (the refusal's own event).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._formats: dict[tuple[str, str], Format] = {}
        self._settled: set[tuple[str, str]] = set()  # keys whose format a server answered without refusing
        self._probes: dict[tuple[str, str], threading.Lock] = {}
        self._since: dict[tuple[str, str], tuple[datetime | None, int]] = {}  # when learnt, calls made in it since
        self._rechecking: set[tuple[str, str]] = set()

    @classmethod
    def from_events(cls, events: Iterable[Event]) -> FormatMemory:
        """The formats the `fallback` events of kind `format` (e.g. from the ledger) moved to, in order."""
        memory = cls()
        for event in events:
            p = event.payload
            if event.type == EventType.FALLBACK and p.get("kind") == "format" and p.get("to") in FORMATS and "base_url" in p:
                key, at = (str(p["base_url"]), str(p["model"])), _instant(p.get("learnt_at")) or event.as_of
                if p.get("recheck") and p["to"] == "json_schema":
                    memory.restore(key)
                else:
                    memory.learn(key, p["to"], at=at)
            elif event.type == EventType.RESPONSE and p.get("format") in FORMATS and not p.get("cached"):
                memory._count(_response_key(p), p["format"])
        return memory

    @classmethod
    def from_ledger(cls, ledger: EventReader) -> FormatMemory:
        """`from_events` over what a ledger holds: its format lessons, and the responses since the
        oldest lesson still in force (not the whole history: only those can count)."""
        lessons = list(ledger.events_with_seq(types=[EventType.FALLBACK.value]))
        memory = cls.from_events(e for _, e in lessons)
        lesser = memory.known()
        if not lesser:
            return memory
        learnt = {}  # key -> seq of its last format event
        for seq, e in lessons:
            if e.payload.get("kind") == "format" and "base_url" in e.payload:
                learnt[(str(e.payload["base_url"]), str(e.payload.get("model")))] = seq
        start = min(learnt.get(key, 0) for key in lesser)
        since = ledger.events_with_seq(types=[EventType.FALLBACK.value, EventType.RESPONSE.value], after_seq=start - 1 if start else 0)
        return cls.from_events([*(e for seq, e in lessons if seq < start), *(e for _, e in since)])

    def _count(self, key: tuple[str, str], fmt: str) -> None:
        """One call recorded in `fmt`: counted when it is the lesser format `key` is remembered in."""
        with self._lock:
            if self._formats.get(key) == fmt and key in self._since:
                learnt_at, calls = self._since[key]
                self._since[key] = (learnt_at, calls + 1)

    def learn(self, key: tuple[str, str], fmt: Format, *, at: datetime | None = None) -> None:
        """At least `fmt` for `key` (a memory never moves back to a format already refused, but by a
        re-check), learnt at `at`."""
        with self._lock:
            if FORMATS.index(fmt) > FORMATS.index(self._formats.get(key, "json_schema")):
                self._formats[key] = fmt
            if key in self._formats:
                self._since[key] = (at, 0)

    def restore(self, key: tuple[str, str]) -> None:
        """`json_schema` again for `key` (a re-check was accepted)."""
        with self._lock:
            self._formats.pop(key, None)
            self._since.pop(key, None)

    def choose(self, key: tuple[str, str], now: datetime | None, recheck: Recheck) -> tuple[Format, bool]:
        """The format for the next call, and whether this call is the re-check (one at a time)."""
        with self._lock:
            current = self._formats.get(key, "json_schema")
            if current == "json_schema":
                return current, False
            learnt_at, calls = self._since.get(key, (now, 0))
            if key not in self._rechecking and recheck.due(learnt_at, calls, now):
                self._rechecking.add(key)
                return "json_schema", True
            self._since[key] = (learnt_at, calls + 1)
            return current, False

    def end_recheck(self, key: tuple[str, str], *, accepted: bool | None, now: datetime | None) -> Format:
        """After the re-check's call: accepted (back to json_schema), refused (the clock starts again),
        or None when the call failed otherwise (still due: the next call tries again). The previous format."""
        with self._lock:
            self._rechecking.discard(key)
            before = self._formats.get(key, "json_schema")
            if accepted:
                self._formats.pop(key, None)
                self._since.pop(key, None)
            elif accepted is False:
                self._since[key] = (now, 0)
            return before

    def known(self) -> dict[tuple[str, str], Format]:
        with self._lock:
            return dict(self._formats)

    def get(self, key: tuple[str, str]) -> Format:
        with self._lock:
            return self._formats.get(key, "json_schema")

    def forget(self) -> None:
        with self._lock:
            self._formats.clear()
            self._settled.clear()
            self._since.clear()
            self._rechecking.clear()

    @contextmanager
    def probing(self, key: tuple[str, str]) -> Iterator[None]:
        """Until a server has answered once without refusing the format, its calls go one at a time, so
        a cycle with many symbols in flight sends one request that may be refused, not one per symbol."""
        with self._lock:
            lock = None if key in self._settled else self._probes.setdefault(key, threading.Lock())
        if lock is None:
            yield
            return
        with lock:
            yield

    def settle(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._settled.add(key)

    def downgrade(self, key: tuple[str, str], refused: Format, *, at: datetime | None = None) -> Format:
        """The next format after `refused` (another thread may already have moved further), learnt at `at`."""
        with self._lock:
            current = self._formats.get(key, "json_schema")
            nxt = FORMATS[min(FORMATS.index(refused) + 1, len(FORMATS) - 1)]
            if FORMATS.index(nxt) > FORMATS.index(current):
                self._formats[key] = nxt
                self._since[key] = (at, 0)
            return self._formats.get(key, nxt)


FORMAT_MEMORY = FormatMemory()  # per process: a server that refused json_schema is not asked again (until a re-check)


class EventReader(Protocol):
    """What `FormatMemory.from_ledger` reads (a `trading.ledger.Ledger`)."""

    def events_with_seq(self, *, types: Iterable[str], after_seq: int = 0) -> Iterator[tuple[int, Event]]: ...


def _response_key(payload: Mapping[str, Any]) -> tuple[str, str]:
    """The (base_url, model) a response event came from (older events name the server only in `provider`)."""
    model = str(payload.get("model"))
    if "base_url" in payload:
        return str(payload["base_url"] or ""), model
    server = str(payload.get("provider") or "").removeprefix(f"{model}@")
    return ("" if server == "openai" else server), model


def _instant(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


class _FormatRefused(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class StructuredCaller:
    """Makes one agent's structured calls; thread-safe, so a cycle can keep several in flight."""

    def __init__(
        self, agent: str, settings: LLMSettings, prices: PriceTable, cache: ResponseCache | None = None, formats: FormatMemory | None = None
    ) -> None:
        self.agent = agent
        self.settings = settings
        self.prices = prices  # a model without a price runs unpriced: tokens counted, no USD
        self.cache = cache
        self.formats = formats or FORMAT_MEMORY
        self._chat: Any = None
        self._calls_lock = threading.Lock()
        self.calls = 0  # model calls actually sent (cache hits excluded)

    @property
    def format_key(self) -> tuple[str, str]:
        return (self.settings.base_url or "", self.settings.model)

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
        self,
        schema: type[T],
        messages: list[dict[str, Any]],
        ctx: SymbolContext,
        run: AgentRun,
        tools: ToolRegistry | None = None,
        check: Callable[[T], object] | None = None,
    ) -> T:
        """The parsed answer; `check` (raising ValueError) rejects a schema-valid answer the caller cannot use."""
        key = cache_key(self.agent, self.settings.model, schema.__name__, messages)
        cached = self.cache.get(key) if self.cache else None
        if cached is not None:
            run.emit(
                EventType.RESPONSE,
                ctx,
                {"agent": self.agent, "model": self.settings.model, "provider": self.settings.provider, "cached": True, "outcome": "used", "parsed": cached},
            )
            run.costs.provider_answer(self.settings.provider, cached=True)
            return schema.model_validate(cached)
        if self.cache is not None and self.cache.mode == CacheMode.REPLAY:
            raise ModelFailure("replay_miss", f"{self.agent}: no cached answer for {ctx.symbol} at {ctx.as_of.isoformat()}")
        self._reserve(messages, run)
        run.emit(
            EventType.PROMPT,
            ctx,
            {"agent": self.agent, "model": self.settings.model, "provider": self.settings.provider, "schema": schema.__name__, "messages": messages},
        )
        convo: list[Any] = list(messages)
        if tools is not None and self.settings.max_tool_rounds:
            convo = self._tool_rounds(convo, tools, ctx, run)
        parsed = self._structured(schema, convo, ctx, run, check, check_budget=len(convo) > len(messages))
        run.costs.provider_answer(self.settings.provider)
        if self.cache is not None:
            self.cache.put(key, parsed.model_dump(mode="json"))
        return parsed

    def _reserve(self, messages: list[Any], run: AgentRun) -> None:
        chars = _prompt_chars(messages)
        s = self.settings
        run.costs.reserve(estimate_call_cost(self.prices, s.model, chars, s.max_output_tokens), estimate_call_tokens(chars, s.max_output_tokens))

    def _structured(
        self, schema: type[T], messages: list[Any], ctx: SymbolContext, run: AgentRun, check: Callable[[T], object] | None, *, check_budget: bool
    ) -> T:
        now = ctx.as_of  # the caller's clock (the decision bar), never the wall clock
        recheck = Recheck(self.settings.format_recheck_days, self.settings.format_recheck_calls)
        while True:
            with self.formats.probing(self.format_key):  # a server not yet heard from: one call at a time
                fmt, rechecking = self.formats.choose(self.format_key, now, recheck)
                convo = messages if fmt == "json_schema" else _with_instruction(messages, schema_instruction(schema))
                if check_budget:
                    self._reserve(convo, run)
                chat = self._client()
                runnable = chat.bind(response_format=json_schema_format(schema) if fmt == "json_schema" else {"type": "json_object"}) if fmt != "prompt" else chat
                try:
                    message = self._invoke(runnable, convo, ctx, run, fmt=fmt)
                except _FormatRefused as refused:
                    if rechecking:
                        self.formats.end_recheck(self.format_key, accepted=False, now=now)
                    nxt = self.formats.downgrade(self.format_key, fmt, at=now)
                    self._format_event(ctx, run, fmt, nxt, refused.detail, recheck=rechecking)
                    check_budget = True
                    continue
                except ModelFailure:
                    if rechecking:
                        self.formats.end_recheck(self.format_key, accepted=None, now=now)  # inconclusive: still due
                    self.formats.settle(self.format_key)  # it failed otherwise: the format was not the problem
                    raise
                if rechecking:
                    before = self.formats.end_recheck(self.format_key, accepted=True, now=now)
                    self._format_event(ctx, run, before, "json_schema", "re-check: the server accepted json_schema", recheck=True)
                self.formats.settle(self.format_key)
            break
        meta = getattr(message, "response_metadata", None) or {}
        refusal = (getattr(message, "additional_kwargs", None) or {}).get("refusal")
        content = message.content if isinstance(message.content, str) else json.dumps(message.content, default=str)
        finish = meta.get("finish_reason")
        failure: ModelFailure | None = None
        extra: dict[str, Any] = {"format": fmt, "base_url": self.settings.base_url or ""}  # what `FormatMemory` counts by
        parsed: T | None = None
        if refusal:
            failure = ModelFailure("refusal", str(refusal)[:300])
        elif finish == "length":
            failure = ModelFailure("length", f"answer cut off at {self.settings.max_output_tokens} tokens")
        else:
            answer = read_answer(schema, content)
            parsed = answer.parsed
            extra["found"] = answer.found
            if parsed is None:
                failure = ModelFailure("invalid", answer.error or "no answer")
            elif check is not None:
                try:
                    check(parsed)
                except ValueError as exc:  # pydantic's ValidationError is a ValueError
                    parsed, failure = None, ModelFailure("invalid", _short(str(exc)))
        outcome = {None: "used", "refusal": "refused", "length": "cut_off", "invalid": "rejected"}[failure.kind if failure else None]
        self._record(content, finish, getattr(message, "usage_metadata", None), convo, ctx, run, outcome=outcome, reason=failure.detail if failure else None, **extra)
        if failure is not None:
            raise failure
        assert parsed is not None
        return parsed

    def _format_event(self, ctx: SymbolContext, run: AgentRun, frm: Format, to: Format, detail: str, *, recheck: bool) -> None:
        payload: dict[str, object] = {
            "agent": self.agent,
            "model": self.settings.model,
            "base_url": self.settings.base_url or "",
            "provider": self.settings.provider,
            "kind": "format",
            "from": frm,
            "to": to,
            "detail": detail,
            "learnt_at": ctx.as_of.isoformat(),
        }
        run.emit(EventType.FALLBACK, ctx, payload | ({"recheck": True} if recheck else {}))

    def _tool_rounds(self, messages: list[Any], tools: ToolRegistry, ctx: SymbolContext, run: AgentRun) -> list[Any]:
        from langchain_core.messages import ToolMessage

        bound = self._client().bind_tools(tools.schemas())
        convo = list(messages)
        for i in range(self.settings.max_tool_rounds):
            if i:
                self._reserve(convo, run)
            reply = self._invoke(bound, convo, ctx, run)
            content = reply.content if isinstance(reply.content, str) else json.dumps(reply.content, default=str)
            finish = (getattr(reply, "response_metadata", None) or {}).get("finish_reason")
            self._record(content, finish, getattr(reply, "usage_metadata", None), convo, ctx, run, outcome="tool_round", tool_calls=getattr(reply, "tool_calls", None))
            if not getattr(reply, "tool_calls", None):
                break
            convo.append(reply)
            for call in reply.tool_calls:
                result = tools.call(call["name"], call.get("args") or {})
                run.emit(EventType.TOOL_CALL, ctx, {"agent": self.agent, "tool": call["name"], "args": call.get("args"), "result": result})
                convo.append(ToolMessage(content=json.dumps(result, default=str), tool_call_id=call["id"]))
        return convo

    def _invoke(self, runnable: Any, messages: list[Any], ctx: SymbolContext, run: AgentRun, *, fmt: Format | None = None) -> Any:
        with self._calls_lock:
            self.calls += 1
        try:
            return runnable.invoke(messages)
        except openai.APITimeoutError as exc:
            raise ModelFailure("timeout", f"no answer within {self.settings.timeout_s}s after {self.settings.max_retries} retries") from exc
        except (openai.LengthFinishReasonError, openai.ContentFilterFinishReasonError) as exc:
            # Raised by the client's parse of a json_schema/json_object answer: the response still counts.
            kind, outcome = ("length", "cut_off") if isinstance(exc, openai.LengthFinishReasonError) else ("refusal", "refused")
            detail = f"answer cut off at {self.settings.max_output_tokens} tokens" if kind == "length" else "content filter"
            completion = exc.completion
            choice = completion.choices[0] if completion is not None and completion.choices else None
            content = choice.message.content if choice is not None else None
            usage = completion.usage if completion is not None else None
            reported = {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens} if usage is not None else None
            self._record(
                content, choice.finish_reason if choice else None, reported, messages, ctx, run, outcome=outcome, reason=detail, format=fmt, base_url=self.settings.base_url or ""
            )
            raise ModelFailure(kind, detail) from exc
        except openai.APIStatusError as exc:
            if fmt in ("json_schema", "json_object") and exc.status_code in (400, 422) and _names_format(exc.message, fmt):
                raise _FormatRefused(f"HTTP {exc.status_code}: {_short(exc.message)}") from exc
            raise ModelFailure("error", f"HTTP {exc.status_code}: {_short(exc.message)}") from exc
        except openai.APIError as exc:
            raise ModelFailure("error", f"{type(exc).__name__}: {_short(str(exc))}") from exc
        except (ValidationError, ValueError) as exc:  # langchain raises on some unparsable answers
            raise ModelFailure("invalid", _short(str(exc))) from exc

    def _record(
        self,
        content: str | None,
        finish: str | None,
        reported: Any,
        prompt: list[Any],
        ctx: SymbolContext,
        run: AgentRun,
        *,
        outcome: str,
        reason: str | None = None,
        **extra: Any,
    ) -> None:
        """One response event with its usage; charged by the server's usage, else by a marked estimate."""
        if reported:
            usage = Usage(prompt_tokens=int(reported["input_tokens"]), completion_tokens=int(reported["output_tokens"]))
        else:
            calls = extra.get("tool_calls")
            answer_chars = len(content or "") + (len(json.dumps(calls, default=str)) if calls else 0)
            usage = Usage(prompt_tokens=estimate_tokens(_prompt_chars(prompt)), completion_tokens=estimate_tokens(answer_chars), estimated=True)
        money = self._charge(usage, ctx, run)
        run.emit(
            EventType.RESPONSE,
            ctx,
            {
                "agent": self.agent,
                "model": self.settings.model,
                "provider": self.settings.provider,
                "outcome": outcome,
                "reason": reason,
                "content": content,
                "finish_reason": finish,
                "usage": usage.model_dump(),
                "estimated": usage.estimated,
                "cost_usd": money,
                "pricing": self.prices.pricing(self.settings.model),
                **extra,
            },
        )

    def _charge(self, usage: Usage, ctx: SymbolContext, run: AgentRun) -> float | None:
        money = run.costs.record(self.agent, self.settings.model, usage)
        run.costs.provider_response(self.settings.provider, usage, money)
        pricing = self.prices.pricing(self.settings.model)
        run.emit(EventType.COST, ctx, {"agent": self.agent, "model": self.settings.model, **usage.model_dump(), "usd": money, "pricing": pricing})
        return money


def _prompt_chars(messages: list[Any]) -> int:
    """Characters of the messages' contents (what the local token estimate counts)."""
    total = 0
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else getattr(m, "content", "")
        total += len(content) if isinstance(content, str) else len(json.dumps(content, default=str))
    return total


def _with_instruction(messages: list[Any], instruction: str) -> list[Any]:
    """The schema in words at the end of the first system message (or as a new first one)."""
    first = messages[0] if messages else None
    if isinstance(first, dict) and first.get("role") == "system":
        return [{**first, "content": f"{first['content']}\n\n{instruction}"}, *messages[1:]]
    return [{"role": "system", "content": instruction}, *messages]


def _names_format(message: str, fmt: str) -> bool:
    text = message.lower()
    return "response_format" in text or fmt in text or "json_schema" in text or "structured output" in text


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
