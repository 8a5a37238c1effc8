"""Load-test `POST /predict` of the real BentoML service on loopback; prints JSON.

Setup: a FINSTREAM_HOME like `tests/integration/test_serving.py` builds (CSI 300 + S&P 500 2008-2018 packaged
bars -> features -> Feast's Redis online store, ridge champions v1 in MLflow), or an existing one with
`--home` (its Redis online store must be materialized and its champions promoted; the FINSTREAM_* environment
is used as is). The service runs in a subprocess (`finstream serve`'s command) with `--workers N` BentoML
workers (default 2, one per core here) and a per-key rate limit too high to interfere.

Measures, for one symbol (`--symbol`, default ^GSPC):

- `fixed_rate`: an open-loop load at `--rate` req/s (default 200) for `--duration` s (default 20) from an
  asyncio aiohttp client; latency counts from each request's scheduled send time, so a server that falls
  behind shows it (no coordinated omission). `achieved_rps` below the offered rate means the client or server
  could not keep up.
- `saturation`: closed loop, `--connections` (default 16) connections for `--duration` s, with wrk when it is
  installed (`--client wrk`), else the asyncio httpx client (`--client httpx`, itself CPU-bound near a few
  thousand req/s: its figure is a lower bound of the server's).
- `sequential`: one client, one request at a time: wrk with one connection for 8 s when wrk is installed (a C
  client: what the server adds), and always a Python httpx client (`sequential_httpx`, median, p99 over
  `--sequential-calls`; httpx itself costs ~0.7 ms a request here).
- `floor`: the same work in process, with no HTTP: the server's Redis read (`RedisFeatureReader`: one HMGET of
  the Feast row + decoding) + the input matrix + both champions' predict, median and p99 over `--floor-calls`
  (and the same through Feast's get_online_features, for scale); and the raw redis-py `HGETALL` of the row.
  `sequential_over_floor` is the sequential HTTP median over the in-process median: what the HTTP/BentoML
  layer costs per request.

Errors are non-2xx answers plus transport failures (timeouts, refused connections).

Usage: .venv/bin/python benchmarks/serve_load.py [--home DIR] [--workers N] [--rate R] [--duration S]
       [--connections C] [--symbol SYM] [--client auto|wrk|httpx]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SYMBOLS = ["000300.SH", "^GSPC"]
API_KEY = "bench-key"
FAST = {
    "FINSTREAM_TRAIN__SYMBOLS": '["000300.SH", "^GSPC"]',
    "FINSTREAM_TRAIN__FOLDS": "3",
    "FINSTREAM_TRAIN__TEST_YEARS": "3",
    "FINSTREAM_TRAIN__MIN_TRAIN_YEARS": "4",
    "FINSTREAM_TRAIN__TUNE_SAMPLES": "0",
}
REDIS_URL = "redis://127.0.0.1:6379/15"
STARTUP_S = 120
FIXED_RATE_CONNECTIONS = 64


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _percentiles(ms: list[float]) -> dict[str, float]:
    if not ms:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "p99_ms": float("nan")}
    p50, p95, p99 = np.percentile(np.asarray(ms), [50, 95, 99])
    return {"p50_ms": round(float(p50), 3), "p95_ms": round(float(p95), 3), "p99_ms": round(float(p99), 3)}


def build_home(workdir: Path) -> None:
    """Packaged bars -> features -> Redis online store, ridge champions v1 (what the serving test builds)."""
    from finstream.config import Settings
    from finstream.data_stages import features_stage, ingest_stage, materialize_stage, validate_stage
    from finstream.models.registry import champion_version, promote
    from finstream.models.tracking import configure_mlflow
    from flows.training import training_flow

    settings = Settings()
    import pandas as pd

    start, end = pd.Timestamp("2008-01-01").date(), pd.Timestamp("2018-12-31").date()
    ingest_stage(settings, ",".join(SYMBOLS), "packaged", start, end)
    validate_stage(settings)
    features_stage(settings)
    materialize_stage(settings)
    training_flow(families=["ridge"], tasks=["regression", "classification"])
    client = configure_mlflow(settings)
    for name in ("finstream-return", "finstream-direction"):
        if champion_version(client, name) != "1":
            promote(client, name, 1, reason="serve_load benchmark")


class Service:
    def __init__(self, workdir: Path, workers: int) -> None:
        from finstream.cli.serve import serve_command

        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "serve.log"
        env = {
            **os.environ,
            "FINSTREAM_API_KEYS": f"{API_KEY}:trader",
            "FINSTREAM_SERVE_RATE_LIMIT_PER_S": "1000000",
            "FINSTREAM_SERVE_RATE_LIMIT_BURST": "1000000",
            "FINSTREAM_SERVE_RELOAD_INTERVAL_S": "0",
            "BENTOML_HOME": str(workdir / "bentoml"),
            "BENTOML_DO_NOT_TRACK": "true",
            "FINSTREAM_SERVE_WORKERS": str(workers),  # what `finstream serve --workers N` sets
        }
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                serve_command("127.0.0.1", self.port),
                cwd=workdir,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"server exited:\n{self.log.read_text(errors='replace')[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                    return
            time.sleep(0.25)
        raise SystemExit(
            f"server not ready after {STARTUP_S} s:\n{self.log.read_text(errors='replace')[-3000:]}"
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)


async def _fixed_rate(url: str, body: dict[str, Any], rate: float, duration: float) -> dict[str, Any]:
    """Open loop: request i is sent at t0 + i/rate whatever happened to the earlier ones.

    aiohttp (lighter per request than httpx) over at most `FIXED_RATE_CONNECTIONS` keep-alive connections:
    the client shares the 2 cores with the server, so its own cost matters.
    """
    import aiohttp

    latencies: list[float] = []
    errors = 0
    payload = json.dumps(body).encode()
    headers = {"X-API-Key": API_KEY, "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=FIXED_RATE_CONNECTIONS)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout, headers=headers) as http:
        for _ in range(20):  # warm the connections
            async with http.post("/predict", data=payload) as response:
                await response.read()

        async def one(scheduled: float) -> None:
            nonlocal errors
            try:
                async with http.post("/predict", data=payload) as response:
                    await response.read()
                    ok = response.status < 300
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            if ok:
                latencies.append((time.perf_counter() - scheduled) * 1000)
            else:
                errors += 1

        loop_start = time.perf_counter()
        n = int(rate * duration)
        tasks = []
        for i in range(n):
            scheduled = loop_start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(scheduled)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - loop_start
    return {
        "client": f"aiohttp open loop, up to {FIXED_RATE_CONNECTIONS} connections",
        "offered_rps": rate,
        "duration_s": duration,
        "requests": n,
        "achieved_rps": round(len(latencies) / elapsed, 1),
        **_percentiles(latencies),
        "max_ms": round(max(latencies), 3) if latencies else None,
        "errors": errors,
    }


async def _saturate_httpx(
    url: str, body: dict[str, Any], connections: int, duration: float
) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    latencies: list[float] = []
    errors = 0
    async with httpx.AsyncClient(
        base_url=url, headers={"X-API-Key": API_KEY}, timeout=30, limits=limits
    ) as http:
        await http.post("/predict", json=body)
        stop_at = time.perf_counter() + duration

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                try:
                    ok = (await http.post("/predict", json=body)).is_success
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append((time.perf_counter() - started) * 1000)
                else:
                    errors += 1

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - began
    return {
        "client": "httpx-asyncio closed loop (client-bound near a few thousand req/s)",
        "connections": connections,
        "duration_s": duration,
        "rps": round(len(latencies) / elapsed, 1),
        **_percentiles(latencies),
        "errors": errors,
    }


WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '%(body)s'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-Key"] = "%(key)s"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p95_us": %%d, "p99_us": %%d, '
    .. '"errors": %%d, "non2xx": %%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), e.connect + e.read + e.write + e.timeout, e.status))
end
"""


