"""Risk alerts on real bars: for every rule a real bar that breaches it and one that does not (S&P 500 in
October 2008, the CSI 300 crash of June-July 2015 and its circuit-breaker days of January 2016, NASDAQ in
April 2000), limits on weights that drifted with real prices, and the batch rules equal to the per-bar
monitor."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from finstream.config import Settings
from finstream.risk.alerts import (
    PORTFOLIO,
    Alert,
    RiskMonitor,
    evaluate_bar,
    evaluate_frame,
    evaluate_limits,
)
from finstream.risk.measures import es_column, risk_frame, var_column
from finstream.risk.params import RiskParams
from finstream.sources.packaged import PackagedSource
from finstream.symbols import parse_symbol

PARAMS = RiskParams()


def _closes(bars: pd.DataFrame, symbol: str) -> pd.Series:
    """Closes indexed by exchange-local trading date."""
    dates = pd.DatetimeIndex(bars["ts"]).tz_convert(parse_symbol(symbol).tz).normalize().tz_localize(None)
    return pd.Series(bars["close"].to_numpy(dtype=float), index=dates, name=symbol)


@pytest.fixture(scope="module")
def closes(sp500: pd.DataFrame, csi300: pd.DataFrame) -> dict[str, pd.Series]:
    nasdaq = PackagedSource(Settings()).fetch(parse_symbol("^IXIC"), None, None)
    return {
        "^GSPC": _closes(sp500, "^GSPC"),
        "^IXIC": _closes(nasdaq, "^IXIC"),
        "000300.SH": _closes(csi300, "000300.SH"),
    }


@pytest.fixture(scope="module")
def frames(closes: dict[str, pd.Series]) -> dict[str, pd.DataFrame]:
    return {symbol: risk_frame(close, PARAMS) for symbol, close in closes.items()}


def _alerts_on(frames: dict, symbol: str, day: str) -> dict[str, Alert]:
    frame = frames[symbol]
    i = frame.index.get_loc(pd.Timestamp(day))
    alerts = evaluate_bar(
        frame.iloc[i].to_dict(), frame.iloc[i - 1].to_dict(), frame.index[i], PARAMS, symbol
    )
    return {a.rule: a for a in alerts}


@pytest.mark.parametrize(
    ("symbol", "day", "severity"),
    [
        ("^GSPC", "2008-10-15", "critical"),  # -9.0 %, beyond the 99 % ES forecast
        ("^IXIC", "2000-04-14", "critical"),  # -9.7 %, the dot-com crash
        ("000300.SH", "2015-06-26", "critical"),  # -7.9 %
        ("000300.SH", "2015-07-08", "warning"),  # -6.7 %: beyond VaR 99 %, inside ES 99 %
        ("000300.SH", "2016-01-04", "info"),  # -7.0 % circuit breaker: the trailing year held such days
        ("^GSPC", "2017-06-15", None),  # -0.2 %
        ("^GSPC", "2008-10-16", None),  # +4.3 % the day after
    ],
)
def test_var_breach_on_real_bars(frames: dict, symbol: str, day: str, severity: str | None) -> None:
    alert = _alerts_on(frames, symbol, day).get("var_breach")
    frame = frames[symbol]
    i = frame.index.get_loc(pd.Timestamp(day))
    loss, forecasts = frame["loss"].iloc[i], frame.iloc[i - 1]  # the forecasts made the bar before
    var95, var99 = forecasts[var_column("historical", 0.95)], forecasts[var_column("historical", 0.99)]
    es99 = forecasts[es_column("historical", 0.99)]
    if severity is None:
        assert alert is None and loss <= var95
        return
    assert alert is not None and alert.severity == severity
    assert alert.value == loss and alert.symbol == symbol and alert.bar_time == pd.Timestamp(day)
    expected_limit = {"critical": es99, "warning": var99, "info": var95}[severity]
    assert alert.limit == expected_limit and loss > expected_limit


@pytest.mark.parametrize(
    ("symbol", "day", "severity"),
    [
        ("000300.SH", "2015-07-08", "critical"),  # 31.6 % below the 2015-06-08 peak
        ("^GSPC", "2008-10-15", "critical"),  # 41 % below the high of the trailing 250 bars
        ("000300.SH", "2015-06-26", "warning"),  # 19.0 %
        ("000300.SH", "2015-06-08", None),  # the peak itself
    ],
)
def test_drawdown_on_real_bars(frames: dict, symbol: str, day: str, severity: str | None) -> None:
    alert = _alerts_on(frames, symbol, day).get("drawdown")
    close = frames[symbol]["price"]
    i = close.index.get_loc(pd.Timestamp(day))
    drawdown = 1 - close.iloc[i] / close.iloc[i - 249 : i + 1].max()  # the oracle
    if severity is None:
        assert alert is None and drawdown <= PARAMS.drawdown_warning
        return
    assert alert is not None and alert.severity == severity
    assert alert.value == pytest.approx(drawdown, rel=1e-12)
    assert alert.limit == (PARAMS.drawdown_critical if severity == "critical" else PARAMS.drawdown_warning)


@pytest.mark.parametrize(
    ("symbol", "day", "severity"),
    [
        ("^GSPC", "2008-10-15", "critical"),  # 20-day volatility 5.6 sd above its trailing year
        ("000300.SH", "2015-07-08", "critical"),
        ("000300.SH", "2015-06-26", "warning"),
        ("000300.SH", "2016-01-04", None),  # high volatility, but no spike against the 2015 crash year
        ("^GSPC", "2017-06-15", None),
    ],
)
def test_volatility_spike_on_real_bars(frames: dict, symbol: str, day: str, severity: str | None) -> None:
    alert = _alerts_on(frames, symbol, day).get("vol_spike")
    vol = frames[symbol]["vol"]
    i = vol.index.get_loc(pd.Timestamp(day))
    history = vol.iloc[i - 250 : i]
    z = (vol.iloc[i] - history.mean()) / history.std(ddof=1)  # the oracle
    if severity is None:
        assert alert is None and z <= PARAMS.spike_warning
        return
    assert alert is not None and alert.severity == severity
    assert alert.value == pytest.approx(z, rel=1e-9)


@pytest.fixture(scope="module")
def us_cn(closes: dict[str, pd.Series]) -> pd.DataFrame:
    return pd.concat({s: closes[s] for s in ("^GSPC", "000300.SH")}, axis=1, join="inner")


def test_weight_limit_on_weights_drifting_with_real_prices(us_cn: pd.DataFrame) -> None:
    """50/50 S&P 500 / CSI 300 bought 2014-06-03 and held: the CSI 300 rally pushes its weight past 60 %."""
    params = RiskParams(max_weight=0.6)
    held = us_cn.loc["2014-06-03":]
    value = 0.5 * held / held.iloc[0]
    weights = value.div(value.sum(axis=1), axis=0)
    expected = {
        "2014-07-15": None,
        "2014-12-05": "warning",
        "2015-04-08": "critical",
        "2015-06-08": "critical",
    }
    for day, severity in expected.items():
        w = weights.loc[day].to_dict()
        alerts = [a for a in evaluate_limits(w, pd.Timestamp(day), params) if a.rule == "max_weight"]
        if severity is None:
            assert alerts == [] and max(w.values()) <= 0.54, day
            continue
        assert [(a.symbol, a.severity) for a in alerts] == [("000300.SH", severity)], day
        assert alerts[0].value == pytest.approx(w["000300.SH"]) and alerts[0].limit == 0.6


def test_gross_limit_on_a_long_short_book_drifting_with_real_prices(us_cn: pd.DataFrame) -> None:
    """130 % long CSI 300 / 30 % short S&P 500 from the 2015-06-08 peak: the crash levers the book up."""
    params = RiskParams(max_gross=1.8, allow_short=True)
    held = us_cn.loc["2015-06-08":]
    growth = held / held.iloc[0]
    long_, short = 1.3 * growth["000300.SH"], -0.3 * growth["^GSPC"]
    equity = long_ + short
    expected = {"2015-06-08": None, "2015-06-15": "warning", "2015-07-08": "critical"}
    for day, severity in expected.items():
        w = {"000300.SH": long_[day] / equity[day], "^GSPC": short[day] / equity[day]}
        alerts = [a for a in evaluate_limits(w, pd.Timestamp(day), params) if a.rule == "max_gross"]
        gross = abs(w["000300.SH"]) + abs(w["^GSPC"])
        if severity is None:
            assert alerts == [] and gross == pytest.approx(1.6), day
            continue
        assert [(a.symbol, a.severity) for a in alerts] == [(PORTFOLIO, severity)], day
        assert alerts[0].value == pytest.approx(gross)


def test_batch_rules_equal_the_per_bar_monitor(closes: dict, frames: dict) -> None:
    close = closes["000300.SH"]
    monitor = RiskMonitor("000300.SH", PARAMS)
    streamed = [alert for ts, price in close.items() for alert in monitor.on_bar(ts, price)[1]]
    batch = evaluate_frame(frames["000300.SH"], PARAMS, "000300.SH")
    assert len(streamed) == len(batch) > 1000
    for a, b in zip(streamed, batch, strict=True):
        assert (a.rule, a.severity, a.symbol, a.bar_time) == (b.rule, b.severity, b.symbol, b.bar_time)
        assert a.value == pytest.approx(b.value, rel=1e-9) and a.limit == pytest.approx(b.limit, rel=1e-9)


def test_warming_up_never_fires_and_alerts_serialise() -> None:
    nan = float("nan")
    quiet = {"loss": 0.5, "drawdown": nan, "vol_spike": nan}
    assert (
        evaluate_bar(quiet, {var_column("historical", 0.95): nan}, pd.Timestamp("2024-01-02"), PARAMS) == []
    )
    alert = Alert("critical", "drawdown", 0.3, 0.2, "000300.SH", pd.Timestamp("2015-07-08 07:00", tz="UTC"))
    payload = json.loads(json.dumps(alert.to_dict()))
    assert payload["bar_time"] == "2015-07-08T07:00:00+00:00" and payload["symbol"] == "000300.SH"
    assert set(payload) == {"severity", "rule", "value", "limit", "symbol", "bar_time", "message"}
    assert np.isfinite(payload["value"])
