"""Risk: VaR / ES (historical, normal, Student-t, EWMA and model-based), portfolio VaR, drawdown, volatility
spikes and exposure limits (`measures`), their bar-by-bar twins for the stream (`rolling`), VaR backtests
(`backtests`), alert rules (`alerts`) and the parameters (`params`).

One module set for the batch report, the service and the stream: `measures.risk_frame` computes every
measure over a history, `rolling.RollingRisk` the same numbers bar by bar. Returns are simple returns; VaR
and ES are positive fractions of position value (see `finstream.risk.measures`). Import the submodules:
this package imports nothing, so `finstream.config` can read `risk.params` without loading scipy.
"""
