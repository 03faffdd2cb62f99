"""Agents, risk limits, brokers and the decision ledger. No Dagster in here."""
