"""`csv:PATH` — a user's own OHLCV file, with English or AkShare-style Chinese headers.

The file's bar interval is told from its timestamps (`finstream.intervals.detect_interval`). finstream
stores daily bars: a daily file is read as it is; an intraday file is refused with one line saying what it
holds, unless the user asks for `resample="1d"` (`finstream ingest --resample 1d`), which aggregates the
bars within each exchange-local day. Timestamps with a UTC offset keep it; naive ones are read in the
market's exchange time.
"""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path

import pandas as pd

from finstream.config import Settings
from finstream.errors import SchemaError, SourceError
from finstream.intervals import DAILY, detect_interval, resample_daily
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

    def __init__(self, settings: Settings, path: str | Path, resample: str | None = None) -> None:
        super().__init__(settings)
        self.path = Path(path).expanduser()
        if resample not in (None, DAILY):
            raise SchemaError(f"resample to {resample!r} is not supported: finstream stores {DAILY} bars")
        self.resample = resample

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

    def fetch(self, symbol: Symbol, start: date | None, end: date | None) -> pd.DataFrame:
        raw = self._read()
        cols = map_columns(list(raw.columns), str(self.path))
        if "symbol" in cols:
            cells = raw[cols["symbol"]].astype(str).str.strip()
            raw = raw.loc[(cells == symbol.code) | (cells.map(_canonical) == symbol.canonical)]
            if raw.empty:
                raise SourceError(f"{self.path} has no rows for {symbol.canonical}")
        if raw.empty:
            raise SourceError(f"{self.path} has no data rows")
        values = pd.DataFrame(
            {
                "local_time": parse_times(raw[cols["date"]], str(self.path), symbol.tz).to_numpy(),
                **{c: raw[cols[c]].str.replace(",", "", regex=False).to_numpy() for c in REQUIRED[1:]},
                "amount": raw[cols["amount"]].to_numpy() if "amount" in cols else None,
            }
        )
        interval = detect_interval(values["local_time"], str(self.path))
        if interval == DAILY:
            values["date"] = values["local_time"].dt.tz_localize(None).dt.normalize()
        elif self.resample == DAILY:
            read = len(values)
            values = resample_daily(values)
            log.info("csv %s: %d %s bars resampled to %d daily bars", self.path, read, interval, len(values))
        else:
            raise SchemaError(
                f"{self.path} holds {interval} bars (told from its timestamps) and finstream stores {DAILY} "
                f"bars: refusing to collapse them; ingest with --resample {DAILY} to aggregate each day "
                "(open first, high max, low min, close last, volume sum)"
            )
        frame = pd.DataFrame(
            {
                "symbol": symbol.canonical,
                "ts": daily_close_ts(
                    values["date"], symbol.tz, symbol.close_time.hour, symbol.close_time.minute
                ).array,
                **{c: values[c].to_numpy() for c in (*REQUIRED[1:], "amount")},
            }
        )
        bars = to_bar_frame(frame, source=f"csv:{self.path.name}")
        log.info("csv %s: %d rows for %s", self.path, len(bars), symbol)
        return clip_dates(bars, start, end, symbol.tz)
