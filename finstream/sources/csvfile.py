"""`csv:PATH` — a user's own OHLCV file, with English or AkShare-style Chinese headers.

The file's bar interval is told from its timestamps (`finstream.intervals.detect_interval`) and its bars
are stored at that interval. When the caller asks for another interval (`finstream ingest --interval`), the
file is refused with one line saying what it holds, unless the user asks to aggregate (`--resample 1d` or a
coarser intraday interval): open first, high max, low min, close last, volume sum, within each
exchange-local day (daily) or each bar period (intraday). Never silently collapsed.

Times: timestamps with a UTC offset keep it; naive ones are read in the market's exchange zone (or `tz`).
Intraday rows are stamped by the bar's *open* time in most exports (Yahoo, MetaTrader, TradingView,
exchange klines), so `bar_time="open"` (the default) adds the interval to get finstream's close time;
`bar_time="close"` keeps the stamps. Daily rows are stamped with the market's close.
"""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path

import pandas as pd

from finstream.config import Settings
from finstream.errors import SchemaError, SourceError
from finstream.intervals import (
    DAILY,
    INTERVALS,
    aggregate_bars,
    check_interval,
    detect_interval,
    resample_daily,
)
from finstream.schema import daily_close_ts, to_bar_frame
from finstream.sources.base import Source, clip_dates
from finstream.symbols import Symbol, infer_cn_symbol, parse_symbol

log = logging.getLogger(__name__)

#: accepted header names per Bar column (compared case-insensitively, spaces/underscores ignored)
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "date": (
        "date",
        "datetime",
        "timestamp",
        "time",
        "tradedate",
        "trade_date",
        "day",
        "日期",
        "交易日期",
        "时间",
    ),
    "open": ("open", "openprice", "开盘", "开盘价"),
    "high": ("high", "highprice", "最高", "最高价"),
    "low": ("low", "lowprice", "最低", "最低价"),
    "close": ("close", "closeprice", "price", "last", "收盘", "收盘价"),
    "volume": ("volume", "vol", "成交量"),
    "amount": ("amount", "turnover", "value", "成交额"),
    "symbol": ("symbol", "ticker", "code", "tscode", "ts_code", "股票代码", "代码"),
}
REQUIRED = ("date", "open", "high", "low", "close", "volume")
DATE_FORMATS = ("%Y-%m-%d", "%Y%m%d", "%Y/%m/%d", "%m/%d/%Y", "%d/%m/%Y", "%d.%m.%Y", "%Y-%m-%d %H:%M:%S")


def _canonical(value: str) -> str:
    """Canonical form of a symbol cell; a bare 6-digit code (AkShare's 股票代码) is taken as an A-share."""
    text = str(value).strip()
    return infer_cn_symbol(text).canonical if text.isdigit() else parse_symbol(text).canonical


def _norm(name: str) -> str:
    return str(name).strip().lower().replace(" ", "").replace("_", "").replace("-", "")


def map_columns(columns: list[str], path: str) -> dict[str, str]:
    """Map file headers to Bar columns; SchemaError naming the column that cannot be found."""
    by_norm = {_norm(c): c for c in columns}
    found: dict[str, str] = {}
    for target, aliases in COLUMN_ALIASES.items():
        for alias in aliases:
            if _norm(alias) in by_norm:
                found[target] = by_norm[_norm(alias)]
                break
    for target in REQUIRED:
        if target not in found:
            raise SchemaError(
                f"{path}: cannot find a '{target}' column; file columns are {list(columns)}; "
                f"accepted names: {', '.join(COLUMN_ALIASES[target])}"
            )
    return found


def parse_dates(values: pd.Series, path: str) -> pd.Series:
    """Parse a date column, detecting the format; day/month ambiguity is settled by time order."""
    text = values.astype(str).str.strip()
    candidates: list[pd.Series] = []
    for fmt in DATE_FORMATS:
        parsed = pd.to_datetime(text, format=fmt, errors="coerce")
        if parsed.notna().all():
            candidates.append(parsed)
    if not candidates:
        parsed = pd.to_datetime(text, errors="coerce", format="mixed")
        if parsed.isna().any():
            bad = text[parsed.isna()].iloc[0]
            raise SchemaError(
                f"{path}: cannot parse date {bad!r} (row {int(parsed.isna().idxmax()) + 2} of the file)"
            )
        candidates.append(parsed)
    distinct = [c for i, c in enumerate(candidates) if not any(c.equals(p) for p in candidates[:i])]
    if len(distinct) == 1:
        return distinct[0]
    # day/month ambiguity (every day <= 12): daily bars are days apart, the wrong reading months apart
    gaps = [c.sort_values().diff().dropna().abs().median() for c in distinct]
    if len(text) < 2 or sorted(gaps)[0] == sorted(gaps)[1]:
        raise SchemaError(f"{path}: ambiguous dates (day/month order cannot be told apart): {text.iloc[0]!r}")
    return distinct[gaps.index(min(gaps))]


