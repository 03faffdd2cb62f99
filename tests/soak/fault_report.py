"""What the deployment did with each fault a soak injected: one line a fault, and what is wrong.

`fault_report(result)` reads the instance, the ledger and the lake after a soak with faults
(tests/soak/faults.py) and says, per fault, what happened; a fault that hit nothing is a problem
(it proved nothing). It also names the failed runs the faults explain, so that check_all's
"run ... FAILURE" lines about them are not counted twice (`unexplained`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

import dagster as dg

from orchestration.sensors import REFETCH_RUN_TAG
from tests.soak.checks import NY, check_source_down, halted_skips, is_retry, scheduled_at, sessions
from tests.soak.harness import BROKER_5XX, DISK_FULL, WORKER_KILLED, SoakResult
from trading.events import Event, EventType
from trading.ledger import Ledger


@dataclass
class FaultReport:
    lines: list[str] = field(default_factory=list)  # "<fault> <when>: what the deployment did"
    explained: set[str] = field(default_factory=set)  # failed runs the faults explain
    problems: list[str] = field(default_factory=list)


def unexplained(problems: list[str], run_ids: set[str]) -> list[str]:
    """check_all's problems but its "run <id> ...: FAILURE" lines about the runs the faults explain."""
    short = {r[:8] for r in run_ids}
    return [p for p in problems if not (p.startswith("run ") and p.split()[1] in short)]


def all_runs(result: SoakResult) -> list[dg.DagsterRun]:
    """Every run the soak launched, in its last state (retention deleted the old ones from the instance)."""
    return list({**result.history, **{r.run_id: r for r in result.runs}}.values())


def _day(at: datetime) -> date:
    return at.astimezone(NY).date()


def _messages(result: SoakResult, instance: dg.DagsterInstance, run: dg.DagsterRun) -> str:
    if run.run_id in result.failure_logs:  # kept at the tick it failed: retention may have deleted it since
        return result.failure_logs[run.run_id]
    return "\n".join(e.message + str(e.dagster_event.event_specific_data if e.dagster_event else "") for e in instance.all_logs(run.run_id))


def _refetched(result: SoakResult, day: date, symbol: str) -> str:
    runs = [r for r in all_runs(result) if r.tags.get("quantlake/refetch") and r.tags.get("dagster/partition") == f"{day}|{symbol}"]
    return "refetched by missed_sessions_sensor" if any(r.status == dg.DagsterRunStatus.SUCCESS for r in runs) else "NOT refetched"


def _source_down(result: SoakResult, instance: dg.DagsterInstance, report: FaultReport) -> None:
    failed, _problems = check_source_down(result, instance)  # its problems are check_all's already
    report.explained |= failed
    for day in result.settings.source_down:
        mine = [r for r in all_runs(result) if r.run_id in failed and r.job_name.startswith("ingest_")]
        runs = [r for r in mine if REFETCH_RUN_TAG not in r.tags and _day(scheduled_at(r)) == day]
        early = [r for r in mine if REFETCH_RUN_TAG in r.tags and r.tags.get("dagster/partition", "").startswith(f"{day}|")]
        originals = [r for r in runs if not is_retry(r)]
        alerted = sum(any(r.run_id in a for a in result.alerts) for r in runs + early)
        if not originals:
            report.problems.append(f"source down {day}: no ingest failed: the fault hit nothing")
        refetch = [_refetched(result, day, s) for s in result.settings.symbols]
        report.lines.append(
            f"source down {day}: {len(originals)} scheduled ingests failed with the source's error, {len(runs) - len(originals)} run retries failed too, "
            f"{len(early)} refetches (with their retries) failed while it was still down, "
            f"{alerted}/{len(runs) + len(early)} failed runs alerted; 1m bars {', '.join(sorted(set(refetch)))}"
        )


