"""One series' live state (a symbol at one interval): incremental indicators, rolling risk, its recent bars,
and the results of the bars it processed whose commit the bus has not confirmed yet.

Warm-up
    A state is built by replaying the series' stored validated bars (`from_bars`): the whole history, so the
    indicators equal the batch engine's from the first live bar on (see `finstream.indicators.incremental`),
    and the risk measures equal `finstream.risk.measures.risk_frame` over the same bars. When a bar arrives
    that is not after the state's last bar (a replay of stored history), the pipeline rebuilds the state
    from the stored bars before it.

In step with the bus
    The consumer calls the handler inside a transaction that may not commit (a WATCH conflict, a lost
    connection); it then hands the same bars over again. The state keeps each processed bar's result until
    the group's applied ts (`Batch.applied`) shows it committed, and gives the kept result back for a bar
    seen again instead of updating twice. `sync` tells when the state no longer matches what the group
    committed (another consumer applied bars of this series, or a processed bar was dead-lettered instead of
    committed); the pipeline then rebuilds it.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from finstream.indicators import DEFAULT_SPEC, IncrementalIndicators, Indicator, warmup_bars
from finstream.risk.alerts import Alert, RiskMonitor
from finstream.risk.params import RiskParams
from stream.bus import Delivery
from stream.messages import BarMessage

log = logging.getLogger(__name__)

#: the price columns of a feature row, before the indicators (the store's `price_features` view)
PRICE_NAMES = ("open", "high", "low", "close", "volume", "amount")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: percent returns and %² variances (`finstream.models.volatility.SCALE`)
VOL_SCALE = 100.0

#: (symbol, bars [ts, open, high, low, close], feature rows [price + indicators]) -> next-bar variance (%²)
#: per bar, or None without a volatility model for the symbol
VarianceFn = Callable[[str, pd.DataFrame, np.ndarray], "np.ndarray | None"]


def no_variance(symbol: str, bars: pd.DataFrame, features: np.ndarray) -> None:
    """The variance function when no volatility champion is served."""
    return None


@dataclass(frozen=True, slots=True)
class OutOfStep:
    """Why a state cannot take the next bars; `replay`: the bars replay the stored history it was built from
    (expected: the state is rebuilt from the stored bars before them)."""

    reason: str
    replay: bool = False

    def __str__(self) -> str:
        return self.reason


@dataclass(slots=True)
class BarResult:
    """What one bar produced: its feature row, risk measures, alerts and the volatility forecast at it."""

    entry_id: str
    bar: BarMessage
    features: list[float]  # IncrementalIndicators.names order
    feature_row: bool  # the series has its warm-up bars behind this one (the batch feature table has it)
    risk: dict[str, float]
    alerts: list[Alert]
    variance: float | None  # %², forecast at this bar of the next one's; None without a model

    def row(self, names: Sequence[str]) -> dict[str, float]:
        """The online row: prices (amount NaN when the bar has none), then every indicator."""
        bar = self.bar
        amount = math.nan if bar.amount is None else bar.amount
        out = dict(
            zip(PRICE_NAMES, (bar.open, bar.high, bar.low, bar.close, bar.volume, amount), strict=True)
        )
        out.update(zip(names, self.features, strict=True))
        return out


@dataclass
class StageClock:
    """Nanoseconds spent per stage and the bars they covered (for per-bar costs)."""

    ns: dict[str, int] = field(default_factory=dict)
    bars: dict[str, int] = field(default_factory=dict)

    def add(self, stage: str, ns: int, bars: int) -> None:
        self.ns[stage] = self.ns.get(stage, 0) + ns
        self.bars[stage] = self.bars.get(stage, 0) + bars

    def per_bar_us(self) -> dict[str, float]:
        return {s: self.ns[s] / 1000 / self.bars[s] for s in self.ns if self.bars.get(s)}


def recent_window(params: RiskParams) -> int:
    """Bars a volatility baseline forecasts from: what the service's risk book reads, so both agree."""
    return 2 * max(params.window, params.drawdown_window, params.spike_lookback + params.vol_window) + 2


