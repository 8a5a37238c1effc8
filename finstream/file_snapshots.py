"""The latest parse of a file (or a folder of files) the pipeline rewrites: re-parsed only when its
(mtime_ns, size) changes.

The pipeline replaces its parquet files atomically (`finstream.storage.write_parquet_atomic`), so a stat
per request is enough to notice a new version; readers in flight keep the snapshot they started with. A
folder (a partitioned bar table) is keyed by its parquet files' newest mtime, total size and count.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from finstream.errors import StoreUnavailable


class Keyed(Protocol):
    @property
    def key(self) -> tuple[str, int, int]:
        """(path, mtime_ns, size) of the bytes the snapshot was parsed from."""
        ...


S = TypeVar("S", bound=Keyed)


class FileSnapshots(Generic[S]):
    """Thread-safe holder of `load()`'s result for `path`; `missing()` words the error when it is absent."""

    def __init__(self, path: Path, load: Callable[[], S], missing: Callable[[], str]) -> None:
        self.path = path
        self._load = load
        self._missing = missing
        self._snapshot: S | None = None
        self._lock = threading.Lock()

    def current(self) -> S:
        """The snapshot of the file as it is now (StoreUnavailable when there is no file)."""
        key = stat_key(self.path)
        if key is None:
            raise StoreUnavailable(self._missing())
        snapshot = self._snapshot
        if snapshot is not None and snapshot.key == key:
            return snapshot
        with self._lock:
            snapshot = self._snapshot
            if snapshot is None or snapshot.key != key:
                snapshot = self._load()
                self._snapshot = snapshot  # one reference swap: requests in flight keep theirs
            return snapshot


def stat_key(path: Path) -> tuple[str, int, int] | None:
    """(path, mtime_ns, size) of a file; for a folder, of its parquet files (newest mtime, total size and
    count folded in); None when there is nothing."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISDIR(st.st_mode):
        return str(path), st.st_mtime_ns, st.st_size
    stats = [f.stat() for f in path.rglob("*.parquet")]
    if not stats:
        return None
    newest = max(s.st_mtime_ns for s in stats)
    return str(path), newest, sum(s.st_size for s in stats) * 1_000_003 + len(stats)
