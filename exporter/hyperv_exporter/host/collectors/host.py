"""Host facts and the host clock.

hyperv_host_info{cluster="HV-CLUSTER-01",host_name="HV01",os_caption="Microsoft Windows Server 2022 Datacenter",
                 os_version="10.0.20348",ui_culture="de-DE"} 1      (cluster="" when not clustered)
hyperv_host_time_offset_seconds 0.0021
hyperv_host_time_offset_uncertainty_seconds 0.0009
"""

from __future__ import annotations

from hyperv_exporter.host.collectors.base import Collector, CollectorContext, Family, single

#: What the host does between its last clock reading and its first output byte (the compressor's
#: last block, the base64 text; milliseconds for a 1,000-VM host), added to the uncertainty of an
#: offset that rests on the return leg: the exchange cannot show it.
HOST_TAIL_SECONDS = 0.005


def host_clock_offset(
    sent: float, script_start: float, script_end: float, received: float, return_leg: float | None = None
) -> tuple[float, float]:
    """(offset, uncertainty) of the host clock relative to ours.

    We took our clock when the request that started the script left (t1) and when its first output
    arrived (t4); the script read the host clock at its first line (T2) and just before printing
    (T3). The host read T2 after we sent and T3 before we received, so, as in NTP, the offset lies
    in [T3 - t4, T2 - t1], and without more knowledge we report its middle and half its width.
    Over PSRP both readings are taken in the runspace pool's process, which was already running:
    the legs are alike and the middle is unbiased. A WinRS command starts a new powershell.exe
    first, which lengthens the outbound leg by the start-up (about a second) and biases the middle
    by half of it. There the transport gives ``return_leg`` when the host held our Receive until
    the output appeared: the time from T3 to t4 is then at most that leg (plus the host's own tail
    of work, HOST_TAIL_SECONDS), so the offset rests on the return leg only, [T3 - t4, T3 - t4 +
    return_leg], and no start-up before T2 matters. PSRP gets the same when its pipeline runs longer
    than a round trip.
    """
    low = script_end - received
    high = script_start - sent
    slack = 0.0
    if return_leg is not None and low + return_leg < high:
        high, slack = low + return_leg, HOST_TAIL_SECONDS
    high = max(high, low)  # clocks read a tick apart can cross by a tick; never a negative width
    return (low + high) / 2.0, (high - low) / 2.0 + slack


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
            "Facts about the Hyper-V host (Win32_OperatingSystem Caption and Version: the build, Get-UICulture, "
            "failover cluster name from MSCluster_Cluster, empty when not clustered).",
            ("cluster", "host_name", "os_caption", "os_version", "ui_culture"),
            kind="info",
        )
        info.add(
            (
                host.cluster or "",
                host.computer_name or "",
                host.os_caption or "",
                host.os_version or "",
                host.ui_culture or "",
            ),
            1.0,
        )
        families = [info]
        report, clock = ctx.report, ctx.clock
        if clock is not None and report.clock_start is not None and report.clock_end is not None:
            offset, uncertainty = host_clock_offset(
                clock.sent, report.clock_start, report.clock_end, clock.received, clock.return_leg
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
                    "script's run time or, when the host held the answer until its output, half the return "
                    "leg plus 5 ms for the host's work after its reading; the offset is exact to within this.",
                    uncertainty,
                )
            )
        return families
