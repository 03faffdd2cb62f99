"""Runs every benchmark script in turn; each prints its own table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    for script in ("bench_lake.py", "bench_backtest.py", "bench_sweep.py", "bench_montecarlo.py", "bench_ledger.py", "bench_agents.py", "bench_trading.py", "bench_demo.py"):
        print(f"\n## {script}\n", flush=True)
        subprocess.run([sys.executable, str(HERE / script), *sys.argv[1:]], check=True)
