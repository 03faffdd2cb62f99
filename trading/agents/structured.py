"""Reading a structured answer out of what a model actually sent.

Servers that honour `json_schema` send the JSON object alone. Many local servers ignore it and wrap
the object in a ```json fence, or put a sentence first. `read_answer` takes, in order: the whole
text as JSON; the first fenced block that parses; the first balanced {...} object in the text that
parses. Whatever it finds is validated against the same schema; nothing is repaired or guessed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ValidationError

T = TypeVar("T", bound=BaseModel)

Found = Literal["json", "fence", "embedded"]

_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\n?(.*?)```", re.DOTALL)


@dataclass(frozen=True)
class Answer(Generic[T]):
    parsed: T | None
    found: Found | None  # where the JSON object was: the whole text, a code fence, or after prose
    error: str | None  # why nothing usable came out (None when parsed)


def _objects(text: str) -> list[tuple[Found, Any]]:
    """Candidate JSON objects in the order they are tried."""
    found: list[tuple[Found, Any]] = []
    stripped = text.strip()
    try:
        found.append(("json", json.loads(stripped)))
        return found
    except ValueError:
        pass
    for block in _FENCE.findall(text):
        try:
            found.append(("fence", json.loads(block.strip())))
        except ValueError:
            continue
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            value, _ = decoder.raw_decode(text, start)
            found.append(("embedded", value))
        except ValueError:
            pass
        start = text.find("{", start + 1)
    return found


def read_answer(schema: type[T], text: str | None) -> Answer[T]:
    """The first JSON object in `text` that is valid for `schema`, and where it was found."""
    if not text or not text.strip():
        return Answer(None, None, "empty answer")
    candidates = [(where, value) for where, value in _objects(text) if isinstance(value, dict)]
    if not candidates:
        return Answer(None, None, f"no JSON object in the answer: {_short(text)}")
    first_error = ""
    for where, value in candidates:
        try:
            return Answer(schema.model_validate(value), where, None)
        except ValidationError as exc:
            first_error = first_error or "; ".join(
                ".".join(str(p) for p in e["loc"]) + f": {e['msg']}" for e in exc.errors()
            )
    return Answer(None, candidates[0][0], f"answer does not match {schema.__name__}: {_short(first_error)}")


def json_schema_format(schema: type[BaseModel]) -> dict[str, Any]:
    """OpenAI's `response_format` for a pydantic schema (named after the schema, not strict)."""
    spec: dict[str, Any] = {"name": schema.__name__, "schema": schema.model_json_schema()}
    if schema.__doc__:
        spec["description"] = " ".join(schema.__doc__.split())
    return {"type": "json_schema", "json_schema": spec}


def schema_instruction(schema: type[BaseModel]) -> str:
    """For servers without `json_schema`: the schema in words, appended to the system prompt."""
    return (
        "Answer with one JSON object only, no prose, valid for this JSON schema:\n"
        + json.dumps(schema.model_json_schema(), sort_keys=True)
    )


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
