"""Bar tables: partitions, atomic writes, upserts that keep stored rows, no-op re-ingest, the umask."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from finstream.storage import BarTable


def test_upsert_keeps_other_rows_and_replaces_changed(tmp_path: Path, csi300: pd.DataFrame) -> None:
    table = BarTable(tmp_path / "raw")
    first = table.upsert(csi300.iloc[:100])
    counts = first.series[("000300.SH", "1d")]
    assert (counts.read, counts.new, counts.changed, counts.stored) == (100, 100, 0, 100)
    update = csi300.iloc[90:150].copy()
    update.loc[update.index[0], "close"] = 1.0  # a corrected print for an existing day
    counts = table.upsert(update).series[("000300.SH", "1d")]
    assert (counts.read, counts.new, counts.changed, counts.stored) == (60, 50, 1, 150)
    merged = table.read()
    assert len(merged) == 150
    assert merged.loc[90, "close"] == 1.0
    pd.testing.assert_frame_equal(merged.iloc[:90], csi300.iloc[:90].reset_index(drop=True))
    assert [p.relative for p in table.partitions()] == ["1d/000300.SH/all.parquet"]


def test_reingesting_the_same_bars_leaves_the_file_untouched(tmp_path: Path, csi300: pd.DataFrame) -> None:
    table = BarTable(tmp_path / "raw")
    table.upsert(csi300)
    (part,) = table.partitions()
    path = table.path(part)
    before = path.stat().st_mtime_ns, path.read_bytes()
    again = csi300.copy()
    again["ingested_at"] = pd.Timestamp.now(tz="UTC")
    result = table.upsert(again)
    assert result.written == [] and result.series[("000300.SH", "1d")].new == 0
    assert (path.stat().st_mtime_ns, path.read_bytes()) == before
    assert table.read()["ingested_at"].equals(csi300["ingested_at"])


def test_intraday_bars_are_partitioned_by_month_and_only_changed_months_rewritten(
    tmp_path: Path, csi300: pd.DataFrame
) -> None:
    """Daily bars relabelled as one-hour bars stand in for a long intraday series: months are partitions."""
    hourly = csi300.iloc[:300].copy()
    hourly["interval"] = "1h"
    table = BarTable(tmp_path / "raw")
    table.upsert(pd.concat([csi300.iloc[:300], hourly]))
    months = sorted(hourly["ts"].dt.strftime("%Y-%m").unique())
    parts = table.partitions(intervals=["1h"])
    assert [p.part for p in parts] == months
    assert [p.part for p in table.partitions(intervals=["1d"])] == ["all"]
    stamps = {p: table.path(p).stat().st_mtime_ns for p in table.partitions()}
    last = hourly.iloc[-1:].copy()
    last["close"] = last["close"] * 1.001
    result = table.upsert(last)
    assert [p.part for p in result.written] == [months[-1]]
    unchanged = {p: table.path(p).stat().st_mtime_ns for p in table.partitions() if p not in result.written}
    assert unchanged == {p: t for p, t in stamps.items() if p not in result.written}
    assert len(table.read(intervals=["1h"])) == 300 and len(table.read(intervals=["1d"])) == 300


def test_no_temp_files_left_behind_and_files_follow_the_umask(tmp_path: Path, csi300: pd.DataFrame) -> None:
    import os

    old = os.umask(0o027)
    try:
        table = BarTable(tmp_path / "raw")
        table.upsert(csi300.iloc[:10])
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "raw").rglob("*") if p.is_file()]
    assert [p.name for p in files] == ["all.parquet"]
    assert files[0].stat().st_mode & 0o777 == 0o640


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


def test_tracked_outputs_are_byte_stable_when_nothing_changed(settings: object) -> None:
    """DVC tracks raw, validated, quarantine and features: a second run over the same input rewrites none of
    them (no run timestamps inside), so `dvc status` stays clean."""
    from datetime import date

    from finstream.config import Settings
    from finstream.data_stages import features_stage, ingest_stage, validate_stage
    from finstream.storage import file_md5

    assert isinstance(settings, Settings)
    data = settings.paths.data

    def digests() -> dict[str, tuple[str, int]]:
        files = sorted(p for p in data.rglob("*") if p.is_file() and p.name != ".write.lock")
        return {str(p.relative_to(data)): (file_md5(p), p.stat().st_mtime_ns) for p in files}

    def run() -> None:
        ingest_stage(settings, "^GSPC", "packaged", date(2016, 1, 1), date(2016, 12, 31))
        ingest_stage(settings, "AAPL", "packaged", interval="1h")
        validate_stage(settings)
        features_stage(settings)

    run()
    first = digests()
    assert any(k.startswith("validated/bars/1h/AAPL/") for k in first)
    run()
    assert digests() == first
