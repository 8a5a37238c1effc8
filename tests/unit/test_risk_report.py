"""The risk report on real packaged history (CSI 300 and S&P 500, 2012-2018): its numbers are the risk
module's on the same bars, the portfolio section, clear errors for bad weights and missing bars, the files
(no network URL in the HTML), and `finstream risk report` with its tables, JSON and MLflow run."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import special, stats
from tests_support import isolate_env
from typer.testing import CliRunner

from finstream.cli.main import app
from finstream.config import Settings
from finstream.data_stages import ingest_stage, validate_stage
from finstream.errors import NoDataError, SymbolError
from finstream.risk.backtests import christoffersen_independence, conditional_coverage
from finstream.risk.measures import (
    PortfolioWeightsError,
    ewma_variance,
    historical_var_es,
    portfolio_var_es,
    simple_returns,
)
from finstream.risk.report import (
    RiskReport,
    aligned_prices,
    parse_weights,
    risk_report,
    verdict,
    write_report,
)
from finstream.storage import BarTable

runner = CliRunner()
SYMBOLS = ["000300.SH", "^GSPC"]
WEIGHTS = {"000300.SH": 0.4, "^GSPC": 0.6}


@pytest.fixture(scope="module")
def risk_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A FINSTREAM_HOME with the validated daily bars of CSI 300 and S&P 500, 2012-2018 (built once)."""
    root = tmp_path_factory.mktemp("risk")
    with pytest.MonkeyPatch.context() as mp:
        isolate_env(mp, root)
        settings = Settings()
        ingest_stage(settings, ",".join(SYMBOLS), "packaged", date(2012, 1, 1), date(2018, 12, 31))
        validate_stage(settings)
    return root