def _broker_5xx(result: SoakResult, ledger: Ledger, report: FaultReport) -> None:
    submitted = list(ledger.events(types=[EventType.ORDER_SUBMITTED.value]))
    filled = {e.payload["client_order_id"] for e in ledger.events(types=[EventType.FILL.value])}
    for day in result.settings.broker_5xx:
        lost = [e for e in submitted if _day(e.recorded_at) == day and e.payload.get("status") == "unknown" and BROKER_5XX in str(e.payload.get("error", ""))]
        if not lost:
            report.problems.append(f"broker 5xx {day}: no order was sent that day: the fault hit nothing")
        ids = [str(e.payload["client_order_id"]) for e in lost]
        what = ", ".join(f"{e.symbol} {e.payload.get('side')}" for e in lost)
        again = [e for e in submitted if e.payload["client_order_id"] in ids and e.payload.get("status") != "unknown"]
        report.lines.append(
            f"broker 5xx {day}: {len(lost)} orders taken by the venue, answer lost to a 503 ({what}): "
            f"recorded as unknown outcomes, {len(again)} confirmed later, none sent again; {sum(i in filled for i in ids)}/{len(ids)} filled, the ledger's replay matching the account"
        )


def _model_timeout(result: SoakResult, ledger: Ledger, report: FaultReport) -> None:
    if not result.settings.model_timeout:
        return
    fallbacks = list(ledger.events(types=[EventType.FALLBACK.value]))
    answered = [e for e in ledger.events(types=[EventType.RESPONSE.value]) if not e.payload.get("cached")]
    orders = list(ledger.events(types=[EventType.ORDER_SUBMITTED.value]))
    for day in result.settings.model_timeout:
        timeouts = [e for e in fallbacks if _day(e.recorded_at) == day and e.payload.get("kind") == "timeout" and e.payload.get("to") == "rules"]
        decisions = [r for r in all_runs(result) if r.job_name == "decide_job" and "dagster/schedule_name" in r.tags and _day(scheduled_at(r)) == day]
        ok = sum(r.status == dg.DagsterRunStatus.SUCCESS for r in decisions)
        sent = [f"{e.symbol} {e.payload.get('side')}" for e in orders if _day(e.recorded_at) == day and not str(e.payload["client_order_id"]).startswith("close-")]
        later = [e for e in answered if _day(e.recorded_at) > day]
        if not timeouts:
            report.problems.append(f"model timeout {day}: the model was not asked that day: the fault hit nothing")
        if ok != len(decisions):
            report.problems.append(f"model timeout {day}: {len(decisions) - ok} decision runs did not succeed")
        report.lines.append(
            f"model timeout {day}: {len(timeouts)} calls timed out, each fell back to the rules; {ok}/{len(decisions)} decision runs succeeded at their times, "
            f"orders sent by the rules: {sent or 'none'}; the model answered {len(later)} times afterwards"
        )
    others = [e for e in fallbacks if _day(e.recorded_at) not in result.settings.model_timeout]
    if others:
        report.problems.append(f"model: {len(others)} fallbacks on days the model was up: {[(str(_day(e.recorded_at)), e.payload.get('kind')) for e in others[:3]]}")


def _lake_writes(result: SoakResult, instance: dg.DagsterInstance, report: FaultReport) -> None:
    for kind, faults, marker in (("disk full", result.settings.disk_full, DISK_FULL), ("run killed mid-step", result.settings.killed, WORKER_KILLED)):
        for day, symbol in faults:
            runs = [r for r in all_runs(result) if r.job_name == "ingest_intraday_job" and r.tags.get("dagster/partition") == f"{day}|{symbol}"]
            failed = [r for r in runs if r.status == dg.DagsterRunStatus.FAILURE and marker in _messages(result, instance, r)]
            report.explained |= {r.run_id for r in failed}
            retried = [r for r in runs if is_retry(r)]
            stuck = [r for r in runs if r.status == dg.DagsterRunStatus.STARTED]
            if not failed:
                report.problems.append(f"{kind} {day} {symbol}: no write of the partition failed: the fault hit nothing")
            if stuck:
                report.problems.append(f"{kind} {day} {symbol}: {len(stuck)} runs left STARTED")
            ok = [r for r in runs if r.status == dg.DagsterRunStatus.SUCCESS]
            by = "a run retry" if any(is_retry(r) for r in ok) else "missed_sessions_sensor's refetch" if any(r.tags.get("quantlake/refetch") for r in ok) else "nothing"
            how = "failed by run monitoring (dead worker)" if kind.startswith("run killed") else "failed with ENOSPC after its step retries"
            report.lines.append(
                f"{kind} {day} {symbol}: {len(failed)} runs {how}, {len(retried)} run retries, "
                f"{sum(any(r.run_id in a for a in result.alerts) for r in failed)}/{len(failed)} alerted; the partition completed by {by}, no temp file left"
            )
            if not ok:
                report.problems.append(f"{kind} {day} {symbol}: the partition never completed")


