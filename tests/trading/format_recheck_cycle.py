"""One decision cycle in a process of its own, for tests/trading/test_format_recheck.py.

`python -m tests.trading.format_recheck_cycle '<json>'` with lake, ledger_url, base_url, after_calls,
as_of and run_id: the cycle's model analyst on that server, re-check by call count only.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from strategies.builtin import SMA_CROSS
from tests.trading.conftest import PARAMS, UNIVERSE
from trading.agents.registry import AgentSpec
from trading.cycle import run_decision_cycle
from trading.ledger import Ledger
from trading.pipeline import PipelineConfig


def pipeline(base_url: str, after_calls: int) -> PipelineConfig:
    llm = {
        "model": "fake-small",
        "base_url": base_url,
        "api_key_env": "QL_TEST_KEY",
        "max_retries": 0,
        "timeout_s": 5.0,
        "format_recheck_calls": after_calls,
        "format_recheck_days": None,  # only the count can trigger it here
    }
    return PipelineConfig(analyst=AgentSpec(type="llm_analyst", config=llm), risk=AgentSpec(type="rules_risk"), prices={"fake-small": (1.0, 4.0)}, max_in_flight=1)


def cycle(args: dict[str, Any]) -> None:
    as_of = datetime.fromisoformat(args["as_of"])
    with Ledger(args["ledger_url"]) as ledger:
        run_decision_cycle(
            lake_root=Path(args["lake"]), ledger=ledger, strategy=SMA_CROSS, params=PARAMS, symbols=UNIVERSE, timeframe="1d",
            pipeline=pipeline(args["base_url"], args["after_calls"]), as_of=as_of, now=as_of + timedelta(days=4), run_id=args["run_id"],
        )


if __name__ == "__main__":
    cycle(json.loads(sys.argv[1]))
