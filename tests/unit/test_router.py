"""Router failover: exceptions, timeouts, bad data, unreachable hosts, circuit breaker open/half-open."""

from __future__ import annotations

import time
from datetime import date

import pandas as pd
import pytest

from finstream.config import RouterParams, Settings
from finstream.errors import NoDataError, SourceError
from finstream.sources.base import Source
from finstream.sources.packaged import PackagedSource
from finstream.sources.router import ProviderTimeout, SourceRouter, call_with_timeout
from finstream.symbols import Symbol, parse_symbol

CSI = parse_symbol("000300.SH")


class Scripted(Source):
    """A provider that plays a script of behaviours, one per call, and serves real packaged bars."""

    live = True
    hosts = ("example.invalid",)

    def __init__(self, settings: Settings, name: str, script: list[str], delay: float = 0.0) -> None:
        super().__init__(settings)
        self.name = name  # type: ignore[misc]
        self.script = list(script)
        self.calls = 0
        self.delay = delay

    def fetch(
        self, symbol: Symbol, start: date | None, end: date | None, interval: str = "1d"
    ) -> pd.DataFrame:
        self.calls += 1
        action = self.script.pop(0) if self.script else "ok"
        if action == "raise":
            raise ConnectionError("connection reset by peer")
        if action == "hang":
            time.sleep(self.delay)
        bars = PackagedSource(self.settings).fetch(symbol, date(2024, 1, 1), date(2024, 3, 31))
        bars["source"] = self.name
        if action == "bad":  # half the rows have high < low: a broken mapping, not a few bad prints
            bars.loc[bars.index[::2], "high"] = bars.loc[bars.index[::2], "low"] - 1
        return bars


def make_router(*providers: Source, probe=lambda host, timeout: True, **params: float) -> SourceRouter:
    base = {"timeout_s": 2.0, "retries": 2, "backoff_s": 0.0, "breaker_fail_max": 3, "breaker_reset_s": 60.0}
    base.update(params)
    settings = Settings(router=RouterParams(**base))
    sources = {p.name: p for p in providers}
    return SourceRouter(settings, sources=sources, priority={"CN": list(sources)}, probe=probe)


def test_first_provider_serves() -> None:
    a = Scripted(Settings(), "a", ["ok"])
    got = make_router(a, PackagedSource(Settings())).fetch(CSI)
    assert got.provider == "a"
    assert set(got.bars["source"]) == {"a"}
    assert [x.outcome for x in got.attempts] == ["ok"]


def test_exception_is_retried_then_fails_over_to_packaged() -> None:
    a = Scripted(Settings(), "a", ["raise", "raise", "raise"])
    got = make_router(a, PackagedSource(Settings())).fetch(CSI, date(2024, 1, 1), date(2024, 3, 31))
    assert a.calls == 3  # 1 try + 2 retries
    assert got.provider == "packaged"
    assert set(got.bars["source"]) == {"packaged"}
    assert got.attempts[0].outcome == "error" and "connection reset" in got.attempts[0].detail


def test_transient_error_recovers_on_retry() -> None:
    a = Scripted(Settings(), "a", ["raise", "ok"])
    got = make_router(a, PackagedSource(Settings())).fetch(CSI)
    assert (got.provider, a.calls) == ("a", 2)


def test_timeout_fails_over() -> None:
    a = Scripted(Settings(), "a", ["hang"], delay=5.0)
    t0 = time.perf_counter()
    got = make_router(a, PackagedSource(Settings()), timeout_s=0.2, retries=0).fetch(CSI)
    assert got.provider == "packaged"
    assert got.attempts[0].outcome == "timeout"
    assert time.perf_counter() - t0 < 3.0  # the hung call was abandoned, not waited for


def test_bad_data_fails_the_quality_gate_without_retry() -> None:
    a = Scripted(Settings(), "a", ["bad"])
    got = make_router(a, PackagedSource(Settings())).fetch(CSI)
    assert a.calls == 1
    assert got.provider == "packaged"
    assert got.attempts[0].outcome == "quality"
    assert "inconsistent" in got.attempts[0].detail


def test_unreachable_provider_is_skipped_and_probed_once() -> None:
    probes: list[str] = []

    def probe(host: str, timeout: float) -> bool:
        probes.append(host)
        return False

    a = Scripted(Settings(), "a", [])
    router = make_router(a, PackagedSource(Settings()), probe=probe)
    for sym in ("000300.SH", "000300.SH"):
        got = router.fetch(parse_symbol(sym))
        assert got.provider == "packaged"
        assert got.attempts[0].outcome == "unreachable"
    assert a.calls == 0
    assert probes == ["example.invalid"]


def test_offline_mode_skips_live_providers() -> None:
    a = Scripted(Settings(), "a", [])
    router = make_router(a, PackagedSource(Settings()))
    router.settings = Settings(offline=True, router=router.params)
    got = router.fetch(CSI)
    assert (got.provider, a.calls) == ("packaged", 0)
    assert "offline" in got.attempts[0].detail


def test_circuit_opens_then_half_opens_and_closes() -> None:
    a = Scripted(Settings(), "a", ["raise"] * 3)
    router = make_router(a, PackagedSource(Settings()), retries=0, breaker_fail_max=3, breaker_reset_s=0.3)
    for _ in range(3):
        assert router.fetch(CSI).provider == "packaged"
    assert router.breakers["a"].current_state == "open"
    calls = a.calls
    got = router.fetch(CSI)  # open: not called at all
    assert a.calls == calls
    assert got.attempts[0].outcome == "circuit_open"
    time.sleep(0.35)  # half-open: one trial call, which succeeds and closes the circuit
    got = router.fetch(CSI)
    assert got.provider == "a" and a.calls == calls + 1
    assert router.breakers["a"].current_state == "closed"


def test_half_open_trial_failure_reopens() -> None:
    a = Scripted(Settings(), "a", ["raise"] * 4)
    router = make_router(a, PackagedSource(Settings()), retries=0, breaker_fail_max=3, breaker_reset_s=0.3)
    for _ in range(3):
        router.fetch(CSI)
    time.sleep(0.35)
    assert router.fetch(CSI).provider == "packaged"
    assert router.breakers["a"].current_state == "open"


def test_explicit_source_does_not_fail_over() -> None:
    a = Scripted(Settings(), "a", ["raise"] * 3)
    with pytest.raises(NoDataError, match="a: error"):
        make_router(a, PackagedSource(Settings())).fetch(CSI, source="a")


def test_unknown_source_name() -> None:
    with pytest.raises(SourceError, match="unknown source 'bloomberg'"):
        make_router(PackagedSource(Settings())).fetch(CSI, source="bloomberg")


def test_no_provider_lists_every_attempt() -> None:
    a = Scripted(Settings(), "a", ["raise"] * 3)
    with pytest.raises(NoDataError) as info:
        make_router(a, PackagedSource(Settings())).fetch(parse_symbol("600519.SH"))
    assert "a: error" in str(info.value) and "packaged: unavailable" in str(info.value)


def test_call_with_timeout_passes_results_and_errors() -> None:
    assert call_with_timeout(lambda: 42, 1.0) == 42
    with pytest.raises(KeyError):
        call_with_timeout(lambda: {}["x"], 1.0)
    with pytest.raises(ProviderTimeout):
        call_with_timeout(lambda: time.sleep(1), 0.05)
