"""Latest features per symbol from the Feast online store, and the model inputs built from them.

The store is opened lazily and reopened after a failure, so a restarted Redis heals without a server restart.
The feature service object is cached (fetching it costs more than the online lookup itself).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from finstream import featurestore
from finstream.config import Settings
from finstream.errors import FinstreamError
from training.features import AS_IS, RELATIVE_TO_CLOSE, SCALED_BY_CLOSE

log = logging.getLogger(__name__)

PRICE_COLUMNS = ("open", "high", "low", "close", "volume", "amount")
_RELATIVE = {f"{c}_rel": c for c in RELATIVE_TO_CLOSE}
_SCALED = {f"{c}_scaled": c for c in SCALED_BY_CLOSE}
_AS_IS = frozenset(AS_IS)
REDIS_CONNECT_TIMEOUT_S = 0.5  # unless the redis URL sets socket_connect_timeout
REDIS_READ_TIMEOUT_S = 2.0  # unless the redis URL sets socket_timeout
TS_SUFFIX = "__ts"


class StoreUnavailable(FinstreamError):
    """The online store cannot be read (down, unreachable, not materialized)."""


class UnknownSymbol(FinstreamError):
    """The online store holds no features for these symbols."""

    def __init__(self, symbols: Sequence[str]) -> None:
        super().__init__(
            f"no features for {', '.join(symbols)} in the online store "
            "(unknown symbol, or not materialized: run `finstream materialize`)"
        )
        self.symbols = list(symbols)


@dataclass(frozen=True)
class FeatureRows:
    """Store features of the requested symbols, in request order: one float array per feature."""

    symbols: tuple[str, ...]
    values: dict[str, np.ndarray]
    timestamps: np.ndarray  # datetime64[s], UTC

    def ages(self, now: float | None = None) -> np.ndarray:
        """Seconds since each symbol's feature timestamp."""
        now = time.time() if now is None else now
        return now - self.timestamps.astype("int64").astype("float64")

    def timestamp(self, i: int) -> datetime:
        return datetime.fromtimestamp(int(self.timestamps[i].astype("int64")), tz=UTC)


class FeatureReader:
    """Reads the latest feature row per symbol through Feast's online API."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._store: Any = None
        self._service: Any = None
        self._lock = threading.Lock()

    @property
    def store_kind(self) -> str:
        return self.settings.online_store_type

    def _open(self) -> tuple[Any, Any]:
        with self._lock:
            if self._store is None:
                store = featurestore.open_store(self.settings)
                if self.store_kind == "redis":
                    _fail_fast(store)
                self._service = store.get_feature_service(featurestore.FEATURE_SERVICE, allow_cache=True)
                self._store = store
            return self._store, self._service

    def _reset(self) -> None:
        with self._lock:
            self._store = None
            self._service = None

    def _read(self, symbols: Sequence[str]) -> dict[str, list[Any]]:
        try:
            store, service = self._open()
            response = store.get_online_features(
                features=service, entity_rows={featurestore.ENTITY_KEY: list(symbols)}
            )
            return response.to_dict(include_event_timestamps=True)
        except Exception as exc:  # redis ConnectionError, sqlite OperationalError, missing registry …
            self._reset()
            log.warning("online store read failed: %s", exc, extra={"store": self.store_kind})
            raise StoreUnavailable(
                f"the online feature store ({self.store_kind}) is unavailable: {_first_line(exc)}; "
                "the server retries on the next request"
            ) from exc

    def latest(self, symbols: Sequence[str]) -> FeatureRows:
        """Features for every symbol, or UnknownSymbol naming those the store has nothing for."""
        data = self._read(symbols)
        if "close" not in data:
            raise StoreUnavailable(
                "the online store's feature service has no 'close' feature: re-apply definitions"
            )
        missing = [s for s, close in zip(symbols, data["close"], strict=True) if close is None]
        if missing:
            raise UnknownSymbol(missing)
        values = {
            name: np.array([np.nan if v is None else v for v in column], dtype="float64")
            for name, column in data.items()
            if not name.endswith(TS_SUFFIX) and name != featurestore.ENTITY_KEY
        }
        stamps = np.asarray(data["close" + TS_SUFFIX], dtype="int64").astype("datetime64[s]")
        return FeatureRows(tuple(symbols), values, stamps)

    def ping(self) -> None:
        """Raise StoreUnavailable unless the online store answers a lookup."""
        self._read(["__finstream_ready_probe__"])


def _fail_fast(store: Any) -> None:
    """Make Feast's Redis client give up within about a second instead of retrying for ~10 s.

    redis-py 7 retries a failed connect 3 times with backoff (up to 10 s per request while Redis is down);
    a request should answer 503 at once and the next one try again. Feast builds the client privately, so
    this reaches it through the provider; if that ever moves, serving keeps Feast's defaults (logged).
    """
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    try:
        online = store._get_provider().online_store
        client = online._get_client(store.config.online_store)
    except AttributeError as exc:
        log.warning("cannot tune the Redis client's retries (Feast internals moved): %s", exc)
        return
    client.set_retry(Retry(NoBackoff(), 1))
    kwargs = client.connection_pool.connection_kwargs
    kwargs.setdefault("socket_connect_timeout", REDIS_CONNECT_TIMEOUT_S)
    kwargs.setdefault("socket_timeout", REDIS_READ_TIMEOUT_S)


def input_matrix(rows: FeatureRows, columns: Sequence[str]) -> np.ndarray:
    """Model inputs (rows x columns, float64) in the model's column order.

    The numpy twin of `training.features.model_inputs` (4 ms of pandas per call there, ~50 µs here), plus
    the pooled models' `is_<symbol>` one-hot columns; inf becomes NaN as in training.
    """
    close = rows.values["close"]
    symbols = np.asarray(rows.symbols, dtype=object)
    out = np.empty((len(rows.symbols), len(columns)), dtype="float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        for j, column in enumerate(columns):
            if column in _RELATIVE:
                out[:, j] = _value(rows, _RELATIVE[column]) / close - 1.0
            elif column in _SCALED:
                out[:, j] = _value(rows, _SCALED[column]) / close
            elif column in _AS_IS:
                out[:, j] = _value(rows, column)
            elif column.startswith("is_"):
                out[:, j] = (symbols == column[3:]).astype("float64")
            else:
                raise StoreUnavailable(f"the model wants input {column!r}, which serving cannot build")
    out[~np.isfinite(out)] = np.nan
    return out


def _value(rows: FeatureRows, name: str) -> np.ndarray:
    try:
        return rows.values[name]
    except KeyError:
        raise StoreUnavailable(
            f"the online store lacks feature {name!r}: rebuild features and materialize them"
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
