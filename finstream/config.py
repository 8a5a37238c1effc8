"""Settings: one object decides every path and backend; FINSTREAM_* env vars override params.yaml."""

from __future__ import annotations

import os
from datetime import date
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from finstream.risk.params import RiskParams


class IngestParams(BaseModel):
    """What `finstream ingest` fetches when no option overrides it."""

    symbols: list[str] = Field(default_factory=lambda: ["000300.SH", "^GSPC", "^IXIC"])
    source: str = "auto"
    start: date | None = None
    end: date | None = None
    interval: str = "1d"  # bar length to fetch: 1m, 5m, 15m, 30m, 1h or 1d
    tz: str | None = None  # zone of naive timestamps in a CSV (default: the market's exchange zone)


class RouterParams(BaseModel):
    """Failover behaviour of the source router."""

    timeout_s: float = 20.0
    retries: int = 2
    backoff_s: float = 0.5
    breaker_fail_max: int = 3
    breaker_reset_s: float = 60.0
    probe_timeout_s: float = 1.5
    max_bad_ohlc_fraction: float = 0.01


class ValidateParams(BaseModel):
    """Plausible absolute close-to-close moves per market class (fraction).

    `move_limits` bound a move from one trading session's bar to the next session's (the daily limit; for
    intraday bars it applies to the first bar of a session, measured from the last clean bar before it).
    Within a session an intraday bar's move is bounded by the daily limit scaled to the bar's share of the
    session: `limit x min(1, intraday_scale x sqrt(interval / session length))` (a random walk's range
    grows with the square root of time; the scale leaves room for fat tails).
    """

    move_limits: dict[str, float] = Field(
        default_factory=lambda: {
            "CN": 0.11,
            "CN_GROWTH": 0.21,
            "CN_INDEX": 0.11,
            "US": 0.25,
            "HK": 0.5,
            "FX": 0.1,
            "CME": 0.15,
        }
    )
    intraday_scale: float = 3.0


class CostParams(BaseModel):
    """Transaction costs of the backtest (fractions of traded value)."""

    commission: float = 0.00025  # each way
    stamp_duty: float = 0.0005  # on sells, China A-shares (0.05% since 2023-08-28)
    slippage: float = 0.0005  # each way


class TrainParams(BaseModel):
    """What `finstream train` builds and how it is judged."""

    symbols: list[str] = Field(default_factory=lambda: ["000300.SH", "^GSPC", "^IXIC"])
    interval: str = "1d"  # the bars trained on (their features and Feast service); horizon counts them
    horizon: int = 1
    tasks: list[str] = Field(default_factory=lambda: ["regression", "classification", "volatility"])
    pooled: bool = True
    per_symbol: bool = False
    families: list[str] = Field(
        default_factory=lambda: [
            "ridge",
            "random_forest",
            "hist_gb",
            "xgboost",
            "svm",
            "lstm",
            "transformer",
            "cnn_lstm",
            "voting",
            "stacking",
            "bma",
        ]
    )
    common_period: bool = True  # pooled splits are by calendar time: train on the range all symbols share
    #: walk-forward test blocks; None: one per year of the test period
    folds: int | None = None
    #: the test period: the last test_years, or (None) everything after the first min_train_years
    test_years: float | None = None
    min_train_years: float = 5.0
    window: int = 20
    epochs: int = 8
    seed: int = 42
    torch_threads: int | None = 1  # 1 is fastest on 2 cores (OpenMP contention); None keeps torch's default
    tune_families: list[str] = Field(default_factory=lambda: ["xgboost"])
    tune_samples: int = 4
    #: the volatility task's candidates (tabular zoo families, pooled) and its variance proxy (sq or gk)
    volatility_families: list[str] = Field(default_factory=lambda: ["ridge", "xgboost"])
    volatility_proxy: Literal["sq", "gk"] = "sq"
    workers: int = 2  # family x task evaluations run side by side in this many processes (1: in the flow's)
    costs: CostParams = Field(default_factory=CostParams)


class RLParams(BaseModel):
    """Ray RLlib trading agents: environment, algorithm settings, held-out evaluation."""

    symbol: str = "000300.SH"
    algo: Literal["ppo", "dqn"] = "ppo"
    action_mode: Literal["long_flat", "long_short", "continuous"] = "long_flat"
    window: int = 10
    episode_length: int = 252
    risk_penalty: float = 0.0
    test_years: float = 4.0  # held-out evaluation period at the end of the symbol's history
    iterations: int = 10
    seed: int = 42
    ppo: dict[str, float | int] = Field(
        default_factory=lambda: {
            "train_batch_size_per_learner": 2000,
            "minibatch_size": 128,
            "num_epochs": 5,
            "lr": 3e-4,
            "gamma": 0.99,
        }
    )
    dqn: dict[str, float | int] = Field(
        default_factory=lambda: {
            "train_batch_size_per_learner": 64,
            "rollout_fragment_length": 16,
            "lr": 5e-4,
            "gamma": 0.99,
            "num_steps_sampled_before_learning_starts": 1000,
        }
    )


