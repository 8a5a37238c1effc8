"""Source router: priority per market, reachability probe, timeout, retries, circuit breaker, quality gate.

With no network the router reaches the packaged history in well under a second per run: each live
provider's hosts are probed once (DNS + TCP connect, `router.probe_timeout_s`) and an unreachable
provider is skipped for the rest of the run; `FINSTREAM_OFFLINE=1` skips live providers outright; and a
provider whose calls keep failing trips its circuit breaker so later symbols do not wait on it.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import TypeVar

import pandas as pd
import pybreaker
from tenacity import RetryError, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from finstream.config import Settings
from finstream.errors import NoDataError, QualityGateError, SourceError, SourceUnavailable
from finstream.intervals import DAILY
from finstream.sources.base import Source
from finstream.sources.quality import check_quality
from finstream.symbols import Symbol

log = logging.getLogger(__name__)
T = TypeVar("T")

#: provider order per market; the packaged history is the last resort everywhere
DEFAULT_PRIORITY: dict[str, list[str]] = {
    "CN": ["akshare", "tushare", "yfinance", "packaged"],
    "US": ["yfinance", "alphavantage", "packaged"],
    "HK": ["yfinance", "packaged"],
    "FX": ["yfinance", "packaged"],
    "CME": ["yfinance", "packaged"],
}


class ProviderTimeout(SourceError):
    """A provider call ran past its timeout."""


@dataclass
class Attempt:
    """What happened when the router asked one provider for one symbol."""

    provider: str
    outcome: str  # ok | unavailable | unreachable | circuit_open | error | timeout | quality
    detail: str = ""
    seconds: float = 0.0


@dataclass
class RoutedBars:
    """The accepted answer for one symbol, and every attempt made to get it."""

    symbol: Symbol
    bars: pd.DataFrame
    provider: str
    attempts: list[Attempt] = field(default_factory=list)


def call_with_timeout(fn: Callable[[], T], timeout_s: float) -> T:
    """Run `fn` in a daemon thread; raise ProviderTimeout if it has not returned in time.

    A library call that hangs (akshare and yfinance take no timeout argument) is abandoned, not joined:
    a daemon thread cannot keep the process alive.
    """
    box: queue.Queue[tuple[bool, object]] = queue.Queue(maxsize=1)

    def run() -> None:
        try:
            box.put((True, fn()))
        except BaseException as exc:  # handed to the caller below
            box.put((False, exc))

    threading.Thread(target=run, daemon=True, name="finstream-source-call").start()
    try:
        ok, value = box.get(timeout=timeout_s)
    except queue.Empty:
        raise ProviderTimeout(f"no answer within {timeout_s:g} s") from None
    if ok:
        return value  # type: ignore[return-value]
    raise value  # type: ignore[misc]


def _retryable(exc: BaseException) -> bool:
    """Provider errors and timeouts are retried; bad data and unusable providers are not."""
    return isinstance(exc, SourceError) and not isinstance(exc, (SourceUnavailable, QualityGateError))


def host_reachable(host: str, timeout_s: float, port: int = 443) -> bool:
    """DNS lookup plus a TCP connect; False fast when there is no network."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


