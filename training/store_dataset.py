"""The training set `finstream train` uses: a point-in-time join in Feast at every validated bar's time, for
the bars of one interval (`train.interval`)."""

from __future__ import annotations

import logging

from finstream.config import Settings
from finstream.errors import NoDataError
from finstream.models.inputs import STORE_FEATURES
from finstream.storage import BarTable, file_md5
from finstream.symbols import parse_symbols
from training.dataset import Dataset, add_targets, assemble

log = logging.getLogger(__name__)


def store_feature_refs() -> list[str]:
    """Feature references for the transform's inputs (close from price_features, the rest technical)."""
    return ["price_features:close"] + [f"technical_features:{c}" for c in STORE_FEATURES if c != "close"]


def common_period(dataset: Dataset) -> Dataset:
    """Rows inside the time range every symbol covers, so each walk-forward test block holds all symbols."""
    by_symbol = dataset.event_time.groupby(dataset.X["symbol"].to_numpy())
    lo, hi = by_symbol.min().max(), by_symbol.max().min()
    if lo >= hi:
        raise NoDataError(f"the symbols share no common period ({lo} .. {hi}): train them separately")
    mask = ((dataset.event_time >= lo) & (dataset.event_time <= hi)).to_numpy()
    log.info("common period %s .. %s: %d of %d rows", lo.date(), hi.date(), int(mask.sum()), len(mask))
    return dataset.subset(mask)


def load_training_set(settings: Settings, symbols: list[str] | None = None) -> tuple[Dataset, str]:
    """(Dataset, data_version) for the training universe, features fetched point-in-time from Feast."""
    from finstream import featurestore

    paths = settings.paths
    params = settings.train
    wanted = [s.canonical for s in parse_symbols(symbols or params.symbols)]
    interval = params.interval
    bars = BarTable(paths.validated_bars).read(
        symbols=wanted,
        intervals=[interval],
        required=True,
        hint=f"run `finstream pipeline` for {interval} bars",
    )
    missing = sorted(set(wanted) - set(bars["symbol"]))
    if missing:
        raise NoDataError(
            f"no validated {interval} bars for {missing}: ingest them first (`finstream pipeline -s ...`)"
        )
    features_file = paths.features_for(interval)
    if not features_file.exists():
        raise NoDataError(f"no features at {features_file}: run `finstream pipeline` first")
    entity_df = bars[["symbol", "ts"]].rename(columns={"ts": "event_timestamp"})
    entity_df["event_timestamp"] = entity_df["event_timestamp"].dt.as_unit("us")
    store = featurestore.open_store(settings)
    featurestore.apply_definitions(store)
    refs = featurestore.view_refs(store_feature_refs(), interval)
    features = featurestore.historical_features(store, entity_df, features=refs, interval=interval)
    targets = add_targets(bars, params.horizon)
    targets["ts"] = targets["ts"].dt.as_unit("us")
    dataset = assemble(features, targets, params.horizon)
    if params.common_period and len(wanted) > 1:
        dataset = common_period(dataset)
    if dataset.X.empty:
        raise NoDataError(
            "the training set is empty: not enough validated history after the indicator warm-up"
        )
    version = file_md5(features_file)
    log.info("training set: %d rows from Feast, data version %s", len(dataset.X), version)
    return dataset, version
