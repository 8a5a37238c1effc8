"""The BentoML service end to end: real packaged features in Feast, a trained ridge champion in MLflow, the
real server in a subprocess on a loopback port (one start shared by the module), HTTP from outside."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from tests_support import isolate_env, service_unavailable

from finstream.cli.serve import serve_command
from finstream.config import Settings
from finstream.data_stages import features_stage, ingest_stage, materialize_stage, validate_stage
from finstream.storage import BarTable

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SYMBOLS = ["000300.SH", "^GSPC"]
RETURN_MODEL = "finstream-return"
DIRECTION_MODEL = "finstream-direction"
KEYS = {
    "viewer-key": "viewer",
    "trader-key": "trader",
    "admin-key": "admin",
    "latency-key": "trader",
    "burst-key": "trader",
    "reload-key": "trader",
    "events-key": "trader",
}
RATE_PER_S, BURST = 20, 20
FAST = {
    "FINSTREAM_TRAIN__SYMBOLS": '["000300.SH", "^GSPC"]',
    "FINSTREAM_TRAIN__FOLDS": "3",
    "FINSTREAM_TRAIN__TEST_YEARS": "3",
    "FINSTREAM_TRAIN__MIN_TRAIN_YEARS": "4",
    "FINSTREAM_TRAIN__TUNE_SAMPLES": "0",
    "FINSTREAM_TRAIN__WORKERS": "1",
    "FINSTREAM_TRAIN__VOLATILITY_FAMILIES": '["ridge"]',
}
STARTUP_S = 90
AGENT_MODEL = "finstream-agent"
DASHBOARD = "https://dash.example.com"
AGENT_SYMBOL = "000300.SH"
RL_FAST = {
    "FINSTREAM_RL__SYMBOL": AGENT_SYMBOL,
    "FINSTREAM_RL__TEST_YEARS": "3",
    "FINSTREAM_RL__EPISODE_LENGTH": "128",
    "FINSTREAM_RL__PPO": json.dumps(
        {"train_batch_size_per_learner": 512, "minibatch_size": 64, "num_epochs": 2, "lr": 3e-4}
    ),
}
REDIS_HOST, REDIS_PORT, REDIS_DB = "127.0.0.1", 6379, 15


class TcpProxy:
    """A loopback TCP proxy to Redis that the test can take down and bring back (an outage on demand)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = _free_port()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        """Refuse new connections and cut the open ones."""
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close alone does not
            self._listener.close()
            self._listener = None
        with self._lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self._conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=2)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for conn in (source, sink):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)


def _require_redis() -> None:
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        reason = f"Redis at {REDIS_HOST}:{REDIS_PORT} does not answer PING ({exc}); start redis-server"
        service_unavailable(reason)
    finally:
        client.close()


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)


@dataclass
class Served:
    settings: Settings
    main: Server
    no_champion: Server
    multi: Server  # 2 workers, no polling: registry notices alone keep them current
    redis_proxy: TcpProxy
    lstm_version: str  # a registered finstream-return version of the lstm family (a sequence model)
    agent_version: str  # the finstream-agent champion
    volatility: Any  # the training flow's GateDecision for finstream-volatility


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(home: Path, workdir: Path, name: str, **env: str) -> Server:
    port = _free_port()
    log = workdir / f"{name}.log"
    full_env = {
        **os.environ,
        "FINSTREAM_API_KEYS": ",".join(f"{k}:{r}" for k, r in KEYS.items()),
        "FINSTREAM_SERVE_RELOAD_INTERVAL_S": "1",
        "FINSTREAM_SERVE_RATE_LIMIT_PER_S": str(RATE_PER_S),
        "FINSTREAM_SERVE_RATE_LIMIT_BURST": str(BURST),
        "BENTOML_HOME": str(workdir / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
        **env,
    }
    command = serve_command("127.0.0.1", port)  # what `finstream serve` runs
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=workdir, env=full_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Server(f"http://127.0.0.1:{port}", process, log)


def _wait_up(server: Server, path: str) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"server exited with {server.process.returncode}:\n{server.tail()}")
        try:
            if httpx.get(server.url + path, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    pytest.fail(f"server not up on {path} after {STARTUP_S} s:\n{server.tail()}")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, prefect_api: str) -> Iterator[Served]:
    """CSI 300 + S&P 500 2008-2018 features in Feast's Redis online store (reached through a proxy the tests
    can cut), ridge champions v1, a finstream-volatility champion (the training flow's volatility task: the
    baselines vs ridge), an lstm return model (registered, not champion), a PPO agent champion (1 iteration
    on CSI 300), and two servers: one on that registry, one on an empty registry."""
    from finstream import featurestore
    from finstream.models.registry import champion_version, promote
    from finstream.models.tracking import configure_mlflow
    from flows.rl import rl_training_flow
    from flows.training import training_flow

    _require_redis()
    workdir = tmp_path_factory.mktemp("serving")
    proxy = TcpProxy((REDIS_HOST, REDIS_PORT))
    proxy.start()
    with pytest.MonkeyPatch.context() as mp:
        isolate_env(
            mp,
            workdir,
            FINSTREAM_REDIS_URL=f"redis://127.0.0.1:{proxy.port}/{REDIS_DB}",
            FINSTREAM_FEAST_PROJECT=f"finstream_serve_{uuid.uuid4().hex[:10]}",
            **FAST,
            **RL_FAST,
        )
        settings = Settings()
        start, end = pd.Timestamp("2008-01-01").date(), pd.Timestamp("2018-12-31").date()
        ingest_stage(settings, ",".join(SYMBOLS), "packaged", start, end)
        validate_stage(settings)
        features_stage(settings)
        materialize_stage(settings)
        trained = training_flow(families=["ridge"], tasks=["regression", "classification", "volatility"])
        lstm = training_flow(families=["lstm"], tasks=["regression"])
        report = rl_training_flow(algo="ppo", iterations=1)
        client = configure_mlflow(settings)
        for name in (RETURN_MODEL, DIRECTION_MODEL):
            if champion_version(client, name) != "1":
                promote(client, name, 1, reason="serving test")
        if champion_version(client, AGENT_MODEL) != str(report.version):
            promote(client, AGENT_MODEL, report.version, reason="serving test")
        lstm_version = _registered_version(lstm, RETURN_MODEL)
        main = _start(
            settings.paths.home, workdir, "main", FINSTREAM_SERVE_CORS_ORIGINS=json.dumps([DASHBOARD])
        )
        empty_registry = f"sqlite:///{workdir / 'empty-mlflow.db'}"
        no_champion = _start(
            settings.paths.home, workdir, "no-champion", FINSTREAM_MLFLOW_TRACKING_URI=empty_registry
        )
        multi = _start(
            settings.paths.home,
            workdir,
            "multi",
            FINSTREAM_SERVE_WORKERS="2",
            FINSTREAM_SERVE_RELOAD_INTERVAL_S="0",
        )
        try:
            _wait_up(main, "/ready")
            _wait_up(no_champion, "/health")
            _wait_up(multi, "/ready")
            yield Served(
                settings, main, no_champion, multi, proxy, lstm_version, str(report.version),
                trained.decisions["volatility"],
            )  # fmt: skip
        finally:
            main.stop()
            no_champion.stop()
            multi.stop()
            featurestore.open_store(settings).teardown()  # drops this run's Redis keys
            proxy.stop()


