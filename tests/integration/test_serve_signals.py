"""Long-running commands stop when told: SIGTERM or SIGINT to the main process only (as a supervisor sends
it) leaves no process of its tree and frees its ports within 10 s (`finstream serve`; `finstream pipeline`
and its temporary Prefect API server)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from tests_support import free_port, stop_process_group

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STARTUP_S = 120
STOP_S = 10


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _processes_with_env(marker: str) -> list[int]:
    """Pids whose environment holds `marker` (the test's own FINSTREAM_HOME): every process the command
    started, even one that left its process group or was re-parented after its parent died."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                pids.append(int(entry.name))
        except OSError:  # exited meanwhile, or not ours to read
            continue
    return pids


def _tree_gone(proc: subprocess.Popen, marker: str) -> bool:  # type: ignore[type-arg]
    proc.poll()  # reap the main process once it exits (a zombie would still count as alive)
    return not _group_alive(proc.pid) and not _processes_with_env(marker)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_stops_its_whole_tree_on_a_signal_to_the_main_process(
    settings: object, tmp_path: Path, sig: signal.Signals
) -> None:
    port = free_port()
    home = str(tmp_path / "home")
    env = {**os.environ, "FINSTREAM_HOME": home, "FINSTREAM_SERVE_WORKERS": "2"}
    finstream = str(Path(sys.executable).parent / "finstream")
    proc = subprocess.Popen(
        [finstream, "serve", "--port", str(port), "--reload-interval", "0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the test can see every process it started
    )
    try:
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
            assert proc.poll() is None, f"finstream serve exited with {proc.returncode} before serving"
        else:
            pytest.fail(f"finstream serve did not answer /health within {STARTUP_S} s")
        started = time.monotonic()
        os.kill(proc.pid, sig)  # the main process only, not the group
        while time.monotonic() - started < STOP_S:
            if _tree_gone(proc, home) and _port_free(port):
                break
            time.sleep(0.2)
        assert _tree_gone(proc, home), (
            f"`finstream serve` processes {_processes_with_env(home)} still run {STOP_S} s after {sig.name}"
        )
        assert _port_free(port), f"port {port} still answers {STOP_S} s after {sig.name}"
    finally:
        stop_process_group(proc)


def test_pipeline_stops_its_temporary_prefect_server_on_sigterm(settings: object, tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    env = {
        **os.environ,
        "FINSTREAM_HOME": home,
        "FINSTREAM_OFFLINE": "1",
        "FINSTREAM_INGEST__SOURCE": "packaged",
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "200",
    }
    env.pop("PREFECT_API_URL", None)
    finstream = str(Path(sys.executable).parent / "finstream")
    proc = subprocess.Popen(
        [finstream, "pipeline"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        port = None
        deadline = time.monotonic() + STARTUP_S
        log_file = Path(home) / "logs" / "finstream.log"  # Prefect's banners go to the log, not the terminal
        while port is None:
            assert proc.poll() is None, "finstream pipeline ended before starting its Prefect server"
            assert time.monotonic() < deadline, "no temporary Prefect server was started"
            text = log_file.read_text() if log_file.exists() else ""
            found = re.search(r"Starting temporary server on http://127\.0\.0\.1:(\d+)", text)
            port = int(found.group(1)) if found else None
            time.sleep(0.2)
        while _port_free(port) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2.0)  # the flow is running now
        started = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        while time.monotonic() - started < STOP_S:
            if _tree_gone(proc, home) and _port_free(port):
                break
            time.sleep(0.2)
        assert _tree_gone(proc, home), (
            f"`finstream pipeline` processes {_processes_with_env(home)} still run {STOP_S} s after SIGTERM"
        )
        assert _port_free(port), (
            f"the temporary Prefect server still listens on {port} {STOP_S} s after SIGTERM"
        )
    finally:
        stop_process_group(proc)
