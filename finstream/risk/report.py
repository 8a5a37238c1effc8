"""The risk report: latest VaR / ES per method and level, drawdown, volatility and its spike score, per symbol
and for a weighted portfolio; walk-forward VaR backtests over the whole stored history; the alerts of the
last bar. `risk_report` computes it from the validated bars, `write_report` writes markdown, a
self-contained HTML page (inline CSS, plots base64-embedded) and one exceedance plot (PNG) per series.

Every number comes from `finstream.risk.measures`, `backtests` and `alerts` on the bars' close prices:
the report adds no estimator of its own. The portfolio is rebalanced to its weights every bar over the
bars all its symbols share (daily bars: the same exchange-local session date; the return between two
shared dates spans any holiday of one market); its bar time is the latest close of that date.

This module is core: it reads settings duck-typed (`ReportSettings`) because finstream.config imports
finstream.risk.params, and importing the config here would make the two packages a cycle.
"""

from __future__ import annotations

import base64
import html
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import pandas as pd

from finstream.errors import NoDataError
from finstream.intervals import DAILY, check_interval
from finstream.risk.alerts import PORTFOLIO, Alert, evaluate_frame, evaluate_limits
from finstream.risk.backtests import backtest_table, walk_forward
from finstream.risk.measures import (
    BASE_METHODS,
    PortfolioWeightsError,
    es_column,
    level_tag,
    portfolio_frame,
    risk_frame,
    validate_weights,
    var_column,
)
from finstream.risk.params import RiskParams
from finstream.storage import BarTable
from finstream.symbols import parse_symbol, parse_symbols

log = logging.getLogger(__name__)

#: alerts are counted over this many trailing bars of each series (the last bar's are listed)
ALERT_WINDOW = 20
#: a backtest is rejected when a test's p-value is below this
SIGNIFICANCE = 0.05
#: the fall-back alert method when `RiskParams.alert_method` is "model" (the report has no vol forecast)
FALLBACK_ALERT_METHOD = "historical"
SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


class ReportSettings(Protocol):
    """What the report reads of `finstream.config.Settings`: `risk`, `ingest.symbols`, `paths`."""

    @property
    def risk(self) -> RiskParams: ...

    @property
    def ingest(self) -> Any: ...

    @property
    def paths(self) -> Any: ...


@dataclass(frozen=True)
class SeriesRisk:
    """The report of one symbol or of the portfolio."""

    name: str
    kind: Literal["symbol", "portfolio"]
    #: `risk_frame` (or `portfolio_frame`) indexed by bar close time: the last row holds the latest estimates
    frame: pd.DataFrame
    #: `walk_forward` of its returns: each bar's VaR / ES made one bar earlier, and the exceedances
    walk: pd.DataFrame
    #: `backtest_table` of `walk` plus a `verdict` column
    backtests: pd.DataFrame
    #: alerts on the last bar (the portfolio's include its position and gross-exposure limits)
    last_alerts: list[Alert]
    #: alerts over the last `ALERT_WINDOW` bars (bar rules only)
    recent_alerts: list[Alert]

    @property
    def last_time(self) -> pd.Timestamp:
        return pd.Timestamp(self.frame.index[-1])

    @property
    def first_time(self) -> pd.Timestamp:
        return pd.Timestamp(self.frame.index[0])

    @property
    def latest(self) -> pd.Series:
        """The measures after the last bar (VaR / ES: the forecast for the next bar)."""
        return self.frame.iloc[-1]


