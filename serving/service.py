"""The finstream BentoML service: forecasts, quotes, the model registry, health and admin over HTTP (JSON).

The FastAPI app of `serving.app` (its routers in `serving.routes`) is mounted at "/" with
`@bentoml.asgi_app`, so status codes (401/403/404/422/429/503), headers (Retry-After) and the error bodies are
exactly what clients see; BentoML adds /metrics, /livez and /readyz itself. Run it with `finstream serve` or
`bentoml serve serving.service:FinstreamService`.

The hot endpoints (/predict, /signal, /quotes, /health, /ready) are `async`: with Redis they read the online
row with one non-blocking HMGET (serving.online.RedisFeatureReader) and predict in place (tabular models
take ~0.01-0.6 ms), so no request hops through a thread pool; they reach the worker's state through an async
dependency (`serving.runtime.current_runtime`), not BentoML's sync injection of the service instance.
Responses are serialised by pydantic-core straight to bytes. Registry and file reads (/models, /history,
/admin) stay in FastAPI's thread pool.
"""

from __future__ import annotations

import gc
import logging
import os
from typing import Any

import bentoml

from finstream.errors import UnknownSymbol
from finstream.models.champions import NoChampion
from serving.app import app
from serving.runtime import ServingOptions, ServingRuntime

log = logging.getLogger(__name__)

HOT_PATHS = ("/predict", "/signal", "/quotes", "/health", "/ready")


def _tracing() -> dict[str, Any]:
    """BentoML's OpenTelemetry middleware skips the hot endpoints unless FINSTREAM_SERVE_TRACE_ALL is set.

    BentoML samples no traces by default (tracing.sample_rate 0) yet still builds a span per request,
    ~0.3 ms of CPU; whoever configures an exporter and a sample rate sets FINSTREAM_SERVE_TRACE_ALL=1 too.
    """
    if os.environ.get("FINSTREAM_SERVE_TRACE_ALL", "").lower() in ("1", "true", "yes"):
        return {}
    return {"excluded_urls": ",".join(HOT_PATHS)}


@bentoml.service(
    name="finstream",
    workers=int(os.environ.get("FINSTREAM_SERVE_WORKERS", "1")),
    traffic={"timeout": 30},
    # access lines cost ~0.2 ms a request; request counts and latencies are in /metrics either way
    logging={"access": {"enabled": False}},
    tracing=_tracing(),
)
@bentoml.asgi_app(app, path="/")
class FinstreamService:
    """One worker: loads the registry's models and the stores at start, then serves `serving.app`."""

    def __init__(self) -> None:
        self.runtime = ServingRuntime.start()
        app.state.runtime = self.runtime
        # everything loaded so far (Feast, MLflow, torch, models) lives as long as the process: keep it
        # out of the cyclic GC's generations so collections stay short (p99 latency)
        gc.collect()
        gc.freeze()
        log.info("finstream service ready", extra={"models": self.runtime.models.versions()})

    @bentoml.on_shutdown
    def _stop_polling(self) -> None:
        self.runtime.close()


__all__ = ["FinstreamService", "NoChampion", "ServingOptions", "UnknownSymbol", "app"]