def _interventions(result: SoakResult, instance: dg.DagsterInstance, ledger: Ledger, report: FaultReport) -> None:
    events: list[Event] = list(ledger.events(types=[EventType.INTERVENTION.value]))
    orders = list(ledger.events(types=[EventType.ORDER_SUBMITTED.value]))
    skips = sorted(result.halted | halted_skips(instance))  # the daemon purges old ticks: the harness kept them
    manual = sorted(result.settings.actions)
    kills = [(at, next((a for a, job, _ in manual if job == "resume_job" and a > at), None)) for at, job, _ in manual if job == "kill_switch_job"]
    for at, resume in kills:
        thrown = [e for e in events if e.payload.get("kind") == "kill_switch" and abs((e.recorded_at - at).total_seconds()) < 60]
        resumed = [e for e in events if resume and e.payload.get("kind") == "resume" and abs((e.recorded_at - resume).total_seconds()) < 60]
        between = [s for s in skips if at < s and (resume is None or s < resume)]
        closes = [e for e in orders if str(e.payload["client_order_id"]).startswith("close-") and abs((e.recorded_at - at).total_seconds()) < 60]
        if not thrown or not between or (resume and not resumed):
            report.problems.append(f"kill switch {at:%Y-%m-%d %H:%M}: thrown {len(thrown)}, resumed {len(resumed)}, {len(between)} decision ticks skipped as halted")
        after = f"resumed {resume.astimezone(NY):%Y-%m-%d %H:%M}" + ("" if resumed else " (NOT recorded)") if resume else "never resumed"
        report.lines.append(f"kill switch {at.astimezone(NY):%Y-%m-%d %H:%M}: halted ({len(closes)} positions closed), {len(between)} decision ticks skipped as halted, {after}")
    limits = result.settings.pipeline.get("limits")
    limit = limits.get("max_trades_per_day") if isinstance(limits, dict) else None
    if limit is not None:
        trips = sorted({_day(e.recorded_at) for e in events if e.payload.get("kind") == "trades_per_day"})
        entries = sorted({_day(e.recorded_at) for e in orders if not str(e.payload["client_order_id"]).startswith("close-")})
        lifted = [d for d in trips if any(e > d for e in entries)]  # a later session entered: the trip did not outlive its session
        resumes = [e for e in events if e.payload.get("kind") == "resume"]
        if not trips:
            report.problems.append(f"breaker trades_per_day (limit {limit}): never tripped: the fault hit nothing")
        if trips and trips[-1] != sessions(result)[-1] and not lifted:
            report.problems.append(f"breaker trades_per_day: no entry after its trips {trips[:3]}: not lifted by its rule")
        report.lines.append(
            f"breaker trades_per_day (limit {limit}): tripped on {len(trips)} sessions ({', '.join(str(d) for d in trips[:3])}{', ...' if len(trips) > 3 else ''}), "
            f"no new risk for the rest of each; {len(lifted)} lifted by its rule (a later session entered), with {len(resumes) - len(kills)} resumes by hand"
        )


def _reloads(result: SoakResult, report: FaultReport) -> None:
    planned = sorted(result.settings.reload_on)
    if not planned:
        return
    if result.reloads != len(planned):
        report.problems.append(f"code location reloaded {result.reloads} times, planned {len(planned)}")
    report.lines.append(f"code location reloaded {result.reloads} times ({', '.join(str(d) for d in planned)}): the schedules and sensors went on from their cursors (no tick failed: check_ticks)")


def fault_report(result: SoakResult) -> FaultReport:
    report = FaultReport()
    with dg.DagsterInstance.from_config(str(result.home)) as instance, Ledger(result.ledger_url) as ledger:
        _source_down(result, instance, report)
        _broker_5xx(result, ledger, report)
        _model_timeout(result, ledger, report)
        _lake_writes(result, instance, report)
        _interventions(result, instance, ledger, report)
    _reloads(result, report)
    return report
