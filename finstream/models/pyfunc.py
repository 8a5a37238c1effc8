"""A Forecaster as an MLflow pyfunc model: log it (signature, input example, pinned requirements), load it.

The model folder written by `Forecaster.save` travels as the artifact "forecaster", and its calibration
(`finstream.models.calibration`, fitted on the walk-forward's out-of-sample pairs) as the artifact
"calibration": the loaded model predicts calibrated forecasts. The wrapper's code comes
from the installed `finstream.models` package (the same environment serves it), so no `code_paths` are
logged.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import infer_signature
from mlflow.models.model import ModelInfo
from mlflow.pyfunc import PyFuncModel, PythonModel, PythonModelContext

from finstream.models.calibration import CalibratedForecaster, Calibration
from finstream.models.volatility import VolatilityModel, load_volatility_model, predict_frame
from finstream.models.zoo import Forecaster, load_model
from finstream.models.zoo.storage import META_FILE, installed_version

log = logging.getLogger(__name__)

ARTIFACT = "forecaster"
CALIBRATION_ARTIFACT = "calibration"
EXAMPLE_ROWS = 5
#: what every logged forecaster needs, beside the libraries its saved folder records
_BASE_REQUIREMENTS = ("mlflow", "cloudpickle", "numpy", "pandas", "scikit-learn")


class ForecasterModel(PythonModel):
    """Loads the saved Forecaster from the model's artifacts; predicts on X (`symbol` + feature columns)."""

    def load_context(self, context: PythonModelContext) -> None:
        model = load_model(context.artifacts[ARTIFACT])
        calibration = context.artifacts.get(CALIBRATION_ARTIFACT)
        if calibration:
            text = Path(calibration).read_text(encoding="utf-8")
            model = CalibratedForecaster(model, Calibration.from_json(text))
        self.forecaster = model

    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        return self.forecaster.predict(model_input)


def pip_requirements(saved: Path) -> list[str]:
    """Pinned requirements: the base set plus every library recorded in the saved folder (members too)."""
    dists = list(_BASE_REQUIREMENTS)
    for meta_file in sorted(Path(saved).rglob(META_FILE)):
        dists += [d for d, v in json.loads(meta_file.read_text()).get("libraries", {}).items() if v]
    pins: dict[str, str] = {}
    for dist in dists:
        ver = installed_version(dist)
        if ver is None:
            raise RuntimeError(f"{dist} is not installed: cannot pin it for the logged model")
        pins[dist] = f"{dist}=={ver.split('+')[0]}"  # drop local labels such as +cpu
    return sorted(pins.values())


def log_forecaster(
    model: Forecaster, X_example: pd.DataFrame, name: str = "model", calibration: Calibration | None = None
) -> ModelInfo:
    """Log a fitted Forecaster (with its `calibration`, if any) into the active MLflow run as a pyfunc
    model named `name`.

    The signature is inferred from X_example and the model's predictions on it; the first few rows are the
    input example. Requirements are pinned explicitly (inferring them costs ~6 s per model).
    """
    if mlflow.active_run() is None:
        raise RuntimeError("log_forecaster logs into the active run: call it inside mlflow.start_run()")
    signature = infer_signature(X_example, model.predict(X_example))
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / ARTIFACT
        model.save(saved)
        artifacts = {ARTIFACT: str(saved)}
        if calibration is not None:
            path = Path(tmp) / f"{CALIBRATION_ARTIFACT}.json"
            path.write_text(calibration.to_json(), encoding="utf-8")
            artifacts[CALIBRATION_ARTIFACT] = str(path)
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=ForecasterModel(),
            artifacts=artifacts,
            signature=signature,
            input_example=X_example.head(EXAMPLE_ROWS),
            pip_requirements=pip_requirements(saved),
            metadata={
                "family": model.family,
                "task": model.task,
                "feature_names": model.feature_names,
                "calibration": calibration.describe() if calibration is not None else "none",
            },
        )
    log.info("logged %s (%s) as %s", model.family, model.task, info.model_uri)
    return info


def load_forecaster(uri: str) -> PyFuncModel:
    """The pyfunc model at `uri` (runs:/…, models:/name/version, models:/name@alias)."""
    return mlflow.pyfunc.load_model(uri)


def unwrap_forecaster(model: PyFuncModel) -> Forecaster:
    """The Forecaster inside a pyfunc model logged by `log_forecaster`, calibrated when it was logged with a
    calibration (skips pyfunc's schema checks)."""
    inner = model.unwrap_python_model()
    if not isinstance(inner, ForecasterModel):
        raise TypeError("this pyfunc model was not logged by log_forecaster")
    return inner.forecaster


# ------------------------------------------------------------------------------------------ volatility

VOLATILITY_ARTIFACT = "volatility"


class VolatilityPyfunc(PythonModel):
    """Loads the saved VolatilityModel; predicts each row's next-bar variance from the bars per symbol."""

    def load_context(self, context: PythonModelContext) -> None:
        self.model = load_volatility_model(Path(context.artifacts[VOLATILITY_ARTIFACT]))

    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        return predict_frame(self.model, model_input)


def log_volatility_model(model: VolatilityModel, example: pd.DataFrame, name: str = "model") -> ModelInfo:
    """Log a fitted VolatilityModel into the active MLflow run as a pyfunc (input: bars per symbol)."""
    if mlflow.active_run() is None:
        raise RuntimeError("log_volatility_model logs into the active run: call it inside mlflow.start_run()")
    signature = infer_signature(example, predict_frame(model, example))
    with tempfile.TemporaryDirectory() as tmp:
        saved = model.save(Path(tmp) / VOLATILITY_ARTIFACT)
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=VolatilityPyfunc(),
            artifacts={VOLATILITY_ARTIFACT: str(saved)},
            signature=signature,
            input_example=example.head(EXAMPLE_ROWS),
            pip_requirements=pip_requirements(saved),
            metadata={"method": model.method, "kind": model.kind, "task": "volatility"},
        )
    log.info("logged volatility model %s as %s", model.label, info.model_uri)
    return info


def unwrap_volatility_model(model: PyFuncModel) -> VolatilityModel:
    """The VolatilityModel inside a pyfunc model logged by `log_volatility_model`."""
    inner = model.unwrap_python_model()
    if not isinstance(inner, VolatilityPyfunc):
        raise TypeError("this pyfunc model was not logged by log_volatility_model")
    return inner.model