@dataclass(frozen=True)
class RiskReport:
    """Risk of some symbols (and a portfolio of them) from their stored bars; see the module docstring."""

    created: pd.Timestamp
    interval: str
    params: RiskParams
    symbols: list[str]
    weights: dict[str, float] | None
    #: symbol (or "portfolio") -> its report, symbols first in the order asked
    series: dict[str, SeriesRisk]
    methods: tuple[str, ...] = BASE_METHODS
    alert_window: int = ALERT_WINDOW
    notes: list[str] = field(default_factory=list)

    def latest_table(self) -> pd.DataFrame:
        """One row per series, method and level: the latest VaR and ES (positive loss fractions)."""
        rows = []
        for name, s in self.series.items():
            last = s.latest
            for method in self.methods:
                for level in self.params.levels:
                    rows.append(
                        {
                            "name": name,
                            "method": method,
                            "level": level,
                            "var": float(last[var_column(method, level)]),
                            "es": float(last[es_column(method, level)]),
                        }
                    )
        return pd.DataFrame(rows)

    def summary_table(self) -> pd.DataFrame:
        """One row per series: bars, period, last price, volatility, drawdowns, spike score, Student-t df."""
        rows = []
        for name, s in self.series.items():
            last = s.latest
            rows.append(
                {
                    "name": name,
                    "bars": len(s.frame),
                    "first": s.first_time,
                    "last": s.last_time,
                    "price": float(last["price"]),
                    "vol": float(last["vol"]),
                    "ewma_vol": float(last["ewma_vol"]),
                    "drawdown": float(last["drawdown"]),
                    "max_drawdown": float(last["max_drawdown"]),
                    "vol_spike": float(last["vol_spike"]),
                    "t_df": float(last["t_df"]),
                }
            )
        return pd.DataFrame(rows)

    def backtest_summary(self) -> pd.DataFrame:
        """Every series' backtests: one row per (series, method, level)."""
        frames = [s.backtests.assign(name=name) for name, s in self.series.items()]
        out = pd.concat(frames, ignore_index=True)
        return out[["name", *[c for c in out.columns if c != "name"]]]

    def last_alerts(self) -> list[Alert]:
        """The alerts of every series' last bar, most severe first."""
        alerts = [a for s in self.series.values() for a in s.last_alerts]
        return sorted(alerts, key=lambda a: SEVERITY_ORDER[a.severity])

    def alert_counts(self) -> pd.DataFrame:
        """How often each rule fired at each severity over the last `alert_window` bars of each series."""
        rows = [
            {"name": name, "rule": a.rule, "severity": a.severity}
            for name, s in self.series.items()
            for a in s.recent_alerts
        ]
        if not rows:
            return pd.DataFrame(columns=["name", "rule", "severity", "count"])
        counts = pd.DataFrame(rows).value_counts(sort=False).rename("count").reset_index()
        order = counts["severity"].map(SEVERITY_ORDER)
        counts = counts.assign(_o=order).sort_values(["name", "_o", "rule"]).drop(columns="_o")
        return counts.reset_index(drop=True)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (NaN as None, times as ISO 8601)."""
        series: dict[str, Any] = {}
        for name, s in self.series.items():
            last = s.latest
            series[name] = {
                "kind": s.kind,
                "bars": len(s.frame),
                "first": s.first_time.isoformat(),
                "last": s.last_time.isoformat(),
                "latest": {
                    **{
                        k: float(last[k])
                        for k in ("price", "vol", "ewma_vol", "t_df", "drawdown", "max_drawdown", "vol_spike")
                    },
                    "var": {
                        m: {level_tag(lv): float(last[var_column(m, lv)]) for lv in self.params.levels}
                        for m in self.methods
                    },
                    "es": {
                        m: {level_tag(lv): float(last[es_column(m, lv)]) for lv in self.params.levels}
                        for m in self.methods
                    },
                },
                "backtests": s.backtests.to_dict("records"),
                "alerts": {
                    "last_bar": s.last_time.isoformat(),
                    "active": [a.to_dict() for a in s.last_alerts],
                    "recent_window_bars": self.alert_window,
                    "recent_counts": _counts(s.recent_alerts),
                },
            }
        return _clean(
            {
                "created": self.created.isoformat(),
                "interval": self.interval,
                "symbols": self.symbols,
                "weights": self.weights,
                "alert_method": self.params.alert_method,
                "significance": SIGNIFICANCE,
                "params": self.params.model_dump(mode="json"),
                "series": series,
                "notes": self.notes,
            }
        )


def _counts(alerts: Sequence[Alert]) -> list[dict[str, Any]]:
    counted: dict[tuple[str, str], int] = {}
    for a in alerts:
        counted[(a.rule, a.severity)] = counted.get((a.rule, a.severity), 0) + 1
    return [{"rule": r, "severity": s, "count": n} for (r, s), n in counted.items()]


def _clean(value: Any) -> Any:
    """Numpy scalars as Python numbers, NaN / inf as None, timestamps as ISO strings, recursively."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


