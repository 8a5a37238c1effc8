"""Feast objects for finstream: `symbol` entity and, per bar interval, a features parquet, a push source, two
views and one service.

Daily features keep the plain names (`price_features`, `technical_features`, service `model_features`);
each intraday interval gets its own suffixed set (`price_features_1m`, ..., `model_features_1m`), because
each interval is its own point-in-time history with its own TTL. `build(settings)` makes them for the
intervals that have a feature file under FINSTREAM_HOME (finstream.featurestore.apply_definitions calls
it); the module-level objects at the bottom are what the `feast` CLI finds when run inside feature_repo/.

TTL: daily bars have gaps of up to 12 calendar days in the packaged history (Chinese New Year 2006;
CNY and National Day closures are usually 9-11 days, 9/11 closed NYSE for 7). A point-in-time join drops a
feature row older than the ttl, so the ttl must exceed the longest gap between two bars of one symbol or a
label inside a holiday would get no features. 30 days is 2.5x the worst gap seen, and still stale enough to
stop a long-suspended stock from reusing month-old features forever. Intraday views: 5 days, enough to
reach the previous session's last bar over a long weekend, and no more: a minute bar older than that is no
feature of the present.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.data_format import ParquetFormat
from feast.types import Float64, String

from finstream.config import Settings
from finstream.indicators.spec import feature_names

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TTL = timedelta(days=30)
INTRADAY_TTL = timedelta(days=5)
PRICE_FEATURES = ("open", "high", "low", "close", "volume", "amount")
DAILY = "1d"


def suffix(interval: str) -> str:
    """The name suffix of an interval's Feast objects: none for daily, `_1m` etc. for intraday."""
    return "" if interval == DAILY else f"_{interval}"


def build(settings: Settings) -> dict[str, object]:
    """Every Feast object of the repo: the entity, and each interval's objects whose feature file exists
    (daily when none does yet, so a fresh home still has the default service)."""
    symbol = Entity(
        name="symbol",
        join_keys=["symbol"],
        value_type=ValueType.STRING,
        description="Canonical instrument symbol, e.g. 000300.SH or ^GSPC.",
    )
    objects: dict[str, object] = {"symbol": symbol}
    intervals = {p.stem for p in settings.paths.features_dir.glob("*.parquet")} or {DAILY}
    for interval in sorted(intervals):
        for name, obj in _interval_objects(settings, symbol, interval).items():
            objects[name + suffix(interval)] = obj
    return objects


def _interval_objects(settings: Settings, symbol: Entity, interval: str) -> dict[str, object]:
    """One interval's source, push source, views and service."""
    end = suffix(interval)
    ttl = TTL if interval == DAILY else INTRADAY_TTL
    features_file = FileSource(
        name=f"features_parquet{end}",
        path=str(settings.paths.features_for(interval)),
        file_format=ParquetFormat(),
        timestamp_field="event_timestamp",
        created_timestamp_column="created_timestamp",
        description=f"{interval} feature rows written by `finstream features` (bar close time, UTC).",
    )
    market_push = PushSource(
        name=f"market_push{end}",
        batch_source=features_file,
        description="Incremental indicator updates from the streaming engine.",
    )
    price_features = FeatureView(
        name=f"price_features{end}",
        entities=[symbol],
        ttl=ttl,
        schema=[Field(name="symbol", dtype=String), *(Field(name=n, dtype=Float64) for n in PRICE_FEATURES)],
        source=market_push,
        online=True,
        description="The bar itself: OHLCV and traded amount.",
    )
    technical_features = FeatureView(
        name=f"technical_features{end}",
        entities=[symbol],
        ttl=ttl,
        schema=[Field(name="symbol", dtype=String), *(Field(name=n, dtype=Float64) for n in feature_names())],
        source=market_push,
        online=True,
        description="Every indicator of the indicator spec, computed from bars up to and including this one.",
    )
    model_features = FeatureService(
        name=f"model_features{end}",
        features=[price_features, technical_features],
        description=f"What the models of {interval} bars train and predict on.",
    )
    return {
        "features_file": features_file,
        "market_push": market_push,
        "price_features": price_features,
        "technical_features": technical_features,
        "model_features": model_features,
    }


def _cli_settings() -> Settings:
    """Settings with a relative FINSTREAM_HOME taken from the project root, as feature_store.yaml does.

    Also creates FINSTREAM_HOME/feast: Feast's file registry makes only the last folder of its path.
    """
    settings = Settings()
    if not settings.home.expanduser().is_absolute():
        settings = Settings(home=PROJECT_ROOT / settings.home)
    settings.paths.feast.mkdir(parents=True, exist_ok=True)
    return settings


# finstream.featurestore loads this file under LIBRARY_MODULE and calls build() with its own settings;
# anything else (the feast CLI) gets module-level objects for the default FINSTREAM_HOME.
LIBRARY_MODULE = "finstream_feature_repo_definitions"
if __name__ != LIBRARY_MODULE:
    # the feast CLI collects Feast objects from module globals: every interval's, by their names
    globals().update(build(_cli_settings()))
