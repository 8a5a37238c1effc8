"""The Feast feature store, configured from Settings: apply, materialize, point-in-time and online reads.

`import feast` takes several seconds (it pulls in torch), so it happens inside the functions that need it;
importing this module stays cheap for the CLI.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import io
import logging
import sys
import time
import warnings
import weakref
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

import pandas as pd

from finstream.config import Settings, get_settings
from finstream.errors import ConfigError, NoDataError, SchemaError

if TYPE_CHECKING:
    from feast import FeatureStore, RepoConfig

log = logging.getLogger(__name__)

FEATURE_REPO = Path(__file__).resolve().parent.parent / "feature_repo"
DEFINITIONS_FILE = FEATURE_REPO / "definitions.py"
FEATURE_SERVICE = "model_features"
DAILY = "1d"
ENTITY_KEY = "symbol"
EVENT_TIMESTAMP = "event_timestamp"

# Settings each store was opened with, so apply_definitions points the FileSource at that store's parquet.
_STORE_SETTINGS: weakref.WeakKeyDictionary[Any, Settings] = weakref.WeakKeyDictionary()
# The model_features service per store for online reads, with when it was fetched: even from Feast's
# registry cache, get_feature_service costs ~1.7 ms (proto conversion), 4x the Redis lookup itself.
_SERVICE_CACHE: weakref.WeakKeyDictionary[Any, dict[str, tuple[float, Any]]] = weakref.WeakKeyDictionary()


def redis_connection_string(url: str) -> str:
    """Feast's Redis form `host:port,db=N[,password=…,ssl=true]` from a `redis://` / `rediss://` URL.

    A string already in Feast's form (no scheme) is returned unchanged.
    """
    if "://" not in url:
        return url
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ConfigError(f"redis_url {url!r}: Feast's Redis store needs a redis:// or rediss:// URL")
    if not parts.hostname:
        raise ConfigError(f"redis_url {url!r} has no host (expected redis://host:port/db)")
    try:
        port = parts.port or 6379
    except ValueError as exc:
        raise ConfigError(f"redis_url {url!r} has an invalid port") from exc
    db_text = parts.path.strip("/") or "0"
    if not db_text.isdigit():
        raise ConfigError(f"redis_url {url!r}: the database must be a number, got {db_text!r}")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    items = [f"{host}:{port}", f"db={int(db_text)}"]
    if parts.username:
        items.append(f"username={unquote(parts.username)}")
    if parts.password:
        items.append(f"password={unquote(parts.password)}")
    if parts.scheme == "rediss":
        items.append("ssl=true")
    items.extend(f"{k}={v}" for k, v in parse_qsl(parts.query))
    if any("," in item for item in items[1:]):
        raise ConfigError(f"redis_url {url!r}: Feast's connection string cannot carry a ',' in a value")
    return ",".join(items)


def online_store_config(settings: Settings) -> dict[str, Any]:
    """The `online_store` block: SQLite under FINSTREAM_HOME, or Redis from settings.redis_url."""
    if settings.online_store_type == "redis":
        url = settings.redis_url or "redis://localhost:6379/0"
        return {"type": "redis", "connection_string": redis_connection_string(url)}
    return {"type": "sqlite", "path": str(settings.paths.feast_online)}


def repo_config(settings: Settings) -> RepoConfig:
    """A Feast RepoConfig built from Settings (the programmatic twin of feature_repo/feature_store.yaml)."""
    from feast import RepoConfig

    return RepoConfig(
        project=settings.feast_project,
        provider="local",
        registry=str(settings.paths.feast_registry),
        online_store=online_store_config(settings),
        offline_store={"type": "duckdb"},
        entity_key_serialization_version=3,
        repo_path=FEATURE_REPO,
    )


def _close_duckdb_backend() -> None:
    """Close ibis's default in-memory duckdb connection before interpreter teardown.

    Feast's duckdb offline store runs through ibis's default backend; left open at exit, duckdb's nanobind
    bindings print dozens of "leaked type" lines to stderr.
    """
    ibis = sys.modules.get("ibis")
    backend = getattr(getattr(ibis, "options", None), "default_backend", None)
    if backend is not None:
        backend.disconnect()
        ibis.options.default_backend = None  # type: ignore[union-attr]


atexit.register(_close_duckdb_backend)


def open_store(settings: Settings | None = None) -> FeatureStore:
    """A FeatureStore for these settings (registry and SQLite files go under FINSTREAM_HOME/feast)."""
    from feast import FeatureStore

    # ibis (Feast's duckdb offline store) still calls duckdb's deprecated fetch_arrow_table
    warnings.filterwarnings(
        "ignore", message=r"fetch_arrow_table\(\) is deprecated", category=DeprecationWarning
    )
    settings = settings or get_settings()
    settings.paths.feast.mkdir(parents=True, exist_ok=True)
    store = FeatureStore(config=repo_config(settings), repo_path=str(FEATURE_REPO))
    _STORE_SETTINGS[store] = settings
    return store


def _load_definitions() -> ModuleType:
    """Import feature_repo/definitions.py by path (feature_repo is not a package)."""
    # Under this name the file skips its CLI-only module-level objects (see the end of definitions.py).
    spec = importlib.util.spec_from_file_location("finstream_feature_repo_definitions", DEFINITIONS_FILE)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot load the Feast definitions at {DEFINITIONS_FILE}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _require_features(path: Path) -> None:
    if not Path(path).exists():
        raise NoDataError(f"no features parquet at {path}: run `finstream features` first")


def interval_suffix(interval: str) -> str:
    """The suffix of an interval's Feast object names (see feature_repo/definitions.py)."""
    return "" if interval == DAILY else f"_{interval}"


