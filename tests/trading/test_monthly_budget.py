"""The monthly budget's arithmetic: the month of a decision bar, the month's spend from the ledger's
per-day costs, and the pre-run check against what is left of the day and the month."""

from __future__ import annotations

from datetime import date

import pytest

from trading.cost import Budget, CostError, month_of, period_estimate, pre_run_check, spent_in_month
from trading.pipeline import load_pipeline_config


def test_the_month_sums_its_own_days_only() -> None:
    spent = {"2023-11-30": 5.0, "2023-12-01": 1.0, "2023-12-29": 2.5, "2024-01-02": 7.0}
    assert month_of(date(2023, 12, 29)) == "2023-12"
    assert spent_in_month(spent, date(2023, 12, 29)) == pytest.approx(3.5)
    assert spent_in_month(spent, date(2024, 1, 2)) == pytest.approx(7.0)
    assert spent_in_month({}, date(2024, 1, 2)) == 0.0


def test_a_run_whose_worst_case_exceeds_what_is_left_of_the_month_is_blocked() -> None:
    budget = Budget(per_month=10.0)
    blocked = pre_run_check(budget, 0.6, day=date(2023, 12, 29), spent_today=0.0, spent_month=9.5)
    assert blocked.reason is not None and "monthly budget $10.0000" in blocked.reason and "2023-12" in blocked.reason
    assert blocked.left_month == pytest.approx(0.5)
    fits = pre_run_check(budget, 0.5, day=date(2023, 12, 29), spent_today=0.0, spent_month=9.5)
    assert fits.reason is None, "exactly what is left fits"


def test_the_day_is_checked_before_the_month_and_no_budget_blocks_nothing() -> None:
    both = Budget(per_day=1.0, per_month=1.0)
    check = pre_run_check(both, 0.5, day=date(2023, 12, 29), spent_today=0.8, spent_month=0.8)
    assert check.reason is not None and check.reason.startswith("daily budget")
    assert pre_run_check(Budget(), 1e9, day=date(2023, 12, 29), spent_today=1e9, spent_month=1e9).reason is None
    assert check.as_dict()["blocked"] == check.reason and check.as_dict()["left_today_usd"] == pytest.approx(0.2)


def test_the_pipeline_file_takes_a_monthly_budget(tmp_path) -> None:  # type: ignore[no-untyped-def]
    file = tmp_path / "p.yaml"
    file.write_text("budget: {per_day: 5.0, per_month: 60.0}\n")
    assert load_pipeline_config(file).budget.per_month == 60.0
    file.write_text("budget: {per_month: -1}\n")
    with pytest.raises(ValueError, match="budget.per_month"):
        load_pipeline_config(file)


def test_runs_left_and_the_spend_per_run_day_and_month() -> None:
    check = pre_run_check(Budget(per_day=1.0, per_month=10.0), 0.3, day=date(2023, 12, 29), spent_today=0.1, spent_month=9.0)
    assert check.as_dict()["runs_left_today"] == 3 and check.as_dict()["runs_left_month"] == 3
    assert pre_run_check(Budget(), 0.3, day=date(2023, 12, 29), spent_today=0.0, spent_month=0.0).as_dict()["runs_left_month"] is None
    est = period_estimate(0.02, 0.05, runs_per_day=4, sessions_in_month=21)
    assert est["day_usd"] == pytest.approx(0.08) and est["month_usd"] == pytest.approx(1.68)
    assert est["month_usd_worst_case"] == pytest.approx(4.2)
    with pytest.raises(CostError):
        period_estimate(0.02, 0.05, runs_per_day=-1, sessions_in_month=21)


def _ledger_with_costs(tmp_path, runs: list[tuple[str, float, int]]):  # type: ignore[no-untyped-def]
    from datetime import datetime

    from trading.events import Event, EventType
    from trading.ledger import Ledger
    from trading.models import Mode

    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    events = [
        Event(type=EventType.COST, run_id=f"r{i}", mode=Mode.VALIDATION, as_of=datetime.fromisoformat(f"{day}T14:30:00+00:00"),
              payload={"scope": "run", "run_cost_usd": usd, "model_calls": calls})  # fmt: skip
        for i, (day, usd, calls) in enumerate(runs)
    ]
    ledger.append_many(events)
    return ledger


def test_the_estimate_prices_the_graph_at_the_recorded_cost_per_call(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from trading.estimate import pipeline_estimate, sessions_in_month

    llm = {"model": "gpt-4o-mini", "base_url": "http://127.0.0.1:9/v1"}
    nodes = [{"id": "analyst", "type": "llm_analyst", "config": llm}, {"id": "limits", "type": "hard_limits", "when": "trade"}]
    file = tmp_path / "p.json"
    import json

    file.write_text(json.dumps({"graph": {"nodes": nodes}, "budget": {"per_day": 1.0, "per_month": 10.0}}))
    pipeline = load_pipeline_config(file)
    # Two runs of 4 calls at $0.01 and $0.03 a call: $0.02 a call; one last month, one this month.
    ledger = _ledger_with_costs(tmp_path, [("2023-11-30", 0.04, 4), ("2023-12-04", 0.12, 4)])
    try:
        report = pipeline_estimate(ledger, pipeline, symbols=5, day=date(2023, 12, 29), runs_per_day=2)
    finally:
        ledger.close()
    assert sessions_in_month(date(2023, 12, 29)) == 20  # XNYS December 2023: 21 weekdays, Christmas closed
    assert report["model_calls_per_run"] == 5 and report["usd_per_call"] == pytest.approx(0.02)
    assert report["run_usd"] == pytest.approx(0.10) and report["day_usd"] == pytest.approx(0.20)
    assert report["month_usd"] == pytest.approx(0.20 * 20)
    assert report["spent_month_usd"] == pytest.approx(0.12) and report["left_month_usd"] == pytest.approx(9.88)
    assert report["runs_left_today"] == 10 and report["blocked"] is None


def test_each_call_also_checks_the_month() -> None:
    from trading.cost import BudgetExceeded, CostTracker, PriceTable, Usage

    tracker = CostTracker(PriceTable({"m": (1_000_000.0, 0.0)}), Budget(per_month=10.0), spent_today=1.0, spent_month=9.0)
    tracker.reserve(0.5)
    tracker.record("analyst", "m", Usage(prompt_tokens=1, completion_tokens=0))  # $1: the month is spent
    with pytest.raises(BudgetExceeded, match=r"monthly budget \$10.0000 would be exceeded: spent this month \$10.0000"):
        tracker.reserve(0.01)
    CostTracker(PriceTable(), Budget(per_month=10.0), spent_today=9.0).reserve(0.5)  # no month given: today's spend counts
