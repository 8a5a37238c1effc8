"""Registry models served: the `champion` (and, during an A/B test, the `challenger`) of each task.

Each registered model (`registry.REGISTERED_MODELS`, and the RL agent `finstream-agent`) is held
per alias as one immutable loaded object. A request reads the reference once and predicts with that object
to the end, so a reload (a background poll of the aliases every N seconds, or POST /admin/reload) never
changes a model under a request in flight.

The A/B settings live in the registry too (a tag on `finstream-return`), so every worker process of the
server follows the same experiment: `PUT /admin/ab` writes the tag and applies it at once in the worker
that answered. With Redis, every alias move (promotion code publishes one, `finstream.models.notices`),
reload and A/B change is announced over pub/sub and every worker re-reads the registry at once; the poll
stays as the fallback.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np
import pandas as pd

from finstream.config import Settings
from finstream.errors import FinstreamError
from finstream.models.registry import AGENT_MODEL, CHALLENGER, CHAMPION, REGISTERED_MODELS

log = logging.getLogger(__name__)

RETURN_TASK = "regression"
DIRECTION_TASK = "classification"
VOLATILITY_TASK = "volatility"
AGENT_TASK = "agent"
AB_TAG = "finstream.serving.ab"
ABMode = Literal["off", "split", "shadow"]


@dataclass(frozen=True)
class ABSettings:
    """The A/B experiment: off; `split` (a share of requests answered by the challenger); `shadow`."""

    mode: ABMode = "off"
    share: float = 0.1
    updated_by: str | None = None
    updated_at: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("off", "split", "shadow"):
            raise ValueError(f"A/B mode must be off, split or shadow, got {self.mode!r}")
        if not 0.0 <= self.share <= 1.0:
            raise ValueError(f"A/B share must be between 0 and 1, got {self.share}")

    def variant(self) -> str:
        """Which alias answers this request: the challenger for `share` of requests in split mode."""
        if self.mode == "split" and random.random() < self.share:
            return CHALLENGER
        return CHAMPION

    def to_tag(self) -> str:
        return json.dumps(
            {"mode": self.mode, "share": self.share, "by": self.updated_by, "at": self.updated_at}
        )

    @classmethod
    def from_tag(cls, text: str) -> ABSettings:
        raw = json.loads(text)
        return cls(raw["mode"], float(raw["share"]), raw.get("by"), raw.get("at"))


class NoChampion(FinstreamError):
    """No champion of a required model is loaded."""


@dataclass(frozen=True)
class LoadedModel:
    """One registry version ready to predict: the Forecaster and the exact input columns it was trained on.

    Sequence models (`window` set) predict from the last `window` feature rows of each symbol
    (`finstream.models.windows.FeatureWindows`, the features parquet training read) ending at the online
    row's bar.
    """

    name: str
    version: str
    task: str
    family: str | None
    forecaster: Any = field(repr=False)
    columns: tuple[str, ...]
    loaded_at: float
    window: int | None = None
    interval: str = "1d"  # the bars it was trained on (registry tag; versions before the tag: daily)
    #: the symbols a pooled model passed its gates on (registry tag); None when the version records none
    passed_symbols: frozenset[str] | None = None

    def verdict(self, symbol: str) -> str | None:
        """ "passed" / "failed": this version's per-symbol verdict on `symbol`; None when it has none."""
        if self.passed_symbols is None:
            return None
        return "passed" if symbol in self.passed_symbols else "failed"

    def predict(self, A: np.ndarray, symbols: Sequence[str]) -> np.ndarray:
        """One value per row of A (`columns` order): predicted log return, or P(up).

        Tabular Forecasters take the matrix directly (no DataFrame: ~0.05 ms for ridge); others get X.
        """
        fast = getattr(self.forecaster, "predict_matrix", None)
        if fast is not None and tuple(self.forecaster.feature_names) == self.columns:
            return np.asarray(fast(A), dtype="float64")
        X = pd.DataFrame(A, columns=list(self.columns))
        X.insert(0, "symbol", list(symbols))
        return np.asarray(self.forecaster.predict(X), dtype="float64")

    def predict_windows(self, windows: Any, symbols: Sequence[str], bars: Sequence[datetime]) -> np.ndarray:
        """A sequence model's forecast per symbol from its `window` rows ending at that symbol's bar."""
        if self.window is None:
            raise ValueError(f"{self.name} v{self.version} is not a sequence model")
        out = np.empty(len(symbols), dtype="float64")
        for i, (symbol, bar) in enumerate(zip(symbols, bars, strict=True)):
            rows = windows.latest(symbol, self.window, columns=self.columns, as_of=bar)
            if rows.as_of != bar:
                raise FinstreamError(
                    f"the features parquet ends at {rows.as_of:%Y-%m-%d %H:%M} UTC for {symbol} but the "
                    f"online "
                    f"store is at {bar:%Y-%m-%d %H:%M} UTC: rerun `finstream features` (or the pipeline)"
                )
            X = pd.DataFrame(rows.values, columns=list(self.columns))
            X.insert(0, "symbol", symbol)
            out[i] = float(np.asarray(self.forecaster.predict(X), dtype="float64")[-1])
        return out