def parse_times(values: pd.Series, path: str, tz: str) -> pd.Series:
    """Exchange-local timestamps (zone `tz`) of a date/time column: offsets kept, naive times read in `tz`."""
    text = values.astype(str).str.strip()
    offset = r"(?:[+-]\d{2}:?\d{2}|Z)$"
    if text.str.contains(r"[ T]00:00(?::00(?:\.0+)?)?" + offset, regex=True).all():
        # dates written as midnight with an offset: the written date is the trading day
        return parse_dates(text.str.slice(0, 10), path).dt.tz_localize(tz)
    if text.str.contains(offset, regex=True).all():
        parsed = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
        if parsed.isna().any():
            bad = text[parsed.isna()].iloc[0]
            raise SchemaError(f"{path}: cannot parse timestamp {bad!r}")
        return parsed.dt.tz_convert(tz)
    return parse_dates(values, path).dt.tz_localize(tz, ambiguous="raise", nonexistent="raise")


class CsvSource(Source):
    """Reads one CSV file; a `symbol` column selects rows, otherwise the file is one symbol's history."""

    name = "csv"
    live = False

    intervals = tuple(INTERVALS)

    def __init__(
        self,
        settings: Settings,
        path: str | Path,
        resample: str | None = None,
        *,
        tz: str | None = None,
        bar_time: str = "open",
    ) -> None:
        super().__init__(settings)
        self.path = Path(path).expanduser()
        self.resample = check_interval(resample) if resample is not None else None
        if bar_time not in ("open", "close"):
            raise SchemaError(f"bar_time must be 'open' or 'close', got {bar_time!r}")
        self.tz = tz
        self.bar_time = bar_time

    def detected_interval(self, symbol: Symbol) -> str:
        """The interval of `symbol`'s rows in the file, told from their timestamps."""
        values = self._values(symbol)
        return detect_interval(values["local_time"], str(self.path))

    def _read(self) -> pd.DataFrame:
        if not self.path.is_file():
            raise SourceError(f"CSV file not found: {self.path}")
        try:
            return pd.read_csv(self.path, encoding="utf-8-sig", dtype=str)
        except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise SourceError(f"cannot read CSV {self.path}: {exc}") from exc

    def symbols_in_file(self) -> list[str] | None:
        """Canonical symbols named in the file's symbol column, or None when it has none."""
        raw = self._read()
        cols = map_columns(list(raw.columns), str(self.path))
        if "symbol" not in cols:
            return None
        return sorted({_canonical(s) for s in raw[cols["symbol"]].dropna().unique()})

    def _values(self, symbol: Symbol) -> pd.DataFrame:
        """The file's rows for `symbol`: local_time (tz-aware) and the OHLCV(+amount) text columns."""
        raw = self._read()
        cols = map_columns(list(raw.columns), str(self.path))
        if "symbol" in cols:
            cells = raw[cols["symbol"]].astype(str).str.strip()
            raw = raw.loc[(cells == symbol.code) | (cells.map(_canonical) == symbol.canonical)]
            if raw.empty:
                raise SourceError(f"{self.path} has no rows for {symbol.canonical}")
        if raw.empty:
            raise SourceError(f"{self.path} has no data rows")
        return pd.DataFrame(
            {
                "local_time": parse_times(raw[cols["date"]], str(self.path), self.tz or symbol.tz).to_numpy(),
                **{c: raw[cols[c]].str.replace(",", "", regex=False).to_numpy() for c in REQUIRED[1:]},
                "amount": raw[cols["amount"]].to_numpy() if "amount" in cols else None,
            }
        )

    def fetch(
        self, symbol: Symbol, start: date | None, end: date | None, interval: str | None = None
    ) -> pd.DataFrame:
        """The file's bars of `symbol` at `interval` (None: as the file holds them); see the module doc."""
        values = self._values(symbol)
        held = detect_interval(values["local_time"], str(self.path))
        target = self.resample or interval or held
        if held != DAILY and self.bar_time == "open":
            values["local_time"] = symbol.exchange_market.close_times(values["local_time"], INTERVALS[held])
        if target != held:
            if self.resample is None or INTERVALS[target] <= INTERVALS[held]:
                raise SchemaError(
                    f"{self.path} holds {held} bars (told from its timestamps), not the {target} bars asked "
                    f"for: ingest with --interval {held} to store them as they are"
                    + (
                        f", or --resample {target} to aggregate them"
                        if INTERVALS[target] > INTERVALS[held]
                        else ""
                    )
                )
            read = len(values)
            values = resample_daily(values) if target == DAILY else aggregate_bars(values, target)
            log.info(
                "csv %s: %d %s bars aggregated to %d %s bars", self.path, read, held, len(values), target
            )
        if target == DAILY:
            if "date" not in values.columns:
                values["date"] = values["local_time"].dt.tz_localize(None).dt.normalize()
            ts = daily_close_ts(values["date"], symbol.tz, symbol.close_time.hour, symbol.close_time.minute)
        else:
            ts = pd.Series(values["local_time"].to_numpy())
        frame = pd.DataFrame(
            {
                "symbol": symbol.canonical,
                "ts": ts.array,
                **{c: values[c].to_numpy() for c in (*REQUIRED[1:], "amount")},
            }
        )
        bars = to_bar_frame(frame, source=f"csv:{self.path.name}", interval=target)
        log.info("csv %s: %d %s rows for %s", self.path, len(bars), target, symbol)
        return clip_dates(bars, start, end, symbol.tz)
