"""Held-out evaluation of a trading agent: its exported policy vs buy-and-hold vs the supervised champion.

The agent's policy is rolled out once, deterministically (greedy actions), over the held-out last
`rl.test_years` of its symbol (`training.rl.env.rollout`); its positions, buy-and-hold's and the supervised
champion's long/flat signal are booked by the same backtest (`training.backtest`) with the same costs.

Promotion evidence (what `training.promotion.decide` reads, with `metric="sharpe"`):

* `sharpe`: the agent's held-out Sharpe; `naive_sharpe`: buy-and-hold's, the baseline an agent must beat
  when there is no champion agent yet;
* `n_folds`: the held-out period is split into `SEGMENTS` consecutive segments of equal length, each with
  its own Sharpe (`fold_sharpe`, logged per segment); `n_folds` counts them;
* `dm_pvalue`: one-sided Diebold–Mariano test (`training.metrics.dm_test`, HLN-corrected) on the daily loss
  differential d[t] = (−g_agent[t]) − (−g_bh[t]), losses being negative net returns: small when the agent's
  returns are significantly higher than buy-and-hold's (alternative "less": the agent's loss is lower).
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from finstream.config import CostParams
from training.backtest import BacktestResult, backtest, buy_and_hold, positions_from_predictions

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from training.dataset import Dataset

log = logging.getLogger(__name__)

SEGMENTS = 4
PERIODS_PER_YEAR = 252
#: supervised registered models to compare with, in order of preference (the first with a champion wins)
SUPERVISED_MODELS = (("finstream-direction", "classification"), ("finstream-return", "regression"))
#: per-segment Sharpe columns of `segment_table` and the step metrics they are logged as
FOLD_METRICS = {
    "agent_sharpe": "fold_sharpe",
    "buy_and_hold_sharpe": "fold_bh_sharpe",
    "supervised_sharpe": "fold_sup_sharpe",
}
#: columns of the results table, in order
TABLE_COLUMNS = (
    "ann_return", "ann_vol", "sharpe", "max_drawdown", "turnover_per_year", "n_trades", "total_costs",
    "final_equity",
)  # fmt: skip


@dataclass
class Rollout:
    """A deterministic pass of a policy over one period, booked by the backtest."""

    frame: pd.DataFrame  # index: decision time (UTC); t, position, reward, equity, cost, step_return
    returns: pd.Series  # next-bar log return of each decision row
    result: BacktestResult


@dataclass
class AgentEvaluation:
    """Held-out backtests (agent, buy-and-hold, supervised if any), segment Sharpes, gate metrics, notes."""

    symbol: str
    algo: str
    results: dict[str, BacktestResult]
    labels: dict[str, str]
    segments: pd.DataFrame
    rollout: pd.DataFrame
    metrics: dict[str, float]
    notes: list[str] = field(default_factory=list)
    supervised: str | None = None

    @property
    def start(self) -> pd.Timestamp:
        return self.rollout.index[0]

    @property
    def end(self) -> pd.Timestamp:
        return self.rollout.index[-1]

    def table(self) -> pd.DataFrame:
        """One row per strategy (agent, buy_and_hold, supervised), the backtest figures as columns."""
        rows = []
        for key, res in self.results.items():
            row = {"strategy": self.labels[key], **res.summary()}
            row["final_equity"] = float(res.equity.iloc[-1])
            rows.append(row)
        frame = pd.DataFrame(rows).set_index("strategy")
        return frame[list(TABLE_COLUMNS)]

    def equity(self) -> pd.DataFrame:
        """Equity curves of every strategy on the held-out dates (start = 1)."""
        return pd.DataFrame({self.labels[k]: r.equity for k, r in self.results.items()})


def book_rollout(
    env_config: Mapping[str, Any], policy: Callable[[np.ndarray], Any], costs: CostParams
) -> Rollout:
    """Roll `policy` over the config's period (training.rl.env.rollout) and backtest its positions."""
    from training.rl.env import rollout

    frame = rollout(env_config, policy)
    returns = pd.Series(
        np.asarray(env_config["returns"], dtype="float64")[frame["t"].to_numpy()], index=frame.index
    )
    result = backtest(
        returns,
        frame["position"].to_numpy(),
        costs,
        PERIODS_PER_YEAR,
        bool(env_config.get("stamp_duty", True)),
    )
    gap = float(np.max(np.abs(result.returns.to_numpy() - frame["step_return"].to_numpy())))
    if gap > 1e-9:
        log.warning("env and backtest book the agent's returns differently (max gap %.3g)", gap)
    return Rollout(frame, returns, result)


