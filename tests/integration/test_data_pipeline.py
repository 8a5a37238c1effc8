"""The data stages end to end on real packaged history: CLI stage by stage, and the Prefect flow."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from finstream.cli.main import app
from finstream.config import Settings
from finstream.storage import BarTable

pytestmark = pytest.mark.integration


def run(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_stages_via_cli_keep_stored_data_when_bad_rows_arrive(settings: Settings, tmp_path: Path) -> None:
    home = settings.paths
    run(
        "ingest",
        "--symbols",
        "000300.SH,^GSPC",
        "--source",
        "packaged",
        "--start",
        "2016-01-01",
        "--end",
        "2018-12-31",
    )
    raw = BarTable(home.raw_bars).read()
    assert set(raw["source"]) == {"packaged"}
    run("validate")
    assert len(BarTable(home.validated_bars).read()) == len(raw)

    # a user's CSV brings a corrected-but-broken bar for an existing day and a new bad day
    csv = tmp_path / "csi.csv"
    csv.write_text(
        "date,open,high,low,close,volume\n"
        "2018-12-28,3000.0,2900.0,3010.0,3005.0,100\n"  # high < low: quarantined
        "2019-01-02,3017.1,3018.8,2958.5,2969.5,-5\n",  # negative volume: quarantined
        encoding="utf-8",
    )
    run("ingest", "--symbols", "000300.SH", "--source", f"csv:{csv}")
    raw2 = BarTable(home.raw_bars).read()
    assert len(raw2) == len(raw) + 1  # the corrected day replaced its row, the new day was added
    gspc_before = raw[raw["symbol"] == "^GSPC"].reset_index(drop=True)
    pd.testing.assert_frame_equal(raw2[raw2["symbol"] == "^GSPC"].reset_index(drop=True), gspc_before)

    validated_before = BarTable(home.validated_bars).read()
    run("validate")
    clean = BarTable(home.validated_bars).read()
    quarantine = BarTable(home.quarantine).read()
    assert len(quarantine) == 2
    # the bad replacement of 2018-12-28 is quarantined and the stored good version of that bar is kept
    assert len(clean) == len(raw2) - len(quarantine) + 1
    pd.testing.assert_frame_equal(clean, validated_before)
    reasons = dict(zip(quarantine["ts"].dt.date.astype(str), quarantine["reasons"], strict=True))
    assert "high >= low" in reasons["2018-12-28"]
    assert "volume >= 0" in reasons["2019-01-02"]

    out = run("features")
    assert "indicators" in out
    features = pd.read_parquet(home.features)
    csi_last = features[features["symbol"] == "000300.SH"].iloc[-1]
    good = raw[(raw["symbol"] == "000300.SH")].iloc[-1]
    assert csi_last["event_timestamp"] == good["ts"]  # 2018-12-28, the kept good bar
    assert csi_last["close"] == good["close"] != 3005.0

    run("materialize")
    from finstream import featurestore

    online = featurestore.online_features(featurestore.open_store(settings), ["000300.SH", "^GSPC"])
    latest = features.sort_values("event_timestamp").groupby("symbol").tail(1).set_index("symbol")
    for _, row in online.iterrows():
        assert row["close"] == pytest.approx(latest.loc[row["symbol"], "close"])
        assert row["rsi_14"] == pytest.approx(latest.loc[row["symbol"], "rsi_14"])


def test_prefect_flow_runs_all_stages(settings: Settings) -> None:
    from prefect.testing.utilities import prefect_test_harness

    from flows.data_pipeline import data_pipeline

    with prefect_test_harness(server_startup_timeout=120):
        result = data_pipeline(symbols="000300.SH,^IXIC", source="packaged", start=None, end=None)
    assert [s.provider for s in result.ingest.symbols] == ["packaged", "packaged"]
    assert sum(s.stored for s in result.ingest.symbols) == 4857 + 5031
    assert result.validate.input == result.validate.clean + result.validate.quarantined == 4857 + 5031
    assert result.features.rows == result.validate.clean - 2 * 59  # warm-up rows dropped per symbol
    assert result.materialize.keys_written == 2
    assert {r["symbol"] for r in result.materialize.latest} == {"000300.SH", "^IXIC"}
    assert Path(result.validate.report_path).is_file()