# --- computing ---------------------------------------------------------------------------------------


def parse_weights(text: str) -> dict[str, float]:
    """ "000300.SH=0.4,^GSPC=0.6" -> {"000300.SH": 0.4, "^GSPC": 0.6} (symbols canonicalised); a malformed
    pair raises PortfolioWeightsError naming it, an unparseable symbol SymbolError."""
    weights: dict[str, float] = {}
    problems = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, value = item.rpartition("=")
        if not sep or not name.strip():
            problems.append(f"{item!r} is not SYMBOL=WEIGHT")
            continue
        try:
            weight = float(value)
        except ValueError:
            problems.append(f"weight {value.strip()!r} of {name.strip()} is not a number")
            continue
        symbol = parse_symbol(name).canonical
        if symbol in weights:
            problems.append(f"{symbol} is given twice")
        weights[symbol] = weight
    if problems:
        raise PortfolioWeightsError("portfolio weights: " + "; ".join(problems))
    if not weights:
        raise PortfolioWeightsError("portfolio weights are empty: give SYMBOL=WEIGHT pairs")
    return weights


def verdict(row: Mapping[str, Any], significance: float = SIGNIFICANCE) -> str:
    """ "pass", or "reject at 5 % (...)" naming what failed: "too many" / "too few" exceedances (Kupiec),
    "clustered" (Christoffersen independence), or "joint" when only the conditional-coverage test rejects."""
    reasons = []
    if row["kupiec_pvalue"] < significance:
        reasons.append("too many" if row["exceedances"] > row["expected"] else "too few")
    if row["independence_informative"] and row["independence_pvalue"] < significance:
        reasons.append("clustered")
    if not reasons and row["conditional_coverage_pvalue"] < significance:
        reasons.append("joint")
    if not reasons:
        return "pass"
    return f"reject at {significance * 100:g} % ({', '.join(reasons)})"


def _closes(settings: ReportSettings, symbols: Sequence[str] | None, interval: str) -> dict[str, pd.Series]:
    """Close prices indexed by bar close time, per symbol (default: the ingest symbols that have bars)."""
    table = BarTable(settings.paths.validated_bars)
    asked = [s.canonical for s in parse_symbols(list(symbols))] if symbols else None
    wanted = asked or [parse_symbol(s).canonical for s in settings.ingest.symbols]
    bars = table.read(symbols=wanted, intervals=[interval])
    found = {str(name): group for name, group in bars.groupby("symbol", sort=False)}
    missing = [s for s in wanted if s not in found]
    hint = "run `finstream ingest` and `finstream validate` first"
    if asked and missing:
        raise NoDataError(
            f"no validated {interval} bars for {', '.join(missing)} under {settings.paths.validated_bars}"
            f" ({hint})"
        )
    if not found:
        raise NoDataError(
            f"no validated {interval} bars for {', '.join(wanted)} under {settings.paths.validated_bars}"
            f" ({hint})"
        )
    if missing:
        log.info("risk report: no validated %s bars for %s; left out", interval, ", ".join(missing))
    out = {}
    for symbol in (s for s in wanted if s in found):
        group = found[symbol].drop_duplicates("ts", keep="last")
        out[symbol] = pd.Series(group["close"].to_numpy(np.float64), index=pd.DatetimeIndex(group["ts"]))
    return out


def _check_length(name: str, n: int, params: RiskParams) -> None:
    needed = params.window + 2
    if n < needed:
        raise NoDataError(
            f"{name}: {n} bars, the risk report needs at least {needed} (risk.window {params.window} + 2)"
        )