def collect_observations(
    env_config: Mapping[str, Any], policy: Callable[[np.ndarray], Any], limit: int
) -> np.ndarray:
    """The first `limit` real observations the env shows `policy` on a deterministic pass of its period."""
    from training.rl.env import rollout

    seen: list[np.ndarray] = []

    def recording(obs: np.ndarray) -> Any:
        if len(seen) < limit:
            seen.append(np.array(obs, dtype=np.float32))
        return policy(obs)

    rollout(env_config, recording)
    return np.stack(seen)


def _sharpe(net: np.ndarray, periods_per_year: float = PERIODS_PER_YEAR) -> float:
    """Sharpe of net returns with rf = 0, as in training.backtest (0 for a series that never moves)."""
    if net.size < 2:
        return math.nan
    sd = float(np.std(net, ddof=1))
    mean = float(np.mean(net))
    if sd == 0.0:
        return 0.0 if mean == 0.0 else math.nan
    return mean / sd * math.sqrt(periods_per_year)


def segment_table(results: Mapping[str, BacktestResult], n_segments: int = SEGMENTS) -> pd.DataFrame:
    """Per consecutive equal-length segment of the held-out period: dates, rows, each strategy's Sharpe."""
    index = next(iter(results.values())).returns.index
    rows = []
    for i, part in enumerate(np.array_split(np.arange(len(index)), n_segments), start=1):
        if part.size == 0:
            continue
        row: dict[str, Any] = {
            "segment": i,
            "start": index[part[0]],
            "end": index[part[-1]],
            "rows": int(part.size),
        }
        for key, res in results.items():
            row[f"{key}_sharpe"] = _sharpe(res.returns.to_numpy()[part])
        rows.append(row)
    return pd.DataFrame(rows)


def dm_vs_buy_and_hold(agent: BacktestResult, bh: BacktestResult) -> tuple[float, float]:
    """One-sided DM test, losses = −net returns: (statistic, p-value); small p: the agent earns more."""
    from training.metrics import dm_test

    d = (-agent.returns.to_numpy()) - (-bh.returns.to_numpy())
    if d.size < 3:
        return math.nan, math.nan
    return dm_test(d, horizon=1, alternative="less")


# ------------------------------------------------------------------------------------- supervised champion


def find_supervised_champion(client: MlflowClient) -> tuple[str, str, Any] | None:
    """(registered name, task, ModelVersion) of the first supervised model with a champion, else None."""
    from mlflow.exceptions import MlflowException

    for name, task in SUPERVISED_MODELS:
        try:
            return name, task, client.get_model_version_by_alias(name, "champion")
        except MlflowException as exc:
            if exc.error_code not in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"}:
                raise
    return None


def champion_inputs(names: list[str], dataset: Dataset, symbol: str) -> pd.DataFrame:
    """The symbol's rows (all of them, time order) with the columns the champion was logged with.

    A pooled champion carries `is_<symbol>` indicator columns (training.zoo_stages.with_symbol_indicators):
    they are 1 for this symbol and 0 for the others, exactly as in its training set.
    """
    rows = dataset.X[dataset.X["symbol"] == symbol].reset_index(drop=True)
    missing = [c for c in names if c not in rows.columns and not c.startswith("is_")]
    if missing:
        raise ValueError(f"the champion needs columns this dataset lacks: {missing}")
    cols = {
        c: rows[c] if c in rows.columns else pd.Series(float(c == f"is_{symbol}"), index=rows.index)
        for c in names
    }
    return pd.DataFrame(cols)[names]