class PromotionParams(BaseModel):
    """Gates a candidate must pass to replace the champion."""

    metric: str = "ic"
    min_improvement: float = 0.005
    max_dm_pvalue: float = 0.10
    min_folds: int = 3
    #: data-snooping-aware gates over all candidates of a run (training.snooping): Hansen's SPA p-value at
    #: most this, and the champion inside the Model Confidence Set of this size (1 − confidence)
    max_spa_pvalue: float = 0.10
    mcs_size: float = 0.10
    bootstrap_reps: int = 1000
    bootstrap_block: int | None = None  # stationary bootstrap mean block length; None: arch's default


class Paths:
    """Every file finstream writes, derived from FINSTREAM_HOME."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.data = home / "data"
        # bar tables (finstream.storage.BarTable): <root>/<interval>/<symbol>/<part>.parquet
        self.raw_bars = self.data / "raw" / "bars"
        self.validated_bars = self.data / "validated" / "bars"
        self.quarantine = self.data / "quarantine" / "bars"
        self.features_dir = self.data / "features"
        #: the daily feature file (what training and serving read by default)
        self.features = self.features_for("1d")
        self.reports = home / "reports"
        self.feast = home / "feast"
        self.feast_registry = self.feast / "registry.db"
        self.feast_online = self.feast / "online.db"
        self.mlruns = home / "mlruns"
        self.prefect_home = home / "prefect"
        self.dvc_cache = home / "dvc-cache"
        self.dvc_remote = home / "dvc-remote"

    def features_for(self, interval: str) -> Path:
        """The feature file of one bar interval (one Feast source per interval)."""
        return self.features_dir / f"{interval}.parquet"


class Settings(BaseSettings):
    """finstream configuration: defaults < params.yaml < FINSTREAM_* environment variables."""

    model_config = SettingsConfigDict(
        env_prefix="FINSTREAM_",
        env_nested_delimiter="__",
        yaml_file="params.yaml",
        extra="ignore",
    )

    home: Path = Path(".finstream")
    offline: bool = False
    redis_url: str | None = None
    online_store: Literal["sqlite", "redis"] | None = None
    feast_project: str = "finstream"
    alphavantage_api_key: str | None = None
    tushare_token: str | None = None
    log_level: str = "INFO"
    ingest: IngestParams = Field(default_factory=IngestParams)
    router: RouterParams = Field(default_factory=RouterParams)
    validation: ValidateParams = Field(default_factory=ValidateParams)
    train: TrainParams = Field(default_factory=TrainParams)
    promotion: PromotionParams = Field(default_factory=PromotionParams)
    rl: RLParams = Field(default_factory=RLParams)
    risk: RiskParams = Field(default_factory=RiskParams)
    mlflow_tracking_uri: str | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Env vars win over params.yaml, which wins over the defaults."""
        return (init_settings, env_settings, YamlConfigSettingsSource(settings_cls), file_secret_settings)

    @cached_property
    def paths(self) -> Paths:
        return Paths(self.home.expanduser().resolve())

    @property
    def online_store_type(self) -> Literal["sqlite", "redis"]:
        """Redis when asked for explicitly or when a Redis URL is set, SQLite otherwise."""
        if self.online_store is not None:
            return self.online_store
        return "redis" if self.redis_url else "sqlite"

    @property
    def tracking_uri(self) -> str:
        """MLflow tracking/registry URI: FINSTREAM_MLFLOW_TRACKING_URI, else SQLite under FINSTREAM_HOME."""
        return self.mlflow_tracking_uri or f"sqlite:///{self.paths.mlruns / 'mlflow.db'}"

    @property
    def artifact_location(self) -> str:
        """Where new experiments keep artifacts (a folder under FINSTREAM_HOME)."""
        return (self.paths.mlruns / "artifacts").as_uri()

    def api_key(self, provider: str) -> str | None:
        """Credential for a provider: FINSTREAM_* setting first, then the provider's usual env var."""
        if provider == "alphavantage":
            return self.alphavantage_api_key or os.environ.get("ALPHAVANTAGE_API_KEY")
        if provider == "tushare":
            return self.tushare_token or os.environ.get("TUSHARE_TOKEN")
        return None


def get_settings(**overrides: object) -> Settings:
    """Build settings from the environment and ./params.yaml (a new object each call)."""
    return Settings(**overrides)  # type: ignore[arg-type]


def prefect_environment(settings: Settings) -> dict[str, str]:
    """Environment that keeps Prefect's state under FINSTREAM_HOME and its telemetry off.

    The ephemeral API server gets 90 s to start: its first start on a 2-core machine runs migrations.
    """
    return {
        "PREFECT_HOME": str(settings.paths.prefect_home),
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    }
