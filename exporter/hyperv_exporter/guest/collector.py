"""The agent's prometheus_client collector: independent, bounded probes plus per-probe success/duration.

Each probe reads one source and maps it to families. :class:`GuestCollector` runs all enabled
probes concurrently on every collection, each with the same deadline; a probe that raises or
overruns reports ``hyperv_guest_collector_success{collector} 0`` and contributes no families,
while every other probe's metrics are still exported. A probe still running from a previous
collection is not started again (single flight): a concurrent collection (two Prometheus servers)
joins the run in flight and waits for it within its own deadline, and a wedged source cannot pile
up threads.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from hyperv_exporter import __version__
from hyperv_exporter.guest import components, kvp_pool, metrics, ptp, timex, windows
from hyperv_exporter.guest.kvp_pool import KeySpec
from hyperv_exporter.guest.ntp import NtpMonitor
from hyperv_exporter.guest.rootfs import Root

log = logging.getLogger(__name__)


class StateLog:
    """Logs a condition when it changes, not on every collection ("unavailable" is not news each scrape)."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._last: str | None = None
        self._lock = threading.Lock()

    def update(self, state: str, level: int, message: str, **extra: Any) -> None:
        with self._lock:
            if state == self._last:
                return
            self._last = state
        self._logger.log(level, message, extra=extra)


class Probe(ABC):
    name: ClassVar[str]

    @abstractmethod
    def collect(self) -> list[Metric]:
        """Fresh families for this collection; raise to report failure."""


# --- Linux ---------------------------------------------------------------------------------------
class HostClockProbe(Probe):
    name = "ptp"

    def __init__(self, root: Root, reader: ptp.PhcReader, samples: int, device: Path | None = None) -> None:
        self.root, self.reader, self.samples, self.device = root, reader, samples, device
        self._state = StateLog(log)

    def collect(self) -> list[Metric]:
        reading = ptp.read_host_clock(self.root, self.reader, self.samples, self.device)
        if not reading.available:
            self._state.update("unavailable:" + reading.reason, logging.INFO, "host clock unavailable",
                               reason=reading.reason)  # fmt: skip
        elif reading.stale:
            self._state.update("stale", logging.WARNING,
                               "Hyper-V PTP clock is stale (ESTALE): the host sent no time for 10 minutes",
                               device=reading.device)  # fmt: skip
        else:
            self._state.update("ok", logging.INFO, "reading the Hyper-V host clock", device=reading.device)
        return metrics.host_clock(reading)


class TimexProbe(Probe):
    name = "timex"

    def __init__(self, adjtimex: timex.AdjtimexFn | None = None) -> None:
        self.adjtimex = adjtimex
        self._state = StateLog(log)

    def collect(self) -> list[Metric]:
        try:
            state = timex.read_timex(self.adjtimex)
        except timex.TimexUnavailable as exc:
            self._state.update("unavailable", logging.INFO, "adjtimex unavailable", reason=str(exc))
            return metrics.timex_unavailable()
        self._state.update("ok", logging.DEBUG, "adjtimex readable")
        return metrics.timex(state)


class ComponentsProbe(Probe):
    name = "components"

    def __init__(self, root: Root) -> None:
        self.root = root

    def collect(self) -> list[Metric]:
        return [
            *metrics.detection(components.detect(self.root)),
            *metrics.modules(components.loaded_modules(self.root)),
            *metrics.daemons(components.running_daemons(self.root)),
        ]


class KvpProbe(Probe):
    name = "kvp"

    def __init__(self, root: Root, specs: Collection[KeySpec], lock_timeout: float, max_value_length: int) -> None:
        self.root, self.specs, self.lock_timeout, self.max_value_length = root, specs, lock_timeout, max_value_length
        self._state = StateLog(log)

    def collect(self) -> list[Metric]:
        result = kvp_pool.read_pools(self.root, self.specs, self.lock_timeout, self.max_value_length)
        if not result.available:
            self._state.update("unavailable", logging.INFO, "KVP pools unavailable", reason=result.reason)
        else:
            self._state.update("ok", logging.DEBUG, "KVP pools readable")
        return metrics.kvp(result)