def aligned_prices(closes: Mapping[str, pd.Series], interval: str) -> pd.DataFrame:
    """Close prices of the bars all symbols share, one column per symbol: daily bars by exchange-local
    session date, intraday bars by close time; indexed by the latest close time of each shared bar."""
    keyed = {}
    times = {}
    for symbol, series in closes.items():
        idx = pd.DatetimeIndex(series.index)
        local_date = pd.DatetimeIndex(idx.tz_convert(parse_symbol(symbol).tz).date)
        key = local_date if interval == DAILY else idx
        keyed[symbol] = pd.Series(series.to_numpy(), index=key)
        times[symbol] = pd.Series(idx, index=key)
    prices = pd.concat(keyed, axis=1, join="inner").sort_index()
    stamps = pd.concat(times, axis=1, join="inner").loc[prices.index].max(axis=1)
    prices.index = pd.DatetimeIndex(stamps, name="ts")
    return prices


def _series_risk(
    name: str,
    kind: Literal["symbol", "portfolio"],
    frame: pd.DataFrame,
    params: RiskParams,
    window: int,
    weights: Mapping[str, float] | None = None,
) -> SeriesRisk:
    """Backtests and alerts of one series' risk frame; `weights` add the position / gross limits."""
    returns = frame["ret"].iloc[1:]
    walk = walk_forward(returns, params)
    backtests = backtest_table(walk)
    backtests["verdict"] = [verdict(row) for row in backtests.to_dict("records")]
    tail = frame.iloc[-(window + 1) :]
    recent = [a for a in evaluate_frame(tail, params, name) if a.bar_time in tail.index[1:]]
    last = [a for a in recent if a.bar_time == frame.index[-1]]
    if weights is not None:
        last += evaluate_limits(weights, frame.index[-1], params, name)
    return SeriesRisk(name, kind, frame, walk, backtests, last, recent)


def risk_report(
    settings: ReportSettings,
    symbols: Sequence[str] | None = None,
    weights: Mapping[str, float] | None = None,
    interval: str = DAILY,
    *,
    alert_window: int = ALERT_WINDOW,
) -> RiskReport:
    """The risk report of `symbols` (default: `settings.ingest.symbols` that have validated bars) and, with
    `weights`, of their portfolio, from the validated bars of `interval` under `settings.risk`.

    NoDataError when a symbol asked for has no bars (or too few), PortfolioWeightsError when the weights are
    unusable (unknown symbols, not summing to 1, short without `allow_short`).
    """
    check_interval(interval)
    params: RiskParams = settings.risk
    notes = []
    if params.alert_method == "model":
        params = params.model_copy(update={"alert_method": FALLBACK_ALERT_METHOD})
        notes.append(
            "risk.alert_method is 'model' but the report has no volatility forecast:"
            f" alerts use the {FALLBACK_ALERT_METHOD} VaR / ES"
        )
    closes = _closes(settings, symbols, interval)
    w_map = None
    if weights is not None:
        w_map = validate_weights(
            weights, list(closes), allow_short=params.allow_short, tolerance=params.weight_tolerance
        )
    series: dict[str, SeriesRisk] = {}
    for symbol, prices in closes.items():
        _check_length(symbol, len(prices), params)
        series[symbol] = _series_risk(symbol, "symbol", risk_frame(prices, params), params, alert_window)
    if w_map is not None:
        prices = aligned_prices({s: closes[s] for s in w_map}, interval)
        _check_length(f"the portfolio ({len(prices)} shared bars)", len(prices), params)
        returns = pd.DataFrame(
            prices.to_numpy()[1:] / prices.to_numpy()[:-1] - 1.0,
            index=prices.index[1:],
            columns=prices.columns,
        )
        frame = portfolio_frame(returns, w_map, params)
        frame.index = prices.index
        series[PORTFOLIO] = _series_risk(PORTFOLIO, "portfolio", frame, params, alert_window, w_map)
        shared = "same local session date" if interval == DAILY else "same close time"
        notes.append(
            f"portfolio: {len(prices)} bars all of {', '.join(w_map)} share ({shared}), rebalanced every bar"
        )
    report = RiskReport(
        created=pd.Timestamp.now(tz="UTC").floor("s"),
        interval=interval,
        params=params,
        symbols=list(closes),
        weights=w_map,
        series=series,
        alert_window=alert_window,
        notes=notes,
    )
    log.info(
        "risk report: %d series, %d alerts on the last bar",
        len(series),
        len(report.last_alerts()),
        extra={"symbols": report.symbols, "weights": w_map},
    )
    return report


