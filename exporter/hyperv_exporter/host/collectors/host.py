"""Host facts and the host clock.

hyperv_host_info{host_name="HV01",os_caption="Microsoft Windows Server 2022 Datacenter",
                 os_version="10.0.20348",ui_culture="de-DE"} 1
hyperv_host_time_offset_seconds 0.0021
hyperv_host_time_offset_uncertainty_seconds 0.0009
"""

from __future__ import annotations

from hyperv_exporter.host.collectors.base import Collector, CollectorContext, Family, single


def host_clock_offset(
    sent: float,
    script_start: float,
    script_end: float,
    received: float,
    return_leg: float | None = None,
    outbound_leg: float | None = None,
) -> tuple[float, float]:
    """(offset, uncertainty) of the host clock relative to ours: the middle and half the width of
    the interval the offset must lie in.

    We took our clock when the request that started the script left (t1) and when its first output
    arrived (t4); the script read the host clock at its first line (T2) and just before printing
    (T3). The host read T2 after we sent and T3 before we received, so, as in NTP, the offset lies
    in [T3 - t4, T2 - t1]. Its middle is NTP's offset, exact when both legs are equal; but a WinRS
    command starts a new powershell.exe first, which lengthens the outbound leg by the start-up
    (about a second) and biases the middle by half of it. The transport narrows the interval where
    the exchange shows more:

    - ``return_leg`` bounds the time from T3 to t4 (the host held our Receive until the output
      appeared): the offset is at most T3 - t4 + return_leg. It rests on the return leg only, and
      no start-up before T2 matters (winrs, and psrp's long runs).
    - ``outbound_leg`` bounds the time from t1 to T2 (psrp: the pipeline runs in the runspace
      pool's process, already running, as soon as the request arrives): the offset is at least
      T2 - t1 - outbound_leg, whatever the output then waited for.
    """
    earliest = low = script_end - received
    latest = high = script_start - sent
    if return_leg is not None:
        high = min(high, earliest + return_leg)
    if outbound_leg is not None:
        low = max(low, latest - outbound_leg)
    if low > high:  # the legs' bounds disagree (a host slower than they assume): report both ends
        low, high = high, low
    return (low + high) / 2.0, (high - low) / 2.0


class HostCollector(Collector):
    name = "host"
    help = "Host facts (name, Windows version, UI language) and the host clock offset"
    sections = ("host",)
    report_section = "host"
    needs_vms = False

    def collect(self, ctx: CollectorContext) -> list[Family]:
        host = ctx.report.host
        info = Family(
            "hyperv_host",
            "Facts about the Hyper-V host (Win32_OperatingSystem Caption and Version, Get-UICulture).",
            ("host_name", "os_caption", "os_version", "ui_culture"),
            kind="info",
        )
        info.add((host.computer_name or "", host.os_caption or "", host.os_version or "", host.ui_culture or ""), 1.0)
        families = [info]
        report, clock = ctx.report, ctx.clock
        if clock is not None and report.clock_start is not None and report.clock_end is not None:
            offset, uncertainty = host_clock_offset(
                clock.sent, report.clock_start, report.clock_end, clock.received, clock.return_leg, clock.outbound_leg
            )
            families.append(
                single(
                    "hyperv_host_time_offset_seconds",
                    "Host clock minus the exporter's clock, the middle of the interval the WinRM exchange "
                    "bounds it to (positive: the host is ahead).",
                    offset,
                )
            )
            families.append(
                single(
                    "hyperv_host_time_offset_uncertainty_seconds",
                    "Half the width of that interval: at most half the exchange's round trip excluding the "
                    "script's run time, or the return leg alone when the host held the answer until its "
                    "output; the offset is exact to within this.",
                    uncertainty,
                )
            )
        return families
