"""What a running service worker holds (settings, keys, the online store reader, the loaded models, the file
snapshots, the audit log) and the async FastAPI dependency through which the routes reach it.

The dependency is `async` on purpose: FastAPI runs a sync dependency in its thread pool, a thread hop on every
request (BentoML's own injection of the service instance into FastAPI class views is such a sync one).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from pydantic_settings import BaseSettings, SettingsConfigDict

from finstream.config import Settings, get_settings
from finstream.errors import FinstreamError, StoreUnavailable
from finstream.models.champions import ABSettings, ChampionModels
from finstream.models.inputs import FeatureRows
from finstream.models.windows import FeatureWindows
from serving.audit import AuditLog
from serving.auth import Authenticator, Caller, RateLimited, RedisTokenBucket
from serving.history import BarHistory
from serving.online import FeatureReader, RedisFeatureReader, open_reader
from serving.risk_book import RiskBook
from serving.telemetry import export_loaded

log = logging.getLogger(__name__)


class ServingOptions(BaseSettings):
    """Server knobs from FINSTREAM_SERVE_* environment variables."""

    model_config = SettingsConfigDict(env_prefix="FINSTREAM_SERVE_", extra="ignore")

    max_feature_age_s: float = 4 * 86400.0  # daily bars: a long weekend plus a holiday is still fresh
    reload_interval_s: float = (
        30.0  # registry alias poll; 0 turns polling off (POST /admin/reload still works)
    )
    rate_limit_per_s: float = 20.0  # per API key, sustained
    shared_rate_limit: bool = True  # buckets in Redis (shared by workers) when FINSTREAM_REDIS_URL is set
    rate_limit_burst: int = 40  # per API key, burst
    ab_mode: str = "off"  # initial A/B mode (off, split, shadow) unless the registry holds settings
    ab_share: float = 0.1  # initial challenger share in split mode
    cors_origins: list[str] = []  # e.g. '["https://dash.example.com"]'; empty: no CORS headers
    direct_redis: bool = True  # read Feast's Redis rows directly (False: through Feast's online API)
    audit_log: str | None = None  # default: FINSTREAM_HOME/audit/admin.jsonl


@dataclass
class ServingRuntime:
    """The state one worker serves from; built once by `FinstreamService` at start-up."""

    settings: Settings
    options: ServingOptions
    auth: Authenticator
    features: FeatureReader  # a RedisFeatureReader with Redis
    models: ChampionModels
    windows: FeatureWindows
    history: BarHistory
    risk: RiskBook
    audit: AuditLog
    relay: Any = None  # serving.relay.ChannelRelay, made by the first WebSocket (serving.routes.channels)

    @classmethod
    def start(cls) -> ServingRuntime:
        """Open everything from the environment: keys, store reader, models (polling started), snapshots."""
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bars in server logs
        settings = get_settings()
        for package in ("serving", "finstream", "training"):  # BentoML's handlers, our level
            logging.getLogger(package).setLevel(settings.log_level.upper())
        options = ServingOptions()
        auth = Authenticator.from_env(
            options.rate_limit_per_s,
            options.rate_limit_burst,
            settings.redis_url if options.shared_rate_limit else None,
            prefix=f"finstream:{settings.feast_project}:ratelimit:",
        )
        interval = settings.train.interval  # the bars the models are trained on are the bars served
        features = open_reader(settings, direct=options.direct_redis, interval=interval)
        models = ChampionModels(
            settings,
            options.reload_interval_s,
            ab=ABSettings(options.ab_mode, options.ab_share),  # type: ignore[arg-type]
            on_refresh=export_loaded,
        )
        windows = FeatureWindows(settings, path=settings.paths.features_for(interval))
        history = BarHistory(settings, interval=interval)
        models.refresh()
        models.start()
        for store in (windows, history):  # parse the files now, not in the first request
            try:
                store.symbols()
            except FinstreamError as exc:
                log.warning("%s", exc)
        audit = AuditLog(Path(options.audit_log or settings.paths.home / "audit" / "admin.jsonl"))
        try:
            features.ping()  # open the store now: the first open costs seconds (Feast imports)
        except StoreUnavailable as exc:
            log.warning("online store not reachable at start-up: %s", exc)
        return cls(
            settings,
            options,
            auth,
            features,
            models,
            windows,
            history,
            RiskBook(history, settings.risk, models, windows),
            audit,
        )

    def close(self) -> None:
        """Stop the registry polling and close the store reader (worker shutdown)."""
        self.models.stop()
        self.features.close()

    def is_stale(self, age_s: float) -> bool:
        """Whether features `age_s` seconds old are older than the server accepts as fresh."""
        return bool(age_s > self.options.max_feature_age_s)

    async def read(self, caller: Caller, symbols: Sequence[str]) -> FeatureRows:
        """The symbols' online features; spends the caller's deferred rate-limit token in the same trip."""
        if caller.unspent_bucket is None:
            return await self.features.latest_async(symbols)
        limiter = self.auth.limiter
        if not isinstance(limiter, RedisTokenBucket):  # identify_deferred never defers then
            raise RuntimeError("a deferred rate-limit token needs Redis buckets")
        if not isinstance(self.features, RedisFeatureReader):  # Feast's reader: two round trips
            wait = await limiter.take_bucket_async(caller.unspent_bucket)
            if wait > 0:
                raise RateLimited(wait)
            return await self.features.latest_async(symbols)
        wait, rows = await self.features.latest_spending_token(
            symbols, caller.unspent_bucket, limiter.rate, limiter.burst
        )
        if rows is None:
            raise RateLimited(wait)
        return rows


async def current_runtime(request: Request) -> ServingRuntime:
    """The worker's runtime, set on the app's state by `FinstreamService` (async: no thread-pool hop)."""
    return request.app.state.runtime


Runtime = Annotated[ServingRuntime, Depends(current_runtime)]
