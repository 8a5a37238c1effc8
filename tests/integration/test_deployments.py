"""prefect.yaml against a real Prefect server: deploy --all, schedules, and a run through a process worker."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests_support import BIN, REPO, PrefectServer, stop_process_group

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def prefect_server(tmp_path: Path) -> Iterator[dict[str, str]]:
    server = PrefectServer(
        tmp_path / "prefect",
        {
            "FINSTREAM_HOME": str(tmp_path / "home"),
            "FINSTREAM_PROJECT_DIR": str(REPO),
            "FINSTREAM_INGEST__SOURCE": "packaged",
            "FINSTREAM_INGEST__SYMBOLS": '["000300.SH"]',
            "FINSTREAM_INGEST__START": "2024-01-01",
        },
    )
    try:
        yield server.env
    finally:
        server.stop()


def _prefect(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    proc = subprocess.run(
        [str(BIN / "prefect"), *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout


def test_deploy_all_schedules_and_runs_the_daily_pipeline(prefect_server: dict[str, str]) -> None:
    env = prefect_server
    _prefect(env, "work-pool", "create", "local", "--type", "process")
    _prefect(env, "--no-prompt", "deploy", "--all")
    api = env["PREFECT_API_URL"]
    deployments = httpx.post(f"{api}/deployments/filter", json={}, timeout=10).json()
    by_name = {d["name"]: d for d in deployments}
    assert {"daily", "weekly-retrain"} <= set(by_name)
    daily = by_name["daily"]["schedules"][0]["schedule"]
    assert (daily["cron"], daily["timezone"]) == ("30 16 * * 1-5", "Asia/Shanghai")

    worker = subprocess.Popen(
        [str(BIN / "prefect"), "worker", "start", "--pool", "local"],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        out = _prefect(
            env, "deployment", "run", "data_pipeline/daily", "--watch", "--watch-timeout", "240", timeout=300
        )
        assert "Completed" in out
    finally:
        stop_process_group(worker)
    assert (Path(env["FINSTREAM_HOME"]) / "data" / "features" / "1d.parquet").is_file()
