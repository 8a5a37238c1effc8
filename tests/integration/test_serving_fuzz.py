"""Property-based fuzzing of the HTTP API from its own OpenAPI spec (schemathesis): every operation, generated
path/query/header/body inputs, sent with a valid admin key to the real BentoML server; no input may get a 5xx.

The server is the one `test_serving.py` builds (real packaged features in Feast's Redis online store, ridge
champions in MLflow), started once more with a rate limit high enough that the fuzzer is not only answered
429.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from test_serving import SYMBOLS, Served, Server, _start, _wait_up, served  # noqa: F401  (served is a fixture)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ADMIN_KEY = "admin-key"
MAX_EXAMPLES = int(os.environ.get("FINSTREAM_FUZZ_EXAMPLES", "30"))  # per operation and mode; more to hunt


@pytest.fixture(scope="module")
def fuzz_server(served: Served, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:  # noqa: F811
    """The served home and registry behind a server whose per-key rate limit the fuzzer cannot exhaust."""
    workdir = tmp_path_factory.mktemp("serving-fuzz")
    server = _start(
        served.settings.paths.home,
        workdir,
        "fuzz",
        FINSTREAM_SERVE_RATE_LIMIT_PER_S="100000",
        FINSTREAM_SERVE_RATE_LIMIT_BURST="100000",
        FINSTREAM_SERVE_RELOAD_INTERVAL_S="0",
    )
    try:
        _wait_up(server, "/ready")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def api_schema(fuzz_server: Server) -> schemathesis.BaseSchema:
    """The OpenAPI document the running server publishes."""
    spec = httpx.get(fuzz_server.url + "/openapi.json", timeout=10)
    assert spec.status_code == 200, spec.text[:500]
    schema = schemathesis.openapi.from_dict(spec.json())
    return schema


def _operations(api_schema: schemathesis.BaseSchema) -> list[Any]:
    return [result.ok() for result in api_schema.get_all_operations()]


def _strategy(operation: Any, mode: str) -> st.SearchStrategy[schemathesis.Case]:
    """Generated cases; "known-symbols" mixes materialized symbols into the lists so the 200 path is fuzzed
    too (random strings almost never name a symbol the store holds, so they only reach the 404 path)."""
    if mode != "known-symbols":
        return operation.as_strategy(generation_mode=GenerationMode(mode))
    symbol = st.sampled_from(SYMBOLS) | st.text(min_size=1, max_size=12)
    lists = st.lists(symbol, min_size=1, max_size=4)

    def with_symbols(pair: tuple[schemathesis.Case, list[str]]) -> schemathesis.Case:
        case, symbols = pair
        if operation.path == "/predict":
            case.body = {"symbols": symbols}
        else:
            case.query = {"symbols": ",".join(symbols)}
        return case

    return st.tuples(operation.as_strategy(), lists).map(with_symbols)


def _fuzzer(operation: Any, mode: str, url: str, counts: Counter[int]) -> Any:
    """A hypothesis test of one operation in one mode that counts the status codes it gets."""

    @given(case=_strategy(operation, mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        database=None,
    )
    def fuzz(case: schemathesis.Case) -> None:
        response = case.call_and_validate(
            base_url=url, headers={"X-API-Key": ADMIN_KEY}, checks=[not_a_server_error], timeout=30
        )
        counts[response.status_code] += 1

    return fuzz


def test_no_generated_input_gets_a_server_error(
    api_schema: schemathesis.BaseSchema, fuzz_server: Server
) -> None:
    """Each operation, with valid (positive) and schema-violating (negative) inputs: never a 5xx.

    The cases are driven by hypothesis directly (`operation.as_strategy()`) rather than through
    `schemathesis.pytest.from_fixture`, which breaks on pytest 9 (it sets `Function._nodeid`, gone there).
    Every operation runs even after one fails; the failures are reported together, each with schemathesis'
    reproduction (a curl command) and hypothesis' shrunk example.
    """
    failures: list[str] = []
    ran: list[str] = []
    statuses: dict[str, Counter[int]] = defaultdict(Counter)
    for operation in _operations(api_schema):
        for mode in ("positive", "negative", "known-symbols"):
            if mode == "known-symbols" and operation.path not in ("/predict", "/quotes"):
                continue

            fuzz = _fuzzer(operation, mode, fuzz_server.url, statuses[operation.label])
            try:
                fuzz()
            except Unsatisfiable:  # no schema-violating input exists (e.g. only free-form string headers)
                continue
            except Exception as exc:  # a FailureGroup (a 5xx) or a transport error: both are findings
                failures.append(f"{operation.label} [{mode}]: {exc}")
            ran.append(f"{operation.label} [{mode}]")
    print("fuzzed:", ", ".join(ran))
    print("statuses:", {label: dict(counts) for label, counts in statuses.items()})
    assert not failures, "server errors on generated inputs:\n\n" + "\n\n".join(failures)
    assert len(statuses) == len(_operations(api_schema)), statuses  # every operation was called
    for label, counts in statuses.items():  # the admin key got past auth: not every answer is a 401/403
        assert set(counts) - {401, 403}, (label, counts)


def test_the_spec_covers_every_endpoint(api_schema: schemathesis.BaseSchema) -> None:
    """The fuzzer above sees the whole API (a route missing from the spec would go unfuzzed)."""
    paths = set(api_schema.raw_schema["paths"])
    assert {"/health", "/ready", "/predict", "/quotes", "/models", "/admin/reload"} <= paths
