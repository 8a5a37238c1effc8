"""The last N model-input rows of a symbol, read from the features parquet: history for windowed models.

The online store holds one row per symbol; the RL agent (`finstream.models.agent`) and sequence models need
the
window of rows before it. The rows are exactly what training feeds models: the `features` stage's parquet
(`Paths.features`, the file Feast's offline store reads), turned into inputs by
`finstream.models.inputs.model_inputs`, with the rows dropped that `training.dataset.assemble` drops (any
input
NaN or ±inf). So a symbol's rows here are its training rows in time order, plus the newest bars whose
next-period target is not known yet (training needs the target; a server does not).

The file is parsed once per version, keyed on (path, mtime_ns, size): a request costs a stat and a slice
(tens of µs), and a file the pipeline rewrites (atomically, `finstream.storage.write_parquet_atomic`) is
picked up by the next request.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from finstream.config import Settings
from finstream.errors import FinstreamError, StoreUnavailable, SymbolError, UnknownSymbol
from finstream.file_snapshots import FileSnapshots
from finstream.models.inputs import MODEL_FEATURES, ONEHOT_PREFIX, STORE_FEATURES, model_inputs
from finstream.symbols import parse_symbol

log = logging.getLogger(__name__)

SYMBOL_COLUMN = "symbol"
TIME_COLUMN = "event_timestamp"
_FEATURE_INDEX = {name: i for i, name in enumerate(MODEL_FEATURES)}


class UnknownFeatureSymbol(UnknownSymbol):
    """The features parquet has no usable rows for these symbols (an UnknownSymbol: the API answers 404)."""

    def __init__(self, symbols: Sequence[str], path: Path) -> None:
        FinstreamError.__init__(
            self,
            f"no feature rows for {', '.join(symbols)} (unknown symbol, or not ingested: "
            "run `finstream pipeline -s SYMBOL`)",
        )
        self.symbols = list(symbols)


class InsufficientHistory(FinstreamError):
    """A symbol has fewer feature rows (up to the requested time) than the window needs."""

    def __init__(self, symbol: str, have: int, need: int, as_of: datetime | None = None) -> None:
        until = f" up to {as_of.isoformat()}" if as_of is not None else ""
        super().__init__(
            f"{symbol} has {have} usable feature rows{until}, the window needs {need}: "
            "ingest a longer history (`finstream pipeline -s SYMBOL --start ...`)"
        )
        self.symbol, self.have, self.need = symbol, have, need


@dataclass(frozen=True)
class WindowRows:
    """`n` consecutive model-input rows of one symbol, oldest first, in the requested column order."""

    symbol: str
    columns: tuple[str, ...]
    values: np.ndarray  # float64 (n, len(columns)); a fresh copy, the caller may modify it
    timestamps: np.ndarray  # datetime64[us], UTC (naive), the bar close of each row

    @property
    def as_of(self) -> datetime:
        """The newest row's bar time (UTC): the decision time of anything computed from the window."""
        return pd.Timestamp(self.timestamps[-1]).tz_localize("UTC").to_pydatetime()

    def frame(self) -> pd.DataFrame:
        """The rows as a DataFrame indexed by UTC event_timestamp, columns in the requested order."""
        index = pd.DatetimeIndex(self.timestamps, name=TIME_COLUMN).tz_localize("UTC")
        return pd.DataFrame(self.values, index=index, columns=list(self.columns))


@dataclass(frozen=True)
class _SymbolRows:
    values: np.ndarray  # float64 (T, len(MODEL_FEATURES)), time order
    times: np.ndarray  # datetime64[us] (T,), increasing


@dataclass(frozen=True)
class _Snapshot:
    key: tuple[str, int, int]  # (path, mtime_ns, size) of the file these rows were read from
    symbols: dict[str, _SymbolRows]