def _registered_version(report: object, name: str) -> str:
    decision = report.decisions["regression"]  # type: ignore[attr-defined]
    assert decision.model == name and decision.family == "lstm", decision
    return str(decision.version)


def _copy_of_v1(client: object) -> object:
    """A new version of the return model with v1's artifacts: a version to promote."""
    v1 = client.get_model_version(RETURN_MODEL, "1")  # type: ignore[attr-defined]
    return client.create_model_version(  # type: ignore[attr-defined]
        RETURN_MODEL, source=v1.source, run_id=v1.run_id, tags=v1.tags, model_id=getattr(v1, "model_id", None)
    )


def _client(server: Server, key: str | None = None) -> httpx.Client:
    headers = {"X-API-Key": key} if key else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=10)


def test_health_ready_and_metrics(served: Served) -> None:
    with _client(served.main, "trader-key") as http:
        assert http.get("/health").json() == {"status": "ok"}
        ready = http.get("/ready")
        assert ready.status_code == 200
        assert ready.json() == {
            "status": "ready",
            "online_store": "redis",
            "models": {
                RETURN_MODEL: "1",
                DIRECTION_MODEL: "1",
                "finstream-volatility": served.volatility.version,
                AGENT_MODEL: served.agent_version,
            },
        }
        assert http.post("/predict", json={"symbols": ["^GSPC"]}).status_code == 200
        assert http.post("/predict", json={"symbols": ["NOPE.XX"]}).status_code == 404
        docs = http.get("/docs")
        assert docs.status_code == 200 and "/openapi.json" in docs.text
        metrics = http.get("/metrics")
    assert metrics.status_code == 200
    text = metrics.text
    assert 'finstream_predictions_total{model="finstream-return",variant="champion",version="1"}' in text
    assert 'finstream_request_duration_seconds_bucket{endpoint="/predict"' in text
    assert 'finstream_errors_total{endpoint="/predict",status="404"}' in text


def test_predict_returns_forecasts_from_the_champions(served: Served) -> None:
    with _client(served.main, "trader-key") as http:
        response = http.post("/predict", json={"symbols": SYMBOLS})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["symbol"] for p in predictions] == SYMBOLS
    for p in predictions:
        assert np.isfinite(p["predicted_return"]) and abs(p["predicted_return"]) < 0.1
        assert 0.0 <= p["probability_up"] <= 1.0
        assert p["direction"] == ("up" if p["probability_up"] >= 0.5 else "down")
        assert p["direction_source"] == "classifier"
        assert p["model"] == {"name": RETURN_MODEL, "version": "1", "family": "ridge"}
        assert p["direction_model"]["name"] == DIRECTION_MODEL
        assert p["stale"] is True  # the packaged history ends in 2018
    from finstream.models.tracking import configure_mlflow

    passed = json.loads(
        configure_mlflow(served.settings).get_model_version(RETURN_MODEL, "1").tags["passed_symbols"]
    )
    assert {p["symbol"]: p["symbol_verdict"] for p in predictions} == {
        s: "passed" if s in passed else "failed" for s in SYMBOLS
    }
    features = pd.read_parquet(served.settings.paths.features)
    last = features.groupby("symbol")["event_timestamp"].max()
    for p in predictions:
        assert pd.Timestamp(p["feature_timestamp"]) == last[p["symbol"]]


