"""Windows' permission model, enforced by the simulator and met by the exporter: WinRS cmd shells for
administrators only, microsoft.powershell for Remote Management Users with WMI refused, the JEA
endpoint for its role group in no-language mode. Real pypsrp and pywinrm over HTTP on loopback."""

from __future__ import annotations

import json

from pypsrp.complex_objects import PSInvocationState
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

from conftest import ConfigurableStack, StackFactory, sample
from hyperv_exporter.host.cli import Running
from hyperv_exporter.sim.accounts import (
    HYPERV_ADMINISTRATORS,
    REMOTE_MANAGEMENT_USERS,
    HostAccounts,
    Identity,
    least_privilege,
)
from hyperv_exporter.sim.fleet import parse_fleet

TARGET = "HV-LONDON-01"
PASSWORD = "S1m-Pa55word-for-tests"

PSRP = """      protocol: psrp
      scheme: http
      transport: ntlm
      username: monitor
      password_file: {password_file}"""
JEA = PSRP + "\n      configuration_name: HyperVExporter"
WINRS = PSRP.replace("protocol: psrp", "protocol: winrs")


def make(make_stack: StackFactory, winrm: str, access: HostAccounts) -> ConfigurableStack:
    stack = make_stack(winrm=winrm)
    for host in stack.fleet.hosts:
        host.set(access=access)
    return stack


def collector_success(stack: ConfigurableStack) -> dict[str, float | None]:
    samples = stack.probe(TARGET)
    assert sample(samples, "hyperv_up") == 1.0, stack.debug(TARGET)
    names = ("host", "vm", "integration_services", "kvp", "resources", "replication", "checkpoints")
    return {name: sample(samples, "hyperv_collector_success", collector=name) for name in names}


def pool(stack: ConfigurableStack, configuration: str) -> RunspacePool:
    url = stack.sim.url(TARGET)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    wsman = WSMan("127.0.0.1", port=port, ssl=False, auth="ntlm", username="monitor", password=PASSWORD)
    return RunspacePool(wsman, configuration_name=configuration)


# -- WinRS: administrators only ---------------------------------------------------------------------


def test_winrs_with_the_least_privilege_account_is_access_denied(make_stack: StackFactory) -> None:
    stack = make(make_stack, WINRS, least_privilege("monitor"))
    assert sample(stack.probe(TARGET), "hyperv_up") == 0.0
    text = stack.debug(TARGET)
    assert "failed (access_denied)" in text and "Access is denied" in text and "protocol: psrp" in text, text
    _, metrics = stack.get("/metrics")
    assert f'hyperv_exporter_probe_errors_total{{module="default",reason="access_denied",target="{TARGET}"}}' in metrics
    endpoint = stack.sim.endpoint(TARGET)
    assert endpoint.stats["access_denied"] >= 1 and endpoint.shell_count == 0


def test_winrs_remote_management_users_are_not_enough(make_stack: StackFactory) -> None:
    access = HostAccounts({"monitor": Identity(frozenset({REMOTE_MANAGEMENT_USERS, HYPERV_ADMINISTRATORS}))})
    stack = make(make_stack, WINRS, access)
    assert "failed (access_denied)" in stack.debug(TARGET)


# -- microsoft.powershell: Remote Management Users, the user's own rights ---------------------------


def test_a_non_admin_on_the_plain_endpoint_gets_clear_section_errors(make_stack: StackFactory) -> None:
    stack = make(make_stack, PSRP, HostAccounts({"monitor": Identity(frozenset({REMOTE_MANAGEMENT_USERS}))}))
    success = collector_success(stack)
    # WMI (host, kvp) refused without Remote Enable; Get-VM refused outside Hyper-V Administrators.
    assert success["host"] == success["vm"] == success["kvp"] == 0.0, success
    text = stack.debug(TARGET)
    assert "Access denied" in text and "You do not have the required permission" in text, text


def test_hyperv_administrators_still_need_remote_enable_for_root_cimv2(make_stack: StackFactory) -> None:
    groups = frozenset({REMOTE_MANAGEMENT_USERS, HYPERV_ADMINISTRATORS})
    stack = make(make_stack, PSRP, HostAccounts({"monitor": Identity(groups)}))
    success = collector_success(stack)
    assert success["host"] == 0.0 and success["vm"] == success["kvp"] == 1.0, success
    for host in stack.fleet.hosts:
        host.set(access=HostAccounts({"monitor": Identity(groups, frozenset({"root/cimv2"}))}))
    assert set(collector_success(stack).values()) == {1.0}


