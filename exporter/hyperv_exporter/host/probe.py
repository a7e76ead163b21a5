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
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from hyperv_exporter import logutil
from hyperv_exporter.host import cimxml, report, script
from hyperv_exporter.host.collectors import COLLECTORS, sections_for
from hyperv_exporter.host.collectors.base import ClockExchange
from hyperv_exporter.host.config import Module
from hyperv_exporter.host.model import HostReport
from hyperv_exporter.host.selfmetrics import ExporterMetrics
from hyperv_exporter.host.transport.errors import ProbeError
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
        )


@dataclass
class _Entry:
    """Per (module, target) state."""

    target: str = ""  # as first requested: the label on /metrics, however later requests spell it
    session: WinRMSession | None = None
    inflight: Future[ProbeResult] | None = None
    last: ProbeResult | None = None
    last_good: ProbeResult | None = None
    refresher: threading.Thread | None = None
    seen_problems: set[str] = field(default_factory=set)


class Prober:
    def __init__(self, metrics: ExporterMetrics, allowed_collectors: tuple[str, ...], max_workers: int = 256) -> None:
        self.metrics = metrics
        self.allowed_collectors = allowed_collectors
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="probe")
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
        self._executor.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            sessions = [e.session for e in self._entries.values() if e.session is not None]
        for session in sessions:
            session.close()

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
            entry.session = WinRMSession(module.endpoint_url(target), module.winrm, script.script_text())
        session = entry.session
        shells_before = session.shells_opened
        requests_before = session.requests_total
        try:
            with session.lock:
                result.note(f"probing {session.url} with collectors {','.join(collectors)}")
                kvp_keys = report.kvp_keys_read(module.kvp.keys)  # filtered on the host (collect.ps1 -KvpKeys)
                command, args = script.probe_command(sections_for(collectors), module.winrm.gzip, kvp_keys)
                exchange = session.run(command, args, deadline)
            result.requests = exchange.requests
            result.output_bytes = len(exchange.stdout)
            result.note(
                f"exit code {exchange.exit_code}, {len(exchange.stdout)} bytes of output, "
                f"{exchange.requests} HTTP requests{' (new shell)' if exchange.new_shell else ''}"
            )
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
            result.clock = ClockExchange(exchange.sent, exchange.received)
            result.note(f"{len(result.report.vms)} VMs, {len(result.report.problems)} problems")
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
        self.history.appendleft(ProbeSummary.of(result))

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
