"""The champions of one bar interval, scoring the stream's fresh rows through the model layer.

Predictions go through `finstream.models.inputs.input_matrix` and `LoadedModel.predict`, the transform and
the models the service uses, on the same feature row the online store gets; the signal is the service's
rule (long when P(up) > 0.5, else when the predicted return > 0). The volatility champion, when one is
served, forecasts the next bar's variance from the series' recent bars (a baseline) or from the bar's model
inputs (a zoo candidate). `ChampionModels` follows the registry (alias moves are picked up without a
restart); sequence models (LSTM, transformer) need a window of rows the stream does not keep yet and are
not scored (`errors` says so).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from finstream.channels import ModelRef, PredictionData
from finstream.config import Settings
from finstream.indicators import feature_names
from finstream.models.champions import (
    DIRECTION_TASK,
    RETURN_TASK,
    VOLATILITY_TASK,
    ChampionModels,
    LoadedModel,
    LoadedVolatility,
)
from finstream.models.inputs import FeatureRows, input_matrix
from finstream.models.registry import REGISTERED_MODELS, TAG_REASON
from stream.series import PRICE_NAMES, BarResult

log = logging.getLogger(__name__)

#: the columns of the feature rows the pipeline hands over: prices, then every indicator of the spec
STORE_NAMES: tuple[str, ...] = (*PRICE_NAMES, *feature_names())

#: how a champion got its alias, from the reason the registry recorded on the version
_PROMOTION_PREFIXES = (
    ("promote:", "gates"),
    ("manual promotion", "manual"),
    ("restored by rollback", "rollback"),
    ("no candidate beat", "baseline"),
)


def promotion_of(reason: str | None) -> str:
    """gates | manual | rollback | baseline | unknown, from a version's `promotion.reason` tag."""
    text = (reason or "").strip()
    return next((kind for prefix, kind in _PROMOTION_PREFIXES if text.startswith(prefix)), "unknown")


def interval_settings(settings: Settings, interval: str) -> Settings:
    """`settings` serving `interval`'s models (ChampionModels loads only models of `train.interval`)."""
    if settings.train.interval == interval:
        return settings
    return settings.model_copy(update={"train": settings.train.model_copy(update={"interval": interval})})