class SeriesState:
    """The live state of one series; see the module docstring."""

    def __init__(
        self,
        symbol: str,
        interval: str,
        spec: Sequence[Indicator] = DEFAULT_SPEC,
        risk_params: RiskParams | None = None,
    ) -> None:
        self.symbol = symbol
        self.interval = interval
        self.engine = IncrementalIndicators(spec, key=f"{symbol} {interval}")
        self.names = self.engine.names
        self.store_names = (*PRICE_NAMES, *self.names)
        self.warmup = warmup_bars(tuple(spec))
        self.risk_params = risk_params or RiskParams()
        self.monitor = RiskMonitor(symbol, self.risk_params, model=True)
        window = recent_window(self.risk_params)
        self.recent_ts: deque[int] = deque(maxlen=window)  # the recent bars a volatility baseline reads
        self.recent: deque[tuple[float, float, float, float]] = deque(maxlen=window)  # their OHLC
        self.pending: dict[int, BarResult] = {}
        self.stored_bars = 0
        self.stored_last_ns: int | None = None
        self.synced = False
        self.confirmed_ns: int | None = None  # the group's last applied ts this state includes

    @property
    def last_ns(self) -> int | None:
        last = self.engine.last_ts
        return None if last is None else int(last.value)

    @classmethod
    def from_bars(
        cls,
        symbol: str,
        interval: str,
        bars: pd.DataFrame,
        variance: VarianceFn = no_variance,
        spec: Sequence[Indicator] = DEFAULT_SPEC,
        risk_params: RiskParams | None = None,
    ) -> SeriesState:
        """A state that has processed `bars` (one series, any order; ts, open, high, low, close, volume)."""
        state = cls(symbol, interval, spec, risk_params)
        if bars.empty:
            return state
        started = time.perf_counter()
        ordered = bars.sort_values("ts", kind="mergesort", ignore_index=True)
        rows = state.engine.replay(ordered)
        n = len(ordered)
        prices = ordered[list(PRICE_NAMES)] if "amount" in ordered else ordered.assign(amount=math.nan)
        features = np.hstack([prices[list(PRICE_NAMES)].to_numpy(dtype="float64"), rows])
        var = variance(symbol, ordered[["ts", "open", "high", "low", "close"]], features)
        stamps = pd.DatetimeIndex(pd.to_datetime(ordered["ts"], utc=True))
        closes = ordered["close"].to_numpy(dtype="float64").tolist()
        forecasts = [None] * n if var is None else [_vol(v) for v in np.asarray(var, dtype="float64")]
        update = state.monitor.risk.update  # the measures only: alerts of stored bars are history
        for ts, close, forecast in zip(stamps, closes, forecasts, strict=True):
            update(ts, close, forecast)
        ns = stamps.as_unit("ns").asi8.tolist()
        keep = state.recent.maxlen or 0
        ohlc = ordered[["open", "high", "low", "close"]].iloc[-keep:].to_numpy(dtype="float64").tolist()
        for t, (o, h, lo, c) in zip(ns[-keep:], ohlc, strict=True):
            state.recent_ts.append(t)
            state.recent.append((o, h, lo, c))
        state.stored_bars = n
        state.stored_last_ns = ns[-1]
        log.debug(
            "warmed up %s %s from %d stored bars in %.3f s",
            symbol,
            interval,
            n,
            time.perf_counter() - started,
        )
        return state

    def sync(self, applied_ns: int | None, first_ns: int) -> OutOfStep | None:
        """Reconcile with the group before a batch whose first bar of this series is at `first_ns`.

        Results the group committed are dropped; None when the state is in step, else why not (rebuild it).
        """
        fresh = not self.synced
        if fresh:
            self.synced = True
            self.confirmed_ns = applied_ns
            if applied_ns is not None and (self.stored_last_ns is None or applied_ns > self.stored_last_ns):
                log.warning(
                    "%s %s: the stream applied bars up to %s, after the stored history (%s): the state lacks "
                    "them (store the bars, e.g. run the data pipeline, before restarting the stream)",
                    self.symbol,
                    self.interval,
                    pd.Timestamp(applied_ns, tz="UTC"),
                    None if self.stored_last_ns is None else pd.Timestamp(self.stored_last_ns, tz="UTC"),
                )
        if applied_ns is not None and self.pending:
            for ts in [t for t in self.pending if t <= applied_ns]:
                del self.pending[ts]
                self.confirmed_ns = ts if self.confirmed_ns is None else max(self.confirmed_ns, ts)
        if applied_ns != self.confirmed_ns:
            return OutOfStep(
                f"the group applied {self.symbol} {self.interval} up to {_when(applied_ns)} but this state "
                f"holds bars up to {_when(self.confirmed_ns)} (another consumer handled the series)"
            )
        lost = [ts for ts in self.pending if ts < first_ns]
        if lost:
            return OutOfStep(
                f"{len(lost)} processed bar(s) of {self.symbol} {self.interval} from {_when(lost[0])} were "
                "never committed (dead-lettered or trimmed)"
            )
        if first_ns not in self.pending and self.last_ns is not None and first_ns <= self.last_ns:
            return OutOfStep(
                f"a bar at {_when(first_ns)} is not after the state's last bar {_when(self.last_ns)}"
                + (" (a replay of stored history)" if fresh else ""),
                replay=fresh,
            )
        return None

    def process(
        self, deliveries: Sequence[Delivery], variance: VarianceFn, clock: StageClock
    ) -> list[BarResult]:
        """The results of `deliveries` (this series, ts order): kept ones as they were, new ones computed."""
        new = [d for d in deliveries if d.bar.ts_ns not in self.pending]
        if new:
            self._compute(new, variance, clock)
        return [self.pending[d.bar.ts_ns] for d in deliveries]

    def _compute(self, new: Sequence[Delivery], variance: VarianceFn, clock: StageClock) -> None:
        t0 = time.perf_counter_ns()
        update = self.engine.update
        rows = []
        for d in new:
            b = d.bar
            rows.append(update(b.ts_ns, b.open, b.high, b.low, b.close, b.volume))
        t1 = time.perf_counter_ns()
        var = self._variance(new, rows, variance)
        t2 = time.perf_counter_ns()
        on_bar = self.monitor.on_bar
        first_position = self.engine.bars - len(new)
        for i, (d, row) in enumerate(zip(new, rows, strict=True)):
            b = d.bar
            v = None if var is None else float(var[i])
            snapshot, alerts = on_bar(_utc(b.ts_ns), b.close, _vol(v) if v is not None else None)
            feature_row = first_position + i >= self.warmup
            self.pending[b.ts_ns] = BarResult(d.id, b, row, feature_row, snapshot.values, alerts, v)
            self.recent_ts.append(b.ts_ns)
            self.recent.append((b.open, b.high, b.low, b.close))
        t3 = time.perf_counter_ns()
        clock.add("indicators", t1 - t0, len(new))
        clock.add("volatility", t2 - t1, len(new))
        clock.add("risk", t3 - t2, len(new))

    def _variance(
        self, new: Sequence[Delivery], rows: list[list[float]], variance: VarianceFn
    ) -> np.ndarray | None:
        """The volatility model's forecast at each new bar, from the recent bars and the new ones."""
        if variance is no_variance:
            return None
        k, h = len(new), len(self.recent)
        ts = np.fromiter([*self.recent_ts, *(d.bar.ts_ns for d in new)], dtype="int64", count=h + k)
        ohlc = np.array([*self.recent, *((d.bar.open, d.bar.high, d.bar.low, d.bar.close) for d in new)])
        frame = pd.DataFrame(
            {
                "ts": pd.to_datetime(ts, unit="ns", utc=True),
                "open": ohlc[:, 0],
                "high": ohlc[:, 1],
                "low": ohlc[:, 2],
                "close": ohlc[:, 3],
            }
        )
        features = np.full((h + k, len(self.store_names)), np.nan)
        for i, (d, row) in enumerate(zip(new, rows, strict=True)):
            b = d.bar
            amount = math.nan if b.amount is None else b.amount
            features[h + i] = [b.open, b.high, b.low, b.close, b.volume, amount, *row]
        out = variance(self.symbol, frame, features)
        return None if out is None else np.asarray(out, dtype="float64")[-k:]


def _vol(variance: float) -> float | None:
    """Next-bar volatility (a fraction) from a variance in %²; None when undefined."""
    return math.sqrt(variance) / VOL_SCALE if variance == variance and variance >= 0 else None


def _utc(ns: int) -> datetime:
    """A bar time as a UTC datetime (microseconds: what the stores keep), ~10x cheaper than a Timestamp."""
    return _EPOCH + timedelta(microseconds=ns // 1000)


def _when(ns: int | None) -> str:
    return "nothing" if ns is None else pd.Timestamp(ns, tz="UTC").isoformat()
