"""Return features."""

from __future__ import annotations

import numpy as np
import pandas as pd


def log_return(bars: pd.DataFrame, horizon: int = 1) -> dict[str, pd.Series]:
    """Log return of close over the past `horizon` bars: log(close / close `horizon` bars ago)."""
    close = bars["close"]
    return {"log_return": np.log(close / close.shift(horizon))}
