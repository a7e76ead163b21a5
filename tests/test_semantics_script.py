"""collect.ps1 keeps the Hyper-V semantics of issue 12: per-VM isolation, Get-VMReplication, cluster name."""

from __future__ import annotations

import re

import pytest

from hyperv_exporter.host import script

TEXT = script.script_text()


@pytest.mark.parametrize(
    ("section", "cmdlet"),
    [
        ("integration_services", "Get-VMIntegrationService"),
        ("checkpoints", "Get-VMSnapshot"),
        ("replication", "Get-VMReplication"),
    ],
)
def test_calls_over_all_vms_fall_back_to_one_call_per_vm(section: str, cmdlet: str) -> None:
    """A VM that vanished or has no integration components must not cost the section for every VM."""
    line = next(line for line in TEXT.splitlines() if f"Invoke-PerVM '{section}'" in line)
    assert cmdlet in line
    # Every call of the cmdlet is one of Invoke-PerVM's two script blocks (the batch or the per-VM call).
    calls = [ln for ln in TEXT.splitlines() if re.search(rf"\b{cmdlet}\b", ln) and not ln.lstrip().startswith("#")]
    assert calls and all("Invoke-PerVM" in ln or "param($v)" in ln for ln in calls), calls


def test_vm_problems_are_reported_with_section_vm_and_error() -> None:
    body = TEXT[TEXT.index("function Add-VMProblem") :]
    body = body[: body.index("\n}\n")]
    for key in ("Section", "Name", "Id", "Error"):
        assert re.search(rf"\b{key} = ", body), key
    assert "VMProblems = ConvertTo-Array $vmProblems.ToArray()" in TEXT
    # Building a VM's row is isolated too.
    assert "} catch { Add-VMProblem 'vm' $vm $_ }" in TEXT


def test_replication_comes_from_get_vmreplication_not_get_vm() -> None:
    assert "$vm.ReplicationState" not in TEXT and "$vm.ReplicationHealth" not in TEXT
    for prop in ("ReplicationState", "ReplicationHealth", "ReplicationMode", "LastReplicationTime"):
        assert f"$r.{prop}" in TEXT, prop


def test_cluster_name_without_failing_on_standalone_hosts() -> None:
    host = TEXT[TEXT.index("Invoke-Section 'host'") :]
    host = host[: host.index("\n}\n")]
    assert "Get-CimInstance -Namespace root/MSCluster -ClassName MSCluster_Cluster -ErrorAction Stop" in host
    assert "try {" in host and "ClusterError" in host
