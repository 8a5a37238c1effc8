"""The append-only audit log of admin actions (reloads, A/B changes): one JSON line per action.

Each line carries the SHA-256 of the line before it (`prev`), so an edited or deleted line breaks the chain
and `verify` names the first line that does not follow. Lines are appended under an exclusive `flock`, so
several worker processes can share the file. The log never stores API keys (only the key's id).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

GENESIS = "0" * 64
_TAIL_BYTES = 64 * 1024


class AuditLog:
    """Appends admin actions to `path` (created with its folder on first use, mode 0640)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def record(self, actor: str, role: str, action: str, outcome: str, **details: Any) -> dict[str, Any]:
        """Append one entry and return it (with its chain link)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            entry = {
                "ts": round(time.time(), 6),
                "actor": actor,
                "role": role,
                "action": action,
                "outcome": outcome,
                "details": details,
                "prev": _last_line_hash(fd),
            }
            os.write(fd, (json.dumps(entry, sort_keys=True, default=str) + "\n").encode())
        finally:
            os.close(fd)  # also releases the lock
        log.info("audit: %s %s by %s", action, outcome, actor, extra={"audit": entry})
        return entry

    def entries(self, limit: int = 100) -> list[dict[str, Any]]:
        """The latest `limit` entries, oldest first."""
        if not self.path.exists():
            return []
        lines = self.path.read_text().splitlines()
        return [json.loads(line) for line in lines[-limit:] if line.strip()]


def _last_line_hash(fd: int) -> str:
    size = os.fstat(fd).st_size
    if size == 0:
        return GENESIS
    start = max(0, size - _TAIL_BYTES)
    tail = os.pread(fd, size - start, start)
    lines = tail.rstrip(b"\n").split(b"\n")
    return hashlib.sha256(lines[-1]).hexdigest()


def verify(path: Path) -> int:
    """Check the chain; returns the number of entries, or raises ValueError naming the first broken line."""
    prev = GENESIS
    count = 0
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.rstrip(b"\n")
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not a JSON entry ({exc.msg})") from None
            if entry.get("prev") != prev:
                raise ValueError(f"{path}:{number}: chain broken (an earlier line was edited or removed)")
            prev = hashlib.sha256(line).hexdigest()
            count += 1
    return count
