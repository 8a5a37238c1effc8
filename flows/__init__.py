"""Prefect flows: the only place that sequences finstream's steps.

Importing this package points Prefect's state at FINSTREAM_HOME and turns telemetry off (unless the
environment already says otherwise), so it must happen before `prefect` itself is imported.
"""

from __future__ import annotations

import os
from pathlib import Path

from finstream.config import get_settings, prefect_environment

for _key, _value in prefect_environment(get_settings()).items():
    os.environ.setdefault(_key, _value)
# Prefect creates only the last folder of PREFECT_HOME; on a fresh clone FINSTREAM_HOME does not exist yet
Path(os.environ["PREFECT_HOME"]).expanduser().mkdir(parents=True, exist_ok=True)

import prefect  # noqa: E402, F401  (its logging config replaces the root handlers: put the log file back)

from finstream.logs import adopt_process, reattach  # noqa: E402

reattach()
adopt_process()