def test_an_account_in_no_remoting_group_is_access_denied(make_stack: StackFactory) -> None:
    stack = make(make_stack, PSRP, HostAccounts({"monitor": Identity(frozenset({HYPERV_ADMINISTRATORS}))}))
    assert "failed (access_denied)" in stack.debug(TARGET)


# -- the JEA endpoint: its role group, no language, one command --------------------------------------


def test_jea_with_the_least_privilege_account_collects_everything(make_stack: StackFactory) -> None:
    stack = make(make_stack, JEA, least_privilege("monitor"))
    assert set(collector_success(stack).values()) == {1.0}
    assert stack.sim.endpoint(TARGET).pools_opened == 1


def test_jea_admits_only_its_role_group(make_stack: StackFactory) -> None:
    access = HostAccounts({"monitor": Identity(frozenset({REMOTE_MANAGEMENT_USERS, HYPERV_ADMINISTRATORS}))})
    stack = make(make_stack, JEA, access)
    text = stack.debug(TARGET)
    assert "failed (access_denied)" in text, text


def test_jea_refuses_script_text_and_runs_only_its_command(make_stack: StackFactory) -> None:
    stack = make(make_stack, JEA, least_privilege("monitor"))
    with pool(stack, "HyperVExporter") as runspace:
        script = PowerShell(runspace)
        script.add_script("Get-VM | ConvertTo-Json")
        assert script.invoke() == []
        assert script.state == PSInvocationState.FAILED
        (error,) = script.streams.error
        assert error.fq_error == "ScriptsNotAllowed" and error.reason == "ParseException"
        assert "no-language mode" in str(error)
        script.close()

        other = PowerShell(runspace)
        other.add_cmdlet("Get-VM")
        other.invoke()
        assert other.state == PSInvocationState.FAILED
        assert other.streams.error[0].fq_error == "CommandNotFoundException"
        other.close()

        report = PowerShell(runspace)
        report.add_cmdlet("Get-HyperVExporterReport").add_parameter("Collectors", "vm,kvp")
        report.add_parameter("KvpKeys", ["OSName"])
        (text,) = report.invoke()
        assert report.state == PSInvocationState.COMPLETED
        document = json.loads(text)
        assert document["Host"]["ComputerName"] == TARGET and document["VMs"]
        items = [item for vm in document["VMs"] if vm["Kvp"] for item in vm["Kvp"]["GuestIntrinsicExchangeItems"]]
        assert items and all("OSName" in item for item in items)  # filtered on the host (-KvpKeys)
        report.close()


# -- the fleet file and the demo ---------------------------------------------------------------------


def test_the_fleet_file_describes_accounts() -> None:
    fleet = parse_fleet(
        """hosts:
  - ComputerName: HV-A
    Simulator:
      Username: monitor
      Groups: [Hyper-V Exporter Readers]
      JeaRoleGroup: Hyper-V Exporter Readers
      Accounts:
        - Username: operator
          Groups: [Remote Management Users, Hyper-V Administrators]
          WmiRemoteEnable: [root/cimv2]
""",
        "fleet.yml",
    )
    access = fleet.hosts[0].access
    assert access.may_open("monitor", "HyperVExporter") and not access.may_open("monitor", None)
    assert not access.may_open("monitor", "microsoft.powershell")
    assert access.may_open("operator", "microsoft.powershell") and not access.may_open("operator", "HyperVExporter")
    assert access.identity("operator").may_query_wmi("root/cimv2")
    assert parse_fleet("hosts:\n  - ComputerName: HV-B\n", "f.yml").hosts[0].access.identity("monitor").is_admin


def test_the_demo_probes_through_jea_with_a_least_privilege_account(demo: Running) -> None:
    import urllib.request

    assert demo.simulator is not None
    url = demo.server.urls[0]
    for host in demo.simulator.fleet.hosts:
        identity = host.access.identity(host.username)
        assert not identity.is_admin and not identity.may_use_hyperv()
        with urllib.request.urlopen(f"{url}/probe?target={host.computer_name}", timeout=30) as response:
            text = response.read().decode()
        assert "hyperv_up 1.0" in text, text
        assert 'hyperv_collector_success{collector="vm"} 1.0' in text
        assert 'hyperv_collector_success{collector="kvp"} 1.0' in text
        endpoint = demo.simulator.endpoint(host.computer_name)
        assert endpoint.pool_count == 1 and endpoint.shell_count == 0
        assert endpoint.stats["encrypted_requests"] > 0  # NTLM sealing, as over plain HTTP it must be