def _input_columns(pyfunc_model: Any, forecaster: Any) -> tuple[str, ...]:
    """The model's input columns from its MLflow signature (without `symbol`), else the Forecaster's."""
    schema = pyfunc_model.metadata.get_input_schema()
    names = schema.input_names() if schema is not None and schema.has_input_names() else []
    columns = [str(n) for n in names if n != "symbol"] or list(forecaster.feature_names)
    return tuple(columns)


def load_version(client: Any, name: str, version: str) -> LoadedModel:
    """Load `name` version `version` through MLflow (tabular or sequence model)."""
    from finstream.models.pyfunc import load_forecaster, unwrap_forecaster
    from finstream.models.registry import TAG_PASSED_SYMBOLS

    mv = client.get_model_version(name, version)
    passed = (mv.tags or {}).get(TAG_PASSED_SYMBOLS)
    pyfunc_model = load_forecaster(f"models:/{name}/{version}")
    forecaster = unwrap_forecaster(pyfunc_model)
    window = int(forecaster.params["window"]) if getattr(forecaster, "sequential", False) else None
    return LoadedModel(
        name=name,
        version=str(version),
        task=forecaster.task,
        family=mv.tags.get("family") or getattr(forecaster, "family", None),
        forecaster=forecaster,
        columns=_input_columns(pyfunc_model, forecaster),
        loaded_at=time.time(),
        window=window,
        interval=mv.tags.get("interval") or "1d",
        passed_symbols=frozenset(json.loads(passed)) if passed else None,
    )


@dataclass(frozen=True)
class LoadedVolatility:
    """A `finstream-volatility` version ready to forecast: a baseline (GARCH, HAR, …) or a zoo candidate."""

    name: str
    version: str
    model: Any = field(repr=False)  # finstream.models.volatility.VolatilityModel
    loaded_at: float
    reason: str | None = None  # the gate's reason recorded on the version

    @property
    def task(self) -> str:
        return VOLATILITY_TASK

    @property
    def family(self) -> str:
        return str(self.model.method)

    @property
    def kind(self) -> str:
        return str(self.model.kind)

    @property
    def interval(self) -> str:
        return str(self.model.interval)


def load_volatility_version(client: Any, name: str, version: str) -> LoadedVolatility:
    """Load `name` version `version` (logged by `finstream.models.pyfunc.log_volatility_model`)."""
    from finstream.models.pyfunc import load_forecaster, unwrap_volatility_model
    from finstream.models.registry import TAG_REASON

    mv = client.get_model_version(name, version)
    model = unwrap_volatility_model(load_forecaster(f"models:/{name}/{version}"))
    return LoadedVolatility(name, str(version), model, time.time(), (mv.tags or {}).get(TAG_REASON))


