"""Parquet files of each stage, written atomically so a failed run never leaves a half-written file, and the
lock that serialises read-modify-write cycles of them across processes (two ingests started together must
both land: without it, each read the table before the other wrote, and the last rename won)."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
from filelock import FileLock, Timeout

from finstream.errors import NoDataError
from finstream.schema import BAR_COLUMNS, empty_bars

log = logging.getLogger(__name__)


LOCK_FILE = ".write.lock"
LOCK_TIMEOUT_S = 600.0


@contextmanager
def data_lock(data_dir: Path, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold the data folder's write lock (an OS file lock: released if the holder dies) for one cycle.

    Writers of the stage tables (ingest's upsert, validation, features) take it around read → merge →
    atomic rename, so concurrent runs on one FINSTREAM_HOME serialise their writes and lose nothing.
    Readers need no lock: every file is replaced atomically.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(data_dir / LOCK_FILE, timeout=timeout_s)
    try:
        with lock:
            yield
    except Timeout:
        raise NoDataError(
            f"another finstream run has held the write lock of {data_dir} for {timeout_s:.0f} s; "
            f"if none is running, delete {data_dir / LOCK_FILE}"
        ) from None


def write_parquet_atomic(frame: pd.DataFrame, path: Path) -> Path:
    """Write to a temporary file beside `path`, then rename over it (atomic on POSIX)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_bars(path: Path, *, required: bool = False, hint: str = "") -> pd.DataFrame:
    """Bars stored at `path`; an empty Bar frame (or NoDataError if `required`) when there is none yet."""
    if not path.exists():
        if required:
            raise NoDataError(f"no data at {path}{': ' + hint if hint else ''}")
        return empty_bars()
    return pd.read_parquet(path)


VALUE_COLUMNS = ["open", "high", "low", "close", "volume", "amount", "source"]


def upsert_bars(path: Path, new: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Merge `new` bars into the stored ones; returns (all bars, rows added or changed).

    A (symbol, ts) in `new` replaces the stored row only if a value differs, so re-ingesting the same
    history leaves the file (and its DVC hash) unchanged; stored rows for other keys are kept.
    """
    old = read_bars(path)
    new = new[BAR_COLUMNS]
    if old.empty:
        merged, changed = new.copy(), len(new)
    else:
        joined = new.merge(old, on=["symbol", "ts"], how="left", suffixes=("", "_old"), indicator=True)
        same = pd.Series(True, index=joined.index)
        for col in VALUE_COLUMNS:
            a, b = joined[col], joined[f"{col}_old"]
            same &= (a == b) | (a.isna() & b.isna())
        unchanged = (joined["_merge"] == "both") & same
        changed = int((~unchanged).sum())
        fresh = new.loc[~unchanged.to_numpy()]
        merged = pd.concat([old, fresh], ignore_index=True).drop_duplicates(["symbol", "ts"], keep="last")
    merged = merged.sort_values(["symbol", "ts"], kind="stable").reset_index(drop=True)
    if changed or not path.exists():
        write_parquet_atomic(merged, path)
    log.info("stored %d bars (%d new or changed) in %s", len(merged), changed, path)
    return merged, changed
