"""The latest parse of a file the pipeline rewrites: re-parsed only when its (mtime_ns, size) changes.

The pipeline replaces its parquet files atomically (`finstream.storage.write_parquet_atomic`), so a stat
per request is enough to notice a new version; readers in flight keep the snapshot they started with.
"""

from __future__ import annotations

import os
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
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise StoreUnavailable(self._missing()) from None
        key = (str(self.path), st.st_mtime_ns, st.st_size)
        snapshot = self._snapshot
        if snapshot is not None and snapshot.key == key:
            return snapshot
        with self._lock:
            snapshot = self._snapshot
            if snapshot is None or snapshot.key != key:
                snapshot = self._load()
                self._snapshot = snapshot  # one reference swap: requests in flight keep theirs
            return snapshot