# --- both ----------------------------------------------------------------------------------------
class NtpProbe(Probe):
    name = "ntp"

    def __init__(self, monitor: NtpMonitor, wait_bound: float, block: bool) -> None:
        self.monitor, self.wait_bound, self.block = monitor, wait_bound, block

    def collect(self) -> list[Metric]:
        return metrics.ntp(self.monitor.collect(self.wait_bound, block=self.block))


# --- Windows -------------------------------------------------------------------------------------
class WindowsComponentsProbe(Probe):
    name = "components"

    def __init__(self, api: windows.WindowsApi) -> None:
        self.api = api

    def collect(self) -> list[Metric]:
        return [
            *metrics.detection(windows.detect(self.api)),
            *metrics.windows_services(windows.service_states(self.api)),
        ]


class WindowsKvpProbe(Probe):
    name = "kvp"

    def __init__(self, api: windows.WindowsApi, specs: Collection[KeySpec], max_value_length: int) -> None:
        self.api, self.specs, self.max_value_length = api, specs, max_value_length

    def collect(self) -> list[Metric]:
        return metrics.kvp(windows.registry_kvp(self.api, self.specs, self.max_value_length))


class TimeProviderProbe(Probe):
    name = "time_provider"

    def __init__(self, api: windows.WindowsApi) -> None:
        self.api = api

    def collect(self) -> list[Metric]:
        return metrics.time_provider(windows.time_provider(self.api))


# --- the runner ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Outcome:
    families: list[Metric] | None
    seconds: float
    error: Exception | None


class GuestCollector(Collector):
    """Runs the probes for one collection (called by ``generate_latest`` on a private registry)."""

    def __init__(self, probes: Sequence[Probe], timeout: float) -> None:
        self.probes = list(probes)
        self.timeout = timeout
        self._executor = ThreadPoolExecutor(max_workers=max(1, len(self.probes)), thread_name_prefix="probe")
        self._running: dict[str, Future[_Outcome]] = {}
        self._lock = threading.Lock()
        self._failures: dict[str, StateLog] = {p.name: StateLog(log) for p in self.probes}

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    @staticmethod
    def _timed(probe: Probe) -> _Outcome:
        start = time.perf_counter()
        try:
            families = probe.collect()
        except Exception as exc:  # any failure of one source is that collector's failure only
            return _Outcome(None, time.perf_counter() - start, exc)
        return _Outcome(families, time.perf_counter() - start, None)

    def collect(self) -> Iterable[Metric]:
        start = time.perf_counter()
        started: dict[str, Future[_Outcome]] = {}
        joined: set[str] = set()
        with self._lock:
            for probe in self.probes:
                previous = self._running.get(probe.name)
                if previous is not None and not previous.done():
                    started[probe.name] = previous
                    joined.add(probe.name)
                    continue
                future = self._executor.submit(self._timed, probe)
                self._running[probe.name] = future
                started[probe.name] = future
        wait_futures(list(started.values()), timeout=self.timeout)
        families: list[Metric] = [metrics.build_info(__version__)]
        meta: list[tuple[str, bool, float]] = []
        for probe in self.probes:
            name = probe.name
            pending = started.get(name)
            failure = self._failures[name]
            if pending is None or not pending.done():
                why = f"did not finish within {self.timeout:g}s" + (" (joined a run in flight)" * (name in joined))
                failure.update("timeout", logging.WARNING, "collector did not finish", collector=name, reason=why)
                meta.append((name, False, time.perf_counter() - start))
                continue
            outcome = pending.result()
            if outcome.families is None:
                err = str(outcome.error) or type(outcome.error).__name__
                failure.update(f"error:{err}", logging.ERROR, "collector failed", collector=name, err=err)
                meta.append((name, False, outcome.seconds))
                continue
            failure.update("ok", logging.DEBUG, "collector succeeded", collector=name)
            families.extend(outcome.families)
            meta.append((name, True, outcome.seconds))
        families.extend(metrics.collector_meta(meta))
        return metrics.merge(families)
