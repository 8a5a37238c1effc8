"""data_pipeline: ingest → validate → features → materialize, on the ephemeral Prefect API by default."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from prefect import flow, get_run_logger, task

from finstream.config import get_settings
from finstream.data_stages import (
    FeaturesReport,
    IngestReport,
    MaterializeReport,
    ValidateReport,
    features_stage,
    ingest_stage,
    materialize_stage,
    validate_stage,
)


@dataclass
class PipelineResult:
    """Every stage's report from one run."""

    ingest: IngestReport
    validate: ValidateReport
    features: FeaturesReport
    materialize: MaterializeReport


@task(name="ingest", retries=2, retry_delay_seconds=[2, 10])
def ingest_task(
    symbols: str | list[str] | None,
    source: str | None,
    start: date | None,
    end: date | None,
    interval: str | None = None,
) -> IngestReport:
    """Fetch bars with provider failover; retried as a whole if every provider failed for every symbol."""
    report = ingest_stage(get_settings(), symbols, source, start, end, interval=interval)
    logger = get_run_logger()
    for s in report.symbols:
        if s.error:
            logger.warning("ingest %s failed: %s", s.symbol, s.error)
        else:
            logger.info(
                "ingest %s %s: %d read from %s (%s .. %s), %d new, %d changed, %d stored",
                s.symbol, s.interval, s.read, s.provider, s.first, s.last, s.new, s.changed, s.stored,
            )  # fmt: skip
    logger.info(
        "raw bars: %d partitions rewritten, %d new or changed",
        report.partitions_written,
        report.new_or_changed,
    )
    return report


@task(name="validate")
def validate_task() -> ValidateReport:
    """Great Expectations suite over the raw bars; failing rows to quarantine."""
    report = validate_stage(get_settings())
    get_run_logger().info(
        "validate: %d in = %d clean + %d quarantined (report %s)",
        report.input,
        report.clean,
        report.quarantined,
        report.report_path,
    )
    return report


@task(name="features")
def features_task() -> FeaturesReport:
    """Indicators of the spec over the validated bars."""
    report = features_stage(get_settings())
    get_run_logger().info("features: %d rows x %d indicators", report.rows, len(report.features))
    return report


@task(name="materialize")
def materialize_task() -> MaterializeReport:
    """Feast apply + materialize into the online store."""
    report = materialize_stage(get_settings())
    get_run_logger().info(
        "materialize: %d keys into the %s online store", report.keys_written, report.online_store
    )
    return report


@flow(name="data_pipeline")
def data_pipeline(
    symbols: str | list[str] | None = None,
    source: str | None = None,
    start: date | None = None,
    end: date | None = None,
    interval: str | None = None,
) -> PipelineResult:
    """The whole data pipeline; defaults come from params.yaml / FINSTREAM_* settings."""
    ingested = ingest_task(symbols, source, start, end, interval)
    validated = validate_task(wait_for=[ingested])
    feats = features_task(wait_for=[validated])
    loaded = materialize_task(wait_for=[feats])
    return PipelineResult(ingested, validated, feats, loaded)
