"""The market-data lake: bar schema, sources, Parquet storage, validation, derived data. No Dagster."""
