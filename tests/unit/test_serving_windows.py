"""FeatureWindows on real CSI 300 / S&P 500 features: rows equal training's inputs, cached per file."""

from __future__ import annotations

import threading
import time
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fixtures_training import real_dataset

from finstream.config import Settings
from finstream.errors import StoreUnavailable, UnknownSymbol
from finstream.feature_table import build_features
from finstream.models.inputs import MODEL_FEATURES
from finstream.models.windows import FeatureWindows, InsufficientHistory
from finstream.sources.packaged import PackagedSource
from finstream.storage import write_parquet_atomic
from finstream.symbols import parse_symbol
from training.dataset import dataset_from_frames

SYMBOLS = ("000300.SH", "^GSPC")


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    """The real bars behind fixtures_training.real_dataset(): CSI 300 and S&P 500, 2010-2018."""
    src = PackagedSource(Settings())
    frames = [src.fetch(parse_symbol(s), date(2010, 1, 1), date(2018, 12, 31)) for s in SYMBOLS]
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def features(bars: pd.DataFrame) -> pd.DataFrame:
    return build_features(bars)


@pytest.fixture
def home(settings: Settings, features: pd.DataFrame) -> Settings:
    """A FINSTREAM_HOME whose features parquet is what `finstream features` writes for those bars."""
    write_parquet_atomic(features, settings.paths.features)
    return settings


def _training_rows(symbol: str) -> tuple[np.ndarray, pd.DatetimeIndex]:
    """The symbol's rows of the training Dataset (model inputs, time order) and their event times."""
    ds = real_dataset()
    mask = (ds.X["symbol"] == symbol).to_numpy()
    times = pd.DatetimeIndex(pd.to_datetime(ds.event_time[mask], utc=True))
    return ds.X.loc[mask, ds.feature_names].to_numpy(np.float64), times


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_windows_equal_the_training_sets_rows(home: Settings, symbol: str) -> None:
    windows = FeatureWindows(home)
    X, times = _training_rows(symbol)
    assert real_dataset().feature_names == MODEL_FEATURES
    for end in (25, 700, len(times) - 1):  # several decision rows, the dataset's last one included
        rows = windows.latest(symbol, 20, as_of=times[end])
        np.testing.assert_array_equal(rows.values, X[end - 19 : end + 1])
        assert list(pd.DatetimeIndex(rows.timestamps).tz_localize("UTC")) == list(times[end - 19 : end + 1])
        assert rows.as_of == times[end].to_pydatetime() and rows.columns == tuple(MODEL_FEATURES)
    # the newest bar has no next-period target yet, so training has no row for it; serving does
    newest = windows.latest(symbol, 3)
    np.testing.assert_array_equal(newest.values[:2], X[-2:])
    assert newest.as_of > times[-1].to_pydatetime()
    assert windows.count(symbol) == len(times) + 1


def test_column_order_and_pooled_symbol_indicators(home: Settings) -> None:
    windows = FeatureWindows(home)
    full = windows.latest("^GSPC", 4)
    columns = ["rsi_14", "is_000300.SH", "sma_20_rel", "is_^GSPC", "logret_1"]
    rows = windows.latest("^GSPC", 4, columns=columns)
    assert rows.columns == tuple(columns)
    frame = rows.frame()
    assert list(frame.columns) == columns and str(frame.index.tz) == "UTC"
    for name in ("rsi_14", "sma_20_rel", "logret_1"):
        np.testing.assert_array_equal(frame[name].to_numpy(), full.frame()[name].to_numpy())
    assert (frame["is_^GSPC"] == 1.0).all() and (frame["is_000300.SH"] == 0.0).all()
    rows.values[:] = 0.0  # a copy: the cache is untouched
    assert windows.latest("^GSPC", 4, columns=columns).values[0, 0] == full.frame()["rsi_14"].iloc[0]
    with pytest.raises(StoreUnavailable, match="'close_lag_1'"):
        windows.latest("^GSPC", 4, columns=["close_lag_1"])


