"""Pipelines as LangGraph graphs: specs from config, compiled graphs, checkpointers (no Dagster here)."""

from trading.graph.build import CycleInputs, GraphState, PipelineGraph, thread_id
from trading.graph.checkpoint import CheckpointConfigError, check_checkpoint, open_checkpointer
from trading.graph.spec import HARD_LIMITS, WHEN, EdgeSpec, GraphSpec, NodeSpec, default_graph, mermaid

__all__ = [
    "HARD_LIMITS",
    "WHEN",
    "CheckpointConfigError",
    "CycleInputs",
    "EdgeSpec",
    "GraphSpec",
    "GraphState",
    "NodeSpec",
    "PipelineGraph",
    "check_checkpoint",
    "default_graph",
    "mermaid",
    "open_checkpointer",
    "thread_id",
]
