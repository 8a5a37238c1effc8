"""The wire format of a bar on the bus: flat string fields for XADD, and the checks a bus must make.

One bar is one stream entry with these fields (all strings, as Redis stores them)::

    v          "1"                      format version (optional on read; any other value is rejected)
    symbol     "AAPL", "600036.SH"      canonical form (`finstream.symbols.parse_symbol(s).canonical == s`)
    interval   "1m" ... "1d"            one of `finstream.intervals.INTERVALS`
    ts         "1785331860000000000"    bar close time, integer nanoseconds since the Unix epoch, UTC
    open high low close volume          decimal floats written with `repr` (shortest exact round trip)
    amount     optional                 traded value; absent when the source has none
    source     optional                 the provider that served the bar

Why `ts` is integer nanoseconds and not ISO-8601: it is exactly what the Bar frame holds
(`datetime64[ns, UTC]`), so bar -> message -> bar is lossless; it has one spelling per instant (ISO has
`Z`/`+00:00`, varying fraction digits, and naive strings that look valid), so one bar key cannot arrive
in two forms; the consumer's idempotency state compares it as an integer without parsing; and `int()`
costs ~0.1 µs where an ISO parse costs microseconds. `BarMessage.ts` gives the Timestamp back.

What the bus rejects (`BadMessage`): what makes an entry not a bar at all or breaks the consumers'
keys: missing fields, an unparseable or non-canonical symbol (it must map to one series and one
partition), an unknown interval, a ts that is not integer nanoseconds, non-numeric or non-finite prices,
volume or amount, negative volume or amount, and high < low. Whether a bar is *plausible* (open or close
outside [low, high], moves beyond a market's limit, zero volume) is the validation suite's question, not
the transport's; such bars pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

import numpy as np
import pandas as pd

from finstream.errors import FinstreamError, SymbolError
from finstream.intervals import INTERVALS
from finstream.symbols import parse_symbol

#: the wire format version this module writes and reads
VERSION = "1"
PRICE_FIELDS = ("open", "high", "low", "close")
#: fields every bar message carries
REQUIRED_FIELDS = ("symbol", "interval", "ts", *PRICE_FIELDS, "volume")
OPTIONAL_FIELDS = ("v", "amount", "source")
_REQUIRED = frozenset(REQUIRED_FIELDS)
_MAX_NS = 2**63 - 1


class BadMessage(FinstreamError, ValueError):
    """A stream entry that is not a valid bar message; `reason` says why (it goes to the dead letters)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class BarMessage:
    """One decoded bar; `ts_ns` is the bar's close time in integer nanoseconds since the epoch (UTC)."""

    symbol: str
    interval: str
    ts_ns: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    amount: float | None = None
    source: str | None = None

    @property
    def ts(self) -> pd.Timestamp:
        """The bar's close time as a UTC Timestamp."""
        return pd.Timestamp(self.ts_ns, unit="ns", tz="UTC")

    @property
    def series(self) -> tuple[str, str]:
        """The series the bar belongs to: (symbol, interval)."""
        return (self.symbol, self.interval)

    @property
    def key(self) -> tuple[str, str, int]:
        """What identifies the bar: (symbol, interval, ts_ns)."""
        return (self.symbol, self.interval, self.ts_ns)

    def to_fields(self) -> dict[str, str]:
        """The XADD fields of this bar."""
        fields = {
            "v": VERSION,
            "symbol": self.symbol,
            "interval": self.interval,
            "ts": str(self.ts_ns),
            "open": repr(self.open),
            "high": repr(self.high),
            "low": repr(self.low),
            "close": repr(self.close),
            "volume": repr(self.volume),
        }
        if self.amount is not None:
            fields["amount"] = repr(self.amount)
        if self.source is not None:
            fields["source"] = self.source
        return fields


@lru_cache(maxsize=65536)
def _canonical(symbol: str) -> str:
    """The canonical form of `symbol`; SymbolError if unparseable (cached: few symbols, many bars)."""
    return parse_symbol(symbol).canonical


def _check_symbol(text: str) -> str:
    try:
        canonical = _canonical(text)
    except SymbolError as exc:
        raise BadMessage(f"unknown symbol {text!r}: {exc}") from None
    if canonical != text:
        raise BadMessage(f"symbol {text!r} is not in canonical form (publish it as {canonical!r})")
    return text


def _check_interval(text: str) -> str:
    if text not in INTERVALS:
        raise BadMessage(f"unknown interval {text!r}; supported: {', '.join(INTERVALS)}")
    return text