def feature_service_name(interval: str = DAILY) -> str:
    """The feature service models of `interval` bars read: model_features, model_features_1m, ..."""
    return FEATURE_SERVICE + interval_suffix(interval)


def view_refs(refs: Sequence[str], interval: str) -> list[str]:
    """`view:feature` refs of the daily views pointed at `interval`'s views."""
    end = interval_suffix(interval)
    out = []
    for ref in refs:
        view, _, name = ref.partition(":")
        out.append(f"{view}{end}:{name}" if name else ref)
    return out


def apply_definitions(store: FeatureStore, settings: Settings | None = None) -> list[Any]:
    """Register the entity, sources, feature views and feature service; returns the applied objects.

    The FileSources point at the feature files (one per interval) of the settings the store was opened
    with; at least one must exist.
    """
    settings = settings or _STORE_SETTINGS.get(store) or get_settings()
    if not any(settings.paths.features_dir.glob("*.parquet")):
        raise NoDataError(
            f"no feature files under {settings.paths.features_dir}: run `finstream features` first"
        )
    objects = list(_load_definitions().build(settings).values())
    started = time.perf_counter()
    store.apply(objects)
    _SERVICE_CACHE.pop(store, None)
    log.info(
        "feast apply", extra={"objects": len(objects), "seconds": round(time.perf_counter() - started, 3)}
    )
    return objects


