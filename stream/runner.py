"""Running the pipeline: N consumers (processes, or threads of this process) and the monitor.

Processes are the unit of parallelism (the indicators, risk and scoring are Python: one core per consumer
process); threads share one core and suit tests and small loads. Each consumer process is started with
`spawn`, rebuilt from the settings, and restarted when it dies (backoff 1 s doubling to 30 s): its stable
name (`c<index>`) lets it settle what it left pending. `index` runs one consumer of a larger group here,
so the consumers of one bus can be spread over machines (each machine runs its own indices).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from finstream.config import Settings
from stream.config import StreamConfig
from stream.monitor import Monitor
from stream.worker import StreamWorker

log = logging.getLogger(__name__)

RESTART_BACKOFF_S = (1.0, 30.0)


def worker_main(
    settings: Settings, config: StreamConfig, intervals: list[str], index: int, count: int
) -> None:
    """A consumer process: build the worker, consume until SIGTERM / SIGINT."""
    _process_logging(index)
    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    worker = StreamWorker(settings, config, intervals, index, count).setup()
    worker.run(stop)


def _process_logging(index: int) -> None:
    """A consumer process logs like the command that started it: every record to its log file (when the
    `finstream` CLI set one up), finstream's warnings to the terminal, prefixed with the consumer's name."""
    from finstream import logs

    console = logging.StreamHandler()
    console.setFormatter(logging.Formatter(f"c{index} %(levelname)s %(name)s: %(message)s"))
    path = os.environ.get(logs.LOG_FILE_ENV)
    if path:
        logs.setup(Path(path), console)
    elif not logging.getLogger().handlers:
        console.setLevel(logging.WARNING)
        logging.basicConfig(level=logging.INFO, handlers=[console])


class Supervisor:
    """Starts the consumers, restarts those that die, runs the monitor; `stop()` ends it all."""

    def __init__(
        self,
        settings: Settings,
        config: StreamConfig,
        intervals: Sequence[str],
        consumers: int = 1,
        *,
        threads: bool = False,
        indices: Sequence[int] | None = None,
        monitor: bool = True,
    ) -> None:
        self.settings = settings
        self.config = config
        self.intervals = list(intervals)
        self.count = consumers
        self.indices = list(indices) if indices is not None else list(range(consumers))
        self.threads = threads
        self.stop_event = threading.Event()
        self.monitor = Monitor(settings, config, self.intervals, consumers) if monitor else None
        self._procs: dict[int, Any] = {}
        self._restarts: dict[int, tuple[int, float]] = {}
        self._workers: list[StreamWorker] = []
        self._worker_threads: list[threading.Thread] = []

    def start(self) -> None:
        if self.threads:
            for index in self.indices:
                worker = StreamWorker(self.settings, self.config, self.intervals, index, self.count).setup()
                thread = threading.Thread(target=worker.run, args=(self.stop_event,), daemon=True)
                thread.start()
                self._workers.append(worker)
                self._worker_threads.append(thread)
            return
        for index in self.indices:
            self._spawn(index)

    def _spawn(self, index: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        proc = ctx.Process(
            target=worker_main,
            args=(self.settings, self.config, self.intervals, index, self.count),
            name=f"finstream-stream-c{index}",
            daemon=False,
        )
        proc.start()
        self._procs[index] = proc
        log.info("started consumer c%d (pid %s)", index, proc.pid)

    def supervise(self) -> None:
        """Restart consumer processes that exited while the pipeline runs (with backoff)."""
        now = time.monotonic()
        for index, proc in list(self._procs.items()):
            if proc.is_alive():
                continue
            count, due = self._restarts.get(index, (0, 0.0))
            if due == 0.0:
                delay = min(RESTART_BACKOFF_S[1], RESTART_BACKOFF_S[0] * 2**count)
                log.warning(
                    "consumer c%d exited (code %s); restarting in %.0f s", index, proc.exitcode, delay
                )
                if self.monitor is not None:
                    self.monitor.errors.append(f"c{index} exited with code {proc.exitcode}")
                self._restarts[index] = (count + 1, now + delay)
            elif now >= due:
                self._restarts[index] = (count, 0.0)
                self._spawn(index)

    def run(self) -> None:
        """Start, then monitor and supervise until `stop()` (or Ctrl-C)."""
        self.start()
        try:
            while not self.stop_event.is_set():
                if self.monitor is not None:
                    try:
                        self.monitor.tick()
                    except Exception as exc:  # Redis down: the consumers reconnect on their own
                        log.warning("stream monitor: %s", exc)
                self.supervise()
                self.stop_event.wait(self.config.metrics_s)
        finally:
            self.shutdown()

    def stop(self) -> None:
        self.stop_event.set()

    def shutdown(self, timeout: float = 20.0) -> None:
        """Stop every consumer (SIGTERM, then SIGKILL after `timeout`) and the monitor."""
        self.stop_event.set()
        for worker in self._workers:
            worker.stop()
        for thread in self._worker_threads:
            thread.join(timeout)
        for proc in self._procs.values():
            if proc.is_alive():
                proc.terminate()
        deadline = time.monotonic() + timeout
        for proc in self._procs.values():
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                log.warning("consumer %s did not stop in %.0f s; killing it", proc.name, timeout)
                proc.kill()
                proc.join(5)
        if self.monitor is not None:
            try:
                self.monitor.tick()
            except Exception as exc:
                log.warning("stream monitor: %s", exc)
            self.monitor.close()

    @property
    def workers(self) -> list[StreamWorker]:
        """The in-process workers (thread mode)."""
        return list(self._workers)
