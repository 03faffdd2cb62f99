"""The Dagster UI in headless Chromium: our assets and checks are shown, and a partition launched
through the webserver's GraphQL API materializes successfully. Screenshots go to artifacts/ui/."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

import pytest

from tests.orchestration.dagster_server import ROOT, dagster_dev

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "artifacts" / "ui"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PARTITION = {"date": "2024-11-29", "symbol": "AAPL"}  # a half day


def _require_chromium() -> None:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            raise AssertionError("Debian chromium is required in CI (scripts/setup_system.sh installs it)")
        pytest.skip("Debian chromium is not installed (apt-get install chromium)")


def _skip_community_dialog(page) -> None:  # type: ignore[no-untyped-def]
    # The dialog only shows on a first visit.
    with contextlib.suppress(Exception):
        page.get_by_role("button", name="Skip").click(timeout=5_000)


def _register_symbol(home: Path, symbol: str) -> None:
    """Symbols are dynamic partitions: registered in the instance, as the CLI and the schedules do."""
    import dagster as dg

    from assets.partitions import add_symbols

    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").touch()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        add_symbols(instance, [symbol])


def test_ui_shows_assets_and_materializes_a_partition(tmp_path: Path) -> None:
    _require_chromium()
    from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    env = {"QUANTLAKE_LAKE_DIR": str(tmp_path / "lake"), "GX_ANALYTICS_ENABLED": "false"}
    _register_symbol(tmp_path / "home", PARTITION["symbol"])
    with dagster_dev(tmp_path / "home", env, ARTIFACTS / "dagster_dev.log") as url:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{url}/assets", wait_until="domcontentloaded")
            _skip_community_dialog(page)
            for name in ("bars_1m", "bars_1d", "bars_resampled", "features_1m"):
                page.get_by_text(name, exact=True).first.wait_for(timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "asset_catalog.png"), full_page=True)

            page.goto(f"{url}/assets/bars_1m?view=checks", wait_until="domcontentloaded")
            _skip_community_dialog(page)
            page.get_by_text("ohlc_consistent").first.wait_for(timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "bars_1m_checks.png"), full_page=True)

            client = DagsterGraphQLClient("127.0.0.1", port_number=int(url.rsplit(":", 1)[1]))
            run_id = client.submit_job_execution(
                "ingest_intraday_job",
                tags={
                    "dagster/partition": f"{PARTITION['date']}|{PARTITION['symbol']}",
                    "dagster/partition/date": PARTITION["date"],
                    "dagster/partition/symbol": PARTITION["symbol"],
                },
            )
            deadline = time.monotonic() + 240
            status = None
            while time.monotonic() < deadline:
                try:
                    status = client.get_run_status(run_id).value
                except DagsterGraphQLClientError:
                    status = None
                if status in {"SUCCESS", "FAILURE", "CANCELED"}:
                    break
                time.sleep(1)
            page.goto(f"{url}/runs/{run_id}", wait_until="domcontentloaded")
            _skip_community_dialog(page)
            page.get_by_text("Success").first.wait_for(timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "run_success.png"), full_page=True)
            browser.close()
    assert status == "SUCCESS", f"run {run_id} ended {status}; see {ARTIFACTS / 'dagster_dev.log'}"
    lake_files = list((tmp_path / "lake").rglob("*.parquet"))
    assert any("symbol=AAPL" in str(p) and "2024-11-29" in str(p) for p in lake_files), lake_files
