"""MLflow wiring: one tracking + registry URI from Settings; experiment artifacts under FINSTREAM_HOME."""

from __future__ import annotations

import importlib.util
import logging
import re
import time
from typing import TYPE_CHECKING

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from finstream.config import Settings
from finstream.errors import FinstreamError
from finstream.logs import adopt

adopt("mlflow")  # MLflow installs its own stderr handler at import: its notices belong in the log file

if TYPE_CHECKING:
    from mlflow.entities import Experiment

log = logging.getLogger(__name__)


class RegistryError(FinstreamError):
    """The MLflow tracking store or model registry cannot do what was asked (names what to fix)."""


def redact_uri(uri: str) -> str:
    """The URI with any password replaced by ***, safe for messages and logs."""
    return re.sub(r"(//[^/:@]+):[^/@]*@", r"\1:***@", uri)


def tracking_uri(settings: Settings) -> str:
    """`settings.tracking_uri` with a PostgreSQL driver SQLAlchemy can load.

    SQLAlchemy 2.1 maps a bare `postgresql://` to psycopg 3; finstream ships psycopg2-binary, so such a URI
    gets `+psycopg2` when psycopg 3 is not installed. `postgres://` (Heroku style) is accepted too.
    """
    uri = settings.tracking_uri
    scheme, sep, rest = uri.partition("://")
    if sep and scheme in {"postgresql", "postgres"}:
        has_psycopg3 = importlib.util.find_spec("psycopg") is not None
        driver = "" if has_psycopg3 or importlib.util.find_spec("psycopg2") is None else "+psycopg2"
        return f"postgresql{driver}://{rest}"
    return uri


def tracking_client(settings: Settings) -> MlflowClient:
    """A client on the tracking/registry store of `settings` (opens the store: may run migrations)."""
    uri = tracking_uri(settings)
    try:
        return MlflowClient(tracking_uri=uri, registry_uri=uri)
    except Exception as exc:  # driver import errors, bad host or credentials, missing database
        raise _store_error(uri, exc) from exc


def _store_error(uri: str, exc: BaseException) -> RegistryError:
    return RegistryError(
        f"cannot open the MLflow store at {redact_uri(uri)}: {_first_line(exc)}"
        " (check FINSTREAM_MLFLOW_TRACKING_URI, or unset it to use SQLite under FINSTREAM_HOME)"
    )


def configure_mlflow(settings: Settings) -> MlflowClient:
    """Point MLflow's tracking and registry at `settings.tracking_uri` and open both stores now.

    Opening the stores creates the SQLite file or, on a fresh PostgreSQL database, runs MLflow's schema
    migrations, so a wrong URI or an unreachable server fails here with one clear message.
    """
    settings.paths.mlruns.mkdir(parents=True, exist_ok=True)
    uri = tracking_uri(settings)
    t0 = time.perf_counter()
    _probe_database(uri)
    client = tracking_client(settings)
    try:
        client.search_experiments(max_results=1)
        client.search_registered_models(max_results=1)
    except Exception as exc:  # SQLAlchemy/driver errors (bad host, auth, missing db) or MlflowException
        raise _store_error(uri, exc) from exc
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    log.info(
        "mlflow store ready at %s",
        redact_uri(uri),
        extra={"tracking_uri": redact_uri(uri), "open_s": time.perf_counter() - t0},
    )
    return client


def ensure_experiment(name: str, settings: Settings) -> str:
    """The id of experiment `name`, created with its artifacts under FINSTREAM_HOME when it is new.

    Call `configure_mlflow` first. An experiment that was deleted is restored rather than shadowed.
    """
    client = tracking_client(settings)
    try:
        experiment: Experiment | None = client.get_experiment_by_name(name)
        if experiment is None:
            try:
                experiment_id = client.create_experiment(name, artifact_location=settings.artifact_location)
            except MlflowException as exc:  # another process created it between the two calls
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                return client.get_experiment_by_name(name).experiment_id  # type: ignore[union-attr]
            log.info(
                "created mlflow experiment %s",
                name,
                extra={"experiment": name, "experiment_id": experiment_id},
            )
            return experiment_id
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
            log.info("restored deleted mlflow experiment %s", name, extra={"experiment": name})
        return experiment.experiment_id
    except MlflowException as exc:
        raise RegistryError(f"cannot create or open MLflow experiment {name!r}: {_first_line(exc)}") from exc


def _probe_database(uri: str) -> None:
    """Connect once to a database server, so a dead one fails now, not after MLflow's ~100 s of retries."""
    scheme = uri.partition("://")[0]
    if scheme.split("+")[0] not in {"postgresql", "mysql", "mssql"}:
        return
    import sqlalchemy

    connect_args = {"connect_timeout": 5} if scheme.startswith("postgresql") else {}
    try:
        engine = sqlalchemy.create_engine(uri, connect_args=connect_args)
        try:
            with engine.connect():
                pass
        finally:
            engine.dispose()
    except Exception as exc:  # driver missing, refused, bad credentials, unknown database
        raise _store_error(uri, exc) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
