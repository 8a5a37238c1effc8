"""Helpers tests share (tests/ is not a package; pytest puts this folder on sys.path)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import NoReturn

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def services_required() -> bool:
    """In CI the real services must be up: a missing one fails the test instead of skipping it."""
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def service_unavailable(reason: str) -> NoReturn:
    """A real service (Redis, PostgreSQL) does not answer: fail in CI, skip with the reason elsewhere."""
    if services_required():
        pytest.fail(reason)
    pytest.skip(reason)


def isolate_env(mp: pytest.MonkeyPatch, root: Path, **env: str) -> None:
    """Run from `root` (no params.yaml there) with no FINSTREAM_* variables but FINSTREAM_HOME=root/home
    and the given ones."""
    mp.chdir(root)
    for key in list(os.environ):
        if key.startswith("FINSTREAM_"):
            mp.delenv(key)
    mp.setenv("FINSTREAM_HOME", str(root / "home"))
    for key, value in env.items():
        mp.setenv(key, value)


class PrefectServer:
    """A real `prefect server start` on a free loopback port with its own PREFECT_HOME; stop() ends it."""

    def __init__(self, home: Path, extra_env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.env = {
            **os.environ,
            "PREFECT_HOME": str(home),
            "PREFECT_API_URL": self.api_url,
            "DO_NOT_TRACK": "1",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            **(extra_env or {}),
        }
        self.process = subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.5)
        self.stop()
        pytest.fail("Prefect server did not become healthy in 90 s")

    def stop(self) -> None:
        stop_process_group(self.process)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop by process group; SIGKILL if it ignores SIGTERM (a Prefect worker may once the server is gone)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