# --- writing -----------------------------------------------------------------------------------------


def file_tag(name: str) -> str:
    """A symbol as it may appear in a file name or MLflow key: "^GSPC" -> "_GSPC"."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def _pct(value: Any, digits: int = 2) -> str:
    v = float(value)
    return "-" if not math.isfinite(v) else f"{100 * v:.{digits}f}%"


def _num(value: Any, digits: int = 3) -> str:
    v = float(value)
    return "-" if not math.isfinite(v) else f"{v:.{digits}f}"


def _when(ts: Any, interval: str = "") -> str:
    """A bar time for people: the date for daily bars, else minutes in UTC."""
    return pd.Timestamp(ts).strftime("%Y-%m-%d" if interval == DAILY else "%Y-%m-%d %H:%M UTC")


def latest_display(report: RiskReport) -> pd.DataFrame:
    """Latest VaR / ES as a table for people: a row per series and method, VaR / ES columns per level."""
    rows = []
    latest = report.latest_table()
    for (name, method), group in latest.groupby(["name", "method"], sort=False):
        row = {"series": name, "method": method}
        for _, r in group.iterrows():
            tag = level_tag(r["level"])
            row[f"VaR {tag}%"], row[f"ES {tag}%"] = _pct(r["var"]), _pct(r["es"])
        rows.append(row)
    return pd.DataFrame(rows)


def summary_display(report: RiskReport) -> pd.DataFrame:
    s = report.summary_table()
    return pd.DataFrame(
        {
            "series": s["name"],
            "bars": s["bars"],
            "last bar": [_when(t, report.interval) for t in s["last"]],
            "price": [f"{v:,.2f}" for v in s["price"]],
            "vol": [_pct(v) for v in s["vol"]],
            "EWMA vol": [_pct(v) for v in s["ewma_vol"]],
            "drawdown": [_pct(v) for v in s["drawdown"]],
            "max DD": [_pct(v) for v in s["max_drawdown"]],
            "spike": [_num(v, 2) for v in s["vol_spike"]],
            "t df": [_num(v, 1) for v in s["t_df"]],
        }
    )


def backtest_display(report: RiskReport) -> pd.DataFrame:
    b = report.backtest_summary()
    return pd.DataFrame(
        {
            "series": b["name"],
            "method": b["method"],
            "level": [f"{level_tag(v)}%" for v in b["level"]],
            "bars": b["observations"],
            "expected": [f"{v:.1f}" for v in b["expected"]],
            "observed": b["exceedances"],
            "Kupiec p": [_num(v) for v in b["kupiec_pvalue"]],
            "Christoffersen p": [
                _num(v) if informative else "n/a"
                for v, informative in zip(
                    b["independence_pvalue"], b["independence_informative"], strict=True
                )
            ],
            "CC p": [_num(v) for v in b["conditional_coverage_pvalue"]],
            "zone": b["zone"],
            "verdict": b["verdict"],
        }
    )


def alerts_display(alerts: Sequence[Alert], interval: str = "") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "severity": [a.severity for a in alerts],
            "series": [a.symbol for a in alerts],
            "rule": [a.rule for a in alerts],
            "bar": [_when(a.bar_time, interval) for a in alerts],
            "message": [a.message for a in alerts],
        },
        columns=["severity", "series", "rule", "bar", "message"],
    )


def alert_window_text(report: RiskReport) -> str:
    """Which bars the alert section covers."""
    lasts = ", ".join(f"{name} {_when(s.last_time)}" for name, s in report.series.items())
    return (
        f"alerts on each series' last bar ({lasts}); counts over the last {report.alert_window} bars of each"
        f" series; VaR breaches against the {report.params.alert_method} forecasts"
    )


def exceedance_plot(series: SeriesRisk, params: RiskParams, path: Path) -> Path:
    """PNG of the walk-forward returns, the -VaR line of the alert method at the highest level, and the
    exceedances marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    method, level = params.alert_method, params.levels[-1]
    walk = series.walk[(series.walk["method"] == method) & (series.walk["level"] == level)]
    ts = pd.DatetimeIndex(walk["ts"]).tz_convert(None)
    hits = walk["exceedance"].to_numpy()
    fig, ax = plt.subplots(figsize=(10, 3.6), dpi=100)
    try:
        ax.plot(ts, walk["ret"], color="#9aa5b1", linewidth=0.6, label="return")
        ax.plot(
            ts, -walk["var"], color="#1f5fbf", linewidth=1.0, label=f"-VaR {level_tag(level)}% ({method})"
        )
        ax.scatter(ts[hits], walk["ret"][hits], color="#d62728", s=14, zorder=3, label="exceedance")
        ax.axhline(0.0, color="#444", linewidth=0.4)
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
        ax.set_title(
            f"{series.name}: {int(hits.sum())} exceedances of {len(walk)} bars"
            f" (expected {len(walk) * (1 - level):.1f}), walk-forward",
            fontsize=10,
        )
        ax.legend(loc="lower left", fontsize=8, frameon=False, ncols=3)
        ax.grid(alpha=0.25)
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em;color:#1d2733}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #d8dee4}
table{border-collapse:collapse;margin:.6em 0;font-size:.88em}
th,td{border:1px solid #d8dee4;padding:.25em .6em;text-align:right}
th{background:#f3f5f7}td:first-child,th:first-child{text-align:left}
td.text{text-align:left}.pass{color:#1a7f37}.reject{color:#cf222e;font-weight:600}
.critical{background:#ffebe9;color:#a40e26;font-weight:600}.warning{background:#fff8c5;color:#7d4e00}
.info{background:#ddf4ff;color:#0a3069}.note{color:#57606a;font-size:.9em}img{max-width:100%}
"""


def _html_table(frame: pd.DataFrame, row_class: Sequence[str] | None = None, text: Sequence[str] = ()) -> str:
    """A plain HTML table of strings (escaped); `row_class` per row, `text` columns left-aligned."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = []
    for i, row in enumerate(frame.itertuples(index=False)):
        cells = []
        for col, value in zip(frame.columns, row, strict=True):
            css = []
            if col in text:
                css.append("text")
            if col == "verdict":
                css.append("pass" if value == "pass" else "reject")
            attr = f' class="{" ".join(css)}"' if css else ""
            cells.append(f"<td{attr}>{html.escape(str(value))}</td>")
        cls = f' class="{row_class[i]}"' if row_class else ""
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _stamp_paths(folder: Path, created: pd.Timestamp) -> str:
    """A file stem "risk-YYYYMMDDTHHMMSSZ" not yet used in `folder` (a suffix -1, -2 ... when it is)."""
    stem = f"risk-{created.strftime('%Y%m%dT%H%M%SZ')}"
    candidate, n = stem, 0
    while (folder / f"{candidate}.md").exists() or (folder / f"{candidate}.html").exists():
        n += 1
        candidate = f"{stem}-{n}"
    return candidate


def write_report(report: RiskReport, folder: Path) -> tuple[Path, Path, list[Path]]:
    """Write the report under `folder` (e.g. `settings.paths.reports / "risk"`): markdown, self-contained
    HTML and one exceedance plot per series, all named risk-<UTC timestamp>[...]; returns
    (markdown, html, plots)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = _stamp_paths(folder, report.created)
    plots = [
        exceedance_plot(s, report.params, folder / f"{stem}-{file_tag(name)}.png")
        for name, s in report.series.items()
    ]
    params = report.params
    title = f"finstream risk report — {report.created.strftime('%Y-%m-%d %H:%M:%S UTC')}"
    weights = ", ".join(f"{s} {w:g}" for s, w in report.weights.items()) if report.weights else "none given"
    intro = (
        f"{report.interval} bars of {', '.join(report.symbols)}; portfolio weights: {weights}. "
        f"Simple returns; VaR / ES are positive loss fractions of position value, the latest ones are the "
        f"forecast for the next bar. Window {params.window} bars, EWMA lambda {params.ewma_lambda:g}, "
        f"levels {', '.join(level_tag(v) + '%' for v in params.levels)}."
    )
    backtest_intro = (
        "Walk-forward over the whole stored history: each bar's VaR is made from the bars before it only. "
        "Kupiec: exceedance rate (rejects as too many / too few); Christoffersen: independence (clustered); "
        f"CC: conditional coverage, both (joint). Verdict at {SIGNIFICANCE * 100:g} %; "
        "zone: Basel traffic light."
    )
    latest, summary, backtests = latest_display(report), summary_display(report), backtest_display(report)
    active = alerts_display(report.last_alerts(), report.interval)
    counts = report.alert_counts()
    window = alert_window_text(report)
    plot_note = (
        f"Exceedance plots: walk-forward returns, the -VaR {level_tag(params.levels[-1])}% line of the "
        f"{params.alert_method} method, exceedances in red."
    )

    md_lines = [f"# {title}", "", intro, ""]
    md_lines += [
        "## Latest risk",
        "",
        summary.to_markdown(index=False),
        "",
        latest.to_markdown(index=False),
        "",
    ]
    md_lines += ["## VaR backtests", "", backtest_intro, "", backtests.to_markdown(index=False), ""]
    md_lines += ["## Alerts", "", window + ".", ""]
    md_lines += [active.to_markdown(index=False) if len(active) else "No alert on the last bar.", ""]
    if len(counts):
        md_lines += [
            f"Alerts over the last {report.alert_window} bars:",
            "",
            counts.to_markdown(index=False),
            "",
        ]
    md_lines += ["## Exceedance plots", "", plot_note, ""]
    for name, p in zip(report.series, plots, strict=True):
        md_lines += [f"![{name} exceedances]({p.name})", ""]
    if report.notes:
        md_lines += ["", "## Notes", "", *[f"- {n}" for n in report.notes]]
    md = folder / f"{stem}.md"
    md.write_text("\n".join(md_lines) + "\n", encoding="utf-8")

    images = "".join(
        f'<figure><img alt="{html.escape(name)} exceedances" src="data:image/png;base64,'
        f'{base64.b64encode(p.read_bytes()).decode("ascii")}"></figure>'
        for name, p in zip(report.series, plots, strict=True)
    )
    alert_html = (
        _html_table(active, list(active["severity"]), text=("series", "rule", "bar", "message"))
        if len(active)
        else "<p>No alert on the last bar.</p>"
    )
    count_html = ""
    if len(counts):
        count_html = f"<p>Alerts over the last {report.alert_window} bars:</p>" + _html_table(
            counts.astype(str), list(counts["severity"]), text=("name", "rule", "severity")
        )
    notes_html = "".join(f"<li>{html.escape(n)}</li>" for n in report.notes)
    page = (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p>"
        f"<h2>Latest risk</h2>{_html_table(summary)}{_html_table(latest)}"
        f'<h2>VaR backtests</h2><p class="note">{html.escape(backtest_intro)}</p>'
        f"{_html_table(backtests, text=('method', 'zone', 'verdict'))}"
        f'<h2>Alerts</h2><p class="note">{html.escape(window)}.</p>{alert_html}{count_html}'
        f'<h2>Exceedance plots</h2><p class="note">{html.escape(plot_note)}</p>{images}'
        + (f"<h2>Notes</h2><ul>{notes_html}</ul>" if notes_html else "")
        + "</body></html>\n"
    )
    page_path = folder / f"{stem}.html"
    page_path.write_text(page, encoding="utf-8")
    log.info("risk report written to %s", page_path, extra={"markdown": str(md), "html": str(page_path)})
    return md, page_path, plots
