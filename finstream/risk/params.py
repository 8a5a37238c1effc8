"""Risk parameters: estimation windows, VaR levels, alert thresholds and position limits.

One pydantic model so that params.yaml / `Settings` can carry it (`Settings.risk`) and the batch report, the
service and the stream all read the same numbers.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

VaRMethod = Literal["historical", "normal", "student_t", "ewma", "model"]


class RiskParams(BaseModel):
    """How risk is measured and when an alert fires (fractions of position value throughout)."""

    model_config = ConfigDict(frozen=True)

    #: VaR / ES confidence levels, ascending; the highest one grades the most severe alerts
    levels: tuple[float, ...] = (0.95, 0.99)
    #: trailing bars for historical, normal and Student-t estimates (and the rolling covariance)
    window: int = Field(default=250, ge=20)
    #: RiskMetrics decay of the EWMA variance / covariance
    ewma_lambda: float = Field(default=0.94, gt=0.0, lt=1.0)
    #: Student-t degrees of freedom; None fits them by MLE on the trailing window
    t_df: float | None = Field(default=None, gt=2.0)
    #: refit the Student-t degrees of freedom every this many bars (a fit costs under 1 ms)
    t_refit_bars: int = Field(default=21, ge=1)
    #: distribution of the model-based VaR (EWMA or external volatility forecast)
    model_dist: Literal["normal", "t"] = "normal"
    #: bars of the rolling drawdown (current and maximum within the window)
    drawdown_window: int = Field(default=250, ge=2)
    #: bars of the realised volatility (sample std of simple returns); also seeds the EWMA variance
    vol_window: int = Field(default=20, ge=2)
    #: the volatility whose spikes are watched: realised, EWMA, or the forecast given with each bar
    vol_source: Literal["realised", "ewma", "forecast"] = "realised"
    #: how many previous volatility values form the trailing distribution a spike is measured against
    spike_lookback: int = Field(default=250, ge=3)
    #: spike score: z-score against the trailing mean/std, or ratio to the trailing median
    spike_kind: Literal["zscore", "ratio"] = "zscore"
    #: the VaR method whose forecast the VaR-breach rule compares the realised loss with
    alert_method: VaRMethod = "historical"
    drawdown_warning: float = Field(default=0.10, gt=0.0, lt=1.0)
    drawdown_critical: float = Field(default=0.20, gt=0.0, lt=1.0)
    #: thresholds on the spike score (defaults suit the z-score; for "ratio" use e.g. 1.5 and 2.0)
    spike_warning: float = 2.0
    spike_critical: float = 3.0
    #: largest absolute weight of one symbol, and largest gross exposure (sum of absolute weights)
    max_weight: float = Field(default=0.5, gt=0.0)
    max_gross: float = Field(default=1.5, gt=0.0)
    #: a position above this fraction of its limit raises a warning; above the limit, critical
    limit_warning_fraction: float = Field(default=0.9, gt=0.0, le=1.0)
    allow_short: bool = False
    #: how far portfolio weights may sum away from 1
    weight_tolerance: float = Field(default=1e-6, gt=0.0)

    @model_validator(mode="after")
    def _check(self) -> RiskParams:
        if not self.levels:
            raise ValueError("risk levels: give at least one confidence level")
        if any(not 0.5 < level < 1.0 for level in self.levels):
            raise ValueError(f"risk levels must lie in (0.5, 1): {self.levels}")
        if list(self.levels) != sorted(set(self.levels)):
            raise ValueError(f"risk levels must be distinct and ascending: {self.levels}")
        if self.drawdown_warning >= self.drawdown_critical:
            raise ValueError("drawdown_warning must be below drawdown_critical")
        if self.spike_warning >= self.spike_critical:
            raise ValueError("spike_warning must be below spike_critical")
        return self