class Scorer:
    """Return, direction and volatility champions of one interval (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        interval: str,
        poll_seconds: float = 30.0,
        models: Any = None,
        store_names: Sequence[str] = STORE_NAMES,
    ) -> None:
        self.settings = interval_settings(settings, interval)
        self.interval = interval
        self.store_names = tuple(store_names)
        names = {task: REGISTERED_MODELS[task] for task in (RETURN_TASK, DIRECTION_TASK, VOLATILITY_TASK)}
        self.models = models or ChampionModels(self.settings, poll_seconds, names=names, agent=None)
        self._refs: dict[tuple[str, str], ModelRef] = {}
        self._client: Any = None
        self._lock = threading.Lock()
        self._warned: set[tuple[str, str, str]] = set()

    def start(self) -> None:
        """Load the champions now and follow the registry from here on."""
        changed = self.models.refresh()
        log.info("stream %s models: %s", self.interval, changed or "none loaded")
        self.models.start()

    def stop(self) -> None:
        self.models.stop()

    @property
    def errors(self) -> dict[str, str]:
        """Why a task has no champion here (from ChampionModels), and sequence models not scored."""
        out = dict(self.models.errors)
        for task in (RETURN_TASK, DIRECTION_TASK):
            model = self.models.get(task)
            if model is not None and model.window is not None:
                out[task] = f"{model.name} v{model.version} is a sequence model: the stream does not score it"
        return out

    # references -------------------------------------------------------------------------------------
    def ref(self, model: LoadedModel | LoadedVolatility) -> ModelRef:
        """The model's name, version and how it became champion (read from the registry once per version)."""
        key = (model.name, model.version)
        ref = self._refs.get(key)
        if ref is None:
            reason = model.reason if isinstance(model, LoadedVolatility) else self._reason(model)
            promotion = promotion_of(reason)
            ref = ModelRef(
                name=model.name,
                version=model.version,
                family=model.family,
                promotion=promotion,  # type: ignore[arg-type]
                gate_passed=promotion == "gates",
            )
            self._refs[key] = ref
        return ref

    def _reason(self, model: LoadedModel) -> str | None:
        with self._lock:
            try:
                if self._client is None:
                    from finstream.models.tracking import configure_mlflow

                    self._client = configure_mlflow(self.settings)
                version = self._client.get_model_version(model.name, model.version)
            except Exception as exc:  # registry down: the forecast still goes out, labelled unknown
                log.warning("cannot read the promotion of %s v%s: %s", model.name, model.version, exc)
                self._client = None
                return None
        return (version.tags or {}).get(TAG_REASON)

    # predictions ------------------------------------------------------------------------------------
    def predict(self, results: Sequence[BarResult], names: Sequence[str]) -> list[PredictionData]:
        """One prediction per result whose row the return champion can score (its inputs are all finite)."""
        returns = self.models.get(RETURN_TASK)
        if returns is None or returns.window is not None or not results:
            return []
        direction = self.models.get(DIRECTION_TASK)
        if direction is not None and direction.window is not None:
            direction = None
        rows = _feature_rows(results, names)
        predicted, ok = _predict(returns, rows)
        p_up, up_ok = _predict(direction, rows) if direction is not None else (None, None)
        ref = self.ref(returns)
        direction_ref = self.ref(direction) if direction is not None else None
        out = []
        for i, result in enumerate(results):
            if not ok[i]:
                continue
            value = float(predicted[i])
            prob = float(p_up[i]) if p_up is not None and up_ok is not None and up_ok[i] else None
            up = prob >= 0.5 if prob is not None else value >= 0.0
            long = prob > 0.5 if prob is not None else value > 0.0
            out.append(
                PredictionData(
                    symbol=result.bar.symbol,
                    interval=self.interval,
                    bar_ts=result.bar.ts.to_pydatetime(),
                    predicted_return=value,
                    probability_up=prob,
                    direction="up" if up else "down",
                    direction_source="classifier" if prob is not None else "return_sign",
                    signal="long" if long else "flat",
                    model=ref,
                    direction_model=direction_ref if prob is not None else None,
                )
            )
        return out

    # volatility -------------------------------------------------------------------------------------
    def volatility(self, symbol: str) -> LoadedVolatility | None:
        """The volatility champion, if one is served and was fitted on `symbol`."""
        vol = self.models.get(VOLATILITY_TASK)
        return vol if vol is not None and symbol in vol.model.symbols else None

    def variance(self, symbol: str, bars: pd.DataFrame, features: np.ndarray) -> np.ndarray | None:
        """The volatility champion's next-bar variance (%²) at every bar of `bars` (None without one)."""
        vol = self.volatility(symbol)
        if vol is None or len(bars) < 2:  # no return yet: nothing to forecast from
            return None
        model = vol.model
        frame = None
        if model.needs_features:
            stamps = np.zeros(len(bars), "datetime64[s]")
            rows = FeatureRows((symbol,) * len(bars), self.store_names, features, stamps)
            frame = pd.DataFrame(input_matrix(rows, model.feature_names), columns=model.feature_names)
        try:
            return np.asarray(model.variance_path(symbol, bars, frame), dtype="float64")
        except (ValueError, KeyError) as exc:
            key = (vol.name, vol.version, symbol)
            if key not in self._warned:
                self._warned.add(key)
                log.warning("%s v%s gives no forecast for %s: %s", vol.name, vol.version, symbol, exc)
            return None


def _feature_rows(results: Sequence[BarResult], names: Sequence[str]) -> FeatureRows:
    """The results' online rows as FeatureRows (what the service reads back from the store)."""
    rows = [r.row(names) for r in results]
    store_names = tuple(rows[0])
    matrix = np.array([list(row.values()) for row in rows], dtype="float64")
    stamps = np.array([r.bar.ts_ns // 1_000_000_000 for r in results], dtype="int64").astype("datetime64[s]")
    return FeatureRows(tuple(r.bar.symbol for r in results), store_names, matrix, stamps)


def _predict(model: LoadedModel, rows: FeatureRows) -> tuple[np.ndarray, np.ndarray]:
    """The model's output per row, and which rows had all inputs finite (the others get NaN)."""
    A = input_matrix(rows, model.columns)
    ok = ~np.isnan(A).any(axis=1)
    out = np.full(len(rows.symbols), np.nan)
    if ok.any():
        symbols = [s for s, good in zip(rows.symbols, ok, strict=True) if good]
        out[ok] = model.predict(A[ok], symbols)
    return out, ok