def _saturate_wrk(url: str, body: dict[str, Any], connections: int, duration: float, workdir: Path) -> dict:
    script = workdir / "predict.lua"
    script.write_text(WRK_SCRIPT % {"body": json.dumps(body), "key": API_KEY})
    threads = max(1, min(4, connections))
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{int(duration)}s", "--timeout", "30s",
         "-s", str(script), url + "/predict"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    line = next(x for x in out.splitlines() if x.startswith("WRKJSON "))
    raw = json.loads(line.removeprefix("WRKJSON "))
    return {
        "client": f"wrk {threads} threads",
        "connections": connections,
        "duration_s": duration,
        "rps": round(raw["requests"] / (raw["duration_us"] / 1e6), 1),
        "p50_ms": raw["p50_us"] / 1000,
        "p95_ms": raw["p95_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "errors": raw["errors"] + raw["non2xx"],
    }


def _sequential(url: str, body: dict[str, Any], calls: int) -> dict[str, Any]:
    latencies, errors = [], 0
    with httpx.Client(base_url=url, headers={"X-API-Key": API_KEY}, timeout=30) as http:
        for _ in range(20):
            http.post("/predict", json=body)
        for _ in range(calls):
            started = time.perf_counter()
            response = http.post("/predict", json=body)
            latencies.append((time.perf_counter() - started) * 1000)
            errors += not response.is_success
    return {
        "client": "httpx, 1 connection",
        "calls": calls,
        "median_ms": round(statistics.median(latencies), 3),
        **_percentiles(latencies),
        "errors": errors,
    }


def _sequential_wrk(url: str, body: dict[str, Any], workdir: Path, seconds: int = 8) -> dict[str, Any]:
    script = workdir / "sequential.lua"
    script.write_text(WRK_SCRIPT % {"body": json.dumps(body), "key": API_KEY})
    out = subprocess.run(
        ["wrk", "-t1", "-c1", f"-d{seconds}s", "--timeout", "30s", "-s", str(script), url + "/predict"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    raw = json.loads(next(x for x in out.splitlines() if x.startswith("WRKJSON ")).removeprefix("WRKJSON "))
    return {
        "client": "wrk, 1 connection",
        "calls": raw["requests"],
        "median_ms": raw["p50_us"] / 1000,
        "p50_ms": raw["p50_us"] / 1000,
        "p95_ms": raw["p95_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "errors": raw["errors"] + raw["non2xx"],
    }


def _floor(symbol: str, calls: int) -> dict[str, Any]:
    """The request's work without HTTP: the server's own feature read + inputs + both champions' predict.

    `median_ms` uses the reader the server uses with Redis (`RedisFeatureReader`: one HMGET of the row
    and its decoding); `feast_read` is the same request through Feast's get_online_features, for scale.
    """
    from finstream import featurestore
    from finstream.config import Settings
    from finstream.models.champions import DIRECTION_TASK, RETURN_TASK, ChampionModels
    from finstream.models.inputs import input_matrix
    from serving.online import FeatureReader, RedisFeatureReader

    settings = Settings()
    models = ChampionModels(settings, 0, agent=None)
    models.refresh()
    returns, direction = models.require(RETURN_TASK), models.get(DIRECTION_TASK)

    def timed(reader: FeatureReader) -> list[float]:
        def request() -> None:
            rows = reader.latest([symbol])
            returns.predict(input_matrix(rows, returns.columns), rows.symbols)
            if direction is not None:
                direction.predict(input_matrix(rows, direction.columns), rows.symbols)

        timings = []
        for i in range(calls + 50):
            started = time.perf_counter()
            request()
            if i >= 50:
                timings.append((time.perf_counter() - started) * 1000)
        return timings

    direct, feast = timed(RedisFeatureReader(settings)), timed(FeatureReader(settings))
    out: dict[str, Any] = {
        "what": "direct Redis HMGET of the Feast row + decode + input_matrix + both champions' predict",
        "calls": calls,
        "median_ms": round(statistics.median(direct), 3),
        "p99_ms": round(float(np.percentile(direct, 99)), 3),
        "feast_read": {
            "what": "the same through Feast get_online_features",
            "median_ms": round(statistics.median(feast), 3),
            "p99_ms": round(float(np.percentile(feast, 99)), 3),
        },
    }
    out["hgetall"] = _raw_hgetall(settings, symbol, calls, featurestore)
    return out


def _raw_hgetall(settings: Any, symbol: str, calls: int, featurestore: Any) -> dict[str, Any]:
    """redis-py HGETALL of the symbol's Feast row (its key found by scanning the project's keys)."""
    import redis

    store = featurestore.open_store(settings)
    url = (
        settings.redis_url
        if hasattr(settings, "redis_url")
        else os.environ.get("FINSTREAM_REDIS_URL", REDIS_URL)
    )
    client = redis.Redis.from_url(url)
    project = store.config.project.encode()
    key = next(
        (k for k in client.scan_iter(count=1000) if k.endswith(project) and symbol.encode() in k),
        None,
    )
    if key is None:
        return {"error": f"no Feast row for {symbol} in project {store.config.project}"}
    for _ in range(50):
        client.hgetall(key)
    timings = []
    for _ in range(calls):
        started = time.perf_counter()
        client.hgetall(key)
        timings.append((time.perf_counter() - started) * 1000)
    client.close()
    return {
        "calls": calls,
        "median_ms": round(statistics.median(timings), 3),
        "p99_ms": round(float(np.percentile(timings, 99)), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, help="an existing, materialized FINSTREAM_HOME (else build one)")
    parser.add_argument("--workers", type=int, default=2, help="server worker processes (default 2: cores)")
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--symbol", default="^GSPC")
    parser.add_argument("--client", choices=["auto", "wrk", "httpx"], default="auto")
    parser.add_argument("--sequential-calls", type=int, default=500)
    parser.add_argument("--floor-calls", type=int, default=1000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    use_wrk = args.client == "wrk" or (args.client == "auto" and shutil.which("wrk") is not None)

    workdir = Path(tempfile.mkdtemp(prefix="finstream-serve-load-"))
    built = args.home is None
    os.chdir(workdir)  # no params.yaml here
    if built:
        for key in list(os.environ):
            if key.startswith("FINSTREAM_"):
                del os.environ[key]
        os.environ["FINSTREAM_HOME"] = str(workdir / "home")
        os.environ["FINSTREAM_REDIS_URL"] = REDIS_URL
        os.environ["FINSTREAM_FEAST_PROJECT"] = f"finstream_bench_{uuid.uuid4().hex[:10]}"
        os.environ.update(FAST)
        started = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # Feast prints progress: keep stdout pure JSON
            build_home(workdir)
        build_s = time.perf_counter() - started
    else:
        os.environ["FINSTREAM_HOME"] = str(args.home.resolve())
        build_s = 0.0

    body = {"symbols": [args.symbol]}
    service = Service(workdir, args.workers)
    try:
        service.wait_ready()
        floor_before = _floor(args.symbol, args.floor_calls)
        sequential_httpx = _sequential(service.url, body, args.sequential_calls)
        sequential = _sequential_wrk(service.url, body, workdir) if use_wrk else sequential_httpx
        floor_after = _floor(args.symbol, args.floor_calls)
        # the faster of the two floors: this VM's speed drifts by tens of percent between minutes, and the
        # lower floor gives the higher (more conservative) sequential/floor ratio
        floor = min(floor_before, floor_after, key=lambda f: f["median_ms"])
        floor["medians_before_after_ms"] = [floor_before["median_ms"], floor_after["median_ms"]]
        fixed = asyncio.run(_fixed_rate(service.url, body, args.rate, args.duration))
        if use_wrk:
            saturation = _saturate_wrk(service.url, body, args.connections, args.duration, workdir)
        else:
            saturation = asyncio.run(_saturate_httpx(service.url, body, args.connections, args.duration))
    finally:
        service.stop()
        if built:
            from finstream import featurestore
            from finstream.config import Settings

            with contextlib.suppress(Exception):
                featurestore.open_store(Settings()).teardown()  # drops this run's Redis keys
            shutil.rmtree(workdir, ignore_errors=True)

    result = {
        "endpoint": "POST /predict",
        "symbol": args.symbol,
        "workers": args.workers,
        "cpu_count": os.cpu_count(),
        "home": "built" if built else str(args.home),
        "build_s": round(build_s, 1),
        "saturation_client": "wrk" if use_wrk else "httpx",
        "fixed_rate": fixed,
        "saturation": saturation,
        "sequential": sequential,
        "sequential_httpx": sequential_httpx,
        "floor": floor,
        "sequential_over_floor": round(sequential["median_ms"] / floor["median_ms"], 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