def _check_timestamp_units(path: Path) -> None:
    """Feast's duckdb materialize cannot cast nanosecond tz-aware timestamps (TIMESTAMPTZ_NS -> TIMESTAMP)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    for name in (EVENT_TIMESTAMP, "created_timestamp"):
        if name not in schema.names:
            raise SchemaError(
                f"features parquet {path} has no column {name!r}: rebuild it with `finstream features`"
            )
        dtype = schema.field(name).type
        if pa.types.is_timestamp(dtype) and dtype.unit == "ns":
            raise SchemaError(
                f"features parquet {path}: column {name!r} is {dtype}; Feast's duckdb store cannot "
                "materialize nanosecond timestamps: write it in microseconds (Series.dt.as_unit('us'))"
            )


def _batch_paths(store: FeatureStore, view_names: Iterable[str] | None = None) -> dict[str, Path]:
    """The parquet behind each (named) feature view, checked to exist."""
    wanted = set(view_names) if view_names is not None else None
    paths: dict[str, Path] = {}
    absent: list[Path] = []
    for view in store.list_feature_views():
        if wanted is not None and view.name not in wanted:
            continue
        source = view.batch_source
        path = Path(getattr(source, "path", ""))
        if wanted is None and not path.exists():
            absent.append(path)  # an interval with no features (yet): nothing of it to materialize
            continue
        _require_features(path)
        paths[view.name] = path
    if not paths and absent:
        _require_features(absent[0])
    if not paths:
        raise ConfigError("no feature views in the registry: apply the definitions first (apply_definitions)")
    return paths


def _utc(ts: datetime | str | pd.Timestamp) -> pd.Timestamp:
    """A UTC timestamp; naive values are read as UTC, as Feast does."""
    stamp = pd.Timestamp(ts)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def materialize(store: FeatureStore, start: datetime | str, end: datetime | str) -> int:
    """Load the latest row per symbol with event_timestamp in [start, end] into the online store.

    Explicit bounds on purpose: materialize_incremental starts at now - ttl, after the packaged history ends.
    Returns the number of entity keys written (distinct symbols with a row in the window).
    """
    import pyarrow.dataset as ds

    lo, hi = _utc(start), _utc(end)
    if lo > hi:
        raise ConfigError(f"materialize: start {lo} is after end {hi}")
    keys: set[str] = set()
    paths = _batch_paths(store)
    for path in set(paths.values()):
        _check_timestamp_units(path)
        ts = ds.field(EVENT_TIMESTAMP)
        table = ds.dataset(path, format="parquet").to_table(
            columns=[ENTITY_KEY], filter=(ts >= lo.to_pydatetime()) & (ts <= hi.to_pydatetime())
        )
        keys.update(table.column(ENTITY_KEY).unique().to_pylist())
    started = time.perf_counter()
    printed = io.StringIO()  # Feast prints its progress (and tqdm bars) to stdout: keep them for the log
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        store.materialize(
            start_date=lo.to_pydatetime(), end_date=hi.to_pydatetime(), feature_views=sorted(paths)
        )
    if printed.getvalue().strip():
        log.info("feast materialize output: %s", printed.getvalue().strip())
    log.info(
        "feast materialize",
        extra={
            "start": str(lo),
            "end": str(hi),
            "keys": len(keys),
            "seconds": round(time.perf_counter() - started, 3),
        },
    )
    return len(keys)


def _feature_refs(
    store: FeatureStore, features: Sequence[str] | None, *, cached: bool = False, interval: str = DAILY
) -> Any:
    """`interval`'s model_features service when None, else `view:feature` refs; bare names are resolved to
    their view (of `interval`).

    `cached` (online reads) reuses the registry cache and the service object for the registry's
    cache_ttl_seconds: a registry read from disk costs ~7 ms, far more than the online lookup itself.
    """
    if features is None:
        service = feature_service_name(interval)
        if not cached:
            return store.get_feature_service(service)
        ttl = store.config.registry.cache_ttl_seconds
        cache = _SERVICE_CACHE.setdefault(store, {})
        hit = cache.get(service)
        now = time.monotonic()
        if hit is None or (ttl > 0 and now - hit[0] > ttl):
            hit = (now, store.get_feature_service(service, allow_cache=True))
            cache[service] = hit
        return hit[1]
    if isinstance(features, str):
        raise ConfigError("features must be a list of names, e.g. ['close', 'sma_20']")
    owner: dict[str, str] = {}
    names = {f"price_features{interval_suffix(interval)}", f"technical_features{interval_suffix(interval)}"}
    for view in store.list_feature_views(allow_cache=cached):
        if view.name not in names:
            continue
        for field in view.features:
            owner.setdefault(field.name, view.name)
    refs = []
    for name in features:
        if ":" in name:
            refs.append(name)
        elif name in owner:
            refs.append(f"{owner[name]}:{name}")
        else:
            raise ConfigError(f"unknown feature {name!r}; known: {sorted(owner)}")
    return refs


def historical_features(
    store: FeatureStore,
    entity_df: pd.DataFrame,
    features: Sequence[str] | None = None,
    interval: str = DAILY,
) -> pd.DataFrame:
    """Point-in-time join: for each (symbol, event_timestamp) row, the latest `interval` feature row at or
    before it (within the view's TTL).

    Rows come back sorted by symbol, event_timestamp (duckdb returns them in another order).
    """
    missing = [c for c in (ENTITY_KEY, EVENT_TIMESTAMP) if c not in entity_df.columns]
    if missing:
        raise ConfigError(f"entity_df needs columns {missing}; got {list(entity_df.columns)}")
    refs = _feature_refs(store, features, interval=interval)
    views = (
        {p.name for p in refs.feature_view_projections}
        if not isinstance(refs, list)
        else {r.split(":", 1)[0] for r in refs}
    )
    _batch_paths(store, views)
    started = time.perf_counter()
    frame = store.get_historical_features(entity_df=entity_df, features=refs).to_df()
    log.info(
        "feast historical features",
        extra={"rows": len(frame), "seconds": round(time.perf_counter() - started, 3)},
    )
    return frame.sort_values([ENTITY_KEY, EVENT_TIMESTAMP], kind="stable").reset_index(drop=True)


def online_features(
    store: FeatureStore, symbols: Sequence[str], features: Sequence[str] | None = None, interval: str = DAILY
) -> pd.DataFrame:
    """The latest materialized (or pushed) `interval` features per symbol, one row per symbol in the order
    given."""
    if isinstance(symbols, str):
        symbols = [symbols]
    refs = _feature_refs(store, features, cached=True, interval=interval)
    response = store.get_online_features(features=refs, entity_rows={ENTITY_KEY: list(symbols)})
    return response.to_df()
