"""A loopback server speaking OpenAI's ``POST /v1/chat/completions`` (non-streaming).

Drives the real ``openai`` / ``langchain-openai`` clients in tests:

    with OpenAIServer() as srv:
        srv.script(Reply(content='{"symbol": "AAPL"}'), Reply(status=429), Reply(delay=2.0))
        ChatOpenAI(base_url=srv.base_url, api_key="test-key", model="gpt-4o-mini", ...)

Scripted replies are consumed FIFO; when the queue is empty ``responder`` answers
(by default ``auto_reply``: a minimal schema-valid answer for json_schema / forced tools).

Server behaviours of real OpenAI-compatible servers: ``send_usage=False`` leaves ``usage`` out of
every body; ``refuse_formats={"json_schema"}`` answers a request with that ``response_format`` type
with OpenAI's HTTP 400 (before any reply is consumed); ``fenced(...)`` wraps an answer in prose and a
```json fence, as local servers that ignore ``json_schema`` do.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_ERROR_KINDS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "permission_denied"),
    404: ("invalid_request_error", "model_not_found"),
    408: ("server_error", "timeout"),
    429: ("requests", "rate_limit_exceeded"),
}


@dataclass
class Reply:
    """One scripted answer. ``status != 200`` sends an OpenAI error body (message = ``content``)."""

    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None  # [{"name": ..., "arguments": json-str or dict}]
    refusal: str | None = None  # sets message.refusal, content null
    finish_reason: str = "stop"
    status: int = 200
    delay: float = 0.0  # seconds to wait before answering
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    usage: bool = True  # False: no "usage" in the body (many local servers)


# ---- default responder ------------------------------------------------------------------------


def example_for_schema(schema: dict[str, Any], root: dict[str, Any] | None = None) -> Any:
    """A minimal value valid for a (pydantic-style) JSON schema."""
    root = root if root is not None else schema
    if "$ref" in schema:
        node: Any = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        return example_for_schema(node, root)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            options = [s for s in schema[key] if s.get("type") != "null"] or schema[key]
            return example_for_schema(options[0], root)
    if "default" in schema:
        return schema["default"]
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties", {})
        return {name: example_for_schema(sub, root) for name, sub in props.items()}
    if kind == "array":
        item = example_for_schema(schema.get("items", {"type": "string"}), root)
        return [item] * int(schema.get("minItems", 0))
    if kind in ("number", "integer"):
        lo = schema.get("minimum", schema.get("exclusiveMinimum"))
        hi = schema.get("maximum", schema.get("exclusiveMaximum"))
        value: float = (lo + hi) / 2 if lo is not None and hi is not None else lo or hi or 0
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    fmt = schema.get("format")
    if fmt == "date":
        return "2024-01-02"
    if fmt == "date-time":
        return "2024-01-02T00:00:00Z"
    return "x" * int(schema.get("minLength", 1))


def auto_reply(body: dict[str, Any]) -> Reply:
    """Answer from the request: schema-valid JSON content / forced tool call / plain "ok"."""
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return Reply(content=json.dumps(example_for_schema(fmt["json_schema"].get("schema", {}))))
    if fmt.get("type") == "json_object":
        return Reply(content="{}")
    tools = [t["function"] for t in body.get("tools") or [] if t.get("type") == "function"]
    choice = body.get("tool_choice")
    forced = choice.get("function", {}).get("name") if isinstance(choice, dict) else choice
    tool = next((t for t in tools if t["name"] == forced), tools[0] if choice == "required" else None)
    if tool is not None:
        args = example_for_schema(tool.get("parameters", {}))
        return Reply(tool_calls=[{"name": tool["name"], "arguments": args}])
    return Reply(content="ok")


def fenced(reply: Reply, prose: str = "Sure! Here is my analysis of the setup.") -> Reply:
    """The same answer the way servers ignoring ``json_schema`` send it: a sentence, then a ```json fence."""
    return replace(reply, content=f"{prose}\n\n```json\n{reply.content}\n```\nLet me know if you need more.")


# ---- server ---------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # never join handler threads (a delayed reply may still be sleeping)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that time out close the socket; nothing to report


class OpenAIServer:
    """Fake OpenAI chat-completions endpoint at ``base_url`` ("http://127.0.0.1:PORT/v1")."""

    def __init__(
        self,
        responder: Callable[[dict[str, Any]], Reply] | None = auto_reply,
        default_delay: float = 0.0,
        *,
        send_usage: bool = True,
        refuse_formats: set[str] | frozenset[str] = frozenset(),
    ) -> None:
        self.send_usage = send_usage
        self.refuse_formats = set(refuse_formats)  # response_format types answered with HTTP 400
        self.refused = 0  # requests refused for their response_format
        self.responder = responder  # used when the script queue is empty; None → 400 error
        self.default_delay = default_delay  # added to every reply's delay
        self.requests: list[dict[str, Any]] = []  # every parsed JSON body (POST)
        self.paths: list[str] = []  # path of every request (POST and GET)
        self.auth_headers: list[str | None] = []  # Authorization header of every request
        self.calls = 0  # POST /chat/completions handled
        self.in_flight = 0
        self.max_in_flight = 0
        self.models_seen: list[str] = []
        self._queue: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._ids = itertools.count(1)
        self._call_ids = itertools.count(1)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle
    @property
    def base_url(self) -> str:
        assert self._server is not None, "server not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> OpenAIServer:
        self._closing.clear()
        self._server = _Server(("127.0.0.1", 0), self._handler_class())
        # short poll interval: stop() returns within ~50 ms
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing.set()  # wakes delayed replies
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- scripting
    def script(self, *replies: Reply) -> None:
        with self._lock:
            self._queue.extend(replies)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def _next_reply(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
        if self.responder is None:
            return Reply(status=400, content="fake OpenAI server: no scripted reply left")
        return self.responder(body)

    # -- wire format
    def _completion(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        n = next(self._ids)
        tool_calls: list[dict[str, Any]] | None = None
        arguments: list[str] = []
        if reply.tool_calls:
            tool_calls = []
            for call in reply.tool_calls:
                args = call.get("arguments", {})
                arguments.append(args if isinstance(args, str) else json.dumps(args))
                tool_calls.append(
                    {
                        "id": f"call_{next(self._call_ids)}",
                        "type": "function",
                        "function": {
                            "name": call["name"],
                            "arguments": arguments[-1],
                        },
                    }
                )
        content = None if reply.refusal is not None else reply.content
        produced = content or reply.refusal or "".join(arguments)
        prompt = reply.prompt_tokens
        if prompt is None:
            prompt = max(1, len(json.dumps(body.get("messages", []))) // 4)
        completion = reply.completion_tokens
        if completion is None:
            completion = max(1, len(produced) // 4)
        completion_body: dict[str, Any] = {
            "id": f"chatcmpl-{n}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake-model"),
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": content,
                        "refusal": reply.refusal,
                        "tool_calls": tool_calls,
                    },
                    "finish_reason": reply.finish_reason,
                    "logprobs": None,
                }
            ],
            "system_fingerprint": "fake",
        }
        if reply.usage and self.send_usage:
            completion_body["usage"] = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }
        return completion_body

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in (headers or {}).items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # client gave up (timeout) before we answered

            def _error(self, status: int, message: str) -> None:
                err_type, code = _ERROR_KINDS.get(status, ("server_error", "server_error"))
                # retry-after-ms keeps the client's retry backoff at 10 ms instead of 0.5 s+
                headers = {"retry-after-ms": "10"} if status in (408, 409, 429) or status >= 500 else {}
                body = {"error": {"message": message, "type": err_type, "param": None, "code": code}}
                self._send(status, body, headers)

            def _record(self, body: dict[str, Any] | None) -> None:
                with fake._lock:
                    fake.paths.append(self.path)
                    fake.auth_headers.append(self.headers.get("Authorization"))
                    if body is not None:
                        fake.requests.append(body)
                        model = body.get("model")
                        if isinstance(model, str) and model not in fake.models_seen:
                            fake.models_seen.append(model)

            def do_GET(self) -> None:  # noqa: N802 - http.server naming
                self._record(None)
                if self.path.rstrip("/") != "/v1/models":
                    self._error(404, f"unknown path {self.path}")
                    return
                data = [
                    {"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in fake.models_seen
                ]
                self._send(200, {"object": "list", "data": data})

            def do_POST(self) -> None:  # noqa: N802 - http.server naming
                length = int(self.headers.get("Content-Length", 0))
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    self._record(None)
                    self._error(400, "request body is not valid JSON")
                    return
                self._record(body)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._error(404, f"unknown path {self.path}")
                    return
                if body.get("stream"):
                    self._error(400, "fake OpenAI server does not support stream=true")
                    return
                fmt = (body.get("response_format") or {}).get("type")
                if fmt in fake.refuse_formats:
                    with fake._lock:
                        fake.calls += 1
                        fake.refused += 1
                    # OpenAI's wording for a model without structured outputs
                    self._error(400, f"Invalid parameter: 'response_format' of type '{fmt}' is not supported with this model.")
                    return
                with fake._lock:
                    fake.calls += 1
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    reply = fake._next_reply(body)
                    delay = reply.delay + fake.default_delay
                    if delay > 0 and fake._closing.wait(delay):
                        return  # server stopping: drop the connection
                    if reply.status != 200:
                        self._error(reply.status, reply.content or f"fake error {reply.status}")
                    else:
                        self._send(200, fake._completion(body, reply))
                finally:
                    with fake._lock:
                        fake.in_flight -= 1

            def log_message(self, *args: Any) -> None:
                pass

        return Handler