def _number(name: str, text: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise BadMessage(f"{name} is not a number: {text!r}") from None
    if not math.isfinite(value):
        raise BadMessage(f"{name} is not finite: {text!r}")
    return value


def _check_values(
    open_: float, high: float, low: float, close: float, volume: float, amount: float | None
) -> None:
    """The consistency a bus needs: no negative volume or amount, and a non-inverted range."""
    if volume < 0:
        raise BadMessage(f"negative volume {volume!r}")
    if amount is not None and amount < 0:
        raise BadMessage(f"negative amount {amount!r}")
    if high < low:
        raise BadMessage(f"high {high!r} is below low {low!r}")


def _ts_ns(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) > _MAX_NS:
        raise BadMessage(
            f"ts must be the bar close time in integer nanoseconds since the epoch, got {text!r}"
        )
    return int(text)


def decode_bar(fields: Mapping[str, str]) -> BarMessage:
    """The bar in a stream entry's fields; BadMessage(reason) when it is not one (see the module doc)."""
    version = fields.get("v", VERSION)
    if version != VERSION:
        raise BadMessage(f"unsupported message version {version!r} (this consumer reads {VERSION!r})")
    if not _REQUIRED.issubset(fields.keys()):
        missing = [name for name in REQUIRED_FIELDS if name not in fields]
        raise BadMessage(f"missing field(s) {', '.join(missing)}")
    symbol = _check_symbol(fields["symbol"])
    interval = _check_interval(fields["interval"])
    ts_ns = _ts_ns(fields["ts"])
    open_ = _number("open", fields["open"])
    high = _number("high", fields["high"])
    low = _number("low", fields["low"])
    close = _number("close", fields["close"])
    volume = _number("volume", fields["volume"])
    amount_text = fields.get("amount")
    amount = _number("amount", amount_text) if amount_text is not None else None
    _check_values(open_, high, low, close, volume, amount)
    return BarMessage(symbol, interval, ts_ns, open_, high, low, close, volume, amount, fields.get("source"))


def _ts_to_ns(ts: int | datetime | pd.Timestamp | np.datetime64) -> int:
    if isinstance(ts, int | np.integer) and not isinstance(ts, bool):
        value = int(ts)
        if not 0 <= value <= _MAX_NS:
            raise BadMessage(f"ts {value} is outside the nanosecond range of a bar close time")
        return value
    try:
        stamp = pd.Timestamp(ts)
    except (TypeError, ValueError) as exc:
        raise BadMessage(f"ts {ts!r} is not a timestamp ({exc})") from None
    if stamp is pd.NaT or stamp.tzinfo is None:
        raise BadMessage(f"ts {ts!r} must be a timezone-aware bar close time (UTC in storage)")
    return _ts_to_ns(int(stamp.tz_convert("UTC").as_unit("ns").value))


def _as_float(name: str, value: object) -> float:
    """`value` as a finite float; BadMessage when it is not a number or not finite."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise BadMessage(f"{name} is not a number: {value!r}") from None
    if not math.isfinite(number):
        raise BadMessage(f"{name} is not finite: {value!r}")
    return number


def _optional_float(name: str, value: object) -> float | None:
    """None for a missing amount (None or NaN), else a finite float."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return _as_float(name, value)


def make_bar(
    symbol: str,
    interval: str,
    ts: int | datetime | pd.Timestamp | np.datetime64,
    open: float,
    high: float,
    low: float,
    close: float,
    volume: float,
    amount: float | None = None,
    source: str | None = None,
) -> BarMessage:
    """A checked BarMessage from Python values: the symbol is canonicalised (`sh600036` -> `600036.SH`),
    `ts` is integer nanoseconds or a timezone-aware timestamp, a NaN amount means none.

    Raises BadMessage for what `decode_bar` would reject, so a producer fails before it publishes.
    """
    try:
        canonical = _canonical(str(symbol).strip())
    except SymbolError as exc:
        raise BadMessage(f"unknown symbol {symbol!r}: {exc}") from None
    open_, high_, low_, close_ = (
        _as_float(n, v) for n, v in zip(PRICE_FIELDS, (open, high, low, close), strict=True)
    )
    volume_ = _as_float("volume", volume)
    amount_ = _optional_float("amount", amount)
    _check_values(open_, high_, low_, close_, volume_, amount_)
    source_ = source if isinstance(source, str) and source else None
    return BarMessage(
        canonical,
        _check_interval(interval),
        _ts_to_ns(ts),
        open_,
        high_,
        low_,
        close_,
        volume_,
        amount_,
        source_,
    )


def encode_bar(
    symbol: str,
    interval: str,
    ts: int | datetime | pd.Timestamp | np.datetime64,
    open: float,
    high: float,
    low: float,
    close: float,
    volume: float,
    amount: float | None = None,
    source: str | None = None,
) -> dict[str, str]:
    """The XADD fields of one bar (see `make_bar` for what is accepted and checked)."""
    return make_bar(symbol, interval, ts, open, high, low, close, volume, amount, source).to_fields()


def bars_from_frame(frame: pd.DataFrame) -> list[BarMessage]:
    """Checked BarMessages from a Bar-schema frame (`finstream.schema.to_bar_frame`), in row order.

    BadMessage names the first offending row, so a producer publishes all of a frame or none of it.
    """
    missing = [c for c in ("symbol", "interval", "ts", *PRICE_FIELDS, "volume") if c not in frame.columns]
    if missing:
        raise BadMessage(f"bar frame lacks column(s) {', '.join(missing)}")
    ts = pd.Series(frame["ts"].array)
    if not isinstance(ts.dtype, pd.DatetimeTZDtype):
        raise BadMessage("bar frame column 'ts' must be timezone-aware (bar close time, UTC)")
    ts_ns = ts.dt.tz_convert("UTC").dt.as_unit("ns").array.asi8.tolist()
    columns = [frame[c].tolist() for c in ("symbol", "interval", *PRICE_FIELDS, "volume")]
    amounts = frame["amount"].tolist() if "amount" in frame.columns else [None] * len(frame)
    sources = frame["source"].tolist() if "source" in frame.columns else [None] * len(frame)
    out: list[BarMessage] = []
    for row, values in enumerate(zip(*columns, ts_ns, amounts, sources, strict=True)):
        symbol, interval, open_, high, low, close, volume, ns, amount, source = values
        try:
            out.append(make_bar(symbol, interval, ns, open_, high, low, close, volume, amount, source))
        except BadMessage as exc:
            raise BadMessage(f"row {row} ({symbol} {interval} {ts.iloc[row]}): {exc.reason}") from None
    return out
