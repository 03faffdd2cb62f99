"""The backtest engine on vectorbt: fills, costs, metrics, sweeps, walk-forward, Monte Carlo. No Dagster."""
