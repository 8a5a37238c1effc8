"""The bus handler of one bar interval: bars -> incremental features -> online store -> champions -> risk and
alerts -> the channels, inside the consumer's transaction.

Per batch (one partition's new bars, in stream order):

1. per symbol, its `SeriesState` takes the bars: incremental indicators, the volatility champion's forecast,
   rolling risk and the alert rules, every bar (a state is warmed up from the stored validated bars first);
2. coalesce: the latest bar of each symbol whose row is a feature row (the batch feature table has a row
   for it) becomes its online row, written in Feast's layout (`stream.online`); with the online store on
   the bus's Redis the HSETs are queued in the bus transaction, so the row, the acknowledgement and the
   messages commit together;
3. the return and direction champions score those rows (`stream.scoring`);
4. the messages are queued in the transaction (`stream.publish`): `enhanced` (the latest bar per symbol,
   its features and risk), `ai-predictions`, and `risk-alerts` (every alert of every bar).

A redelivered bar never reaches the handler (the bus acknowledges it as a duplicate), so it changes nothing
and publishes nothing; a batch handed over again after a commit that did not happen reuses the results
kept by the states, so nothing is counted twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any, cast

import pandas as pd

from finstream.channels import (
    AI_PREDICTIONS,
    ENHANCED,
    RISK_ALERTS,
    AlertData,
    BarValues,
    EnhancedData,
    PredictionData,
    VolatilityForecast,
)
from finstream.config import Settings
from finstream.indicators import DEFAULT_SPEC, Indicator, feature_names
from finstream.models.champions import VOLATILITY_TASK
from finstream.risk.alerts import Alert
from finstream.risk.params import RiskParams
from finstream.storage import BarTable
from stream.bus import Batch, Delivery
from stream.online import OnlineRow, OnlineWriter
from stream.publish import Publisher
from stream.scoring import Scorer
from stream.series import VOL_SCALE, BarResult, SeriesState, StageClock, VarianceFn, no_variance

log = logging.getLogger(__name__)


class BarPipeline:
    """Handles the bars of one interval (a `stream.bus.Handler`); see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        interval: str,
        publisher: Publisher,
        *,
        writer: OnlineWriter | None = None,
        scorer: Scorer | None = None,
        online_in_transaction: bool = True,
        spec: Sequence[Indicator] = DEFAULT_SPEC,
        risk_params: RiskParams | None = None,
    ) -> None:
        self.settings = settings
        self.interval = interval
        self.publisher = publisher
        self.writer = writer
        self.scorer = scorer
        self.online_in_transaction = online_in_transaction
        self.spec = tuple(spec)
        self.names = tuple(feature_names(self.spec))
        self.risk_params = risk_params or settings.risk
        self.stored = BarTable(settings.paths.validated_bars)
        self.states: dict[str, SeriesState] = {}
        self.clock = StageClock()
        self.warmed = 0  # states built from stored bars
        self.rebuilt = 0  # of which rebuilt because a state fell out of step
        self.bars = 0  # handed to the handler (a batch handed over again counts again)
        self.published = 0  # messages queued (they go out when the batch commits)
        self.scoring_errors = 0
        self.last_scoring_error: str | None = None

    # state ------------------------------------------------------------------------------------------
    def stored_symbols(self) -> list[str]:
        """Symbols with stored validated bars of this interval."""
        return sorted({p.symbol for p in self.stored.partitions(intervals=[self.interval])})

    def stored_bars(self, symbol: str, before_ns: int | None = None) -> pd.DataFrame:
        """The stored validated bars of `symbol` at this interval, those before `before_ns` when given."""
        bars = self.stored.read(symbols=[symbol], intervals=[self.interval])
        if before_ns is not None and not bars.empty:
            ts = pd.DatetimeIndex(bars["ts"]).as_unit("ns").asi8
            bars = bars[ts < before_ns]
        return bars

    def variance_fn(self) -> VarianceFn:
        """The volatility champion's forecast function, or none while no champion is served."""
        if self.scorer is None or self.scorer.models.get(VOLATILITY_TASK) is None:
            return no_variance
        return self.scorer.variance

    def warm_up(self, symbols: Iterable[str], before_ns: int | None = None) -> int:
        """Build the states of `symbols` from their stored bars now (a consumer does this at start)."""
        count = 0
        for symbol in symbols:
            self.states[symbol] = self._build(symbol, before_ns)
            count += 1
        return count

    def _build(self, symbol: str, before_ns: int | None) -> SeriesState:
        bars = self.stored_bars(symbol, before_ns)
        state = SeriesState.from_bars(
            symbol, self.interval, bars, self.variance_fn(), self.spec, self.risk_params
        )
        self.warmed += 1
        log.info(
            "%s %s: state warmed up from %d stored bars%s",
            symbol,
            self.interval,
            len(bars),
            "" if state.stored_last_ns is None else f" up to {pd.Timestamp(state.stored_last_ns, tz='UTC')}",
        )
        return state

    def _state(self, symbol: str, first_ns: int, applied_ns: int | None) -> SeriesState:
        """The state of `symbol`, in step with what the group committed, ready for a bar at `first_ns`."""
        state = self.states.get(symbol)
        if state is not None:
            why = state.sync(applied_ns, first_ns)
            if why is None:
                return state
            level = logging.INFO if why.replay else logging.WARNING
            log.log(level, "%s %s: rebuilding the state from stored bars: %s", symbol, self.interval, why)
            self.rebuilt += 1
        state = self._build(symbol, first_ns)
        self.states[symbol] = state
        why = state.sync(applied_ns, first_ns)
        if why is not None:  # cannot happen: the rebuilt state ends before first_ns
            raise RuntimeError(f"{symbol} {self.interval}: a rebuilt state is out of step: {why}")
        return state

    # handling ---------------------------------------------------------------------------------------
    def __call__(self, batch: Batch) -> None:
        started = time.perf_counter_ns()
        groups: dict[str, list[Delivery]] = {}
        for delivery in batch.messages:
            groups.setdefault(delivery.bar.symbol, []).append(delivery)
        variance = self.variance_fn()
        latest: list[BarResult] = []
        alerts: list[AlertData] = []
        for symbol, deliveries in groups.items():
            applied = batch.applied.get((symbol, self.interval))
            before = time.perf_counter_ns()
            state = self._state(symbol, deliveries[0].bar.ts_ns, applied)
            started += time.perf_counter_ns() - before  # a warm-up is not the batch's handling cost
            results = state.process(deliveries, variance, self.clock)
            for result in results:
                alerts.extend(self._alert(a) for a in result.alerts)
            latest.append(results[-1])
        names = self.names
        fresh = [r for r in latest if r.feature_row]
        n = len(batch.messages)
        t0 = time.perf_counter_ns()
        self._write_online(batch.pipeline, fresh, names)
        t1 = time.perf_counter_ns()
        predictions = self._score(fresh, names)
        t2 = time.perf_counter_ns()
        enhanced = [self._enhanced(r, names) for r in latest]
        pipe = batch.pipeline
        self.published += self.publisher.queue(pipe, ENHANCED, enhanced)
        self.published += self.publisher.queue(pipe, AI_PREDICTIONS, predictions)
        self.published += self.publisher.queue(pipe, RISK_ALERTS, alerts)
        t3 = time.perf_counter_ns()
        self.clock.add("online", t1 - t0, n)
        self.clock.add("scoring", t2 - t1, n)
        self.clock.add("publish", t3 - t2, n)
        self.clock.add("handler", t3 - started, n)
        self.bars += n

    def _score(self, results: Sequence[BarResult], names: Sequence[str]) -> list[PredictionData]:
        """The champions' predictions; a model that fails does not hold up features, risk and alerts."""
        if self.scorer is None:
            return []
        try:
            return self.scorer.predict(results, names)
        except Exception as exc:  # a broken model version: report it, keep the pipeline going
            self.scoring_errors += 1
            self.last_scoring_error = f"{type(exc).__name__}: {exc}"
            if self.scoring_errors in (1, 10, 100) or self.scoring_errors % 1000 == 0:
                log.exception("%s: scoring failed %d time(s)", self.interval, self.scoring_errors)
            return []

    def _write_online(self, pipe: Any, results: Sequence[BarResult], names: Sequence[str]) -> None:
        if self.writer is None or not results:
            return
        rows = [OnlineRow(r.bar.symbol, r.bar.ts_ns, r.row(names)) for r in results]
        if self.online_in_transaction:
            self.writer.queue(pipe, rows)
        else:
            write = getattr(self.writer, "write", None)
            if write is not None:
                write(rows)
            else:
                self.writer.queue(None, rows)
        self.writer.flush()

    def _alert(self, alert: Alert) -> AlertData:
        return AlertData(
            severity=alert.severity,
            rule=alert.rule,
            value=alert.value,
            limit=alert.limit,
            symbol=alert.symbol,
            interval=self.interval,
            bar_time=pd.Timestamp(alert.bar_time).to_pydatetime(),
            message=alert.message,
        )

    def _enhanced(self, result: BarResult, names: Sequence[str]) -> EnhancedData:
        bar = result.bar
        forecast = None
        if result.variance is not None and self.scorer is not None:
            vol = self.scorer.volatility(bar.symbol)
            if vol is not None:
                variance = result.variance
                volatility = variance**0.5 / VOL_SCALE if variance == variance and variance >= 0 else None
                forecast = VolatilityForecast(
                    model=self.scorer.ref(vol), variance=variance, volatility=volatility
                )
        return EnhancedData(
            symbol=bar.symbol,
            interval=self.interval,
            bar_ts=bar.ts.to_pydatetime(),
            entry_id=result.entry_id,
            bar=BarValues(
                open=bar.open,
                high=bar.high,
                low=bar.low,
                close=bar.close,
                volume=bar.volume,
                amount=bar.amount,
            ),
            features=dict(zip(names, result.features, strict=True)),
            feature_row=result.feature_row,
            risk=cast(dict[str, float | None], result.risk),
            volatility_forecast=forecast,
        )

    def stats(self) -> dict[str, Any]:
        """For the heartbeat: bars handled, messages published, states, per-stage cost per bar (µs)."""
        return {
            "bars": self.bars,
            "published": self.published,
            "series": len(self.states),
            "warmed": self.warmed,
            "rebuilt": self.rebuilt,
            "scoring_errors": self.scoring_errors,
            "last_scoring_error": self.last_scoring_error,
            "stage_ns": dict(self.clock.ns),
            "stage_bars": dict(self.clock.bars),
        }
