"""Feast feature store: point-in-time correctness on real history, config from Settings, error messages."""

from __future__ import annotations

import ast
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import fixtures_features as ff
import numpy as np
import pandas as pd
import pytest

from finstream import featurestore as fs
from finstream.config import Settings
from finstream.errors import ConfigError, NoDataError, SchemaError
from finstream.indicators.spec import feature_names

ROOT = Path(__file__).resolve().parents[2]
TTL = timedelta(days=30)


VALUE_COLUMNS = [*ff.PRICE_FEATURES, *feature_names()]


def _settings(home: Path, **kw: object) -> Settings:
    base: dict[str, object] = {
        "home": home,
        "redis_url": None,
        "online_store": None,
        "feast_project": "finstream",
    }
    return Settings(**{**base, **kw})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory):
    """A store over the real ~15k-row features parquet, definitions applied (SQLite online store)."""
    settings = _settings(tmp_path_factory.mktemp("fshome"))
    frame = ff.write_features(settings)
    store = fs.open_store(settings)
    fs.apply_definitions(store)
    return store, frame, settings


def _label_times(frame: pd.DataFrame) -> pd.DataFrame:
    """Label times per symbol: on bars, between bars, 1 s before a bar, inside the longest holiday, edges."""
    rows = []
    for symbol, grp in frame.groupby("symbol"):
        ts = grp["event_timestamp"].reset_index(drop=True)
        picks = [*range(0, len(ts) - 1, 97), len(ts) - 2]
        gaps = ts.diff()
        widest = int(gaps.idxmax()) - 1  # bar before the longest gap (CNY / 9-11 closures)
        labels = [ts[0] - pd.Timedelta(days=1), ts.iloc[-1], ts.iloc[-1] + pd.Timedelta(days=29)]
        labels.append(ts.iloc[-1] + pd.Timedelta(days=31))
        labels.append(ts[widest] + gaps[widest + 1] - pd.Timedelta(hours=1))
        for i in picks:
            labels += [ts[i], ts[i] + pd.Timedelta(hours=1), ts[i + 1] - pd.Timedelta(seconds=1)]
        rows += [(symbol, t) for t in labels]
    out = pd.DataFrame(rows, columns=["symbol", "event_timestamp"]).drop_duplicates()
    out["event_timestamp"] = pd.to_datetime(out["event_timestamp"], utc=True)
    return out.reset_index(drop=True)


