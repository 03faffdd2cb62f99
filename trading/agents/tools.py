"""What analysts may look up, behind one registry and one runner. Tools return errors as data.

A tool is a plain function of keyword arguments returning JSON-able data; its parameters are a
pydantic model, which gives the model a JSON schema and gives us validation. The runner never raises:
an unknown tool, bad arguments or a failing lookup come back as {"ok": false, "error": "..."}.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    args: type[BaseModel]
    run: Callable[..., Any]

    def openai_schema(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.args.model_json_schema()},
        }


class ToolRegistry:
    def __init__(self, tools: list[Tool] | None = None) -> None:
        self._tools: dict[str, Tool] = {}
        for tool in tools or []:
            self.register(tool)

    def register(self, tool: Tool) -> None:
        if tool.name in self._tools:
            raise ValueError(f"tool {tool.name!r} is registered twice")
        self._tools[tool.name] = tool

    @property
    def names(self) -> list[str]:
        return sorted(self._tools)

    def schemas(self) -> list[dict[str, Any]]:
        return [self._tools[n].openai_schema() for n in self.names]

    def call(self, name: str, arguments: str | dict[str, Any]) -> dict[str, Any]:
        """Runs one tool call; the answer is always a dict with `ok` and `result` or `error`."""
        tool = self._tools.get(name)
        if tool is None:
            return {"ok": False, "error": f"unknown tool {name!r}; available: {self.names}"}
        try:
            raw = json.loads(arguments) if isinstance(arguments, str) else dict(arguments)
            args = tool.args.model_validate(raw)
        except (json.JSONDecodeError, TypeError, ValueError, ValidationError) as exc:
            return {"ok": False, "error": f"bad arguments for {name}: {exc}"}
        try:
            return {"ok": True, "result": tool.run(**args.model_dump())}
        except Exception as exc:  # noqa: BLE001 - a failing lookup is data for the model, not a crash
            return {"ok": False, "error": f"{name} failed: {type(exc).__name__}: {exc}"}


class _SymbolArgs(BaseModel):
    symbol: str


class _BarsArgs(BaseModel):
    symbol: str
    limit: int = 20


class _DecisionsArgs(BaseModel):
    symbol: str
    limit: int = 5


def standard_tools(
    bars: Any, features: dict[str, dict[str, float | None]], positions: dict[str, float], recent_decisions: list[dict[str, Any]]
) -> ToolRegistry:
    """The analysts' lookups over point-in-time data: `bars` must already stop at the decision bar."""
    import polars as pl

    def known(symbol: str) -> str:
        if symbol not in features:
            raise KeyError(f"unknown symbol {symbol!r}; this cycle covers {sorted(features)}")
        return symbol

    def get_bars(symbol: str, limit: int) -> list[dict[str, Any]]:
        rows = bars.filter(pl.col("symbol") == known(symbol)).sort("ts").tail(max(1, min(limit, 200)))
        return [{**r, "ts": r["ts"].isoformat()} for r in rows.select("ts", "open", "high", "low", "close", "volume").to_dicts()]

    def get_features(symbol: str) -> dict[str, float | None]:
        return features[known(symbol)]

    def get_position(symbol: str) -> float:
        return positions.get(known(symbol), 0.0)

    def get_recent_decisions(symbol: str, limit: int) -> list[dict[str, Any]]:
        return [d for d in recent_decisions if d.get("symbol") == known(symbol)][-max(1, min(limit, 50)) :]

    return ToolRegistry(
        [
            Tool("get_bars", "Most recent bars (up to the decision time) for a symbol.", _BarsArgs, get_bars),
            Tool("get_features", "Latest indicator values (returns, SMA, RSI, ATR, volatility) for a symbol.", _SymbolArgs, get_features),
            Tool("get_position", "Current signed position (shares) in a symbol.", _SymbolArgs, get_position),
            Tool("get_recent_decisions", "This strategy's most recent decisions for a symbol.", _DecisionsArgs, get_recent_decisions),
        ]
    )