class FeatureWindows:
    """Model-input windows per symbol from the features parquet; one cached parse per file version."""

    def __init__(self, settings: Settings, path: Path | None = None) -> None:
        self.path = Path(path) if path is not None else settings.paths.features
        self._snapshots: FileSnapshots[_Snapshot] = FileSnapshots(self.path, self._load, self._missing)
        self._plans: dict[tuple[str, ...], tuple[np.ndarray, tuple[tuple[int, str], ...]]] = {}

    def symbols(self) -> tuple[str, ...]:
        """Symbols with at least one usable feature row, sorted."""
        return tuple(sorted(self._current().symbols))

    def count(self, symbol: str) -> int:
        """How many usable feature rows `symbol` has (UnknownFeatureSymbol if none)."""
        return int(self._rows(self._current(), symbol)[1].times.size)

    def latest(
        self,
        symbol: str,
        n: int,
        columns: Sequence[str] | None = None,
        as_of: datetime | pd.Timestamp | None = None,
    ) -> WindowRows:
        """The last `n` rows of `symbol` (at or before `as_of` if given; naive = UTC), oldest first.

        `columns` defaults to MODEL_FEATURES; `is_<symbol>` columns (pooled models) are 1.0 for this
        symbol and 0.0 otherwise, as in training. Fewer than `n` rows: InsufficientHistory.
        """
        if n < 1:
            raise ValueError(f"n must be >= 1 row, got {n}")
        name, rows = self._rows(self._current(), symbol)
        stop = rows.times.size
        cutoff = None
        if as_of is not None:
            cutoff = _utc(as_of)
            stop = int(np.searchsorted(rows.times, np.datetime64(cutoff.tz_localize(None), "us"), "right"))
        if stop < n:
            raise InsufficientHistory(name, stop, n, cutoff.to_pydatetime() if cutoff is not None else None)
        block = rows.values[stop - n : stop]
        if columns is None:
            return WindowRows(name, tuple(MODEL_FEATURES), block.copy(), rows.times[stop - n : stop].copy())
        cols = tuple(columns)
        index, indicators = self._plan(cols)
        values = block[:, index]  # fancy indexing: a copy
        for j, target in indicators:
            values[:, j] = 1.0 if target == name else 0.0
        return WindowRows(name, cols, values, rows.times[stop - n : stop].copy())

    def _plan(self, columns: tuple[str, ...]) -> tuple[np.ndarray, tuple[tuple[int, str], ...]]:
        """Column positions in MODEL_FEATURES order, and the one-hot columns; cached per column tuple."""
        plan = self._plans.get(columns)
        if plan is not None:
            return plan
        index = np.zeros(len(columns), dtype=np.intp)
        indicators: list[tuple[int, str]] = []
        for j, column in enumerate(columns):
            if column in _FEATURE_INDEX:
                index[j] = _FEATURE_INDEX[column]
            elif column.startswith(ONEHOT_PREFIX):
                indicators.append((j, column[len(ONEHOT_PREFIX) :]))
            else:
                raise StoreUnavailable(
                    f"the model wants input {column!r}, which is not built from the features parquet "
                    f"(model inputs: {', '.join(MODEL_FEATURES)})"
                )
        plan = (index, tuple(indicators))
        if len(self._plans) < 64:  # one entry per model; bounded so odd callers cannot grow it
            self._plans[columns] = plan
        return plan

    def _rows(self, snapshot: _Snapshot, symbol: str) -> tuple[str, _SymbolRows]:
        rows = snapshot.symbols.get(symbol)
        if rows is not None:
            return symbol, rows
        try:
            canonical = parse_symbol(symbol).canonical
        except SymbolError:
            canonical = symbol
        rows = snapshot.symbols.get(canonical)
        if rows is None:
            raise UnknownFeatureSymbol([symbol], self.path)
        return canonical, rows

    def _current(self) -> _Snapshot:
        """The parsed file as it is now: re-read only when its (mtime_ns, size) changed."""
        return self._snapshots.current()

    def _missing(self) -> str:
        return f"no features parquet at {self.path}: run `finstream features` (or `finstream pipeline`)"

    def _load(self) -> _Snapshot:
        """Parse the file: model inputs per symbol, time order, rows training would drop left out."""
        try:
            with open(self.path, "rb") as fh:
                st = os.fstat(fh.fileno())  # the key of the very bytes read, even if the file is replaced
                table = pq.read_table(fh, columns=[SYMBOL_COLUMN, TIME_COLUMN, *STORE_FEATURES])
        except FileNotFoundError:
            raise StoreUnavailable(self._missing()) from None
        except Exception as exc:  # missing columns, a truncated or foreign file
            raise StoreUnavailable(
                f"cannot read the features parquet {self.path}: {exc}; rebuild it with `finstream features`"
            ) from exc
        frame = table.to_pandas()
        inputs = model_inputs(frame)
        keep = inputs.notna().all(axis=1).to_numpy()  # what training.dataset.assemble keeps
        times = pd.DatetimeIndex(frame[TIME_COLUMN])
        times = (times.tz_convert("UTC").tz_localize(None) if times.tz is not None else times).as_unit("us")
        symbols = frame[SYMBOL_COLUMN].astype(str).to_numpy()[keep]
        stamps = times.to_numpy()[keep]
        values = inputs.to_numpy(dtype=np.float64)[keep]
        order = np.lexsort((stamps, symbols))
        symbols, stamps, values = symbols[order], stamps[order], np.ascontiguousarray(values[order])
        names, starts = np.unique(symbols, return_index=True)
        bounds = [*starts.tolist(), symbols.size]
        per_symbol: dict[str, _SymbolRows] = {}
        for i, name in enumerate(names.tolist()):
            lo, hi = bounds[i], bounds[i + 1]
            t = stamps[lo:hi]
            if t.size > 1 and not np.all(t[1:] > t[:-1]):
                raise StoreUnavailable(
                    f"the features parquet {self.path} has several rows for {name} at one event_timestamp: "
                    "rebuild it with `finstream features`"
                )
            per_symbol[name] = _SymbolRows(values[lo:hi], t)
        log.info(
            "feature windows loaded",
            extra={
                "path": str(self.path),
                "rows": int(symbols.size),
                "dropped": int((~keep).sum()),
                "symbols": len(per_symbol),
            },
        )
        return _Snapshot((str(self.path), st.st_mtime_ns, st.st_size), per_symbol)


def _utc(value: datetime | pd.Timestamp) -> pd.Timestamp:
    """A UTC timestamp; naive values are read as UTC (as Feast and the stored bars do)."""
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
