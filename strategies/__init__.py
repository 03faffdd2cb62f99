"""Pure strategy code: signals and sizing. No Dagster, no I/O."""