def supervised_positions(
    model: Any, task: str, dataset: Dataset, symbol: str, times: pd.DatetimeIndex
) -> pd.Series:
    """Long/flat positions from the champion's predictions on the symbol's rows at `times`.

    It predicts on the whole history of the symbol so that sequence models have their window of context,
    then keeps the held-out rows.
    """
    schema = model.metadata.get_input_schema()
    if schema is None:
        raise ValueError("the champion was logged without an input schema")
    frame = champion_inputs(list(schema.input_names()), dataset, symbol)
    pred = np.asarray(model.predict(frame), dtype="float64").ravel()
    when = pd.DatetimeIndex(pd.to_datetime(dataset.event_time[dataset.X["symbol"] == symbol], utc=True))
    series = pd.Series(pred, index=when).reindex(times)
    if series.isna().any():
        raise ValueError(f"the champion has no prediction for {int(series.isna().sum())} held-out rows")
    return positions_from_predictions(series, task, "long_flat")


def _supervised(
    client: MlflowClient | None,
    dataset: Dataset,
    symbol: str,
    times: pd.DatetimeIndex,
    returns: pd.Series,
    costs: CostParams,
    stamp: bool,
    data_version: str | None,
    notes: list[str],
) -> tuple[str, BacktestResult] | None:
    """The supervised champion's held-out backtest (label, result), or None with a note saying why."""
    import mlflow

    if client is None:
        notes.append("no supervised champion (no MLflow registry given)")
        return None
    found = find_supervised_champion(client)
    if found is None:
        notes.append("no supervised champion: finstream-direction / finstream-return have none")
        return None
    name, task, version = found
    label = (
        f"supervised {version.tags.get('family', '?')} ({name.removeprefix('finstream-')} v{version.version})"
    )
    try:
        model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
        positions = supervised_positions(model, task, dataset, symbol, times)
    except Exception as exc:  # a champion that cannot score these rows is reported, not fatal
        log.warning("cannot evaluate %s on %s: %s", label, symbol, exc)
        notes.append(f"{label} skipped: {exc}")
        return None
    result = backtest(returns, positions.to_numpy(), costs, PERIODS_PER_YEAR, stamp)
    notes.append(_overlap_note(label, training_end(version), times, version, data_version))
    return label, result


def training_end(version: Any) -> pd.Timestamp | None:
    """Last event time of the champion's training set: the end of its walk-forward out-of-sample predictions.

    `training.zoo_stages` fits the final model on every row of the set it evaluated walk-forward, whose last
    test
    block ends with the set. None when the run has no `evaluation/oos_predictions.parquet`.
    """
    import mlflow

    if not version.run_id:
        return None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = mlflow.artifacts.download_artifacts(
                run_id=version.run_id, artifact_path="evaluation/oos_predictions.parquet", dst_path=tmp
            )
            times = pd.read_parquet(path, columns=["event_time"])["event_time"]
    except Exception as exc:  # no such artifact (older runs), or an unreachable artifact store
        log.info("cannot read the champion's out-of-sample predictions: %s", exc)
        return None
    return pd.to_datetime(times, utc=True).max() if len(times) else None


def _overlap_note(
    label: str, end: pd.Timestamp | None, times: pd.DatetimeIndex, version: Any, data_version: str | None
) -> str:
    """Whether the champion's final fit saw the held-out days (then its figures there are in-sample)."""
    if end is None:
        same = bool(data_version) and version.tags.get("data_version") == data_version
        return f"{label}: training period unknown" + (
            f"; it was fit on this same feature file (data {str(data_version)[:10]}), so it may have seen the"
            " held-out period (in-sample, optimistic)"
            if same
            else ""
        )
    seen = int((times <= end).sum())
    if seen == 0:
        return f"{label} was fit on data up to {end.date()}, before the held-out period: out-of-sample"
    return (
        f"{label} was fit on data up to {end.date()}: {seen} of the {len(times)} held-out days are in its"
        " training set, so its figures there are in-sample (optimistic)"
    )


