"""ops/prometheus (alert rules, their promtool unit tests, the scrape config) and ops/grafana/finstream.json.

promtool (Debian: `apt-get install -y prometheus`) checks the rules and the config and runs the rule unit
tests; every PromQL expression of the dashboard is parsed by promtool too, as recording rules of a throwaway
rules file. Every metric name the rules and the dashboard query must be one the code exports: the names are
read from the prometheus_client objects of the metrics modules (so renaming a metric fails here) and from
BentoML's own HTTP instruments.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "ops" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
ALERTS_TEST = PROMETHEUS / "alerts_test.yml"
CONFIG = PROMETHEUS / "prometheus.yml"
DASHBOARD = ROOT / "ops" / "grafana" / "finstream.json"

#: modules that define the service's Prometheus metrics (module-level prometheus_client objects)
METRIC_MODULES = ("serving.telemetry", "stream.exporter")
#: where metrics could be defined; a definition outside METRIC_MODULES fails test_metrics_are_defined_...
CODE_DIRS = ("serving", "finstream", "stream", "flows", "training")
#: series Prometheus makes itself for every scrape target
PROMETHEUS_SERIES = {"up"}
#: the job name of the finstream scrape config, used by the alerts and the dashboard
JOB = "finstream"
#: the job of `finstream stream`'s metrics (stream/exporter.py)
STREAM_JOB = "finstream-stream"
#: values for Grafana's built-in variables before promtool parses a panel's query
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}

PROMQL_KEYWORDS = {
    "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
    "group_right", "inf", "nan", "atan2",
}  # fmt: skip


def promtool() -> str:
    """promtool's path; a missing promtool fails the test (not a skip: these checks must run in CI)."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool not found: install Debian's prometheus package (`apt-get install -y prometheus`), "
            "which provides /usr/bin/promtool; CI installs it"
        )
    return path


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [promtool(), *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, (
        f"promtool {' '.join(map(str, args))} failed:\n{result.stdout}{result.stderr}"
    )
    return result


def _series_names(metric: MetricWrapperBase) -> set[str]:
    """The sample names a prometheus_client metric exposes (counters drop "_total" from `_name`)."""
    name, kind = metric._name, metric._type
    suffixes = {
        "counter": ("_total",),
        "gauge": ("",),
        "histogram": ("_bucket", "_count", "_sum"),
        "summary": ("_count", "_sum", ""),
        "info": ("_info",),
        "enum": ("",),
    }[kind]
    return {name + s for s in suffixes}


def _code_metrics() -> dict[str, MetricWrapperBase]:
    metrics: dict[str, MetricWrapperBase] = {}
    for module_name in METRIC_MODULES:
        module: ModuleType = importlib.import_module(module_name)
        for value in vars(module).values():
            if isinstance(value, MetricWrapperBase):
                metrics[value._name] = value
    return metrics


def _bentoml_series() -> set[str]:
    """BentoML's built-in HTTP metrics of a new-style @bentoml.service (v2 config namespace)."""
    from _bentoml_impl.server import app as bentoml_app
    from bentoml._internal.configuration.containers import get_default_config
    from bentoml._internal.server.http.instruments import RunnerTrafficMetricsMiddleware

    namespace = get_default_config(version=2)["services"]["metrics"]["namespace"]
    assert namespace == "bentoml_service"
    # the app builds RunnerTrafficMetricsMiddleware with the configured namespace
    assert "RunnerTrafficMetricsMiddleware" in inspect.getsource(bentoml_app)
    made = re.findall(
        r'metrics_client\.(\w+)\(\s*namespace=self\.namespace,\s*name="(\w+)"',
        inspect.getsource(RunnerTrafficMetricsMiddleware._setup),
    )
    assert ("Gauge", "request_in_progress") in made, made
    suffixes = {"Counter": ("_total",), "Gauge": ("",), "Histogram": ("_bucket", "_count", "_sum")}
    suffixes["Summary"] = ("_count", "_sum")
    # prometheus_client drops a counter's "_total" from its name and adds it back to the sample
    return {f"{namespace}_{name.removesuffix('_total')}{s}" for kind, name in made for s in suffixes[kind]}


@pytest.fixture(scope="module")
def exported() -> set[str]:
    names = set(PROMETHEUS_SERIES) | _bentoml_series()
    for metric in _code_metrics().values():
        names |= _series_names(metric)
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (strings, label matchers, ranges, grouping clauses
    and function calls removed; what is left that looks like an identifier is a metric name)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = re.findall(r"(?<![\w.:])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()", text)
    return {n for n in names if n.lower() not in PROMQL_KEYWORDS}


def _alert_rules() -> list[dict]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _panels(dashboard: dict) -> list[dict]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def _dashboard_exprs(dashboard: dict) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every label_values() variable query, Grafana's
    variables replaced by values promtool can parse."""
    exprs = []
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            exprs.append((f"panel {panel['title']!r} {target['refId']}", target["expr"]))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((.+),\s*\w+\)", variable["definition"])
            assert match, f"variable {variable['name']}: expected label_values(selector, label)"
            exprs.append((f"variable {variable['name']}", match.group(1)))
    out = []
    for where, expr in exprs:
        for name, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(name, value)
        assert "$__" not in expr, f"{where}: unknown Grafana variable in {expr}"
        out.append((where, expr))
    return out


def test_metric_names_are_parsed_out_of_promql() -> None:
    expr = (
        'sum by (endpoint, status) (rate(finstream_errors_total{status=~"5.."}[5m])) / ignoring (status) '
        "group_left sum by (endpoint) (rate(finstream_request_duration_seconds_count[5m])) > 0.05 "
        'unless on (name) up{job="x"} == bool 1e-3 or vector(0)'
    )
    assert metric_names(expr) == {
        "finstream_errors_total",
        "finstream_request_duration_seconds_count",
        "up",
    }


def test_metrics_are_defined_only_in_the_metrics_modules() -> None:
    """A metric defined elsewhere would be missed by `exported`: add its module to METRIC_MODULES."""
    pattern = re.compile(
        r"\b(?:prometheus_client|metrics)\.(?:Counter|Gauge|Histogram|Summary|Info|Enum)\(|"
        r"^\s*from prometheus_client import",
        re.MULTILINE,
    )
    allowed = {ROOT / (m.replace(".", "/") + ".py") for m in METRIC_MODULES}
    found = {
        path
        for folder in CODE_DIRS
        for path in (ROOT / folder).rglob("*.py")
        if pattern.search(path.read_text(encoding="utf-8"))
    }
    assert found - allowed == set(), f"metrics defined outside {METRIC_MODULES}: {sorted(found - allowed)}"
    assert _code_metrics(), f"no prometheus_client metrics found in {METRIC_MODULES}"


def test_promtool_checks_the_alert_rules() -> None:
    result = _run("check", "rules", ALERTS)
    assert f"SUCCESS: {len(_alert_rules())} rules found" in result.stdout


def test_promtool_checks_the_config_and_it_loads_the_rules() -> None:
    result = _run("check", "config", CONFIG)
    assert "SUCCESS: 1 rule files found" in result.stdout
    config = yaml.safe_load(CONFIG.read_text())
    assert config["rule_files"] == [ALERTS.name]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {JOB, STREAM_JOB}
    assert all(job["metrics_path"] == "/metrics" for job in jobs.values())
    assert jobs[JOB]["static_configs"][0]["targets"] == ["127.0.0.1:3000"]
    assert jobs[STREAM_JOB]["static_configs"][0]["targets"] == ["127.0.0.1:9109"]


def test_the_scrape_target_is_where_finstream_serve_listens() -> None:
    from finstream.cli.serve import serve
    from stream.config import StreamConfig

    params = inspect.signature(serve).parameters
    assert (params["host"].default, params["port"].default) == ("127.0.0.1", 3000)
    assert StreamConfig().metrics_port == 9109


def test_promtool_unit_tests_of_the_alert_rules_pass() -> None:
    result = _run("test", "rules", ALERTS_TEST)
    assert "SUCCESS" in result.stdout


def test_every_alert_rule_has_a_firing_and_a_quiet_unit_test() -> None:
    tests = yaml.safe_load(ALERTS_TEST.read_text())
    assert tests["rule_files"] == [ALERTS.name]
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in _alert_rules()}
    assert names - fired == set(), f"rules without a test that fires them: {names - fired}"
    assert names - quiet == set(), f"rules without a test where they stay quiet: {names - quiet}"


def test_alert_rules_are_complete() -> None:
    rules = _alert_rules()
    assert rules
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)), names
    for rule in rules:
        assert "record" not in rule
        assert rule.get("for"), f"{rule['alert']}: no `for:`"
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}, rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
        assert "{{" in rule["annotations"]["summary"], f"{rule['alert']}: summary has no label/value"
        for selector in re.findall(r"\bup\{([^}]*)\}", rule["expr"]):
            assert f'job="{JOB}"' in selector, f"{rule['alert']}: `up` of another job"


def test_alert_rules_use_only_exported_metrics(exported: set[str]) -> None:
    for rule in _alert_rules():
        used = metric_names(rule["expr"])
        assert used, f"{rule['alert']}: no metric in {rule['expr']}"
        assert used <= exported, f"{rule['alert']}: not exported by finstream: {used - exported}"


def test_dashboard_is_a_grafana_dashboard() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] and dashboard["title"]
    assert 36 <= dashboard["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = _panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids are not unique"
    queried = [p for p in panels if p["type"] != "row"]
    assert len(queried) >= 10
    for panel in queried:
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}, panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]


def test_dashboard_queries_use_only_exported_metrics(exported: set[str]) -> None:
    used: set[str] = set()
    for where, expr in _dashboard_exprs(_dashboard()):
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr}"
        assert names <= exported, f"{where}: not exported by finstream: {names - exported}"
        used |= names
    # the dashboard covers every metric the code defines
    without_panel = sorted(name for name, m in _code_metrics().items() if not _series_names(m) & used)
    assert not without_panel, f"metrics the code defines but no dashboard panel shows: {without_panel}"


def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    exprs = _dashboard_exprs(_dashboard())
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": expr} for i, (_, expr) in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    result = _run("check", "rules", path)
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout
