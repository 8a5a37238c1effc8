"""Bar tables of each stage, partitioned by series and period, every file written atomically so a failed run
never leaves a half-written file; and the lock that serialises read-modify-write cycles across processes
(two ingests started together must both land: without it, each read the table before the other wrote, and
the last rename won).

Why a lock and plain parquet rather than a transactional format (Delta Lake): the tables are small per
partition, writers are a few scheduled or manual runs, and DVC tracks the files; a lock around each
read-modify-write costs microseconds when uncontended, keeps the files readable by any parquet reader
(Feast, DuckDB, pandas) and keeps DVC's hashes stable when nothing changed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
from filelock import FileLock, Timeout

from finstream.errors import NoDataError
from finstream.intervals import DAILY
from finstream.schema import BAR_COLUMNS, BAR_KEY, empty_bars

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


def file_md5(path: Path) -> str:
    """MD5 of a file: the same hash DVC records for it in dvc.lock (the data version of a run)."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text_atomic(text: str, path: Path) -> Path:
    """Write `text` to a temporary file beside `path`, then rename over it (umask permissions)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_parquet_atomic(frame: pd.DataFrame, path: Path) -> Path:
    """Write to a temporary file beside `path`, then rename over it (atomic on POSIX).

    The file gets the permissions of any file the user creates (0666 less the umask), not mkstemp's 0600.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        frame.to_parquet(tmp, index=False)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


@dataclass(frozen=True)
class Partition:
    """One file of a bar table: the bars of one series (symbol, interval) in one period.

    Daily series are one file (`part` = "all"); intraday series one file per UTC month (`part` = "2024-08"),
    so a new day of minute bars rewrites one month of one symbol, not the history.
    """

    interval: str
    symbol: str
    part: str

    @property
    def relative(self) -> str:
        return f"{self.interval}/{self.symbol}/{self.part}.parquet"

    @property
    def series(self) -> tuple[str, str]:
        return self.symbol, self.interval


WHOLE_SERIES = "all"


def partition_labels(bars: pd.DataFrame) -> pd.Series:
    """The partition `part` of each bar: "all" for daily bars, the UTC month of `ts` for intraday ones."""
    month = bars["ts"].dt.tz_convert("UTC").dt.strftime("%Y-%m")
    return month.where(bars["interval"].ne(DAILY), WHOLE_SERIES)


