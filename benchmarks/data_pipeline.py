"""Benchmark the data pipeline on the packaged real history; prints JSON.

- `cli_pipeline_s`: wall time of `finstream pipeline` in a fresh FINSTREAM_HOME (new Prefect home, so it
  includes the ephemeral API's first start and its migrations), as a newcomer's first run sees it.
- per-stage in-process times (imports excluded), and how fast `--source auto` with no reachable network
  falls back to the packaged history.

Usage: .venv/bin/python benchmarks/data_pipeline.py [--skip-cli]
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, round(time.perf_counter() - t0, 3)


def main() -> None:
    results: dict[str, object] = {"machine": {"cpus": os.cpu_count()}}
    with tempfile.TemporaryDirectory() as tmp:
        if "--skip-cli" not in sys.argv:
            env = {**os.environ, "FINSTREAM_HOME": str(Path(tmp) / "cli")}
            exe = Path(sys.executable).with_name("finstream")
            t0 = time.perf_counter()
            proc = subprocess.run([str(exe), "pipeline"], env=env, capture_output=True, text=True, cwd=tmp)
            results["cli_pipeline_s"] = round(time.perf_counter() - t0, 2)
            results["cli_pipeline_ok"] = proc.returncode == 0
            if proc.returncode:
                results["cli_pipeline_stderr_tail"] = proc.stderr[-2000:]

        os.environ["FINSTREAM_HOME"] = str(Path(tmp) / "stages")
        t0 = time.perf_counter()
        import feast  # noqa: F401

        import expectations.loader  # noqa: F401
        from finstream.config import Settings
        from finstream.data_stages import features_stage, ingest_stage, materialize_stage, validate_stage
        from finstream.sources.router import SourceRouter
        from finstream.symbols import parse_symbols

        results["imports_s"] = round(time.perf_counter() - t0, 2)
        settings = Settings()
        symbols = parse_symbols(settings.ingest.symbols)
        router = SourceRouter(settings)
        fallback = {}
        for sym in symbols:
            routed, seconds = timed(router.fetch, sym)
            fallback[sym.canonical] = {
                "provider": routed.provider,
                "seconds": seconds,
                "skipped": [f"{a.provider}:{a.outcome}" for a in routed.attempts[:-1]],
            }
        results["auto_source_fallback"] = fallback

        ingest, results["ingest_s"] = timed(ingest_stage, settings)
        validate, results["validate_s"] = timed(validate_stage, settings)
        features, results["features_s"] = timed(features_stage, settings)
        with contextlib.redirect_stdout(sys.stderr):  # Feast prints materialize progress to stdout
            _, results["materialize_s"] = timed(materialize_stage, settings)
        results["rows"] = {
            "raw": sum(s.stored for s in ingest.symbols),
            "clean": validate.clean,
            "quarantined": validate.quarantined,
            "feature_rows": features.rows,
            "features_per_row": len(features.features),
        }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
