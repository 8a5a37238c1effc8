"""The training set `finstream train` uses: a point-in-time join in Feast at every validated bar's time."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from finstream.config import Settings
from finstream.errors import NoDataError
from finstream.models.inputs import STORE_FEATURES
from finstream.storage import read_bars
from finstream.symbols import parse_symbols
from training.dataset import Dataset, add_targets, assemble

log = logging.getLogger(__name__)


def file_md5(path: Path) -> str:
    """MD5 of a file: the same hash DVC records for it in dvc.lock (the data version of a run)."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
    bars = read_bars(paths.validated_bars, required=True, hint="run `finstream pipeline` first")
    bars = bars[bars["symbol"].isin(wanted)]
    missing = sorted(set(wanted) - set(bars["symbol"]))
    if missing:
        raise NoDataError(f"no validated bars for {missing}: ingest them first (`finstream pipeline -s ...`)")
    if not paths.features.exists():
        raise NoDataError(f"no features at {paths.features}: run `finstream pipeline` first")
    entity_df = bars[["symbol", "ts"]].rename(columns={"ts": "event_timestamp"})
    entity_df["event_timestamp"] = entity_df["event_timestamp"].dt.as_unit("us")
    store = featurestore.open_store(settings)
    featurestore.apply_definitions(store)
    features = featurestore.historical_features(store, entity_df, features=store_feature_refs())
    targets = add_targets(bars, params.horizon)
    targets["ts"] = targets["ts"].dt.as_unit("us")
    dataset = assemble(features, targets, params.horizon)
    if params.common_period and len(wanted) > 1:
        dataset = common_period(dataset)
    if dataset.X.empty:
        raise NoDataError(
            "the training set is empty: not enough validated history after the indicator warm-up"
        )
    version = file_md5(paths.features)
    log.info("training set: %d rows from Feast, data version %s", len(dataset.X), version)
    return dataset, version