@pytest.fixture
def risk_settings(risk_root: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings (and FINSTREAM_* environment, for the CLI) on the module's home."""
    isolate_env(monkeypatch, risk_root)
    return Settings()


@pytest.fixture(scope="module")
def report(risk_root: Path) -> Iterator[RiskReport]:
    with pytest.MonkeyPatch.context() as mp:
        isolate_env(mp, risk_root)
        yield risk_report(Settings(), None, WEIGHTS)


def closes(settings: Settings, symbol: str) -> pd.Series:
    bars = BarTable(settings.paths.validated_bars).read(symbols=[symbol], intervals=["1d"])
    return pd.Series(bars["close"].to_numpy(), index=pd.DatetimeIndex(bars["ts"]))


def kupiec_by_hand(hits: np.ndarray, level: float) -> tuple[float, float]:
    n, x, p = hits.size, int(hits.sum()), 1.0 - level
    null = (n - x) * math.log(1 - p) + x * math.log(p)
    alternative = (n - x) * math.log(1 - x / n) + (x * math.log(x / n) if x else 0.0)
    lr = -2.0 * (null - alternative)
    return lr, float(stats.chi2.sf(lr, 1))


def test_default_symbols_are_the_ingest_symbols_that_have_bars(report: RiskReport) -> None:
    # ^IXIC is in ingest.symbols by default but has no bars here: left out, not an error
    assert report.symbols == SYMBOLS
    assert list(report.series) == [*SYMBOLS, "portfolio"]
    assert report.weights == WEIGHTS


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_latest_risk_equals_direct_calculation(
    report: RiskReport, risk_settings: Settings, symbol: str
) -> None:
    p = closes(risk_settings, symbol).to_numpy()
    r = simple_returns(p)
    window = r[-250:]
    last = report.series[symbol].latest
    assert last["var_historical_99"] == pytest.approx(-np.quantile(window, 0.01), rel=1e-12)
    assert last["var_historical_95"] == pytest.approx(-np.quantile(window, 0.05), rel=1e-12)
    k = math.floor(249 * 0.01) + 1  # the ES tail: the 3 smallest of 250 returns
    assert last["es_historical_99"] == pytest.approx(-np.sort(window)[:k].mean(), rel=1e-12)
    mu, sd = window.mean(), window.std(ddof=1)
    assert last["var_normal_99"] == pytest.approx(-(mu + sd * special.ndtri(0.01)), rel=1e-12)
    ewma_sd = math.sqrt(ewma_variance(r, 0.94, 20)[-1])
    assert last["var_ewma_99"] == pytest.approx(-ewma_sd * special.ndtri(0.01), rel=1e-12)
    assert last["vol"] == pytest.approx(r[-20:].std(ddof=1), rel=1e-12)
    assert last["drawdown"] == pytest.approx(1 - p[-1] / p[-250:].max(), rel=1e-12)
    assert last["price"] == p[-1]
    latest = report.latest_table().set_index(["name", "method", "level"])
    assert latest.loc[(symbol, "historical", 0.99), "var"] == last["var_historical_99"]
    assert 0 < last["var_student_t_99"] < last["es_student_t_99"] < 0.2


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_backtest_equals_kupiec_and_christoffersen_by_hand(
    report: RiskReport, risk_settings: Settings, symbol: str
) -> None:
    r = simple_returns(closes(risk_settings, symbol).to_numpy())
    # walk-forward: the VaR for bar t from the 250 returns before it only
    var = np.array([-np.quantile(r[t - 250 : t], 0.01) for t in range(250, len(r))])
    hits = -r[250:] > var
    lr, pvalue = kupiec_by_hand(hits, 0.99)
    rows = report.series[symbol].backtests.set_index(["method", "level"])
    row = rows.loc[("historical", 0.99)]
    assert row["observations"] == len(r) - 250
    assert row["exceedances"] == hits.sum()
    assert row["expected"] == pytest.approx(0.01 * (len(r) - 250))
    assert row["kupiec_lr"] == pytest.approx(lr, rel=1e-9)
    assert row["kupiec_pvalue"] == pytest.approx(pvalue, rel=1e-9)
    assert row["independence_pvalue"] == pytest.approx(christoffersen_independence(hits).pvalue, rel=1e-9)
    assert row["conditional_coverage_pvalue"] == pytest.approx(conditional_coverage(hits, 0.99).pvalue)
    assert row["verdict"] == verdict(row.to_dict() | {"exceedances": hits.sum()})
    assert set(rows.index) == {
        (m, lv) for m in ("historical", "normal", "student_t", "ewma") for lv in (0.95, 0.99)
    }
    # on 2013-2018 both indices beat the historical 99 % VaR far more often than 1 %
    assert hits.sum() > row["expected"] and row["verdict"].startswith("reject at 5 % (too many")


def test_verdicts_name_what_failed() -> None:
    base = {"exceedances": 10, "expected": 10.0, "independence_informative": True}
    ok = {"kupiec_pvalue": 0.5, "independence_pvalue": 0.5, "conditional_coverage_pvalue": 0.5}
    assert verdict(base | ok) == "pass"
    assert verdict(base | ok | {"kupiec_pvalue": 0.01, "exceedances": 3}) == "reject at 5 % (too few)"
    assert verdict(base | ok | {"independence_pvalue": 0.01}) == "reject at 5 % (clustered)"
    assert verdict(base | ok | {"conditional_coverage_pvalue": 0.04}) == "reject at 5 % (joint)"
    uninformative = base | ok | {"independence_pvalue": 0.0, "independence_informative": False}
    assert verdict(uninformative) == "pass"


def test_portfolio_section(report: RiskReport, risk_settings: Settings) -> None:
    prices = aligned_prices({s: closes(risk_settings, s) for s in SYMBOLS}, "1d")
    # the same local session date: CSI 300 closes 07:00 UTC, S&P 500 20:00/21:00 UTC that day
    assert (prices.index.hour >= 20).all() and prices.index.is_monotonic_increasing
    returns = prices.pct_change().iloc[1:]
    port = returns.to_numpy() @ np.array([0.4, 0.6])
    s = report.series["portfolio"]
    assert s.kind == "portfolio" and len(s.frame) == len(prices)
    assert s.latest["var_historical_99"] == pytest.approx(-np.quantile(port[-250:], 0.01), rel=1e-12)
    # the covariance form of the risk module gives the same normal and EWMA VaR at the last bar
    direct = portfolio_var_es(returns, WEIGHTS)
    for method in ("historical", "normal", "ewma"):
        assert s.latest[f"var_{method}_99"] == pytest.approx(direct.var[method][1], rel=1e-9)
    hist, _ = historical_var_es(port[-250:], [0.95, 0.99])
    assert s.latest["var_historical_95"] == pytest.approx(hist[0], rel=1e-12)
    wealth = np.cumprod(1 + port)
    assert s.latest["drawdown"] == pytest.approx(1 - wealth[-1] / wealth[-250:].max(), rel=1e-9)
    assert len(s.backtests) == 8
    # 60 % in ^GSPC is beyond the 50 % position limit: a critical alert on the portfolio's last bar
    limits = [a for a in s.last_alerts if a.rule == "max_weight"]
    assert [(a.symbol, a.severity, a.value) for a in limits] == [("^GSPC", "critical", 0.6)]
    assert all(a.bar_time == s.last_time for a in s.last_alerts)


def test_alerts_of_the_last_bar_and_counts_over_the_window(report: RiskReport) -> None:
    for name, s in report.series.items():
        times = s.frame.index[-report.alert_window :]
        assert all(a.bar_time in times for a in s.recent_alerts), name
        bar_rules = [a for a in s.last_alerts if a.rule in ("var_breach", "drawdown", "vol_spike")]
        assert bar_rules == [a for a in s.recent_alerts if a.bar_time == s.last_time]
    # CSI 300 ended 2018 more than 20 % below its 250-day high: a critical drawdown on every recent bar
    csi = report.series["000300.SH"]
    assert csi.latest["drawdown"] > 0.2
    counts = report.alert_counts().set_index(["name", "rule", "severity"])["count"]
    assert counts[("000300.SH", "drawdown", "critical")] == report.alert_window
    assert report.last_alerts()[0].severity == "critical"


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({"000300.SH": 0.4, "^GSPC": 0.5}, "weights sum to 0.9, not 1"),
        ({"000300.SH": 0.4, "^IXIC": 0.6}, "unknown symbols ['^IXIC'] (known: ['000300.SH', '^GSPC'])"),
        ({"000300.SH": 1.5, "^GSPC": -0.5}, "negative weights {'^GSPC': -0.5} but shorting is not allowed"),
        ({"000300.SH": float("nan"), "^GSPC": 1.0}, "weights of ['000300.SH'] are not finite numbers"),
    ],
)
def test_bad_weights_raise_naming_the_problem(
    risk_settings: Settings, weights: dict[str, float], message: str
) -> None:
    with pytest.raises(PortfolioWeightsError, match=re.escape(message)):
        risk_report(risk_settings, None, weights)


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ("000300.SH:0.4,^GSPC=0.6", PortfolioWeightsError, "'000300.SH:0.4' is not SYMBOL=WEIGHT"),
        ("000300.SH=abc", PortfolioWeightsError, "weight 'abc' of 000300.SH is not a number"),
        ("000300.SH=0.5,sh000300=0.5", PortfolioWeightsError, "000300.SH is given twice"),
        ("NOT A SYMBOL=1", SymbolError, "cannot parse symbol"),
    ],
)
def test_parse_weights(text: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        parse_weights(text)
    assert parse_weights("000300.SS=0.4, ^GSPC=0.6") == WEIGHTS


def test_model_alert_method_falls_back_with_a_note(
    risk_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FINSTREAM_RISK__ALERT_METHOD", "model")
    settings = Settings()
    assert settings.risk.alert_method == "model"
    out = risk_report(settings, ["^GSPC"])
    assert out.params.alert_method == "historical"
    assert any("no volatility forecast" in note for note in out.notes)


def test_missing_bars_are_a_clear_error(risk_settings: Settings, settings: Settings) -> None:
    with pytest.raises(NoDataError, match=re.escape("no validated 1d bars for ^IXIC under")):
        risk_report(risk_settings, ["000300.SH", "^IXIC"])
    # `settings` is a fresh, empty home
    with pytest.raises(NoDataError, match="run `finstream ingest` and `finstream validate` first"):
        risk_report(settings)


def test_write_report_files(report: RiskReport, tmp_path: Path) -> None:
    md, page, plots = write_report(report, tmp_path / "risk")
    stem = f"risk-{report.created.strftime('%Y%m%dT%H%M%SZ')}"
    assert md.name == f"{stem}.md" and page.name == f"{stem}.html"
    assert [p.name for p in plots] == [f"{stem}-000300.SH.png", f"{stem}-_GSPC.png", f"{stem}-portfolio.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in plots)
    text = md.read_text()
    html = page.read_text()
    assert all(f"]({p.name})" in text for p in plots)
    for section in ("Latest risk", "VaR backtests", "Alerts", "Exceedance plots"):
        assert f"## {section}" in text and f"<h2>{section}</h2>" in html
    assert html.count('src="data:image/png;base64,') == 3
    assert not re.search(r"https?://", html) and "<link" not in html and "<script" not in html
    assert "reject at 5 %" in html and 'class="critical"' in html
    # a second report in the same second gets its own files
    again = write_report(report, tmp_path / "risk")
    assert again[0].name == f"{stem}-1.md" and md.read_text() == text


def test_cli_report_prints_tables_and_logs_to_mlflow(risk_settings: Settings, report: RiskReport) -> None:
    from mlflow import MlflowClient

    result = runner.invoke(
        app, ["risk", "report", "--weights", "000300.SH=0.4,^GSPC=0.6"], env={"COLUMNS": "140"}
    )
    assert result.exit_code == 0, result.output
    out = result.output
    for title in ("latest risk", "VaR / ES per method", "VaR backtests", "alerts on the last bar"):
        assert title in out
    assert "historical" in out and "student_t" in out and "reject (too many" in out
    assert "max_weight" in out and "critical" in out
    assert f"{100 * report.series['000300.SH'].latest['var_historical_99']:.2f}%" in out
    html = re.search(r"(\S+\.html)", out)
    assert html and Path(html.group(1)).is_file()
    assert Path(html.group(1)).parent == risk_settings.paths.reports / "risk"
    assert "Traceback" not in out and "INFO" not in out and "alembic" not in out.lower()

    client = MlflowClient(tracking_uri=risk_settings.tracking_uri)
    experiment = client.get_experiment_by_name("finstream-risk")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1 and runs[0].info.run_id in out
    metrics = runs[0].data.metrics
    assert metrics["000300.SH/var_historical_99"] == pytest.approx(
        report.series["000300.SH"].latest["var_historical_99"]
    )
    kupiec = report.series["^GSPC"].backtests.set_index(["method", "level"])["kupiec_pvalue"]
    assert metrics["_GSPC/kupiec_p_ewma_99"] == pytest.approx(kupiec[("ewma", 0.99)])
    assert metrics["portfolio/var_normal_95"] > 0
    assert runs[0].data.params["weights"] == json.dumps(WEIGHTS)
    artifacts = {Path(a.path).suffix for a in client.list_artifacts(runs[0].info.run_id, "report")}
    assert artifacts == {".md", ".html", ".png"}


def test_cli_json(risk_settings: Settings, report: RiskReport) -> None:
    result = runner.invoke(app, ["risk", "report", "--symbols", "^GSPC", "--json", "--no-mlflow"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["symbols"] == ["^GSPC"] and payload["weights"] is None and payload["mlflow"] is None
    gspc = payload["series"]["^GSPC"]
    assert gspc["latest"]["var"]["historical"]["99"] == pytest.approx(
        report.series["^GSPC"].latest["var_historical_99"]
    )
    assert {(b["method"], b["level"]) for b in gspc["backtests"]} >= {("historical", 0.99), ("ewma", 0.95)}
    assert all(b["verdict"] == "pass" or b["verdict"].startswith("reject at 5 %") for b in gspc["backtests"])
    assert gspc["alerts"]["last_bar"].startswith("2018-12-31")
    assert {a["rule"] for a in gspc["alerts"]["active"]} >= {"drawdown"}
    assert Path(payload["files"]["html"]).is_file() and len(payload["files"]["plots"]) == 1


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--weights", "000300.SH=0.4,^GSPC=0.5"], 1, "error: portfolio weights: weights sum to 0.9, not 1"),
        (["--weights", "000300.SH=0.5,^IXIC=0.5"], 1, "error: portfolio weights: unknown symbols ['^IXIC']"),
        (["--weights", "000300.SH"], 1, "error: portfolio weights: '000300.SH' is not SYMBOL=WEIGHT"),
        (["--symbols", "^IXIC"], 1, "error: no validated 1d bars for ^IXIC under"),
        (["--symbols", "600036"], 2, "error: symbol '600036' needs an exchange suffix"),
        (["--interval", "2h"], 2, "'2h' is no bar interval"),
    ],
)
def test_cli_errors_are_one_line(risk_settings: Settings, args: list[str], code: int, message: str) -> None:
    result = runner.invoke(app, ["risk", "report", "--no-mlflow", *args])
    assert result.exit_code == code, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
    if code == 1:
        assert len(result.output.strip().splitlines()) == 1


def test_cli_without_bars(settings: Settings) -> None:
    result = runner.invoke(app, ["risk", "report", "--no-mlflow"])
    assert result.exit_code == 1
    assert result.output.startswith("error: no validated 1d bars for 000300.SH, ^GSPC, ^IXIC")