def test_serving_inputs_match_the_training_transform(served: Served) -> None:
    """The numpy input path of serving equals finstream.models.inputs.model_inputs + one-hot columns."""
    from finstream.models.inputs import MODEL_FEATURES, input_matrix, model_inputs
    from serving.online import FeatureReader

    rows = FeatureReader(served.settings).latest(SYMBOLS)
    frame = pd.DataFrame(rows.values)
    expected = model_inputs(frame)
    for sym in SYMBOLS:
        expected[f"is_{sym}"] = [float(s == sym) for s in SYMBOLS]
    columns = [*MODEL_FEATURES, *(f"is_{s}" for s in SYMBOLS)]
    np.testing.assert_allclose(input_matrix(rows, columns), expected[columns].to_numpy(), rtol=1e-12)


def test_direct_redis_reader_returns_what_feast_returns(served: Served) -> None:
    """The server's direct HMGET reader decodes Feast's Redis rows exactly as get_online_features does."""
    import asyncio

    from serving.online import FeatureReader, RedisFeatureReader, UnknownSymbol

    feast_rows = FeatureReader(served.settings).latest([*SYMBOLS, "^GSPC"])
    direct = RedisFeatureReader(served.settings)
    for rows in (direct.latest([*SYMBOLS, "^GSPC"]), asyncio.run(direct.latest_async([*SYMBOLS, "^GSPC"]))):
        assert rows.symbols == feast_rows.symbols
        assert set(rows.names) == set(feast_rows.names) and len(rows.names) > 30
        for name in feast_rows.names:
            np.testing.assert_array_equal(rows.values[name], feast_rows.values[name], err_msg=name)
        np.testing.assert_array_equal(rows.timestamps, feast_rows.timestamps)
    with pytest.raises(UnknownSymbol, match=r"NOPE\.XX"):
        direct.latest(["^GSPC", "NOPE.XX"])
    direct.ping()
    direct.close()


def test_quotes_and_models(served: Served) -> None:
    with _client(served.main, "viewer-key") as http:
        quotes = http.get("/quotes", params={"symbols": "^GSPC,000300.SH"})
        models = http.get("/models")
        missing = http.get("/quotes")
        unknown = http.get("/quotes", params={"symbols": "^GSPC,NOPE.XX"})
    assert quotes.status_code == 200, quotes.text
    bars = BarTable(served.settings.paths.validated_bars).read()
    for quote in quotes.json()["quotes"]:
        last = bars[bars["symbol"] == quote["symbol"]].sort_values("ts").iloc[-1]
        assert quote["close"] == pytest.approx(float(last["close"]))
        assert quote["high"] >= quote["low"]
    assert models.status_code == 200
    rows = {(m["name"], m["version"]): m for m in models.json()["models"]}
    for name in (RETURN_MODEL, DIRECTION_MODEL):
        assert "champion" in rows[(name, "1")]["aliases"]
        assert rows[(name, "1")]["serving"] is True
        assert "ic" in rows[(name, "1")]["metrics"]
    assert missing.status_code == 422 and "symbols" in missing.text
    assert unknown.status_code == 404 and "NOPE.XX" in unknown.json()["detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "symbols"),
        ({"symbols": "^GSPC"}, "symbols"),
        ({"symbols": []}, "symbols"),
        ({"symbol": ["^GSPC"]}, "symbol"),
    ],
)
def test_malformed_body_is_422_naming_the_field(served: Served, body: dict, field: str) -> None:
    with _client(served.main, "trader-key") as http:
        response = http.post("/predict", json=body)
    assert response.status_code == 422
    assert any(field in err["loc"] for err in response.json()["detail"])


def test_unknown_symbol_and_broken_json_never_leak_a_traceback(served: Served) -> None:
    with _client(served.main, "trader-key") as http:
        unknown = http.post("/predict", json={"symbols": ["^GSPC", "NOPE.XX"]})
        broken = http.post("/predict", content=b"{not json", headers={"Content-Type": "application/json"})
    assert unknown.status_code == 404 and "NOPE.XX" in unknown.json()["detail"]
    assert broken.status_code == 422
    for response in (unknown, broken):
        assert "Traceback" not in response.text


def test_auth_roles(served: Served) -> None:
    body = {"symbols": ["^GSPC"]}
    with _client(served.main) as anonymous:
        assert anonymous.post("/predict", json=body).status_code == 401
        wrong = anonymous.post("/predict", json=body, headers={"X-API-Key": "not-a-key"})
        assert wrong.status_code == 401 and wrong.json()["detail"] == "invalid API key"
        bearer = anonymous.post("/predict", json=body, headers={"Authorization": "Bearer trader-key"})
        assert bearer.status_code == 200
        assert anonymous.get("/health").status_code == 200  # probes stay open
    with _client(served.main, "viewer-key") as viewer:
        denied = viewer.post("/predict", json=body)
        assert denied.status_code == 403 and "trader" in denied.json()["detail"]
        assert viewer.post("/admin/reload").status_code == 403
    with _client(served.main, "trader-key") as trader:
        assert trader.post("/admin/reload").status_code == 403
    with _client(served.main, "admin-key") as admin:
        reload = admin.post("/admin/reload")
        assert reload.status_code == 200
        assert reload.json()["models"] == {
            RETURN_MODEL: "1",
            DIRECTION_MODEL: "1",
            "finstream-volatility": served.volatility.version,
            AGENT_MODEL: served.agent_version,
        }
        assert admin.post("/predict", json=body).status_code == 200


