"""Host facts and the host clock.

hyperv_host_info{cluster="HV-CLUSTER-01",host_name="HV01",os_caption="Microsoft Windows Server 2022 Datacenter",
                 os_version="10.0.20348",ui_culture="de-DE"} 1      (cluster="" when not clustered)
hyperv_host_time_offset_seconds 0.0021
hyperv_host_time_offset_uncertainty_seconds 0.0009
"""

from __future__ import annotations

from hyperv_exporter.host.collectors.base import Collector, CollectorContext, Family, single


def host_clock_offset(sent: float, script_start: float, script_end: float, received: float) -> tuple[float, float]:
    """(offset, uncertainty) of the host clock relative to ours, NTP style.

    The script read the host clock at its start (T2) and just before printing (T3); we took our
    clock before sending the command (t1) and after the output arrived (t4). As in NTP,
    offset = ((T2 - t1) + (T3 - t4)) / 2 and the true offset lies within +/- delay/2 of it, where
    delay = (t4 - t1) - (T3 - T2) excludes the time the script itself ran.
    """
    offset = ((script_start - sent) + (script_end - received)) / 2.0
    delay = (received - sent) - (script_end - script_start)
    return offset, max(delay, 0.0) / 2.0


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
            offset, uncertainty = host_clock_offset(clock.sent, report.clock_start, report.clock_end, clock.received)
            families.append(
                single(
                    "hyperv_host_time_offset_seconds",
                    "Host clock minus the exporter's clock, from the midpoint of the WinRM exchange "
                    "(positive: the host is ahead).",
                    offset,
                )
            )
            families.append(
                single(
                    "hyperv_host_time_offset_uncertainty_seconds",
                    "Half the round trip of the exchange the host clock offset was measured in, excluding "
                    "the script's run time: the offset is exact to within this.",
                    uncertainty,
                )
            )
        return families
