"""Paths tests share (tests/ is not a package; pytest puts this folder on sys.path)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