def test_rate_limit_429_with_retry_after(served: Served) -> None:
    statuses = []
    with _client(served.main, "burst-key") as http:
        for _ in range(BURST * 2):
            response = http.get("/quotes", params={"symbols": "^GSPC"})
            statuses.append(response.status_code)
            if response.status_code == 429:
                break
        assert statuses[-1] == 429, statuses
        assert statuses.count(200) >= BURST - 1
        retry_after = int(response.headers["Retry-After"])
        assert 1 <= retry_after <= 2
        time.sleep(retry_after)
        assert http.get("/quotes", params={"symbols": "^GSPC"}).status_code == 200
    with _client(served.main, "viewer-key") as other:  # buckets are per key
        assert other.get("/quotes", params={"symbols": "^GSPC"}).status_code == 200


def test_hot_reload_follows_the_champion_alias_without_restart(served: Served) -> None:
    from finstream.models.registry import promote
    from finstream.models.tracking import configure_mlflow

    client = configure_mlflow(served.settings)
    v2 = _copy_of_v1(client)
    seen: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def hammer() -> None:
        with _client(served.main, "reload-key") as http:
            while not stop.is_set():
                r = http.post("/predict", json={"symbols": SYMBOLS})
                seen.append(
                    (
                        r.status_code,
                        r.json()["predictions"][0]["model"]["version"] if r.is_success else r.text,
                    )
                )
                time.sleep(0.07)  # under the key's rate limit

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        time.sleep(0.3)
        promote(client, RETURN_MODEL, v2.version, reason="serving test: hot reload")
        with _client(served.main, "admin-key") as admin:
            reload = admin.post("/admin/reload")
            assert reload.status_code == 200, reload.text
            assert reload.json()["models"][RETURN_MODEL] == str(v2.version)
            with _client(served.main, "trader-key") as trader:
                version = trader.post("/predict", json={"symbols": ["^GSPC"]}).json()["predictions"][0]
                assert version["model"]["version"] == str(v2.version)
                # back to v1 through the registry alone: the poll (every 1 s) picks it up
                promote(client, RETURN_MODEL, 1, reason="serving test: poll")
                deadline = time.monotonic() + 15
                current = str(v2.version)
                while current != "1" and time.monotonic() < deadline:
                    time.sleep(0.3)
                    r = trader.post("/predict", json={"symbols": ["^GSPC"]})
                    current = r.json()["predictions"][0]["model"]["version"]
                assert current == "1"
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert seen and all(status == 200 for status, _ in seen), seen
    assert {v for _, v in seen} <= {"1", str(v2.version)}
    assert str(v2.version) in {v for _, v in seen}


def test_no_champion_is_503_saying_how_to_promote(served: Served) -> None:
    with _client(served.no_champion, "trader-key") as http:
        ready = http.get("/ready")
        predict = http.post("/predict", json={"symbols": ["^GSPC"]})
        assert http.get("/health").status_code == 200
        metrics = http.get("/metrics").text
    for response in (ready, predict):
        assert response.status_code == 503
        assert "finstream models promote" in response.json()["detail"]
        assert "finstream-return" in response.json()["detail"]
    # what the FinstreamNoChampion alert rule watches (ops/prometheus/alerts.yml); the servers of this module
    # share one BENTOML_HOME, hence one metrics folder, so the served 1.0 is checked in test_stream_pipeline
    assert 'finstream_model_loaded{alias="champion",model="finstream-return"} 0.0' in metrics


def test_single_request_latency(served: Served) -> None:
    """Sequential /predict round trips on loopback (printed; a loose bound only)."""
    timings = []
    with _client(served.main, "latency-key") as http:
        http.post("/predict", json={"symbols": ["^GSPC"]})
        for _ in range(30):
            started = time.perf_counter()
            response = http.post("/predict", json={"symbols": ["^GSPC"]})
            timings.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200
            time.sleep(1 / RATE_PER_S)
    median = statistics.median(timings)
    print(f"/predict sequential median {median:.2f} ms, max {max(timings):.2f} ms")
    assert median < 250


def test_online_store_outage_is_503_and_heals_by_itself(served: Served) -> None:
    body = {"symbols": ["^GSPC"]}
    with _client(served.main, "admin-key") as http:
        assert http.post("/predict", json=body).status_code == 200
        served.redis_proxy.stop()
        try:
            started = time.perf_counter()
            down = http.post("/predict", json=body)
            down_seconds = time.perf_counter() - started
            ready = http.get("/ready")
        finally:
            served.redis_proxy.start()
        assert down_seconds < 3, f"an outage should answer at once, took {down_seconds:.1f} s"
        assert down.status_code == 503, down.text
        assert "online feature store (redis) is unavailable" in down.json()["detail"]
        assert ready.status_code == 503 and "redis" in ready.json()["detail"]
        assert "Traceback" not in down.text + ready.text
        recovered = http.post("/predict", json=body)
        assert recovered.status_code == 200, recovered.text
        assert http.get("/ready").status_code == 200


