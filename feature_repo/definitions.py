"""Feast objects for finstream: `symbol` entity, features parquet, push source, two views, one service.

`build(settings)` makes them for any FINSTREAM_HOME (finstream.featurestore.apply_definitions calls it);
the module-level objects at the bottom are what the `feast` CLI finds when run inside feature_repo/.

TTL: daily bars have gaps of up to 12 calendar days in the packaged history (Chinese New Year 2006;
CNY and National Day closures are usually 9-11 days, 9/11 closed NYSE for 7). A point-in-time join drops a
feature row older than the ttl, so the ttl must exceed the longest gap between two bars of one symbol or a
label inside a holiday would get no features. 30 days is 2.5x the worst gap seen, and still stale enough to
stop a long-suspended stock from reusing month-old features forever.
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
PRICE_FEATURES = ("open", "high", "low", "close", "volume", "amount")


def build(settings: Settings) -> dict[str, object]:
    """Every Feast object of the repo, with the FileSource reading `settings.paths.features`."""
    symbol = Entity(
        name="symbol",
        join_keys=["symbol"],
        value_type=ValueType.STRING,
        description="Canonical instrument symbol, e.g. 000300.SH or ^GSPC.",
    )
    features_file = FileSource(
        name="features_parquet",
        path=str(settings.paths.features),
        file_format=ParquetFormat(),
        timestamp_field="event_timestamp",
        created_timestamp_column="created_timestamp",
        description="Feature rows written by `finstream features` (bar close time, UTC).",
    )
    market_push = PushSource(
        name="market_push",
        batch_source=features_file,
        description="Incremental indicator updates from the streaming engine.",
    )
    price_features = FeatureView(
        name="price_features",
        entities=[symbol],
        ttl=TTL,
        schema=[Field(name="symbol", dtype=String), *(Field(name=n, dtype=Float64) for n in PRICE_FEATURES)],
        source=market_push,
        online=True,
        description="The bar itself: OHLCV and traded amount.",
    )
    technical_features = FeatureView(
        name="technical_features",
        entities=[symbol],
        ttl=TTL,
        schema=[Field(name="symbol", dtype=String), *(Field(name=n, dtype=Float64) for n in feature_names())],
        source=market_push,
        online=True,
        description="Every indicator of the indicator spec, computed from bars up to and including this one.",
    )
    model_features = FeatureService(
        name="model_features",
        features=[price_features, technical_features],
        description="What the models train and predict on.",
    )
    return {
        "symbol": symbol,
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
    _objects = build(_cli_settings())
    symbol = _objects["symbol"]
    features_file = _objects["features_file"]
    market_push = _objects["market_push"]
    price_features = _objects["price_features"]
    technical_features = _objects["technical_features"]
    model_features = _objects["model_features"]
