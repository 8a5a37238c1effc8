"""Family "svm": RBF SVR / SVC on standardised features, fit on the most recent rows.

Kernel SVMs fit in O(n^2)-O(n^3): the fit keeps only about the latest `max_train_rows` rows (default 3,000;
the same latest share of every symbol), which keeps fit to seconds. SVR also sees a standardised target:
daily log returns (std ~0.01) sit entirely inside the default epsilon tube otherwise, leaving no support
vectors and a constant prediction.

P(up) comes from Platt scaling: sklearn 1.9 deprecates `SVC(probability=True)` for
`CalibratedClassifierCV(SVC(), ensemble=False)`, which does the same (sigmoid fit on 5-fold out-of-fold
decision values, then one SVC on all rows).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import TransformedTargetRegressor
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, SVR

from finstream.models.zoo.rows import SymbolRows
from finstream.models.zoo.tabular import TabularForecaster

log = logging.getLogger(__name__)


class SVMForecaster(TabularForecaster):
    """RBF support vector machine; `epsilon` is in units of the return's std (target is standardised)."""

    family: ClassVar[str] = "svm"
    defaults: ClassVar[dict[str, Any]] = {
        "C": 1.0,
        "epsilon": 0.1,
        "gamma": "scale",
        "kernel": "rbf",
        "max_train_rows": 3000,
    }

    def _fit_matrix(
        self, A: np.ndarray, t: np.ndarray, X: pd.DataFrame
    ) -> Pipeline | TransformedTargetRegressor:
        p = self.params
        keep = SymbolRows.of(X).recent_mask(int(p["max_train_rows"]))
        if not keep.all():
            log.info("svm: fitting on the latest %d of %d rows (max_train_rows)", int(keep.sum()), len(keep))
        A, t = A[keep], t[keep]
        if self.task == "regression":
            svr = SVR(C=p["C"], epsilon=p["epsilon"], gamma=p["gamma"], kernel=p["kernel"])
            est = TransformedTargetRegressor(
                regressor=make_pipeline(StandardScaler(), svr), transformer=StandardScaler()
            )
            return est.fit(A, t)
        svc = SVC(C=p["C"], gamma=p["gamma"], kernel=p["kernel"])
        platt = CalibratedClassifierCV(svc, method="sigmoid", ensemble=False)
        return make_pipeline(StandardScaler(), platt).fit(A, t)