class ChampionModels:
    """The loaded model per (task, alias); `refresh` follows the registry's aliases and A/B tag."""

    def __init__(
        self,
        settings: Settings,
        poll_seconds: float,
        names: Mapping[str, str] = REGISTERED_MODELS,
        agent: str | None = AGENT_MODEL,
        ab: ABSettings | None = None,
        on_refresh: Any = None,
    ) -> None:
        self.settings = settings
        self.poll_seconds = poll_seconds
        self.names = dict(names)
        if agent:
            self.names[AGENT_TASK] = agent
        self.ab = ab or ABSettings()
        self._models: dict[tuple[str, str], Any] = {}
        self.errors: dict[str, str] = {}
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._events: Any = None  # finstream.models.notices.Subscriber, with Redis
        self._client: Any = None
        #: called with this object after every refresh (the service exports what is loaded as metrics)
        self.on_refresh = on_refresh

    def get(self, task: str, alias: str = CHAMPION) -> Any | None:
        """The current model for `task` and `alias` (a plain dict read: atomic under the GIL)."""
        return self._models.get((task, alias))

    def require(self, task: str) -> Any:
        model = self._models.get((task, CHAMPION))
        if model is None:
            name = self.names[task]
            why = self.errors.get(task)
            raise NoChampion(
                f"no champion of {name} is loaded: promote a version with "
                f"`finstream models promote {name} VERSION`" + (f" ({why})" if why else "")
            )
        return model

    def versions(self, alias: str = CHAMPION) -> dict[str, str | None]:
        return {
            self.names[t]: (m.version if (m := self._models.get((t, alias))) else None) for t in self.names
        }

    def _registry(self) -> Any:
        if self._client is None:
            from finstream.models.tracking import configure_mlflow

            self._client = configure_mlflow(self.settings)
        return self._client

    def _aliases(self) -> tuple[str, ...]:
        return (CHAMPION,) if self.ab.mode == "off" else (CHAMPION, CHALLENGER)

    def refresh(self) -> list[str]:
        """Load every model whose alias moved; returns "name@alias" of those that changed.

        A failure keeps the model already loaded (and is reported in `errors`).
        """
        changed: list[str] = []
        with self._refresh_lock:
            self._refresh_ab()
            for task, name in self.names.items():
                try:
                    registered = self._registered(name)
                    self.errors.pop(task, None)
                    for alias in (CHAMPION, CHALLENGER):
                        if self._follow(task, name, alias, registered):
                            changed.append(f"{name}@{alias}")
                except Exception as exc:  # registry down, artifact missing, unloadable model
                    self.errors[task] = _first_line(exc)
                    log.warning("cannot refresh %s: %s", name, exc, extra={"model": name})
                    if not isinstance(exc, FinstreamError):
                        self._client = None  # reconnect next time
        if self.on_refresh is not None:
            self.on_refresh(self)
        return changed

    def _follow(self, task: str, name: str, alias: str, registered: Any) -> bool:
        """Load `name@alias` if it moved; True when the served version changed."""
        key = (task, alias)
        current = self._models.get(key)
        target = None
        if registered is not None and alias in self._aliases():
            holder = (registered.aliases or {}).get(alias)
            target = None if holder is None else str(holder)
        if target is None:
            if alias == CHAMPION:
                if current is not None:
                    log.warning("%s has no champion any more; keeping v%s", name, current.version)
                if task != AGENT_TASK:
                    self.errors[task] = "the registry has no champion"
                return False
            if current is not None:  # challenger gone or A/B switched off: stop serving it
                del self._models[key]
                return True
            return False
        if current is not None and current.version == target:
            return False
        started = time.perf_counter()
        loaded = self._load(task, name, target)
        self._models[key] = loaded  # one reference swap: requests in flight keep their object
        log.info(
            "serving %s v%s as %s",
            name,
            loaded.version,
            alias,
            extra={
                "model": name,
                "alias": alias,
                "version": loaded.version,
                "previous": current.version if current else None,
                "load_s": round(time.perf_counter() - started, 3),
            },
        )
        return True

    def _load(self, task: str, name: str, version: str) -> Any:
        if task == AGENT_TASK:
            from finstream.models.agent import load_agent

            return load_agent(self._registry(), name, version)
        if task == VOLATILITY_TASK:
            loaded: Any = load_volatility_version(self._registry(), name, version)
        else:
            loaded = load_version(self._registry(), name, version)
        served = self.settings.train.interval
        if loaded.interval != served:
            raise FinstreamError(
                f"{name} v{version} was trained on {loaded.interval} bars but this service serves {served} "
                f"features (train.interval): not loaded; set FINSTREAM_TRAIN__INTERVAL={loaded.interval} "
                f"or promote a {served} model"
            )
        return loaded

    def _registered(self, name: str) -> Any | None:
        from mlflow.exceptions import MlflowException

        try:
            return self._registry().get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise

    def _refresh_ab(self) -> None:
        """Adopt the A/B settings stored in the registry (the return model's tag), if any."""
        try:
            registered = self._registered(self.names[RETURN_TASK])
        except Exception as exc:
            log.warning("cannot read the A/B settings from the registry: %s", exc)
            return
        text = (registered.tags or {}).get(AB_TAG) if registered is not None else None
        if not text:
            return
        try:
            stored = ABSettings.from_tag(text)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring malformed A/B tag %r on %s: %s", text, self.names[RETURN_TASK], exc)
            return
        if stored != self.ab:
            log.info("A/B settings now %s (share %.3f)", stored.mode, stored.share)
            self.ab = stored

    def set_ab(self, mode: ABMode, share: float, actor: str) -> ABSettings:
        """Store new A/B settings in the registry (for every worker) and apply them here at once."""
        wanted = ABSettings(mode, share, actor, time.time())
        name = self.names[RETURN_TASK]
        if self._registered(name) is None:
            raise NoChampion(f"{name} is not registered yet: train and register a model first")
        self._registry().set_registered_model_tag(name, AB_TAG, wanted.to_tag())
        self.ab = wanted
        self.refresh()
        self.announce("ab")
        return self.ab

    def start(self) -> None:
        """Follow registry notices (with Redis) and poll every `poll_seconds` (0 or less: no polling)."""
        if self.settings.redis_url and self._events is None:
            from finstream.models.notices import Subscriber

            self._events = Subscriber(self.settings, self._on_notice)
            self._events.start()
        if self.poll_seconds <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._poll, name="finstream-model-poll", daemon=True)
        self._thread.start()

    def _on_notice(self, event: dict[str, Any]) -> None:
        if event.get("model") in self.names.values() or event.get("action") in ("reload", "ab", "subscribed"):
            changed = self.refresh()
            log.info("registry notice %s: %s", event, f"now serving {changed}" if changed else "no change")

    def announce(self, action: str) -> None:
        """Tell the other workers (and replicas) to re-read the registry now."""
        from finstream.models.notices import publish

        publish({"action": action}, self.settings)

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self.refresh()

    def stop(self) -> None:
        self._stop.set()
        if self._events is not None:
            self._events.stop()
            self._events = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
