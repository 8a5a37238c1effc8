"""The service's risk book over real validated bars (CSI 300 and S&P 500, 2012-2018): the numbers equal the
risk module's on the same bars, portfolios validate their weights, each bar-file version is computed once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import pandas as pd
import pytest
from tests_support import isolate_env

from finstream.config import Settings
from finstream.risk.measures import PortfolioWeightsError, portfolio_frame, risk_frame, var_column
from finstream.risk.params import RiskParams
from finstream.storage import BarTable
from serving.history import BarHistory
from serving.risk_book import RiskBook


@pytest.fixture(scope="module")
def validated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    from finstream.data_stages import ingest_stage, validate_stage

    root = tmp_path_factory.mktemp("risk")
    with pytest.MonkeyPatch.context() as mp:
        isolate_env(mp, root)
        settings = Settings()
        ingest_stage(settings, "000300.SH,^GSPC", "packaged", date(2012, 1, 1), date(2018, 12, 31))
        validate_stage(settings)
        yield settings


def test_symbol_risk_equals_the_risk_module_on_the_same_bars(validated: Settings) -> None:
    params = RiskParams()
    book = RiskBook(BarHistory(validated), params)
    view = book.symbol("^GSPC")
    bars = BarTable(validated.paths.validated_bars).read(symbols=["^GSPC"])
    expected = risk_frame(bars.set_index("ts")["close"].iloc[-book.bars_needed :], params).iloc[-1]
    assert view.as_of == bars["ts"].iloc[-1]
    for method in ("historical", "normal", "student_t", "ewma"):
        column = var_column(method, 0.99)
        assert view.values[column] == pytest.approx(expected[column], rel=1e-12)
        assert 0.0 < view.values[column] < 0.1  # a plausible daily 99 % VaR of an index
    assert book.symbol("^GSPC") is view  # cached for this version of the files
    estimates = {(e["method"], e["level"]): e for e in view.var(params)}
    assert estimates[("historical", 0.99)]["es"] >= estimates[("historical", 0.99)]["var"]


def test_portfolio_risk_and_its_weight_errors(validated: Settings) -> None:
    params = RiskParams()
    book = RiskBook(BarHistory(validated), params)
    weights = {"000300.SH": 0.4, "^GSPC": 0.6}
    view = book.portfolio(weights)
    bars = BarTable(validated.paths.validated_bars).read()
    closes = bars.assign(day=bars["ts"].dt.normalize()).pivot(index="day", columns="symbol", values="close")
    returns = closes.dropna().iloc[-book.bars_needed :].pct_change().iloc[1:]
    expected = portfolio_frame(returns, weights, params).iloc[-1]
    column = var_column("historical", 0.99)
    assert view.values[column] == pytest.approx(expected[column], rel=1e-9)
    limits = [a for a in view.alerts if a.rule == "max_weight"]
    assert [a.symbol for a in limits] == ["^GSPC"]  # 0.6 > max_weight 0.5
    with pytest.raises(PortfolioWeightsError, match=r"sum to 0\.9"):
        book.portfolio({"000300.SH": 0.4, "^GSPC": 0.5})
    with pytest.raises(PortfolioWeightsError, match=r"unknown symbols \['NOPE'\]"):
        book.portfolio({"000300.SH": 0.5, "NOPE": 0.5})
    with pytest.raises(PortfolioWeightsError, match="shorting is not allowed"):
        book.portfolio({"000300.SH": 1.5, "^GSPC": -0.5})
    aliased = book.portfolio({"sh000300": 0.4, "^gspc": 0.6})
    assert aliased.values[column] == view.values[column]


def test_a_new_version_of_the_bars_is_recomputed(validated: Settings) -> None:
    book = RiskBook(BarHistory(validated), RiskParams())
    first = book.symbol("000300.SH")
    table = BarTable(validated.paths.validated_bars)
    (part,) = table.partitions(symbols=["000300.SH"])
    bars = table.read_partition(part)
    table.write_partition(part, bars.iloc[:-1])
    try:
        again = book.symbol("000300.SH")
        assert again is not first and again.as_of == pd.Timestamp(bars["ts"].iloc[-2])
    finally:
        table.write_partition(part, bars)


class _Champions:
    """The one lookup RiskBook makes of ChampionModels: the volatility champion."""

    def __init__(self, loaded: object) -> None:
        self.loaded = loaded

    def get(self, task: str, alias: str = "champion") -> object | None:
        return self.loaded if task == "volatility" else None


def test_the_volatility_champion_gives_the_forecast_and_the_model_var(validated: Settings) -> None:
    """A rolling-variance baseline served as the volatility champion: its forecast is the mean of the last 20
    squared percent log returns, and the model method's VaR / ES are the normal ones at that volatility."""
    import math
    import time

    import numpy as np
    from scipy.stats import norm

    from finstream.models.champions import LoadedVolatility
    from finstream.models.volatility import SymbolFit, VolatilityModel

    model = VolatilityModel(
        "rolling_20", "baseline", "sq", "1d", {s: SymbolFit(floor=1e-6) for s in ("000300.SH", "^GSPC")}
    )
    loaded = LoadedVolatility("finstream-volatility", "3", model, time.time(), "no candidate beat it")
    params = RiskParams()
    book = RiskBook(BarHistory(validated), params, _Champions(loaded))  # type: ignore[arg-type]
    view = book.symbol("^GSPC")
    bars = BarTable(validated.paths.validated_bars).read(symbols=["^GSPC"])
    r = 100 * np.diff(np.log(bars["close"].to_numpy()))
    variance = float(np.mean(r[-20:] ** 2))
    assert view.forecast is not None
    assert view.forecast["variance"] == pytest.approx(variance, rel=1e-12)
    assert view.forecast["kind"] == "baseline" and view.forecast["version"] == "3"
    assert view.forecast["annualised"] == pytest.approx(math.sqrt(variance) / 100 * math.sqrt(252))
    sigma = math.sqrt(variance) / 100
    assert view.values[var_column("model", 0.99)] == pytest.approx(sigma * norm.ppf(0.99), rel=1e-12)
    assert [e["method"] for e in view.var(params)].count("model") == len(params.levels)
