"""One probe of one Hyper-V host: deadline, single flight, cache, background refresh, history.

Rules this module enforces, because Prometheus and Hyper-V hosts both punish the alternatives:

- **Bounded.** A probe answers by its deadline (module timeout, or Prometheus' scrape timeout
  minus an offset, whichever is smaller) even if the host hangs: the WinRM work runs in a worker
  thread and the requester waits at most until the deadline.
- **One conversation per host.** Concurrent probes of the same module and target (an HA pair of
  Prometheus servers) share the in-flight run; a result younger than ``cache_ttl`` is reused.
- **Independent.** Each host has its own session and lock; a slow host never delays another.
- **Background refresh** (``refresh_interval`` > 0): the host is probed on a timer and /probe
  answers immediately with the last *good* data, ``hyperv_last_success_timestamp_seconds`` saying
  how old it is, while ``hyperv_up`` and the error reason reflect the latest attempt.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

from hyperv_exporter import logutil
from hyperv_exporter.host import cimxml, report, script
from hyperv_exporter.host.collectors import COLLECTORS, sections_for
from hyperv_exporter.host.collectors.base import ClockExchange
from hyperv_exporter.host.config import Module
from hyperv_exporter.host.model import HostReport
from hyperv_exporter.host.selfmetrics import ExporterMetrics
from hyperv_exporter.host.transport.errors import ProbeError
from hyperv_exporter.host.transport.psrp import PSRPSession
from hyperv_exporter.host.transport.winrs import WinRMSession, clixml_errors

log = logging.getLogger(__name__)

HISTORY_LENGTH = 100


@dataclass
class ProbeResult:
    module: str
    target: str
    collectors: tuple[str, ...]
    started: float  # wall clock
    duration: float = 0.0
    report: HostReport | None = None
    clock: ClockExchange | None = None
    reason: str | None = None  # None when the probe succeeded
    message: str | None = None
    requests: int = 0
    output_bytes: int = 0
    shared: bool = False  # answered from the cache or another requester's run
    log: list[str] = field(default_factory=list)
    # Background refresh only: when ``report`` was collected, if by an earlier attempt than this one
    # (the latest attempt failed; its reason is served with the last good data).
    data_time: float | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None and self.report is not None

    @property
    def collected_at(self) -> float | None:
        """When the data in ``report`` was collected: this attempt's end, or an earlier good one's."""
        if self.data_time is not None:
            return self.data_time
        return self.started + self.duration if self.ok else None

    def note(self, message: str) -> None:
        self.log.append(f"{time.strftime('%H:%M:%S')} {logutil.redact(message)}")


@dataclass(slots=True)
class ProbeSummary:
    """A past probe as the landing page shows it. Not the report itself: a hundred reports of a
    1,000-VM host would keep a quarter of a gigabyte alive for a table of counts."""

    module: str
    target: str
    started: float
    duration: float
    reason: str | None
    message: str | None
    requests: int
    shared: bool
    vms: int | None  # None when there was no report
    script_warning: str | None = None  # the host ran another collect.ps1 than ours (an outdated JEA endpoint)

    @property
    def ok(self) -> bool:
        return self.reason is None and self.vms is not None

    @classmethod
    def of(cls, result: ProbeResult) -> ProbeSummary:
        return cls(
            module=result.module,
            target=result.target,
            started=result.started,
            duration=result.duration,
            reason=result.reason,
            message=result.message,
            requests=result.requests,
            shared=result.shared,
            vms=None if result.report is None else len(result.report.vms),
            script_warning=_script_warning(result.report),
        )


def _script_warning(report: HostReport | None) -> str | None:
    if report is None or not report.script_outdated:
        return None
    return script.outdated_message(report.script_version, report.script_hash)


@dataclass
class _Entry:
    """Per (module, target) state."""

    target: str = ""  # as first requested: the label on /metrics, however later requests spell it
    session: WinRMSession | PSRPSession | None = None
    inflight: Future[ProbeResult] | None = None
    last: ProbeResult | None = None
    last_good: ProbeResult | None = None
    refresher: threading.Thread | None = None
    seen_problems: set[str] = field(default_factory=set)
    warned_script: str | None = None  # the outdated script hash already warned about (once per host)


class DaemonExecutor:
    """A thread pool whose threads never delay the end of the process.

    ``ThreadPoolExecutor`` joins its workers when the interpreter exits, so one worker stuck where
    no deadline reaches (a hung name lookup, a library call) kept a SIGTERMed exporter alive for
    as long as it stayed stuck. These workers are daemon threads that nothing joins; a conversation
    cut short by the exit holds nothing that needs flushing.
    """

    def __init__(self, max_workers: int, thread_name_prefix: str) -> None:
        self._max_workers = max_workers
        self._prefix = thread_name_prefix
        self._queue: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]] | None] = (
            queue.SimpleQueue()
        )
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0
        self._shutdown = False

    def submit(self, fn: Callable[..., ProbeResult], *args: Any) -> Future[ProbeResult]:
        future: Future[ProbeResult] = Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new work after shutdown")
            self._queue.put((future, fn, args))
            if self._idle > 0:
                self._idle -= 1  # an idle worker takes it
            elif self._threads < self._max_workers:
                self._threads += 1
                threading.Thread(target=self._work, name=f"{self._prefix}_{self._threads}", daemon=True).start()
        return future

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            future, fn, args = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as exc:
                    future.set_exception(exc)
            del item, future, fn, args
            with self._lock:
                if self._shutdown:
                    return
                self._idle += 1

    def shutdown(self) -> None:
        """Cancel queued work and let idle workers end; running work is not waited for."""
        with self._lock:
            self._shutdown = True
            workers = self._threads
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[0].cancel()
        for _ in range(workers):
            self._queue.put(None)


class Prober:
    def __init__(self, metrics: ExporterMetrics, allowed_collectors: tuple[str, ...], max_workers: int = 256) -> None:
        self.metrics = metrics
        self.allowed_collectors = allowed_collectors
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._lock = threading.Lock()
        self._executor = DaemonExecutor(max_workers=max_workers, thread_name_prefix="probe")
        self.history: deque[ProbeSummary] = deque(maxlen=HISTORY_LENGTH)
        self._stopped = threading.Event()

    def collectors_for(self, module: Module) -> tuple[str, ...]:
        wanted = module.collectors if module.collectors is not None else self.allowed_collectors
        return tuple(c for c in COLLECTORS if c in wanted and c in self.allowed_collectors)

    # -- public ----------------------------------------------------------------------------------
    def probe(self, module: Module, target: str, timeout: float) -> ProbeResult:
        """Probe ``target`` with ``module``; never takes (much) longer than ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        key = self._key(module, target)
        with self._lock:
            entry = self._entries.setdefault(key, _Entry(target=target))
            if module.refresh_interval > 0:
                self._ensure_refresher(key, entry, module, target)
                if entry.last is not None:
                    return self._shared(self._refreshed_view(entry), module)
            last = entry.last
            if last is not None and time.time() - (last.started + last.duration) < module.cache_ttl:
                return self._shared(last, module)
            # The conversation's own deadline comes a little earlier, so that it normally ends (and
            # records its error) before this requester gives up waiting for it.
            future, shared = self._submit(module, target, entry, deadline - min(0.25, timeout * 0.1))
        try:
            result = future.result(timeout=max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            # Only a conversation stuck where no deadline reaches (a hanging DNS lookup) gets here;
            # it counts and logs its own error when it ends.
            result = ProbeResult(module.name, target, self.collectors_for(module), time.time() - timeout)
            result.duration = timeout
            result.reason, result.message = "timeout", f"no answer from the host within {timeout:.1f}s"
            result.note(result.message)
            self._record(module, target, result, counted=False)
            return result
        return self._shared(result, module) if shared else result

    @staticmethod
    def _key(module: Module, target: str) -> tuple[str, str]:
        """One entry (session, lock, cache) per module and host, however the target is spelled:
        ``HV01``, ``hv01.`` and ``hv01:5986`` (the module's port) are the same conversation."""
        try:
            return module.name, module.target_key(target)
        except ValueError:
            return module.name, target.lower()

    @staticmethod
    def _refreshed_view(entry: _Entry) -> ProbeResult:
        """The latest attempt; if it failed, with the last good data (and its time) attached."""
        last, good = entry.last, entry.last_good
        assert last is not None
        if last.ok or good is None or good.report is None:
            return last
        return replace(
            last,
            report=good.report,
            clock=good.clock,
            collectors=good.collectors,
            data_time=good.started + good.duration,
        )

    def _submit(self, module: Module, target: str, entry: _Entry, deadline: float) -> tuple[Future[ProbeResult], bool]:
        """Join the run in flight for this host, or start one. Caller holds ``self._lock``."""
        if entry.inflight is not None and not entry.inflight.done():
            return entry.inflight, True
        entry.inflight = self._executor.submit(self._run, module, target, entry, deadline)
        return entry.inflight, False

    def stop(self) -> None:
        self._stopped.set()
        self._executor.shutdown()
        with self._lock:
            sessions = [e.session for e in self._entries.values() if e.session is not None]
        # In parallel and bounded: a session whose run is stuck must not hold up the others or the exit.
        closers = [threading.Thread(target=s.close, daemon=True) for s in sessions]
        for closer in closers:
            closer.start()
        for closer in closers:
            closer.join(timeout=1.5)

    def latest_good(self, module: str) -> list[ProbeResult]:
        """The latest successful result of every target probed with ``module`` (read-only; for /sd)."""
        with self._lock:
            return [e.last_good for (name, _), e in self._entries.items() if name == module and e.last_good is not None]

    def in_flight(self) -> int:
        """How many WinRM conversations are running right now (none may outlive its deadline)."""
        with self._lock:
            return sum(1 for e in self._entries.values() if e.inflight is not None and not e.inflight.done())

    def forget_module(self, name: str) -> None:
        """Drop sessions of a module that a reload removed or changed (its credentials may differ)."""
        with self._lock:
            keys = [k for k in self._entries if k[0] == name]
            entries = [self._entries.pop(k) for k in keys]
        for entry in entries:
            if entry.session is not None:
                entry.session.close()

    # -- internals -------------------------------------------------------------------------------
    def _shared(self, result: ProbeResult, module: Module) -> ProbeResult:
        self.metrics.shared_results.labels(module.name).inc()
        return ProbeResult(**{**vars(result), "shared": True})

    def _ensure_refresher(self, key: tuple[str, str], entry: _Entry, module: Module, target: str) -> None:
        """Start the background refresh loop for this host (caller holds ``self._lock``)."""
        if entry.refresher is not None and entry.refresher.is_alive():
            return

        def loop() -> None:
            while not self._stopped.is_set() and self._entries.get(key) is entry:
                started = time.monotonic()
                with self._lock:
                    future, _ = self._submit(module, target, entry, started + module.timeout)
                try:
                    future.result(timeout=module.timeout + 5.0)
                except Exception:  # a timeout here is already recorded by _run's own deadline
                    log.debug("background refresh did not finish", extra=logutil.fields(module=key[0], target=target))
                self._stopped.wait(max(0.0, module.refresh_interval - (time.monotonic() - started)))

        entry.refresher = threading.Thread(target=loop, name=f"refresh-{key[0]}-{key[1]}", daemon=True)
        entry.refresher.start()

    def _run(self, module: Module, target: str, entry: _Entry, deadline: float) -> ProbeResult:
        collectors = self.collectors_for(module)
        result = ProbeResult(module.name, target, collectors, time.time())
        start = time.monotonic()
        if entry.session is None:
            # The transport is chosen per module: psrp (a kept runspace pool) or winrs (a kept cmd shell).
            kind = PSRPSession if module.winrm.protocol == "psrp" else WinRMSession
            entry.session = kind(module.endpoint_url(target), module.winrm, script.script_text())
        session = entry.session
        shells_before = session.shells_opened
        requests_before = session.requests_total
        try:
            with session.lock:
                result.note(f"probing {session.url} with collectors {','.join(collectors)}")
                kvp_keys = report.kvp_keys_read(module.kvp.keys)  # filtered on the host (collect.ps1 -KvpKeys)
                exchange = session.collect(sections_for(collectors), module.winrm.gzip, deadline, kvp_keys)
            result.requests = exchange.requests
            result.output_bytes = len(exchange.stdout)
            result.note(
                f"exit code {exchange.exit_code}, {len(exchange.stdout)} bytes of output, "
                f"{exchange.requests} HTTP requests{' (new shell)' if exchange.new_shell else ''}"
            )
            if exchange.failure is not None:
                raise ProbeError("powershell", exchange.failure)
            if exchange.exit_code != 0:
                detail = clixml_errors(exchange.stderr) or "no error text"
                raise ProbeError("powershell", f"PowerShell exited with code {exchange.exit_code}: {detail}")
            kvp_filter = cimxml.allowlist(module.kvp.keys, module.kvp.max_value_length)
            # The document's bytes are passed without a name here, so that parse_report holds the only
            # reference and can free them once decoded (peak memory of a large host).
            result.report = report.parse_report(
                report.decode_bytes(exchange.stdout, module.winrm.max_output_bytes),
                kvp_filter,
                frozenset(module.kvp.sources),
            )
            result.clock = ClockExchange(exchange.sent, exchange.received, exchange.return_leg)
            result.note(f"{len(result.report.vms)} VMs, {len(result.report.problems)} problems")
            for name, section in result.report.sections.items():
                if section.error:  # e.g. a permission the account lacks for this section's query
                    result.note(f"section {name} failed on the host: {section.error}")
        except ProbeError as exc:
            result.reason, result.message = exc.reason, logutil.redact(str(exc))
        except report.ReportError as exc:
            result.reason, result.message = exc.reason, str(exc)
        except Exception as exc:  # a bug must cost one probe, not the process
            log.exception("probe failed unexpectedly", extra=logutil.fields(module=module.name, target=target))
            result.reason, result.message = "winrm_fault", f"internal error: {type(exc).__name__}"
        # Every request sent counts, also when the conversation failed (a 401, a fault, a timeout).
        result.requests = session.requests_total - requests_before
        result.duration = time.monotonic() - start
        if result.reason:
            result.note(f"failed ({result.reason}): {result.message}")
        self.metrics.shells_opened.labels(module.name).inc(session.shells_opened - shells_before)
        self._record(module, target, result, counted=True)
        with self._lock:
            entry.last = result
            if result.ok:
                entry.last_good = result
        return result

    def _record(self, module: Module, target: str, result: ProbeResult, counted: bool) -> None:
        """Metrics, log and history for one answered probe; ``counted``: a WinRM conversation ended."""
        m = self.metrics
        m.probes.labels(module.name, "true" if result.ok else "false").inc()
        if counted:
            m.collection_duration.labels(module.name).observe(result.duration)
            m.winrm_requests.labels(module.name).inc(result.requests)
        fields = {"module": module.name, "target": target, "duration_seconds": round(result.duration, 3)}
        if result.reason and not counted:
            log.debug("probe answered without a result: %s", result.message, extra=logutil.fields(**fields))
        elif result.reason:
            # The label is the target as first requested: spelling variants (case, a trailing dot)
            # of one allowed host must not create new series on every request.
            entry = self._entries.get(self._key(module, target))
            label = entry.target if entry is not None and entry.target else target
            m.probe_errors.labels(module.name, label, result.reason).inc()
            log.warning("probe failed: %s", result.message, extra=logutil.fields(**fields, reason=result.reason))
        else:
            log.debug("probe succeeded", extra=logutil.fields(**fields))
        if result.report is not None and result.report.problems:
            m.parse_problems.labels(module.name).inc(len(result.report.problems))
            self._log_problems(module, target, result.report.problems)
        if result.report is not None and counted:
            self._warn_script(module, target, result.report)
        self.history.appendleft(ProbeSummary.of(result))

    def _warn_script(self, module: Module, target: str, report: HostReport) -> None:
        # Once per host and outdated copy, not on every probe: the metric says it continuously.
        entry = self._entries.get(self._key(module, target))
        if entry is None:
            return
        if not report.script_outdated:
            entry.warned_script = None
        elif entry.warned_script != (report.script_hash or ""):
            entry.warned_script = report.script_hash or ""
            log.warning("%s", _script_warning(report), extra=logutil.fields(module=module.name, target=target))

    def _log_problems(self, module: Module, target: str, problems: list[str]) -> None:
        # Each distinct problem is logged once per host at warning level, then only at debug, so a
        # guest that keeps writing malformed KVP cannot flood the log.
        entry = self._entries.get(self._key(module, target))
        seen = entry.seen_problems if entry is not None else set()
        for problem in problems:
            if problem in seen or len(seen) > 1000:
                log.debug("host report problem: %s", problem, extra=logutil.fields(module=module.name, target=target))
            else:
                seen.add(problem)
                log.warning("host report problem: %s", problem, extra=logutil.fields(module=module.name, target=target))