class SourceRouter:
    """Fetches daily bars for a symbol from the first provider that answers with good data."""

    def __init__(
        self,
        settings: Settings,
        sources: Mapping[str, Source] | None = None,
        priority: Mapping[str, list[str]] | None = None,
        probe: Callable[[str, float], bool] = host_reachable,
    ) -> None:
        from finstream.sources import build_sources

        self.settings = settings
        self.params = settings.router
        self.sources: dict[str, Source] = dict(sources) if sources is not None else build_sources(settings)
        self.priority = {k: list(v) for k, v in (priority or DEFAULT_PRIORITY).items()}
        self._probe = probe
        self._reachable: dict[str, bool] = {}
        self.breakers: dict[str, pybreaker.CircuitBreaker] = {
            name: pybreaker.CircuitBreaker(
                fail_max=self.params.breaker_fail_max,
                reset_timeout=self.params.breaker_reset_s,
                exclude=[SourceUnavailable],
                throw_new_error_on_trip=False,
                name=name,
            )
            for name in self.sources
        }

    def candidates(self, symbol: Symbol, source: str = "auto") -> list[str]:
        """Providers to try for `symbol`, in order."""
        if source != "auto":
            if source not in self.sources:
                raise SourceUnavailable(f"unknown source {source!r}; known: auto, {', '.join(self.sources)}")
            return [source]
        return [p for p in self.priority.get(symbol.market, ["packaged"]) if p in self.sources]

    def _is_reachable(self, src: Source) -> bool:
        if not src.live or not src.hosts:
            return True
        if src.name not in self._reachable:
            proxied = any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"))
            self._reachable[src.name] = proxied or any(
                self._probe(h, self.params.probe_timeout_s) for h in src.hosts
            )
            if not self._reachable[src.name]:
                log.warning(
                    "provider %s unreachable (hosts %s): skipped for this run", src.name, ", ".join(src.hosts)
                )
        return self._reachable[src.name]

    def _fetch_once(
        self,
        src: Source,
        symbol: Symbol,
        start: date | None,
        end: date | None,
        interval: str | None,
        max_bad: float,
    ) -> pd.DataFrame:
        """One guarded call: timeout, error wrapping, quality gate."""
        try:
            bars = call_with_timeout(lambda: src.fetch(symbol, start, end, interval), self.params.timeout_s)
        except SourceError:
            raise
        except Exception as exc:  # a library's own exception type: keep its message for the attempt log
            raise SourceError(f"{type(exc).__name__}: {exc}") from exc
        check_quality(bars, symbol, src.name, max_bad)
        return bars

    def _fetch_retrying(
        self,
        src: Source,
        symbol: Symbol,
        start: date | None,
        end: date | None,
        interval: str | None,
        max_bad: float,
    ) -> pd.DataFrame:
        retrying = Retrying(
            stop=stop_after_attempt(self.params.retries + 1),
            wait=wait_exponential(
                multiplier=self.params.backoff_s, max=10 * max(self.params.backoff_s, 0.01)
            ),
            retry=retry_if_exception(_retryable),
            reraise=True,
        )
        return retrying(self._fetch_once, src, symbol, start, end, interval, max_bad)

    def fetch(
        self,
        symbol: Symbol,
        start: date | None = None,
        end: date | None = None,
        source: str = "auto",
        interval: str | None = DAILY,
    ) -> RoutedBars:
        """`interval` bars from the first provider that serves `symbol` at that interval; NoDataError listing
        every attempt otherwise. Failover order is the same for every interval. `interval=None` asks a file
        source for the bars it holds."""
        attempts: list[Attempt] = []
        # failover mode rejects mostly-broken answers; a source the user named explicitly has no alternative,
        # so its rows go on to validation, which quarantines the bad ones with reasons
        max_bad = self.params.max_bad_ohlc_fraction if source == "auto" else 1.0
        for name in self.candidates(symbol, source):
            src = self.sources[name]
            t0 = time.perf_counter()
            reason = src.unavailable_reason(symbol) or (
                src.interval_unavailable(symbol, interval) if interval is not None else None
            )
            if reason:
                attempts.append(Attempt(name, "unavailable", reason))
                continue
            if self.settings.offline and src.live:
                attempts.append(Attempt(name, "unavailable", "offline mode (FINSTREAM_OFFLINE=1)"))
                continue
            if not self._is_reachable(src):
                attempts.append(Attempt(name, "unreachable", f"no route to {', '.join(src.hosts)}"))
                continue
            breaker = self.breakers[name]
            try:
                bars = breaker.call(self._fetch_retrying, src, symbol, start, end, interval, max_bad)
            except pybreaker.CircuitBreakerError:
                attempts.append(Attempt(name, "circuit_open", "circuit breaker open after repeated failures"))
                continue
            except QualityGateError as exc:
                attempts.append(Attempt(name, "quality", str(exc), time.perf_counter() - t0))
                continue
            except ProviderTimeout as exc:
                attempts.append(Attempt(name, "timeout", str(exc), time.perf_counter() - t0))
                continue
            except (SourceError, RetryError) as exc:
                attempts.append(Attempt(name, "error", str(exc), time.perf_counter() - t0))
                continue
            attempts.append(Attempt(name, "ok", f"{len(bars)} bars", time.perf_counter() - t0))
            log.info("served %s %s from %s (%d bars)", symbol, interval or "", name, len(bars))
            return RoutedBars(symbol, bars, name, attempts)
        tried = (
            "; ".join(f"{a.provider}: {a.outcome} ({a.detail})" for a in attempts) or "no provider covers it"
        )
        what = f"{interval} bars" if interval else "bars"
        raise NoDataError(f"no provider could serve {symbol} {what}: {tried}")