def _expected(frame: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """For each label: the feature row with the latest event_timestamp <= label, if within the ttl."""
    out = []
    for symbol, label in labels.itertuples(index=False):
        grp = frame[frame["symbol"] == symbol].reset_index(drop=True)
        pos = int(grp["event_timestamp"].searchsorted(label, side="right")) - 1
        if pos >= 0 and label - grp["event_timestamp"][pos] <= TTL:
            values = grp.loc[pos, VALUE_COLUMNS].to_dict()
        else:
            values = dict.fromkeys(VALUE_COLUMNS, np.nan)
        out.append({"symbol": symbol, "event_timestamp": label, **values})
    return pd.DataFrame(out).sort_values(["symbol", "event_timestamp"], kind="stable").reset_index(drop=True)


def test_point_in_time_join_takes_latest_row_at_or_before_label(applied) -> None:
    store, frame, _ = applied
    labels = _label_times(frame)
    got = fs.historical_features(store, labels)
    want = _expected(frame, labels)
    assert list(got[["symbol", "event_timestamp"]].itertuples(index=False)) == list(
        want[["symbol", "event_timestamp"]].itertuples(index=False)
    )
    pd.testing.assert_frame_equal(
        got[VALUE_COLUMNS].astype("float64"), want[VALUE_COLUMNS].astype("float64"), check_exact=True
    )
    # Some labels must have no features (before the first bar, past the ttl): the join drops nothing else.
    empty = got["close"].isna()
    assert 0 < empty.sum() <= 2 * frame["symbol"].nunique()


def test_label_one_second_before_a_bar_never_sees_that_bar(applied) -> None:
    store, frame, _ = applied
    grp = frame[frame["symbol"] == "000300.SH"].reset_index(drop=True)
    bars = grp.iloc[[100, 101, 2000, 2001]]
    labels = pd.DataFrame(
        {
            "symbol": "000300.SH",
            "event_timestamp": [
                bars["event_timestamp"].iloc[1] - pd.Timedelta(seconds=1),
                bars["event_timestamp"].iloc[1],
            ],
        }
    )
    got = fs.historical_features(store, labels, features=["close", "sma_5", "technical_features:rsi_14"])
    assert list(got.columns) == ["symbol", "event_timestamp", "close", "sma_5", "rsi_14"]
    assert got["close"].tolist() == [bars["close"].iloc[0], bars["close"].iloc[1]]
    assert got["sma_5"].tolist() == [bars["sma_5"].iloc[0], bars["sma_5"].iloc[1]]
    assert bars["close"].iloc[0] != bars["close"].iloc[1]


def test_holiday_gap_is_inside_the_ttl(applied) -> None:
    """The longest break between two bars (CNY 2006: 12 days) must not drop the last pre-holiday row."""
    _, frame, _ = applied
    widest = frame.groupby("symbol")["event_timestamp"].diff().max()
    assert widest < TTL
    definitions = fs._load_definitions()
    assert definitions.TTL == TTL


def test_materialize_window_writes_latest_row_per_symbol_to_sqlite(applied) -> None:
    store, frame, _ = applied
    end = pd.Timestamp("2010-06-30 07:00", tz="UTC")  # a CSI 300 close, included (closed interval)
    written = fs.materialize(store, "2010-06-01", end)
    assert written == 3
    online = fs.online_features(store, ["000300.SH", "^GSPC", "^IXIC"], features=["close", "sma_20"])
    latest = frame[frame["event_timestamp"] <= end].groupby("symbol").tail(1).set_index("symbol")
    assert online["symbol"].tolist() == ["000300.SH", "^GSPC", "^IXIC"]
    for row in online.itertuples(index=False):
        assert row.close == latest.loc[row.symbol, "close"]
        assert row.sma_20 == latest.loc[row.symbol, "sma_20"]
    assert latest.loc["000300.SH", "event_timestamp"] == end
    assert fs.materialize(store, "2025-06-01", "2025-12-31T23:59:59Z") == 1  # only CSI 300 reaches 2025


def test_unknown_feature_name_is_a_config_error(applied) -> None:
    store, _, _ = applied
    labels = pd.DataFrame({"symbol": ["^GSPC"], "event_timestamp": [pd.Timestamp("2010-01-05", tz="UTC")]})
    with pytest.raises(ConfigError, match="unknown feature 'nope'"):
        fs.historical_features(store, labels, features=["nope"])
    with pytest.raises(ConfigError, match="entity_df needs"):
        fs.historical_features(store, labels.rename(columns={"symbol": "ticker"}))


def test_missing_features_parquet_says_run_features_first(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    store = fs.open_store(settings)
    with pytest.raises(NoDataError, match="run `finstream features` first"):
        fs.apply_definitions(store)
    ff.write_features(settings, ff.real_features().head(50))
    fs.apply_definitions(store)
    settings.paths.features.unlink()
    labels = pd.DataFrame({"symbol": ["^GSPC"], "event_timestamp": [pd.Timestamp("2010-01-05", tz="UTC")]})
    with pytest.raises(NoDataError, match="run `finstream features` first"):
        fs.historical_features(store, labels)
    with pytest.raises(NoDataError, match="run `finstream features` first"):
        fs.materialize(store, "2000-01-01", "2001-01-01")


def test_nanosecond_timestamps_get_an_actionable_error(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    frame = ff.real_features().head(50)
    frame["event_timestamp"] = frame["event_timestamp"].dt.as_unit("ns")
    ff.write_features(settings, frame)
    store = fs.open_store(settings)
    fs.apply_definitions(store)
    with pytest.raises(SchemaError, match=r"as_unit\('us'\)"):
        fs.materialize(store, "1999-01-01", "2001-01-01")


# --- configuration ---------------------------------------------------------------------------------------


def test_sqlite_is_the_default_online_store(tmp_path: Path) -> None:
    settings = _settings(tmp_path, feast_project="fs_unit")
    cfg = fs.repo_config(settings)
    assert cfg.project == "fs_unit"
    assert cfg.online_store.type == "sqlite"
    assert cfg.online_store.path == str(settings.paths.feast_online)
    assert cfg.registry.path == str(settings.paths.feast_registry)
    assert cfg.offline_store.type == "duckdb"
    assert cfg.entity_key_serialization_version == 3


def test_redis_url_selects_redis_with_feast_connection_string(tmp_path: Path) -> None:
    from feast.infra.online_stores.redis import RedisOnlineStore

    cfg = fs.repo_config(_settings(tmp_path, redis_url="redis://127.0.0.1:6379/15"))
    assert cfg.online_store.type == "redis"
    assert cfg.online_store.connection_string == "127.0.0.1:6379,db=15"
    nodes, params = RedisOnlineStore._parse_connection_string(cfg.online_store.connection_string)
    assert nodes == [{"host": "127.0.0.1", "port": "6379"}]
    assert params == {"db": 15}


def test_explicit_online_store_wins(tmp_path: Path) -> None:
    sqlite = fs.repo_config(_settings(tmp_path, redis_url="redis://h:1/2", online_store="sqlite"))
    assert sqlite.online_store.type == "sqlite"
    redis = fs.repo_config(_settings(tmp_path, online_store="redis"))
    assert redis.online_store.connection_string == "localhost:6379,db=0"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://localhost:6379", "localhost:6379,db=0"),
        ("redis://127.0.0.1:6379/15", "127.0.0.1:6379,db=15"),
        ("redis://redis", "redis:6379,db=0"),
        ("redis://:s3cret@cache.internal:6380/2", "cache.internal:6380,db=2,password=s3cret"),
        ("rediss://app:p%40ss@cache:6379/1", "cache:6379,db=1,username=app,password=p@ss,ssl=true"),
        ("redis://h:6379/0?socket_timeout=2", "h:6379,db=0,socket_timeout=2"),
        ("redis-a:6379,db=3", "redis-a:6379,db=3"),
    ],
)
def test_redis_url_conversion(url: str, expected: str) -> None:
    assert fs.redis_connection_string(url) == expected


@pytest.mark.parametrize(
    "url", ["http://h:6379/0", "unix:///tmp/redis.sock", "redis://h:6379/x", "redis:///0"]
)
def test_unusable_redis_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        fs.redis_connection_string(url)


def test_feature_store_yaml_matches_settings_defaults() -> None:
    from feast.repo_config import load_repo_config

    repo = ROOT / "feature_repo"
    cfg = load_repo_config(repo, repo / "feature_store.yaml")
    ours = fs.repo_config(_settings(ROOT / ".finstream"))
    assert cfg.project == ours.project
    assert (repo / cfg.registry.path).resolve() == Path(ours.registry.path)
    assert (repo / cfg.online_store.path).resolve() == Path(ours.online_store.path)
    assert cfg.offline_store.type == "duckdb"
    assert cfg.entity_key_serialization_version == 3


def test_redis_yaml_expands_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Feast 0.67 runs os.path.expandvars over feature_store.yaml (set vars only; no ${VAR:-default})."""
    from feast.repo_config import load_repo_config

    repo = ROOT / "feature_repo"
    monkeypatch.setenv("FINSTREAM_FEAST_REDIS", "127.0.0.1:6379,db=15")
    cfg = load_repo_config(repo, repo / "feature_store.redis.yaml")
    assert cfg.online_store.connection_string == "127.0.0.1:6379,db=15"
    monkeypatch.delenv("FINSTREAM_FEAST_REDIS")
    cfg = load_repo_config(repo, repo / "feature_store.redis.yaml")
    assert cfg.online_store.connection_string == "${FINSTREAM_FEAST_REDIS}"


def test_definitions_objects_and_imports() -> None:
    module = fs._load_definitions()
    assert not hasattr(module, "price_features"), "CLI-only objects (and their mkdir) built on library load"
    objects = module.build(_settings(Path("/data/home")))
    assert objects["features_file"].path == "/data/home/data/features/1d.parquet"
    assert objects["market_push"].batch_source is objects["features_file"]
    tech = objects["technical_features"]
    assert [f.name for f in tech.features] == feature_names()
    assert [f.name for f in objects["price_features"].features] == ff.PRICE_FEATURES
    assert tech.stream_source.name == "market_push"
    assert {p.name for p in objects["model_features"].feature_view_projections} == {
        "price_features",
        "technical_features",
    }
    tree = ast.parse((ROOT / "feature_repo" / "definitions.py").read_text())
    project_imports = {
        n.module
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("finstream")
    }
    assert project_imports <= {"finstream.config", "finstream.indicators.spec"}


def test_importing_the_wrapper_does_not_import_feast() -> None:
    code = "import sys, finstream.featurestore; assert 'feast' not in sys.modules, 'feast imported eagerly'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
