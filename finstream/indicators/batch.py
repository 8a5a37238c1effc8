"""The vectorised batch engine: every indicator of a spec, per symbol, over a whole history at once."""

from __future__ import annotations

import inspect
import itertools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from finstream.indicators import momentum, returns, trend, volatility, volume
from finstream.indicators.spec import DEFAULT_SPEC, Indicator, feature_names

logger = logging.getLogger(__name__)

IndicatorFn = Callable[..., dict[str, pd.Series]]
Params = dict[str, float]

SYMBOL, TS = "symbol", "ts"


@dataclass(frozen=True)
class Kind:
    """How to compute one indicator kind: its function, the bar columns it reads, its warm-up length.

    `warmup(params)` is the 0-based row of a symbol's first defined value (= leading NaN rows).
    """

    fn: IndicatorFn
    columns: tuple[str, ...]
    warmup: Callable[[Params], int]


def _window_minus_one(p: Params) -> int:
    return int(p["window"]) - 1


def _window(p: Params) -> int:
    return int(p["window"])


HLC = ("high", "low", "close")

KINDS: Mapping[str, Kind] = {
    "sma": Kind(trend.sma, ("close",), _window_minus_one),
    "ema": Kind(trend.ema, ("close",), _window_minus_one),
    "wma": Kind(trend.wma, ("close",), _window_minus_one),
    "macd": Kind(trend.macd, ("close",), lambda p: int(max(p["fast"], p["slow"])) - 1 + int(p["signal"]) - 1),
    "rsi": Kind(momentum.rsi, ("close",), _window_minus_one),
    "kdj": Kind(momentum.kdj, HLC, _window_minus_one),
    "willr": Kind(momentum.willr, HLC, _window_minus_one),
    "momentum": Kind(momentum.momentum, ("close",), _window),
    "roc": Kind(momentum.roc, ("close",), _window),
    "bollinger": Kind(volatility.bollinger, ("close",), _window_minus_one),
    "atr": Kind(volatility.atr, HLC, _window_minus_one),
    "ret_std": Kind(volatility.ret_std, ("close",), _window),
    "obv": Kind(volume.obv, ("close", "volume"), lambda p: 0),
    "vwap": Kind(volume.vwap, (*HLC, "volume"), _window_minus_one),
    "volume_ratio": Kind(volume.volume_ratio, ("volume",), _window),
    "log_return": Kind(returns.log_return, ("close",), lambda p: int(p["horizon"])),
}


def _kind(ind: Indicator) -> Kind:
    try:
        return KINDS[ind.kind]
    except KeyError:
        raise ValueError(
            f"unknown indicator kind {ind.kind!r} (outputs {list(ind.outputs)}); known kinds: {sorted(KINDS)}"
        ) from None


def _is_positive_whole(value: object) -> bool:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return number.is_integer() and number >= 1


def resolve_params(ind: Indicator) -> Params:
    """The indicator's parameters merged with its function's defaults; integer parameters must be >= 1."""
    signature = inspect.signature(_kind(ind).fn)
    defaults = {n: p.default for n, p in list(signature.parameters.items())[1:]}
    unknown = sorted(set(ind.params) - set(defaults))
    if unknown:
        raise ValueError(
            f"indicator {ind.kind!r} {list(ind.outputs)}: unknown parameter(s) {unknown}; "
            f"it takes {sorted(defaults)}"
        )
    resolved: Params = {}
    for name, default in defaults.items():
        value = ind.params.get(name, default)
        if isinstance(default, int):
            if not _is_positive_whole(value):
                raise ValueError(
                    f"indicator {ind.kind!r} {list(ind.outputs)}: {name} must be a whole number >= 1, "
                    f"got {value!r}"
                )
            value = int(value)
        resolved[name] = value
    return resolved


def warmup_bars(spec: tuple[Indicator, ...] = DEFAULT_SPEC) -> int:
    """Leading bars per symbol whose outputs are not all defined; row `warmup_bars(spec)` has every output.

    A streaming engine needs at least `warmup_bars(spec) + 1` bars of history before its first full row.
    """
    return max((_kind(ind).warmup(resolve_params(ind)) for ind in spec), default=0)


def _check_frame(bars: pd.DataFrame, spec: tuple[Indicator, ...]) -> list[str]:
    """Validate the input frame against the spec; return the price columns the spec reads."""
    needed: dict[str, list[str]] = {}
    for ind in spec:
        for col in _kind(ind).columns:
            needed.setdefault(col, []).append(ind.kind)
    missing = [c for c in (SYMBOL, TS, *needed) if c not in bars.columns]
    if missing:
        users = sorted({k for c in missing for k in needed.get(c, ["the engine"])})
        raise ValueError(
            f"bars lack column(s) {missing}, needed by {users}; got columns {list(bars.columns)}"
        )
    clashes = sorted(set(feature_names(spec)) & set(bars.columns))
    if clashes:
        raise ValueError(f"bars already hold indicator output column(s) {clashes}; drop them first")
    for col in (SYMBOL, TS):
        if bars[col].isna().any():
            raise ValueError(f"column {col!r} has missing values")
    for col in needed:
        if not pd.api.types.is_numeric_dtype(bars[col]):
            raise ValueError(f"column {col!r} must be numeric, got dtype {bars[col].dtype}")
    return list(needed)


def compute_indicators(bars: pd.DataFrame, spec: tuple[Indicator, ...] = DEFAULT_SPEC) -> pd.DataFrame:
    """Every output of `spec` for each symbol in `bars`, computed over its history sorted by `ts`.

    Returns the input columns plus one float64 column per output, rows sorted by (symbol, ts),
    with a fresh RangeIndex. Row t of a symbol only uses that symbol's bars up to and including t.
    """
    started = time.perf_counter()
    names = feature_names(spec)
    plan = [(ind, _kind(ind), resolve_params(ind)) for ind in spec]
    price_cols = _check_frame(bars, spec)

    ordered = bars.sort_values([SYMBOL, TS], kind="mergesort").reset_index(drop=True)
    duplicated = ordered.duplicated([SYMBOL, TS])
    if duplicated.any():
        first = ordered.loc[duplicated, [SYMBOL, TS]].iloc[0].tolist()
        raise ValueError(f"bars hold {int(duplicated.sum())} duplicate (symbol, ts) rows, e.g. {first}")

    prices = ordered[price_cols].astype(np.float64)
    symbols = ordered[SYMBOL].to_numpy()
    bounds = np.concatenate(([0], np.flatnonzero(symbols[1:] != symbols[:-1]) + 1, [len(ordered)]))
    out = {name: np.full(len(ordered), np.nan) for name in names}
    for start, stop in itertools.pairwise(bounds):
        if start == stop:
            continue
        group = prices.iloc[start:stop].reset_index(drop=True)
        for ind, kind, params in plan:
            result = kind.fn(group, **params)
            if len(result) != len(ind.outputs):
                raise ValueError(
                    f"indicator {ind.kind!r} yields {len(result)} outputs {list(result)}, "
                    f"but the spec names {len(ind.outputs)}: {list(ind.outputs)}"
                )
            for name, series in zip(ind.outputs, result.values(), strict=True):
                out[name][start:stop] = series.to_numpy(dtype=np.float64)

    features = pd.DataFrame(out, index=ordered.index)
    logger.debug(
        "computed indicators",
        extra={
            "rows": len(ordered),
            "symbols": len(bounds) - 1 if len(ordered) else 0,
            "outputs": len(names),
            "seconds": round(time.perf_counter() - started, 4),
        },
    )
    return pd.concat([ordered, features], axis=1)
