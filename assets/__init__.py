"""Dagster software-defined assets and asset checks: thin wrappers over lake/, backtests/, trading/."""