def test_rows_training_drops_are_dropped_here_too(
    home: Settings, features: pd.DataFrame, bars: pd.DataFrame
) -> None:
    """A row with an infinite input (e.g. a zero-volume day's volume ratio) is left out, as assemble does."""
    edited = features.copy()
    i = int(np.flatnonzero(edited["symbol"].to_numpy() == "000300.SH")[500])
    edited.loc[i, "volume_ratio_5"] = np.inf
    write_parquet_atomic(edited, home.paths.features)
    ds = dataset_from_frames(edited, bars)
    mask = (ds.X["symbol"] == "000300.SH").to_numpy()
    X = ds.X.loc[mask, ds.feature_names].to_numpy(np.float64)
    times = pd.DatetimeIndex(pd.to_datetime(ds.event_time[mask], utc=True))
    gone = pd.Timestamp(edited.loc[i, "event_timestamp"])
    assert gone not in times
    after = int(times.searchsorted(gone))
    rows = FeatureWindows(home).latest("000300.SH", 10, as_of=times[after + 3])
    np.testing.assert_array_equal(rows.values, X[after - 6 : after + 4])
    assert gone.to_datetime64() not in rows.timestamps


def test_errors_name_the_fix(settings: Settings, home: Settings) -> None:
    windows = FeatureWindows(home)
    with pytest.raises(UnknownSymbol, match=r"600036\.SH") as unknown:
        windows.latest("600036.SH", 5)
    assert unknown.value.symbols == ["600036.SH"]
    with pytest.raises(InsufficientHistory, match="2128 usable feature rows, the window needs 5000"):
        windows.latest("000300.SH", 5000)
    first = windows.latest("000300.SH", 1, as_of=datetime(2010, 4, 7, tzinfo=UTC))
    with pytest.raises(InsufficientHistory, match="up to 2010-04-07"):
        windows.latest("000300.SH", 10, as_of=datetime(2010, 4, 7, tzinfo=UTC))
    assert first.as_of.date() == date(2010, 4, 6)
    with pytest.raises(ValueError, match="n must be >= 1"):
        windows.latest("000300.SH", 0)
    assert windows.latest("sh000300", 2).symbol == "000300.SH"  # an alias resolves to the canonical symbol
    assert windows.symbols() == SYMBOLS
    empty = FeatureWindows(settings, path=Path(settings.paths.features).with_name("missing.parquet"))
    with pytest.raises(StoreUnavailable, match="run `finstream features`"):
        empty.latest("000300.SH", 5)
    broken = settings.paths.features.with_name("broken.parquet")
    broken.write_bytes(b"not parquet")
    with pytest.raises(StoreUnavailable, match="rebuild it with `finstream features`"):
        FeatureWindows(settings, path=broken).latest("000300.SH", 5)


def test_cached_per_file_version_and_reread_after_a_rewrite(
    home: Settings, features: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    import finstream.models.windows as sw

    reads: list[object] = []
    real_read = sw.pq.read_table
    monkeypatch.setattr(sw.pq, "read_table", lambda *a, **k: reads.append(1) or real_read(*a, **k))
    windows = FeatureWindows(home)
    first = windows.latest("000300.SH", 10)
    timings = []
    for _ in range(300):
        t0 = time.perf_counter()
        windows.latest("000300.SH", 10, columns=MODEL_FEATURES)
        timings.append(time.perf_counter() - t0)
    assert len(reads) == 1
    assert float(np.median(timings)) < 1e-3  # measured ~20 µs: a stat and a slice

    # the pipeline rewrites the file (atomically) without the last week: the next request sees it
    write_parquet_atomic(features[features["event_timestamp"] < "2018-12-21"], home.paths.features)
    second = windows.latest("000300.SH", 10)
    assert len(reads) == 2 and second.as_of < first.as_of


def test_concurrent_readers_during_rewrites(home: Settings, features: pd.DataFrame) -> None:
    windows = FeatureWindows(home)
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                rows = windows.latest("^GSPC", 20)
                assert rows.values.shape == (20, len(MODEL_FEATURES)) and np.isfinite(rows.values).all()
            except BaseException as exc:  # collected for the main thread
                errors.append(exc)
                return

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for k in range(5):
        write_parquet_atomic(features.iloc[: len(features) - k], home.paths.features)
        time.sleep(0.02)
    stop.set()
    for t in threads:
        t.join()
    assert errors == []
