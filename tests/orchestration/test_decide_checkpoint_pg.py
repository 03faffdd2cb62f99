"""decide_job with the graph checkpointed in PostgreSQL (`checkpoint: postgresql://...` in the pipeline
file: LangGraph's PostgresSaver): a cycle killed after the analyst and run again resumes from the
server's checkpoints, and the model is not asked again for a node it already answered.

Needs the server at QUANTLAKE_TEST_PG_URL (default 127.0.0.1:5432, database `test`): skipped without it,
failed without it under CI (tests/conftest.py `pg_schema_url`), so CI must run a PostgreSQL service."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy

from tests.fakes.openai_server import OpenAIServer
from tests.orchestration.test_decide_checkpoint import ARMED, SYMBOLS, _decide, _proposals, _setup
from tests.trading.conftest import good_answers


def _checkpointed_threads(url: str) -> int:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sqlalchemy.text("select count(distinct thread_id) from checkpoints")).scalar_one())
    finally:
        engine.dispose()


@pytest.mark.parametrize("driver", ["postgresql://", "postgresql+psycopg2://"])
def test_a_decide_run_killed_after_the_analyst_resumes_from_postgres_without_asking_it_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pg_schema_url: str, driver: str
) -> None:
    """The URL as libpq writes it, or as SQLAlchemy does (the ledger's form): both reach the same server."""
    checkpoint = pg_schema_url.replace("postgresql://", driver, 1)
    with OpenAIServer(responder=good_answers) as server:
        lake, resource = _setup(tmp_path, server, monkeypatch, checkpoint=checkpoint)
        ARMED["on"] = True
        try:
            assert not _decide(lake, resource).success
        finally:
            ARMED["on"] = False
        assert _proposals(server) == len(SYMBOLS), "the analyst answered for each symbol before the kill"
        assert _checkpointed_threads(pg_schema_url) == len(SYMBOLS), "a thread a symbol, in the server's schema"
        assert not (tmp_path / "ledger.graph.sqlite").exists(), "nothing checkpointed in the SQLite default"
        rerun = _decide(lake, resource)
        assert rerun.success
        assert _proposals(server) == len(SYMBOLS), "the rerun resumed from PostgreSQL: the analyst was not asked again"
        [mat] = rerun.asset_materializations_for_node("decision_cycle")
        assert mat.metadata["execute"].value == len(SYMBOLS)


@pytest.mark.parametrize("where", ["s3://bucket/graph.sqlite", "mysql://quant@db/graphs"])
def test_a_checkpoint_url_that_is_no_place_is_refused_at_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """Before, any URL that was not postgresql:// became a SQLite file under a folder named after its scheme."""
    from trading.graph.checkpoint import CheckpointConfigError
    from trading.pipeline import DecisionPipeline, PipelineConfig

    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointConfigError, match="expected a SQLite file"):
        DecisionPipeline(PipelineConfig(checkpoint=where))
    assert list(tmp_path.iterdir()) == []