def evaluate_agent(
    policy: Callable[[np.ndarray], Any],
    env_config: Mapping[str, Any],
    costs: CostParams,
    *,
    algo: str,
    dataset: Dataset | None = None,
    client: MlflowClient | None = None,
    data_version: str | None = None,
    n_segments: int = SEGMENTS,
) -> AgentEvaluation:
    """Backtest the policy's held-out rollout against buy-and-hold and the supervised champion (if any)."""
    symbol = str(env_config["symbol"])
    stamp = bool(env_config.get("stamp_duty", True))
    run = book_rollout(env_config, policy, costs)
    results: dict[str, BacktestResult] = {
        "agent": run.result,
        "buy_and_hold": buy_and_hold(run.returns, costs, PERIODS_PER_YEAR, stamp),
    }
    labels = {"agent": f"agent ({algo})", "buy_and_hold": "buy and hold"}
    notes: list[str] = []
    supervised = None
    if dataset is not None:
        found = _supervised(
            client, dataset, symbol, pd.DatetimeIndex(run.frame.index), run.returns, costs, stamp,
            data_version, notes,
        )  # fmt: skip
        if found is not None:
            supervised, results["supervised"] = found
            labels["supervised"] = supervised
    segments = segment_table(results, n_segments)
    dm_stat, dm_p = dm_vs_buy_and_hold(results["agent"], results["buy_and_hold"])
    metrics = {
        **results["agent"].summary(),
        **results["buy_and_hold"].summary("bh_"),
        "naive_sharpe": results["buy_and_hold"].sharpe,
        "n_folds": float(len(segments)),
        "dm_stat": dm_stat,
        "dm_pvalue": dm_p,
        "n_test": float(len(run.frame)),
        "final_equity": float(run.result.equity.iloc[-1]),
        "bh_final_equity": float(results["buy_and_hold"].equity.iloc[-1]),
        "env_final_equity": float(run.frame["equity"].iloc[-1]),
        "long_fraction": float(np.mean(run.frame["position"].to_numpy() > 0)),
    }
    if "supervised" in results:
        metrics.update(results["supervised"].summary("sup_"))
        metrics["sup_final_equity"] = float(results["supervised"].equity.iloc[-1])
    ev = AgentEvaluation(symbol, algo, results, labels, segments, run.frame, metrics, notes, supervised)
    log.info(
        "%s %s held-out %s..%s: sharpe %.2f vs buy-and-hold %.2f%s",
        algo,
        symbol,
        ev.start.date(),
        ev.end.date(),
        metrics["sharpe"],
        metrics["bh_sharpe"],
        f" vs supervised {metrics['sup_sharpe']:.2f}" if "sup_sharpe" in metrics else "",
    )
    return ev


def log_evaluation(ev: AgentEvaluation) -> None:
    """Log the evaluation into the active MLflow run: metrics, per-segment Sharpe, equity plot, tables."""
    import mlflow

    from training.plots import equity_plot

    mlflow.log_metrics({k: v for k, v in ev.metrics.items() if math.isfinite(v)})
    for _, seg in ev.segments.iterrows():
        values = {
            name: float(seg[col])
            for col, name in FOLD_METRICS.items()
            if col in seg and math.isfinite(float(seg[col]))
        }
        mlflow.log_metrics(values, step=int(seg["segment"]))
    mlflow.set_tags(
        {
            "held_out": f"{ev.start.date()}..{ev.end.date()}",
            "supervised_champion": ev.supervised or "none",
            "evaluation_notes": " | ".join(ev.notes)[:4900] or "none",
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        paths = [
            equity_plot(ev.equity(), out / "equity.png", title=f"{ev.symbol} held-out equity"),
            out / "results.csv",
            out / "segments.csv",
            out / "rollout.parquet",
        ]
        ev.table().to_csv(out / "results.csv")
        ev.segments.to_csv(out / "segments.csv", index=False)
        ev.rollout.to_parquet(out / "rollout.parquet")
        for path in paths:
            mlflow.log_artifact(str(path), artifact_path="evaluation")
