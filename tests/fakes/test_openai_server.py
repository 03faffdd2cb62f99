"""The fake OpenAI server speaks the protocol well enough for the real openai / langchain-openai clients."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import openai
import pytest
from langchain_core.messages import AIMessage
from langchain_openai import ChatOpenAI
from langchain_openai.chat_models.base import OpenAIRefusalError
from pydantic import BaseModel, SecretStr, ValidationError

from tests.fakes.openai_server import OpenAIServer, Reply, example_for_schema, fenced

PROPOSAL_JSON = '{"symbol": "AAPL", "action": "BUY", "confidence": 0.8}'


class Proposal(BaseModel):
    symbol: str
    action: Literal["BUY", "SELL", "HOLD"]
    confidence: float


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer() as srv:
        yield srv


def chat(srv: OpenAIServer, **kwargs: Any) -> ChatOpenAI:
    options: dict[str, Any] = {"timeout": 5.0, "max_retries": 0, **kwargs}
    return ChatOpenAI(
        base_url=srv.base_url,
        api_key=SecretStr("test-key"),
        model="gpt-4o-mini",
        use_responses_api=False,
        **options,
    )


def client(srv: OpenAIServer, **kwargs: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.base_url, api_key="k", **{"max_retries": 0, **kwargs})


# ---- plain openai client ------------------------------------------------------------------------


def test_plain_openai_client_round_trip(server: OpenAIServer) -> None:
    server.script(Reply(content="hello", prompt_tokens=11, completion_tokens=7))
    resp = client(server).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    assert resp.choices[0].message.content == "hello"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens) == (11, 7, 18)
    assert resp.model == "gpt-4o-mini" and resp.id.startswith("chatcmpl-")
    assert server.auth_headers == ["Bearer k"]
    assert server.paths == ["/v1/chat/completions"]
    assert server.requests[0]["messages"] == [{"role": "user", "content": "hi"}]
    assert server.calls == 1


def test_default_usage_estimate_and_models_listing(server: OpenAIServer) -> None:
    server.script(Reply(content="x" * 40))
    resp = client(server).chat.completions.create(model="m-1", messages=[{"role": "user", "content": "hi"}])
    assert resp.usage is not None
    assert resp.usage.completion_tokens == 10
    assert resp.usage.prompt_tokens >= 1
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    assert [m.id for m in client(server).models.list()] == ["m-1"]


def test_a_server_without_usage_sends_none() -> None:
    with OpenAIServer(send_usage=False) as srv:
        resp = client(srv).chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        msg = chat(srv).invoke("go")
    assert resp.usage is None and resp.choices[0].message.content == "ok"
    assert msg.usage_metadata is None  # langchain has nothing to report either
    with OpenAIServer() as srv:
        srv.script(Reply(content="x", usage=False))
        assert client(srv).chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}]).usage is None


def test_a_refused_response_format_is_openais_400_and_other_formats_pass() -> None:
    with OpenAIServer(refuse_formats={"json_schema"}) as srv:
        with pytest.raises(openai.BadRequestError, match="'response_format' of type 'json_schema' is not supported") as info:
            chat(srv).with_structured_output(Proposal, method="json_schema").invoke("go")
        assert info.value.status_code == 400
        resp = client(srv).chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], response_format={"type": "json_object"})
    assert resp.choices[0].message.content == "{}"
    assert (srv.calls, srv.refused) == (2, 1)


def test_fenced_answer_is_prose_then_a_json_fence(server: OpenAIServer) -> None:
    server.script(fenced(Reply(content=PROPOSAL_JSON, prompt_tokens=5, completion_tokens=9)))
    resp = client(server).chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    content = resp.choices[0].message.content or ""
    assert content.startswith("Sure!") and f"```json\n{PROPOSAL_JSON}\n```" in content
    assert resp.usage is not None and resp.usage.completion_tokens == 9


def test_stream_is_rejected(server: OpenAIServer) -> None:
    with pytest.raises(openai.BadRequestError, match="stream"):
        client(server).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
        )


def test_no_responder_and_empty_queue_is_a_400() -> None:
    with OpenAIServer(responder=None) as srv:
        with pytest.raises(openai.BadRequestError, match="no scripted reply"):
            client(srv).chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])


# ---- langchain structured output -----------------------------------------------------------------


def test_json_schema_structured_output(server: OpenAIServer) -> None:
    server.script(Reply(content=PROPOSAL_JSON, prompt_tokens=30, completion_tokens=12))
    out = chat(server).with_structured_output(Proposal, method="json_schema", include_raw=True).invoke("go")
    assert out["parsing_error"] is None
    assert out["parsed"] == Proposal(symbol="AAPL", action="BUY", confidence=0.8)
    raw = out["raw"]
    assert isinstance(raw, AIMessage)
    assert raw.usage_metadata is not None
    assert raw.usage_metadata["input_tokens"] == 30
    assert raw.usage_metadata["output_tokens"] == 12
    assert raw.usage_metadata["total_tokens"] == 42
    body = server.requests[0]
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["name"] == "Proposal"
    assert server.auth_headers == ["Bearer test-key"]


def test_function_calling_structured_output(server: OpenAIServer) -> None:
    server.script(Reply(tool_calls=[{"name": "Proposal", "arguments": PROPOSAL_JSON}]))
    out = (
        chat(server)
        .with_structured_output(Proposal, method="function_calling", include_raw=True)
        .invoke("go")
    )
    assert out["parsing_error"] is None
    assert out["parsed"] == Proposal(symbol="AAPL", action="BUY", confidence=0.8)
    assert out["raw"].tool_calls[0]["id"].startswith("call_")
    body = server.requests[0]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "Proposal"}}
    assert body["tools"][0]["function"]["name"] == "Proposal"


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_auto_reply_fits_the_schema(
    server: OpenAIServer, method: Literal["json_schema", "function_calling"]
) -> None:
    parsed = chat(server).with_structured_output(Proposal, method=method).invoke("go")
    assert isinstance(parsed, Proposal)
    assert example_for_schema(Proposal.model_json_schema()) == parsed.model_dump()


def test_json_schema_malformed_content_raises_even_with_include_raw(server: OpenAIServer) -> None:
    # openai's .parse() validates the content inside the model call, before langchain's
    # include_raw fallback, so the pydantic error propagates instead of becoming parsing_error.
    server.script(Reply(content="{not json"))
    with pytest.raises(ValidationError, match="Invalid JSON"):
        chat(server).with_structured_output(Proposal, method="json_schema", include_raw=True).invoke("go")


def test_function_calling_bad_arguments(server: OpenAIServer) -> None:
    structured = chat(server).with_structured_output(Proposal, method="function_calling", include_raw=True)
    # Not JSON → an invalid_tool_call; the parser finds no tool call: parsed None, no parsing_error.
    server.script(Reply(tool_calls=[{"name": "Proposal", "arguments": "{not json"}]))
    out = structured.invoke("go")
    assert out["parsed"] is None and out["parsing_error"] is None
    assert out["raw"].invalid_tool_calls[0]["args"] == "{not json"
    # Valid JSON violating the schema → parsing_error is the pydantic ValidationError.
    bad = {"symbol": "AAPL", "action": "MAYBE", "confidence": 1}
    server.script(Reply(tool_calls=[{"name": "Proposal", "arguments": bad}]))
    out = structured.invoke("go")
    assert out["parsed"] is None
    assert isinstance(out["parsing_error"], ValidationError)


def test_refusal(server: OpenAIServer) -> None:
    server.script(Reply(refusal="I can't help with that"), Reply(refusal="no"))
    out = chat(server).with_structured_output(Proposal, method="json_schema", include_raw=True).invoke("go")
    assert out["parsed"] is None
    assert isinstance(out["parsing_error"], OpenAIRefusalError)
    assert out["raw"].additional_kwargs["refusal"] == "I can't help with that"
    with pytest.raises(OpenAIRefusalError, match="no"):
        chat(server).with_structured_output(Proposal, method="json_schema").invoke("go")


def test_length_finish_reason_raises_for_json_schema(server: OpenAIServer) -> None:
    server.script(Reply(content='{"symbol": "AA', finish_reason="length"))
    with pytest.raises(openai.LengthFinishReasonError):
        chat(server).with_structured_output(Proposal, method="json_schema", include_raw=True).invoke("go")


def test_length_finish_reason_with_function_calling_is_not_an_error(server: OpenAIServer) -> None:
    server.script(
        Reply(tool_calls=[{"name": "Proposal", "arguments": PROPOSAL_JSON}], finish_reason="length")
    )
    out = (
        chat(server)
        .with_structured_output(Proposal, method="function_calling", include_raw=True)
        .invoke("go")
    )
    assert out["parsed"] == Proposal(symbol="AAPL", action="BUY", confidence=0.8)
    assert out["raw"].response_metadata["finish_reason"] == "length"


# ---- errors, retries, timeouts --------------------------------------------------------------------


def test_rate_limit_then_success_is_retried(server: OpenAIServer) -> None:
    server.script(Reply(status=429, content="slow down"), Reply(content=PROPOSAL_JSON))
    parsed = chat(server, max_retries=2).with_structured_output(Proposal, method="json_schema").invoke("go")
    assert parsed == Proposal(symbol="AAPL", action="BUY", confidence=0.8)
    assert server.calls == 2 and len(server.requests) == 2


def test_server_error_without_retries(server: OpenAIServer) -> None:
    server.script(Reply(status=500, content="boom"), Reply(status=500))
    with pytest.raises(openai.InternalServerError, match="boom") as info:
        client(server).chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert info.value.body == {
        "message": "boom",
        "type": "server_error",
        "param": None,
        "code": "server_error",
    }
    with pytest.raises(openai.InternalServerError):
        chat(server).with_structured_output(Proposal, method="json_schema").invoke("go")
    assert server.calls == 2


def test_timeout_is_fast_and_close_does_not_hang() -> None:
    # The reply would come after an hour: a client without its timeout, or a close that waited for
    # the delayed handler, blocks until pytest-timeout fails the test. No clock is read.
    with OpenAIServer() as srv:
        srv.script(Reply(content=PROPOSAL_JSON, delay=3600.0))
        with pytest.raises(openai.APITimeoutError):
            client(srv, timeout=0.3).chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}]
            )


def test_concurrent_requests_are_served_in_parallel() -> None:
    with OpenAIServer(default_delay=0.2) as srv:
        oai = client(srv, timeout=5.0)

        def call(i: int) -> str | None:
            resp = oai.chat.completions.create(model="m", messages=[{"role": "user", "content": str(i)}])
            return resp.choices[0].message.content

        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(call, range(8)))
    assert results == ["ok"] * 8
    assert srv.calls == 8
    assert srv.max_in_flight >= 4  # parallel by behaviour: requests overlapped in the server, no timing
    assert sorted(r["messages"][0]["content"] for r in srv.requests) == [str(i) for i in range(8)]