class BarTable:
    """A stage's bars as parquet files `<root>/<interval>/<symbol>/<part>.parquet`, each written atomically.

    Every file holds full Bar rows (symbol and interval included), sorted by ts; readers need no lock.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, partition: Partition) -> Path:
        return self.root / partition.relative

    def partitions(
        self, *, symbols: Iterable[str] | None = None, intervals: Iterable[str] | None = None
    ) -> list[Partition]:
        """Stored partitions, sorted, optionally only of some symbols and intervals."""
        if not self.root.is_dir():
            return []
        wanted_symbols = set(symbols) if symbols is not None else None
        wanted_intervals = set(intervals) if intervals is not None else None
        found = []
        for file in self.root.glob("*/*/*.parquet"):
            interval, symbol = file.parent.parent.name, file.parent.name
            if wanted_intervals is not None and interval not in wanted_intervals:
                continue
            if wanted_symbols is not None and symbol not in wanted_symbols:
                continue
            found.append(Partition(interval, symbol, file.stem))
        return sorted(found, key=lambda p: (p.interval, p.symbol, p.part))

    def exists(self) -> bool:
        return bool(self.partitions())

    def read_partition(self, partition: Partition) -> pd.DataFrame:
        path = self.path(partition)
        return pd.read_parquet(path) if path.exists() else empty_bars()

    def read(
        self,
        *,
        symbols: Iterable[str] | None = None,
        intervals: Iterable[str] | None = None,
        required: bool = False,
        hint: str = "",
    ) -> pd.DataFrame:
        """Bars of the chosen partitions (all by default), sorted by (symbol, interval, ts); an empty Bar
        frame, or NoDataError when `required`, if there are none."""
        parts = self.partitions(symbols=symbols, intervals=intervals)
        if not parts:
            if required:
                raise NoDataError(f"no data under {self.root}{': ' + hint if hint else ''}")
            return empty_bars()
        frames = [pd.read_parquet(self.path(p)) for p in parts]
        return pd.concat(frames, ignore_index=True).sort_values(BAR_KEY, kind="stable", ignore_index=True)

    def write_partition(self, partition: Partition, bars: pd.DataFrame) -> None:
        """Replace one partition's file with `bars` (removed when empty); atomic."""
        path = self.path(partition)
        if bars.empty:
            path.unlink(missing_ok=True)
            return
        write_parquet_atomic(bars.sort_values("ts", kind="stable", ignore_index=True), path)

    def split(self, bars: pd.DataFrame) -> dict[Partition, pd.DataFrame]:
        """`bars` grouped by the partition each belongs to."""
        if bars.empty:
            return {}
        labels = partition_labels(bars)
        out = {}
        for (interval, symbol, part), rows in bars.groupby(
            [bars["interval"], bars["symbol"], labels], sort=True
        ):
            out[Partition(str(interval), str(symbol), str(part))] = rows.reset_index(drop=True)
        return out

    def upsert(self, new: pd.DataFrame) -> UpsertResult:
        """Merge `new` bars into their partitions; only partitions with a new or changed row are rewritten.

        A stored (symbol, interval, ts) is replaced only when a value differs, so re-ingesting the same
        history leaves every file (and its DVC hash) unchanged; other stored rows are kept.
        """
        result = UpsertResult()
        for partition, rows in self.split(new[BAR_COLUMNS]).items():
            old = self.read_partition(partition)
            merged, added, changed = _merge(old, rows)
            series = result.series.setdefault(partition.series, SeriesCounts())
            series.read += len(rows)
            series.new += added
            series.changed += changed
            if added or changed:
                self.write_partition(partition, merged)
                result.written.append(partition)
        for symbol, interval in result.series:
            stored = self.partitions(symbols=[symbol], intervals=[interval])
            result.series[(symbol, interval)].stored = sum(
                pq.ParquetFile(self.path(p)).metadata.num_rows for p in stored
            )
        log.info(
            "%s: %d partition(s) rewritten, %d new and %d changed bars",
            self.root,
            len(result.written),
            sum(c.new for c in result.series.values()),
            sum(c.changed for c in result.series.values()),
        )
        return result


@dataclass
class SeriesCounts:
    """One series' upsert: rows read from the source, stored after, new keys, changed values."""

    read: int = 0
    stored: int = 0
    new: int = 0
    changed: int = 0


@dataclass
class UpsertResult:
    """What an upsert did, per series (symbol, interval), and which partitions it rewrote."""

    series: dict[tuple[str, str], SeriesCounts] = field(default_factory=dict)
    written: list[Partition] = field(default_factory=list)


VALUE_COLUMNS = ["open", "high", "low", "close", "volume", "amount", "source"]


def _merge(old: pd.DataFrame, new: pd.DataFrame) -> tuple[pd.DataFrame, int, int]:
    """(merged rows, keys new to `old`, keys of `old` whose values `new` changes)."""
    new = new.drop_duplicates(BAR_KEY, keep="last")
    if old.empty:
        return new.reset_index(drop=True), len(new), 0
    joined = new.merge(old, on=BAR_KEY, how="left", suffixes=("", "_old"), indicator=True)
    same = pd.Series(True, index=joined.index)
    for col in VALUE_COLUMNS:
        a, b = joined[col], joined[f"{col}_old"]
        same &= (a == b) | (a.isna() & b.isna())
    existed = joined["_merge"].eq("both").to_numpy()
    unchanged = existed & same.to_numpy()
    added = int((~existed).sum())
    changed = int((existed & ~unchanged).sum())
    fresh = new.loc[~unchanged]
    merged = pd.concat([old, fresh], ignore_index=True).drop_duplicates(BAR_KEY, keep="last")
    return merged.sort_values("ts", kind="stable", ignore_index=True), added, changed
