"""Concurrent ingests on one FINSTREAM_HOME never lose a writer's rows (real processes, repeated).

Each run starts two processes that ingest different symbols from the packaged history; both have their
bars in hand and call the ingest stage at the same wall-clock instant, so their read-merge-write cycles of
the raw table overlap unless the data folder's write lock serialises them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from finstream.storage import BarTable

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RUNS = 10
SYMBOLS = ("000300.SH", "^GSPC")
CHILD = """
import sys, time
from datetime import date
from finstream.config import Settings
from finstream.data_stages import ingest_stage
from finstream.sources.packaged import PackagedSource
from finstream.symbols import parse_symbol

symbol, at = sys.argv[1], float(sys.argv[2])
settings = Settings()
PackagedSource(settings).fetch(parse_symbol(symbol), None, None)  # warm: imports and file cache
time.sleep(max(0.0, at - time.time()))
ingest_stage(settings, symbol, "packaged", date(2015, 1, 1), date(2018, 12, 31))
"""


def _ingest_together(home: Path) -> list[subprocess.CompletedProcess[str]]:
    env = {**os.environ, "FINSTREAM_HOME": str(home), "FINSTREAM_OFFLINE": "1"}
    at = time.time() + 4.0  # both children are importing and warm by then on 2 cores
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, symbol, str(at)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for symbol in SYMBOLS
    ]
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


def test_two_concurrent_ingests_always_land_both_symbols(settings: object, tmp_path: Path) -> None:
    expected: dict[str, int] | None = None
    for run in range(RUNS):
        home = tmp_path / f"run{run}"
        for result in _ingest_together(home):
            assert result.returncode == 0, result.stderr[-2000:]
        raw = BarTable(home / "data" / "raw" / "bars").read()
        counts = raw.groupby("symbol").size().to_dict()
        assert set(counts) == set(SYMBOLS), f"run {run}: the raw table holds only {sorted(counts)}"
        assert not raw.duplicated(["symbol", "ts"]).any()
        expected = expected or counts
        assert counts == expected, f"run {run}: {counts} != {expected}"
        files = [p for p in (home / "data" / "raw").rglob("*") if p.is_file()]
        leftovers = [p.name for p in files if p.name != "all.parquet"]
        assert leftovers == [], f"run {run}: stray files {leftovers}"
