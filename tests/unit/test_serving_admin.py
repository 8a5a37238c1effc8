"""The serving admin pieces that need no server: the audit log's hash chain and the A/B settings."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from tests_support import REPO

from finstream.models.champions import ABSettings
from serving.audit import GENESIS, AuditLog, verify


def test_audit_log_chains_entries_and_never_rewrites(tmp_path: Path) -> None:
    path = tmp_path / "audit" / "admin.jsonl"
    log = AuditLog(path)
    first = log.record("key3", "admin", "ab_update", "ok", after={"mode": "split", "share": 0.2})
    second = log.record("key3", "admin", "reload", "partial", errors={"finstream-agent": "no champion"})
    assert first["prev"] == GENESIS and second["prev"] != GENESIS
    assert verify(path) == 2
    assert [e["action"] for e in log.entries()] == ["ab_update", "reload"]
    assert log.entries(limit=1)[0]["outcome"] == "partial"
    before = path.read_bytes()
    log.record("key1", "admin", "reload", "ok")
    assert path.read_bytes().startswith(before)  # appended: the earlier bytes are untouched
    assert verify(path) == 3


def test_audit_verify_names_the_first_tampered_line(tmp_path: Path) -> None:
    path = tmp_path / "admin.jsonl"
    log = AuditLog(path)
    for i in range(4):
        log.record("key3", "admin", "reload", "ok", i=i)
    lines = path.read_text().splitlines()
    edited = json.loads(lines[1])
    edited["outcome"] = "failed"
    lines[1] = json.dumps(edited, sort_keys=True)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"admin\.jsonl:3: chain broken"):
        verify(path)
    path.write_text("\n".join(lines[:1] + lines[2:]) + "\n")  # a line removed
    with pytest.raises(ValueError, match=r":2: chain broken"):
        verify(path)


def test_audit_log_is_safe_for_concurrent_workers(tmp_path: Path) -> None:
    """Three processes (as three server workers would) appending at once keep one unbroken chain."""
    path = tmp_path / "admin.jsonl"
    code = (
        "import sys; from pathlib import Path; from serving.audit import AuditLog\n"
        "log = AuditLog(Path(sys.argv[1]))\n"
        "for i in range(25): log.record(sys.argv[2], 'admin', 'reload', 'ok', i=i)\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(path), f"key{w}"], cwd=REPO, stderr=subprocess.PIPE, text=True
        )
        for w in range(3)
    ]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    assert verify(path) == 75


def test_ab_settings_split_share_and_tag_round_trip() -> None:
    random.seed(7)
    split = ABSettings("split", 0.25)
    picks = [split.variant() for _ in range(20_000)]
    assert abs(picks.count("challenger") / len(picks) - 0.25) < 0.015
    assert {ABSettings("shadow", 1.0).variant() for _ in range(100)} == {"champion"}
    assert {ABSettings("off", 1.0).variant() for _ in range(100)} == {"champion"}
    assert {ABSettings("split", 1.0).variant() for _ in range(100)} == {"challenger"}
    stored = ABSettings("split", 0.3, "key3", 1_700_000_000.0)
    assert ABSettings.from_tag(stored.to_tag()) == stored
    with pytest.raises(ValueError, match="share"):
        ABSettings("split", 1.5)
    with pytest.raises(ValueError, match="mode"):
        ABSettings("half", 0.5)  # type: ignore[arg-type]
