"""The environment of a paper deployment pointed at the loopback Alpaca servers: what the code
location's resources are built from (`orchestration/resources.py`), and so what the trade manager's
sensor reads at each evaluation."""

from __future__ import annotations

import os

import pytest


def deploy_paper(
    monkeypatch: pytest.MonkeyPatch,
    trading_url: str,
    ledger_url: str,
    *,
    key: str,
    secret: str,
    data_source: str = "synthetic",
    data_url: str | None = None,
) -> None:
    """QUANTLAKE_MODE=paper with these Alpaca keys, trading server and ledger; bars from `data_source`
    (Alpaca's at `data_url`). Any other ALPACA_* variable of the test's environment is removed."""
    for name in [n for n in os.environ if n.startswith("ALPACA_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("QUANTLAKE_MODE", "paper")
    monkeypatch.setenv("QUANTLAKE_LEDGER_URL", ledger_url)
    monkeypatch.setenv("QUANTLAKE_DATA_SOURCE", data_source)
    monkeypatch.setenv("ALPACA_API_KEY", key)
    monkeypatch.setenv("ALPACA_SECRET_KEY", secret)
    monkeypatch.setenv("ALPACA_TRADING_URL", trading_url)
    if data_url is not None:
        monkeypatch.setenv("ALPACA_DATA_URL", data_url)
