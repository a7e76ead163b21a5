"""Probe results -> Prometheus metric families (pure functions, fresh families per call).

All names carry the ``hyperv_guest_`` prefix and base units. Sign convention everywhere:
**offset = guest clock minus reference; positive means the guest is ahead.**

``hyperv_guest_clock_offset_seconds`` and ``..._uncertainty_seconds`` are produced by two probes
(host clock and NTP); :func:`merge` joins same-named families so each name is exposed once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric

from hyperv_exporter.guest.components import MODULES, Detection
from hyperv_exporter.guest.kvp_pool import HostInfo, KvpResult
from hyperv_exporter.guest.ntp import ServerSnapshot
from hyperv_exporter.guest.ptp import HostClockReading
from hyperv_exporter.guest.timex import TimexState
from hyperv_exporter.guest.windows import STATE_LABELS, TimeProvider, WindowsDetection

P: Final = "hyperv_guest"
OFFSET: Final = f"{P}_clock_offset_seconds"
UNCERTAINTY: Final = f"{P}_clock_offset_uncertainty_seconds"
REFERENCE_LABELS: Final = ("reference", "server")


def _gauge(name: str, doc: str, labels: Sequence[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


def _flag(value: bool) -> float:
    return 1.0 if value else 0.0


def offset_families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
    offset = _gauge(
        OFFSET,
        "Guest clock minus reference clock in seconds (positive: the guest is ahead). reference=host: the Hyper-V "
        "host via the hv_utils PTP clock; reference=ntp: an NTP server (cached between measurements).",
        REFERENCE_LABELS,
    )
    uncertainty = _gauge(
        UNCERTAINTY,
        "Bound on the error of hyperv_guest_clock_offset_seconds against that reference in seconds "
        "(half the measurement window: PTP_SYS_OFFSET bracket or NTP round trip).",
        REFERENCE_LABELS,
    )
    return offset, uncertainty


# --- host clock (PTP) ----------------------------------------------------------------------------
def host_clock(reading: HostClockReading) -> list[Metric]:
    available = _gauge(
        f"{P}_host_clock_available",
        "1 if a readable Hyper-V PTP clock (/dev/ptp_hyperv or clock_name 'hyperv') exists; the reason is logged.",
    )
    available.add_metric([], _flag(reading.available))
    families: list[Metric] = [available]
    if reading.available:
        stale = _gauge(
            f"{P}_host_clock_stale",
            "1 if the Hyper-V PTP clock fails with ESTALE: the host has sent no time sample for 10 minutes "
            "(Time Synchronization integration service off or broken).",
        )
        stale.add_metric([], _flag(reading.stale))
        families.append(stale)
    if reading.measurement is not None:
        offset, uncertainty = offset_families()
        offset.add_metric(["host", ""], reading.measurement.offset_seconds)
        uncertainty.add_metric(["host", ""], reading.measurement.uncertainty_seconds)
        families += [offset, uncertainty]
    return families


# --- NTP -----------------------------------------------------------------------------------------
def ntp(snapshots: Iterable[ServerSnapshot]) -> list[Metric]:
    up = _gauge(f"{P}_ntp_up", "1 if the last measurement of the NTP server produced a valid answer.", ["server"])
    error = InfoMetricFamily(
        f"{P}_ntp_error",
        "Why the last measurement of the NTP server failed (present only while hyperv_guest_ntp_up is 0).",
        labels=["server"],
    )
    offset, uncertainty = offset_families()
    delay = _gauge(f"{P}_ntp_delay_seconds", "Round-trip delay of the minimum-delay NTP exchange.", ["server"])
    stratum = _gauge(f"{P}_ntp_stratum", "Stratum the NTP server reported.", ["server"])
    distance = _gauge(
        f"{P}_ntp_root_distance_seconds",
        "Error bound to the server's reference clock: (delay + root delay)/2 + root dispersion.",
        ["server"],
    )
    last = _gauge(
        f"{P}_ntp_last_measurement_timestamp_seconds",
        "Unix time the last measurement of the NTP server finished; results are cached until the next one.",
        ["server"],
    )
    interval = _gauge(
        f"{P}_ntp_poll_interval_seconds",
        "Current minimum interval between measurements of the NTP server (grows after a RATE kiss-o'-death).",
        ["server"],
    )
    for snap in snapshots:
        label = snap.server.label
        interval.add_metric([label], snap.interval_seconds)
        m = snap.last
        if m is None:
            continue  # never measured yet (still in flight): no data rather than a false 0
        up.add_metric([label], _flag(m.ok))
        last.add_metric([label], m.finished_unix)
        if m.sample is None:
            error.add_metric([label], {"reason": m.reason or "timeout"})
            continue
        offset.add_metric(["ntp", label], m.sample.offset_seconds)
        uncertainty.add_metric(["ntp", label], m.sample.uncertainty_seconds)
        delay.add_metric([label], m.sample.delay_seconds)
        stratum.add_metric([label], m.sample.stratum)
        distance.add_metric([label], m.sample.root_distance_seconds)
    return [up, error, offset, uncertainty, delay, stratum, distance, last, interval]


# --- timex ---------------------------------------------------------------------------------------
def timex_unavailable() -> list[Metric]:
    available = _gauge(f"{P}_timex_available", "1 if adjtimex(2) could be read (EPERM under seccomp).")
    available.add_metric([], 0.0)
    return [available]


def timex(state: TimexState) -> list[Metric]:
    rows: list[tuple[str, str, float]] = [
        ("timex_available", "1 if adjtimex(2) could be read (EPERM under seccomp).", 1.0),
        ("timex_sync_status", "1 if the kernel considers its clock synchronised (adjtimex state != TIME_ERROR).",
         _flag(state.sync_status)),
        ("timex_offset_seconds",
         "Kernel PLL phase offset still to be corrected, guest minus reference (positive: the guest is ahead); "
         "the negation of node_timex_offset_seconds.", state.offset_seconds),
        ("timex_frequency_adjustment_ratio", "Kernel clock frequency adjustment (1 + freq/2^16 ppm).",
         state.frequency_adjustment_ratio),
        ("timex_maxerror_seconds", "Kernel maximum error bound.", state.maxerror_seconds),
        ("timex_estimated_error_seconds", "Kernel estimated error.", state.estimated_error_seconds),
        ("timex_status", "Kernel clock status bits (STA_*) as an integer.", float(state.status)),
        ("timex_tai_offset_seconds", "TAI minus UTC as known to the kernel.", float(state.tai_offset_seconds)),
        ("timex_loop_time_constant", "Kernel PLL time constant.", float(state.loop_time_constant)),
        ("timex_tick_seconds", "Length of a clock tick.", state.tick_seconds),
    ]  # fmt: skip
    families: list[Metric] = []
    for name, doc, value in rows:
        family = _gauge(f"{P}_{name}", doc)
        family.add_metric([], value)
        families.append(family)
    return families


# --- integration components ----------------------------------------------------------------------
def detection(result: Detection | WindowsDetection) -> list[Metric]:
    detected = _gauge(f"{P}_hyperv_detected", "1 if this machine is a Hyper-V guest (see the signal metric).")
    detected.add_metric([], _flag(result.hyperv))
    signal = _gauge(f"{P}_hyperv_detection_signal", "Each Hyper-V detection signal (1 = present).", ["signal"])
    for name, value in result.signals().items():
        signal.add_metric([name], _flag(value))
    return [detected, signal]


def modules(loaded: Mapping[str, bool]) -> list[Metric]:
    family = _gauge(
        f"{P}_module_loaded", "1 if the Hyper-V kernel module is loaded or built into the kernel.", ["module"]
    )
    for name in MODULES:
        family.add_metric([name], _flag(loaded.get(name, False)))
    return [family]


def daemons(running: Mapping[str, bool]) -> list[Metric]:
    family = _gauge(
        f"{P}_daemon_running",
        "1 if the guest-side component of the integration service runs (Linux: hv_kvp/hv_vss/hv_fcopy daemons; "
        "Windows: the vmic* service is RUNNING).",
        ["service"],
    )
    for service, value in running.items():
        family.add_metric([service], _flag(value))
    return [family]


def windows_services(states: Mapping[str, str]) -> list[Metric]:
    family = _gauge(
        f"{P}_windows_service_state",
        "State of the Hyper-V integration service's Windows service (vmic*); absent = not installed.",
        ["service", "state"],
    )
    for service, current in states.items():
        for state in STATE_LABELS:
            family.add_metric([service, state], _flag(state == current))
    return [*daemons({s: v == "running" for s, v in states.items()}), family]


def time_provider(provider: TimeProvider) -> list[Metric]:
    enabled = _gauge(
        f"{P}_vmic_time_provider_enabled",
        "1 if W32Time's VMICTimeProvider (time from the Hyper-V host) is enabled in the registry (0 if absent).",
    )
    enabled.add_metric([], _flag(bool(provider.vmic_enabled)))
    w32time = InfoMetricFamily(f"{P}_w32time", "W32Time synchronisation type (Parameters\\Type).")
    w32time.add_metric([], {"sync_type": provider.sync_type})
    return [enabled, w32time]


# --- KVP -----------------------------------------------------------------------------------------
def host_info(host: HostInfo | None) -> list[Metric]:
    family = InfoMetricFamily(
        f"{P}_host",
        "The Hyper-V host and VM identity from KVP pool 3 (vm_id: lower-case GUID, joins the host exporter's vm_id).",
        labels=["host_name", "physical_host_name", "vm_name", "vm_id"],
    )
    if host is not None:
        family.add_metric([host.host_name, host.physical_host_name, host.vm_name, host.vm_id], {})
    return [family]


def kvp(result: KvpResult) -> list[Metric]:
    available = _gauge(f"{P}_kvp_available", "1 if KVP data exists (Linux: /var/lib/hyperv; Windows: registry).")
    available.add_metric([], _flag(result.available))
    info = InfoMetricFamily(f"{P}_kvp", "Allowlisted KVP items (--kvp.key), values cleaned and length-capped.",
                            labels=["pool", "key", "value"])  # fmt: skip
    records = _gauge(f"{P}_kvp_pool_records", "Records in the KVP pool file.", ["pool"])
    for pool in result.pools:
        if pool.records is not None:
            records.add_metric([str(pool.pool)], float(pool.records))
        for key, value in pool.items:
            info.add_metric([str(pool.pool), key, value], {})
    return [available, info, records, *host_info(result.host)]


# --- agent ---------------------------------------------------------------------------------------
def build_info(version: str) -> Metric:
    family = InfoMetricFamily(f"{P}_build", "hyperv-guest-agent build information.")
    family.add_metric([], {"version": version})
    return family


def collector_meta(results: Iterable[tuple[str, bool, float]]) -> list[Metric]:
    success = _gauge(f"{P}_collector_success", "1 if the collector succeeded in this collection.", ["collector"])
    duration = _gauge(f"{P}_collector_duration_seconds", "How long the collector took.", ["collector"])
    for name, ok, seconds in results:
        success.add_metric([name], _flag(ok))
        duration.add_metric([name], seconds)
    return [success, duration]


def merge(families: Iterable[Metric]) -> list[Metric]:
    """Join same-named families into new ones (first one's HELP and type win), dropping duplicate samples.

    New objects are built, never the inputs mutated: two concurrent scrapes may share the families of
    one probe run (see ``GuestCollector``).
    """
    merged: dict[str, Metric] = {}
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for family in families:
        target = merged.get(family.name)
        if target is None:
            target = merged[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            if key not in seen:
                seen.add(key)
                target.samples.append(sample)
    return list(merged.values())
