"""The decision agents: analysts propose, a risk reviewer judges within hard limits, a validator checks.

Every agent has a rule-based implementation (the offline, deterministic default) and an LLM one behind
the same interface; pipelines name them in config (see `trading.agents.registry`).
"""
