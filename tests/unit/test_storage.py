"""Stage files: atomic writes, upserts that keep stored rows, no-op re-ingest."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from finstream.storage import read_bars, upsert_bars


def test_upsert_keeps_other_rows_and_replaces_changed(tmp_path: Path, csi300: pd.DataFrame) -> None:
    path = tmp_path / "raw.parquet"
    first, changed = upsert_bars(path, csi300.iloc[:100])
    assert (len(first), changed) == (100, 100)
    update = csi300.iloc[90:150].copy()
    update.loc[update.index[0], "close"] = 1.0  # a corrected print for an existing day
    merged, changed = upsert_bars(path, update)
    assert len(merged) == 150
    assert changed == 51  # 50 new days + 1 corrected
    assert merged.loc[90, "close"] == 1.0
    pd.testing.assert_frame_equal(merged.iloc[:90], csi300.iloc[:90].reset_index(drop=True))


def test_reingesting_the_same_bars_leaves_the_file_untouched(tmp_path: Path, csi300: pd.DataFrame) -> None:
    path = tmp_path / "raw.parquet"
    upsert_bars(path, csi300)
    before = path.stat().st_mtime_ns, path.read_bytes()
    again = csi300.copy()
    again["ingested_at"] = pd.Timestamp.now(tz="UTC")
    _, changed = upsert_bars(path, again)
    assert changed == 0
    assert (path.stat().st_mtime_ns, path.read_bytes()) == before
    assert read_bars(path)["ingested_at"].equals(csi300["ingested_at"])


def test_no_temp_files_left_behind(tmp_path: Path, csi300: pd.DataFrame) -> None:
    upsert_bars(tmp_path / "raw.parquet", csi300.iloc[:10])
    assert [p.name for p in tmp_path.iterdir()] == ["raw.parquet"]


def test_a_held_write_lock_times_out_with_a_clear_error(tmp_path: Path) -> None:
    from filelock import FileLock

    from finstream.errors import NoDataError
    from finstream.storage import LOCK_FILE, data_lock

    with data_lock(tmp_path, timeout_s=1):  # free: taken and released
        pass
    holder = FileLock(tmp_path / LOCK_FILE)
    with (
        holder,
        pytest.raises(NoDataError, match=r"held the write lock of .* for 0 s"),
        data_lock(tmp_path, timeout_s=0.2),
    ):
        pass