def test_api_keys_and_token_bucket() -> None:
    """Key parsing and the bucket's arithmetic (no server needed)."""
    from finstream.errors import ConfigError
    from serving.auth import Role, TokenBucket, parse_api_keys

    assert parse_api_keys(" a:viewer , b:TRADER,c:admin,") == {
        "a": Role.VIEWER,
        "b": Role.TRADER,
        "c": Role.ADMIN,
    }
    assert parse_api_keys(None) == {}
    with pytest.raises(ConfigError, match="unknown role 'root'"):
        parse_api_keys("a:root")
    with pytest.raises(ConfigError, match="KEY:ROLE"):
        parse_api_keys("lonely")
    bucket = TokenBucket(rate=2.0, burst=3)
    assert [bucket.take("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = bucket.take("k")
    assert 0.4 < wait <= 0.5
    assert bucket.take("other") == 0.0


def test_models_detail(served: Served) -> None:
    with _client(served.main, "viewer-key") as http:
        detail = http.get(f"/models/{RETURN_MODEL}")
        unknown = http.get("/models/no-such-model")
    assert detail.status_code == 200, detail.text
    body = detail.json()
    versions = [v["version"] for v in body["versions"]]
    assert versions == sorted(versions, key=int, reverse=True)
    assert {"1", served.lstm_version} <= set(versions)
    assert body["aliases"]["champion"] == "1" and body["serving"]["champion"] == "1"
    lstm = next(v for v in body["versions"] if v["version"] == served.lstm_version)
    assert lstm["family"] == "lstm" and "ic" in lstm["metrics"]
    assert unknown.status_code == 404 and "no-such-model" in unknown.json()["detail"]


def test_history_returns_validated_bars(served: Served) -> None:
    bars = BarTable(served.settings.paths.validated_bars).read()
    csi = bars[bars["symbol"] == "000300.SH"].sort_values("ts")
    in_range = csi[(csi["ts"] >= "2018-06-01") & (csi["ts"] < "2018-07-01")]
    with _client(served.main, "viewer-key") as http:
        june = http.get("/history/000300.SH", params={"start": "2018-06-01", "end": "2018-06-30"})
        latest = http.get("/history/000300.SH", params={"limit": 5})
        backwards = http.get("/history/000300.SH", params={"start": "2018-06-30", "end": "2018-06-01"})
        too_many = http.get("/history/000300.SH", params={"limit": 10**6})
        unknown = http.get("/history/NOPE.XX")
    assert june.status_code == 200, june.text
    got = june.json()
    assert got["total"] == len(in_range) == len(got["bars"]) and got["truncated"] is False
    assert [b["close"] for b in got["bars"]] == pytest.approx(in_range["close"].tolist())
    assert pd.Timestamp(got["bars"][0]["ts"]) == in_range["ts"].iloc[0]
    tail = latest.json()
    assert tail["truncated"] is True and tail["total"] == len(csi)
    assert [pd.Timestamp(b["ts"]) for b in tail["bars"]] == list(csi["ts"].iloc[-5:])
    assert backwards.status_code == 422 and "after" in backwards.json()["detail"]
    assert too_many.status_code == 422 and "limit" in str(too_many.json()["detail"])
    assert unknown.status_code == 404 and "NOPE.XX" in unknown.json()["detail"]
    assert "/" not in unknown.json()["detail"].split("NOPE.XX")[0]  # no server paths in client errors


def test_signal_gives_the_agent_and_the_supervised_signal(served: Served) -> None:
    from finstream.models.agent import load_agent
    from finstream.models.tracking import configure_mlflow
    from finstream.models.windows import FeatureWindows

    body = {"symbols": [AGENT_SYMBOL, "^GSPC"], "positions": {AGENT_SYMBOL: 1.0}, "equity_return": 0.05}
    with _client(served.main, "trader-key") as http:
        response = http.post("/signal", json=body)
        anywhere = http.post("/signal", json={**body, "allow_other_symbols": True})
        predict = http.post("/predict", json={"symbols": [AGENT_SYMBOL, "^GSPC"]}).json()["predictions"]
        bad = http.post("/signal", json={"symbols": [AGENT_SYMBOL], "positions": {AGENT_SYMBOL: 3}})
    with _client(served.main, "viewer-key") as viewer:
        denied = viewer.post("/signal", json=body)
    assert response.status_code == 200, response.text
    csi, spx = response.json()["signals"]
    for item, forecast in zip((csi, spx), predict, strict=True):
        sup = item["supervised"]
        assert sup["probability_up"] == pytest.approx(forecast["probability_up"])
        assert sup["action"] == ("long" if forecast["probability_up"] > 0.5 else "flat")
        assert sup["target_position"] == (1.0 if sup["action"] == "long" else 0.0)
        assert sup["model"] == forecast["model"]
    assert csi["position"] == 1.0 and spx["position"] == 0.0
    decision = csi["agent"]
    assert decision["model"] == {"name": AGENT_MODEL, "version": served.agent_version, "family": "ppo"}
    assert decision["trained_on"] == AGENT_SYMBOL and decision["in_distribution"] is True
    # the same decision in process, from the registry and the features parquet
    agent = load_agent(configure_mlflow(served.settings), AGENT_MODEL, served.agent_version)
    expected = agent.signal(FeatureWindows(served.settings), AGENT_SYMBOL, 1.0, 0.05)
    assert decision["action"] == expected.action
    assert decision["target_position"] == expected.target_position
    assert pd.Timestamp(decision["as_of"]) == pd.Timestamp(expected.as_of)
    assert spx["agent"] is None and AGENT_SYMBOL in spx["agent_note"]
    other = anywhere.json()["signals"][1]["agent"]
    assert other is not None and other["in_distribution"] is False and other["trained_on"] == AGENT_SYMBOL
    assert bad.status_code == 422 and "positions" in bad.text
    assert denied.status_code == 403


def test_sequence_model_challenger_and_ab_settings(served: Served) -> None:
    """An lstm (sequence model) as challenger: split 100% serves it from its feature window, 0% the
    champion, shadow runs it beside the champion; every change is in the audit log."""
    from finstream.models.inputs import MODEL_FEATURES, model_inputs
    from finstream.models.pyfunc import load_forecaster, unwrap_forecaster
    from finstream.models.tracking import configure_mlflow
    from serving.audit import verify

    client = configure_mlflow(served.settings)
    client.set_registered_model_alias(RETURN_MODEL, "challenger", served.lstm_version)
    try:
        with _client(served.main, "admin-key") as admin, _client(served.main, "trader-key") as trader:
            split = admin.put("/admin/ab", json={"mode": "split", "share": 1.0})
            assert split.status_code == 200, split.text
            assert split.json()["challengers"][RETURN_MODEL] == served.lstm_version
            answer = trader.post("/predict", json={"symbols": SYMBOLS}).json()
            assert answer["variant"] == "challenger"
            assert {p["model"]["version"] for p in answer["predictions"]} == {served.lstm_version}
            assert {p["model"]["family"] for p in answer["predictions"]} == {"lstm"}
            # the served lstm forecast equals the model run over each symbol's whole feature history
            forecaster = unwrap_forecaster(load_forecaster(f"models:/{RETURN_MODEL}/{served.lstm_version}"))
            features = pd.read_parquet(served.settings.paths.features)
            for p in answer["predictions"]:
                rows = features[features["symbol"] == p["symbol"]].sort_values("event_timestamp")
                X = model_inputs(rows.reset_index(drop=True))
                X = X[np.isfinite(X[MODEL_FEATURES].to_numpy()).all(axis=1)].reset_index(drop=True)
                for s in SYMBOLS:
                    X[f"is_{s}"] = float(s == p["symbol"])
                X.insert(0, "symbol", p["symbol"])
                assert p["predicted_return"] == pytest.approx(forecaster.predict(X)[-1], rel=1e-4, abs=1e-7)

            assert admin.put("/admin/ab", json={"mode": "split", "share": 0.0}).status_code == 200
            assert trader.post("/predict", json={"symbols": SYMBOLS}).json()["variant"] == "champion"
            shadow = admin.put("/admin/ab", json={"mode": "shadow"})
            assert shadow.json()["mode"] == "shadow"
            served_now = trader.post("/predict", json={"symbols": SYMBOLS}).json()
            assert served_now["variant"] == "champion"
            assert {p["model"]["version"] for p in served_now["predictions"]} == {"1"}
            metrics = trader.get("/metrics").text
            assert (
                f'finstream_predictions_total{{model="{RETURN_MODEL}",variant="shadow",'
                f'version="{served.lstm_version}"}}'
            ) in metrics
            assert "finstream_shadow_abs_difference_bucket" in metrics

            assert admin.put("/admin/ab", json={"mode": "half"}).status_code == 422
            assert admin.put("/admin/ab", json={"mode": "split", "share": 1.5}).status_code == 422
            assert trader.put("/admin/ab", json={"mode": "off"}).status_code == 403
            assert admin.put("/admin/ab", json={"mode": "off"}).json()["challengers"][RETURN_MODEL] is None
            audit = admin.get("/admin/audit").json()["entries"]
    finally:
        client.delete_registered_model_alias(RETURN_MODEL, "challenger")
        client.delete_registered_model_tag(RETURN_MODEL, "finstream.serving.ab")
    changes = [e for e in audit if e["action"] == "ab_update"]
    assert [e["details"]["after"]["mode"] for e in changes[-4:]] == ["split", "split", "shadow", "off"]
    assert {e["actor"] for e in changes} == {"key3"} and all(e["role"] == "admin" for e in changes)
    assert "admin-key" not in json.dumps(audit)  # never the key itself
    assert verify(served.settings.paths.home / "audit" / "admin.jsonl") >= len(changes)


def test_cors_allows_only_the_configured_origins(served: Served) -> None:
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-api-key"}
    with _client(served.main) as http:
        allowed = http.options("/predict", headers={"Origin": DASHBOARD, **preflight})
        other = http.options("/predict", headers={"Origin": "https://evil.example.net", **preflight})
        simple = http.get("/health", headers={"Origin": DASHBOARD})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == DASHBOARD
    assert "x-api-key" in allowed.headers["access-control-allow-headers"].lower()
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    assert simple.headers["access-control-allow-origin"] == DASHBOARD


def test_rate_limit_token_survives_a_redis_script_flush(served: Served) -> None:
    """The token is spent by a Lua script in the feature read's round trip: a Redis that lost its script
    cache (restart, SCRIPT FLUSH) gets it loaded again, the request does not fail."""
    import redis

    with redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB) as admin:
        admin.script_flush()
    with _client(served.main, "trader-key") as http:
        assert http.post("/predict", json={"symbols": ["^GSPC"]}).status_code == 200
        assert http.get("/quotes", params={"symbols": "^GSPC"}).status_code == 200


def test_every_worker_follows_a_promotion_at_once_without_polling(served: Served) -> None:
    """Two workers that never poll: the promotion's registry notice (Redis pub/sub) moves both."""
    from concurrent.futures import ThreadPoolExecutor

    from finstream.models.registry import promote
    from finstream.models.tracking import configure_mlflow

    client = configure_mlflow(served.settings)
    copy = _copy_of_v1(client)

    def one() -> str:  # a new connection each time, so the kernel hands requests to either worker
        with _client(served.multi, "events-key") as http:
            response = http.post("/predict", json={"symbols": ["^GSPC"]})
            assert response.status_code == 200, response.text
            return response.json()["predictions"][0]["model"]["version"]

    def converge(target: str) -> float:
        started = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            while time.monotonic() - started < 10:  # 12 requests a round: under the key's 20/s
                answers = set(pool.map(lambda _: one(), range(6)))
                if answers == {target} and set(pool.map(lambda _: one(), range(6))) == {target}:
                    return time.monotonic() - started
                time.sleep(0.6)
        pytest.fail(f"the workers did not all serve v{target} within 10 s")

    with ThreadPoolExecutor(4) as pool:
        assert set(pool.map(lambda _: one(), range(6))) == {"1"}
    try:
        promote(client, RETURN_MODEL, copy.version, reason="serving test: registry notice")
        forward = converge(str(copy.version))
    finally:
        promote(client, RETURN_MODEL, 1, reason="serving test: registry notice, back")
    back = converge("1")
    print(f"both workers followed the promotion in {forward:.2f} s and the way back in {back:.2f} s")
    assert forward < 5 and back < 5


def test_risk_per_symbol_and_portfolio(served: Served) -> None:
    with _client(served.main, "viewer-key") as http:
        response = http.get("/risk", params={"symbols": ",".join(SYMBOLS)})
        good = http.post("/risk/portfolio", json={"weights": {SYMBOLS[0]: 0.5, SYMBOLS[1]: 0.5}})
        unbalanced = http.post("/risk/portfolio", json={"weights": {SYMBOLS[0]: 0.5, SYMBOLS[1]: 0.6}})
        unknown = http.post("/risk/portfolio", json={"weights": {SYMBOLS[0]: 0.5, "NOPE": 0.5}})
        short = http.post("/risk/portfolio", json={"weights": {SYMBOLS[0]: 1.5, SYMBOLS[1]: -0.5}})
        metrics = http.get("/metrics").text
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["interval"] == "1d" and [r["name"] for r in body["risk"]] == SYMBOLS
    bars = BarTable(served.settings.paths.validated_bars).read()
    for summary in body["risk"]:
        assert pd.Timestamp(summary["as_of"]) == bars.loc[bars["symbol"] == summary["name"], "ts"].max()
        methods = {(e["method"], e["level"]) for e in summary["var"]}
        assert methods == {
            (m, lv) for m in ("historical", "normal", "student_t", "ewma", "model") for lv in (0.95, 0.99)
        }  # "model": the volatility champion's (test_risk_serves_the_volatility_champion_...)
        assert all(0 < e["var"] <= e["es"] < 0.2 for e in summary["var"])
    assert good.status_code == 200 and good.json()["risk"]["name"] == "portfolio"
    assert unbalanced.status_code == 422 and "sum to 1.1" in unbalanced.json()["detail"]
    assert unknown.status_code == 422 and "unknown symbols ['NOPE']" in unknown.json()["detail"]
    assert short.status_code == 422 and "shorting is not allowed" in short.json()["detail"]
    assert 'finstream_risk_var{level="0.99",method="historical",name="^GSPC"}' in metrics


def test_risk_serves_the_volatility_champion_and_its_model_var(served: Served) -> None:
    """The training flow's volatility task registered and gated a champion with no manual step; /risk
    serves its next-bar forecast (labelled baseline or candidate) and the model-based VaR / ES from it.
    A GARCH-family or rolling baseline is checked against `arch` / numpy on the bars the service used."""
    from arch import arch_model
    from scipy.stats import norm

    from finstream.models.tracking import configure_mlflow

    decision = served.volatility
    assert decision.model == "finstream-volatility" and decision.promote, decision.reason
    with _client(served.main, "viewer-key") as http:
        body = http.get("/risk", params={"symbols": ",".join(SYMBOLS)}).json()
        metrics = http.get("/metrics").text
    bars = BarTable(served.settings.paths.validated_bars).read()
    client = configure_mlflow(served.settings)
    mv = client.get_model_version("finstream-volatility", decision.version)
    model = _volatility_model(decision.version)
    for summary in body["risk"]:
        forecast = summary["volatility_forecast"]
        assert forecast is not None, summary
        assert forecast["model"] == "finstream-volatility" and forecast["version"] == decision.version
        assert forecast["family"] == decision.family and forecast["kind"] == mv.tags["kind"]
        assert forecast["gate"] == decision.reason
        model_var = {e["level"]: e for e in summary["var"] if e["method"] == "model"}
        sigma = forecast["volatility"]
        assert model_var[0.99]["var"] == pytest.approx(sigma * norm.ppf(0.99), rel=1e-9)
        assert model_var[0.95]["es"] == pytest.approx(sigma * norm.pdf(norm.ppf(0.95)) / 0.05, rel=1e-9)
        closes = bars[bars["symbol"] == summary["name"]].sort_values("ts")["close"].to_numpy()
        r = 100.0 * np.diff(np.log(closes[-summary["bars"] :]))
        if decision.family in ("garch", "gjr_garch"):
            coef = model.symbols[summary["name"]].coef
            o = int(decision.family == "gjr_garch")
            names = ["omega", "alpha", "gamma", "beta"] if o else ["omega", "alpha", "beta"]
            params = pd.Series({n if n == "omega" else f"{n}[1]": coef[n] for n in names})
            fixed = arch_model(r, mean="Zero", vol="GARCH", p=1, o=o, q=1, rescale=False).fix(params)
            expected = fixed.forecast(start=len(r) - 1, horizon=1, reindex=False).variance["h.1"].iloc[-1]
            assert forecast["variance"] == pytest.approx(expected, rel=1e-9)
        elif decision.family == "rolling_20":
            assert forecast["variance"] == pytest.approx(float(np.mean(r[-20:] ** 2)), rel=1e-9)
        assert 0.0 < sigma < 0.1
        gauge = f'finstream_volatility_forecast{{kind="{forecast["kind"]}",name="{summary["name"]}"}}'
        assert gauge in metrics
    print(f"volatility champion: {decision.family} v{decision.version}: {decision.reason}")


def _volatility_model(version: str) -> Any:
    """The VolatilityModel of a registered finstream-volatility version, loaded through MLflow."""
    import mlflow

    from finstream.models.pyfunc import unwrap_volatility_model

    return unwrap_volatility_model(mlflow.pyfunc.load_model(f"models:/finstream-volatility/{version}"))


def test_websocket_channels_relay_the_stream_messages(served: Served) -> None:
    """/ws/<channel> relays what the stream publishes on Redis: header or first-message key, the symbols
    filter, `since` replays the history stream, and refusals close with the documented codes."""
    import redis
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    from finstream.channels import AI_PREDICTIONS, channel_key, history_key

    project = served.settings.feast_project
    r = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB, decode_responses=True)
    url = served.main.url.replace("http://", "ws://")

    def message(seq: int, symbol: str) -> str:
        return json.dumps(
            {"type": "prediction", "channel": AI_PREDICTIONS, "seq": seq, "data": {"symbol": symbol}}
        )

    def publish_until_received(ws: object, text: str) -> dict:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the worker subscribes once the socket is authenticated
            r.publish(channel_key(project, AI_PREDICTIONS), text)
            try:
                return json.loads(ws.recv(timeout=0.5))  # type: ignore[attr-defined]
            except TimeoutError:
                continue
        raise AssertionError("no message relayed within 10 s")

    with connect(
        f"{url}/ws/{AI_PREDICTIONS}?symbols=^GSPC", additional_headers={"X-API-Key": "viewer-key"}
    ) as ws:
        assert publish_until_received(ws, message(1, "^GSPC"))["seq"] == 1
        r.publish(channel_key(project, AI_PREDICTIONS), message(2, "000300.SH"))  # filtered out
        r.publish(channel_key(project, AI_PREDICTIONS), message(3, "^GSPC"))
        assert json.loads(ws.recv(timeout=5))["seq"] == 3

    for seq in (10, 11, 12):  # the history stream a reconnecting client catches up from
        r.xadd(history_key(project, AI_PREDICTIONS), {"m": message(seq, "^GSPC"), "seq": seq})
    with connect(f"{url}/ws/{AI_PREDICTIONS}?since=10") as ws:
        ws.send(json.dumps({"key": "viewer-key"}))  # a browser's way: the key as the first message
        assert [json.loads(ws.recv(timeout=5))["seq"] for _ in range(2)] == [11, 12]
        ws.send("x" * (2 * 1024 * 1024))  # over FINSTREAM_SERVE_MAX_BODY_BYTES
        with pytest.raises(ConnectionClosed) as too_big:
            ws.recv(timeout=5)
        assert too_big.value.rcvd is not None and too_big.value.rcvd.code == 1009

    for path, headers in (
        (f"/ws/{AI_PREDICTIONS}", {"X-API-Key": "wrong-key"}),
        ("/ws/no-such-channel", {"X-API-Key": "viewer-key"}),
    ):
        with connect(url + path, additional_headers=headers) as ws, pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008, path
    with _client(served.main) as http:
        assert 'finstream_ws_messages_total{channel="ai-predictions"}' in http.get("/metrics").text
