"""Ledger benchmark: batched appends and a full portfolio replay, on SQLite and on PostgreSQL.

Events of a realistic shape (default 1,000,000): one deposit, then ~70% FILL events with `Fill`
payloads, the rest DECISION and COST events, over a 50-symbol universe. Appends go in batches of
10,000 (`Ledger.append_many`, one transaction each; only the append calls are timed, not building
the events). The replay rebuilds the portfolio from the whole ledger and must equal the portfolio
computed directly from the generated fills. SQLite runs on a temporary file; PostgreSQL on the local
server (`$QUANTLAKE_TEST_PG_URL`, default postgresql://postgres@127.0.0.1:5432/test) in a fresh
schema dropped afterwards, or prints "skipped: <reason>". Targets: append >= 20,000 events/s,
replay < 5 s. Run: `make bench` or `.venv/bin/python benchmarks/bench_ledger.py [--events 1000000]`.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa  # noqa: E402
from tqdm import tqdm  # noqa: E402

from trading.brokers.base import Fill  # noqa: E402
from trading.events import Event, EventType  # noqa: E402
from trading.ledger import Ledger, Portfolio, replay_portfolio  # noqa: E402
from trading.models import Mode  # noqa: E402

PG_URL = os.environ.get("QUANTLAKE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
BATCH = 10_000
SYMBOLS = [f"S{i:02d}" for i in range(50)]
START = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
APPEND_TARGET = 20_000.0  # events/s
REPLAY_TARGET = 5.0  # seconds


@dataclass
class Row:
    backend: str
    step: str
    events: int
    seconds: float
    target: str
    ok: bool | None

    def line(self) -> str:
        rate = f"{self.events / self.seconds:,.0f}" if self.seconds > 0 else ""
        mark = "" if self.ok is None else ("yes" if self.ok else "**no**")
        return f"| {self.backend} | {self.step} | {self.events:,} | {self.seconds:.2f} | {rate} | {self.target} | {mark} |"


def generate(n: int, seed: int = 1) -> tuple[Iterator[list[Event]], Portfolio]:
    """Batches of events, and the portfolio the fills among them make (filled in as batches are made)."""
    rng = random.Random(seed)
    expected = Portfolio()
    prices = {s: rng.uniform(20, 500) for s in SYMBOLS}

    def batches() -> Iterator[list[Event]]:
        made = 0
        while made < n:
            batch: list[Event] = []
            for _ in range(min(BATCH, n - made)):
                i = made + len(batch)
                ts = START + timedelta(seconds=i)
                run_id = f"run-{i // 5_000:05d}"
                if i == 0:
                    amount = 10_000_000.0
                    expected.apply_deposit(amount)
                    batch.append(
                        Event(
                            type=EventType.DEPOSIT,
                            run_id=run_id,
                            mode=Mode.SIMULATION,
                            payload={"amount": amount},
                            recorded_at=ts,
                        )
                    )
                    continue
                symbol = rng.choice(SYMBOLS)
                roll = rng.random()
                if roll < 0.70:
                    prices[symbol] *= math.exp(rng.gauss(0, 0.002))
                    side = "buy" if rng.random() < 0.5 else "sell"
                    qty = float(rng.randint(1, 200))
                    price = round(prices[symbol], 2)
                    commission = round(qty * 0.005, 4)
                    coid = "ql-" + hashlib.sha256(f"{run_id}|{symbol}|{i}".encode()).hexdigest()[:32]
                    payload = {
                        "fill_id": uuid.UUID(int=rng.getrandbits(128)).hex,
                        "client_order_id": coid,
                        "symbol": symbol,
                        "side": side,
                        "quantity": qty,
                        "price": price,
                        "commission": commission,
                        "ts": ts.isoformat().replace("+00:00", "Z"),
                    }
                    expected.apply_fill(symbol, qty if side == "buy" else -qty, price, commission)
                    kind = EventType.FILL
                elif roll < 0.85:
                    close = round(prices[symbol], 2)
                    payload = {
                        "run_id": run_id,
                        "strategy": "sma_cross",
                        "symbol": symbol,
                        "decided_at": ts.isoformat().replace("+00:00", "Z"),
                        "verdict": "EXECUTE",
                        "side": "buy",
                        "quantity": float(rng.randint(1, 200)),
                        "entry": close,
                        "stop": round(close * 0.95, 2),
                        "target1": round(close * 1.05, 2),
                        "target2": round(close * 1.10, 2),
                        "rationale": "fast SMA crossed above slow; trend and volume agree",
                    }
                    kind = EventType.DECISION
                else:
                    prompt, completion = rng.randint(500, 3000), rng.randint(50, 400)
                    payload = {
                        "model": "gpt-4o-mini",
                        "prompt_tokens": prompt,
                        "completion_tokens": completion,
                        "usd": round((prompt * 0.15 + completion * 0.60) / 1e6, 8),
                    }
                    kind = EventType.COST
                batch.append(
                    Event(
                        type=kind,
                        run_id=run_id,
                        mode=Mode.SIMULATION,
                        symbol=symbol,
                        as_of=ts,
                        recorded_at=ts,
                        payload=payload,
                    )
                )
            made += len(batch)
            yield batch

    return batches(), expected


def check_shape() -> None:
    """The generated FILL payloads are exactly what `Fill.model_dump(mode="json")` gives."""
    batches, _ = generate(200)
    for event in next(batches):
        if event.type == EventType.FILL:
            assert Fill.model_validate(event.payload).model_dump(mode="json") == event.payload, event.payload


def bench(backend: str, url: str, n: int) -> list[Row]:
    ledger = Ledger(url)
    try:
        batches, expected = generate(n)
        appended, seconds = 0, 0.0
        for batch in tqdm(batches, total=math.ceil(n / BATCH), desc=f"append ({backend})", unit="batch"):
            start = time.perf_counter()
            appended += ledger.append_many(batch)
            seconds += time.perf_counter() - start
        assert appended == n == ledger.count(), (appended, n)

        start = time.perf_counter()
        portfolio = replay_portfolio(ledger)
        replay_s = time.perf_counter() - start
        assert portfolio == expected, "replayed portfolio differs from the fills applied directly"

        sample = min(n, 100_000)
        start = time.perf_counter()
        read = sum(1 for _ in zip(range(sample), ledger.events(), strict=False))
        read_s = time.perf_counter() - start
        assert read == sample
    finally:
        ledger.close()
    append_rate = appended / seconds if seconds else math.inf
    return [
        Row(
            backend,
            f"append, batches of {BATCH:,}",
            appended,
            seconds,
            f">= {APPEND_TARGET:,.0f} events/s",
            append_rate >= APPEND_TARGET,
        ),
        Row(
            backend,
            f"replay into a Portfolio ({portfolio.fills:,} fills)",
            n,
            replay_s,
            f"< {REPLAY_TARGET:.0f} s",
            replay_s < REPLAY_TARGET,
        ),
        Row(backend, "read back as Event models (first 100,000)", read, read_s, "", None),
    ]


def bench_sqlite(n: int) -> list[Row]:
    work = Path(tempfile.mkdtemp(prefix="quantlake-bench-ledger-"))
    try:
        return bench("SQLite", f"sqlite:///{work / 'ledger.sqlite'}", n)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bench_postgres(n: int) -> list[Row] | str:
    engine = sa.create_engine(PG_URL)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
    except Exception as exc:
        engine.dispose()
        return f"skipped: PostgreSQL at {PG_URL} unreachable: {str(exc).splitlines()[0]}"
    schema = f"ql_bench_{uuid.uuid4().hex[:10]}"
    with engine.begin() as conn:
        conn.execute(sa.text(f'create schema "{schema}"'))
    try:
        return bench("PostgreSQL", f"{PG_URL}?options=-csearch_path%3D{schema}", n)
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'drop schema "{schema}" cascade'))
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    check_shape()
    rows = bench_sqlite(args.events)
    postgres = bench_postgres(args.events)
    if isinstance(postgres, list):
        rows += postgres
    print(f"\n{args.events:,} ledger events (~70% fills), appended in batches of {BATCH:,}\n")
    print("| backend | step | events | seconds | events/s | target | met |")
    print("|---|---|---:|---:|---:|---|---|")
    for row in rows:
        print(row.line())
    if isinstance(postgres, str):
        print(f"| PostgreSQL | {postgres} | | | | | |")


if __name__ == "__main__":
    main()
