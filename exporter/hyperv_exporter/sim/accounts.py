"""Windows' permission model for a simulated Hyper-V host: accounts, their groups, and what each may do.

What a real host enforces (``/work/shared/reference/real-windows-behaviour.md``, "Who may open what"):

- **WinRS cmd shells** admit Administrators only (the default SDDL of ``winrm configSDDL default``);
  anyone else gets WS-Management's "Access is denied" fault (pywinrm issues #336, #338, #362).
- **microsoft.powershell** (and the other ``microsoft.*`` endpoints) admit Administrators and Remote
  Management Users. In such a session the user's own rights apply: Hyper-V cmdlets need
  Administrators or Hyper-V Administrators ("You do not have the required permission ..."), and
  WMI/CIM queries from a network logon need Administrators or *Remote Enable* on the namespace
  (pywinrm #306), refused with CIM's "Access denied".
- **The JEA endpoint** (``HyperVExporter``) admits only the group its ``RoleDefinitions`` name. It
  runs in NoLanguage mode as a virtual account whose only group is Hyper-V Administrators, and
  that account's rights apply to the one visible command (so its WMI works).

Fleet file keys (in a host's ``Simulator`` block; docs/simulator.md): ``Groups`` and
``WmiRemoteEnable`` for the host's ``Username`` (default: Administrators), ``JeaRoleGroup``, and
``Accounts``: further accounts (``Username``, ``Groups``, ``WmiRemoteEnable``) that share the host's
password. The simulator keeps this knowledge itself; it imports nothing from the exporter.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hyperv_exporter.yamlutil import Node

ADMINISTRATORS = "Administrators"
REMOTE_MANAGEMENT_USERS = "Remote Management Users"
HYPERV_ADMINISTRATORS = "Hyper-V Administrators"
JEA_ENDPOINT = "HyperVExporter"
JEA_COMMAND = "Get-HyperVExporterReport"
DEFAULT_JEA_ROLE_GROUP = "Hyper-V Exporter Readers"
#: The WMI namespaces collect.ps1 queries, by the section that queries them.
WMI_SECTIONS = {"host": "root/cimv2", "kvp": "root/virtualization/v2"}
#: PowerShell's own endpoints (session configurations) that Windows PowerShell registers on a 64-bit
#: host (Get-PSSessionConfiguration); Server SKUs also list microsoft.windows.servermanagerworkflows,
#: which the simulator does not model. The JEA endpoint comes on top (HostAccounts.configurations).
PLAIN_ENDPOINTS = frozenset({"microsoft.powershell", "microsoft.powershell32", "microsoft.powershell.workflow"})


def is_jea(configuration: str) -> bool:
    """Whether a session configuration name is the exporter's JEA endpoint."""
    return configuration.lower() == JEA_ENDPOINT.lower()


@dataclass(frozen=True)
class Identity:
    """Whose rights a piece of work runs with: a real account, or the JEA virtual account."""

    groups: frozenset[str]
    wmi_remote_enable: frozenset[str] = frozenset()  # namespaces that grant this account Remote Enable
    no_language: bool = False  # JEA: RestrictedRemoteServer sessions are in NoLanguage mode
    network_logon: bool = True  # a remote user's session; the JEA virtual account logs on locally

    @property
    def is_admin(self) -> bool:
        return ADMINISTRATORS in self.groups

    def may_use_hyperv(self) -> bool:
        return self.is_admin or HYPERV_ADMINISTRATORS in self.groups

    def may_query_wmi(self, namespace: str) -> bool:
        if self.is_admin or namespace in self.wmi_remote_enable:
            return True
        if namespace == WMI_SECTIONS["kvp"]:
            # The virtualization namespace grants Hyper-V Administrators its rights, Remote Enable included:
            # an inference (the group has "complete and unrestricted access to all features of Hyper-V",
            # and remote Hyper-V Manager works for its members), not read from the namespace's ACL.
            return HYPERV_ADMINISTRATORS in self.groups
        # Other namespaces grant Authenticated Users only Enable Account: enough for a local logon (the
        # JEA virtual account), not for a network logon, which needs Remote Enable (pywinrm #306).
        return not self.network_logon

    def refusals(self, sections: Iterable[str]) -> dict[str, str]:
        """The error message of every section this identity may not run (as collect.ps1 records it)."""
        refused: dict[str, str] = {}
        for section in sections:
            namespace = WMI_SECTIONS.get(section)
            if namespace is not None and not self.may_query_wmi(namespace):
                refused[section] = "Access denied "  # CimException's message for WBEM_E_ACCESS_DENIED
            elif section == "vm" and not self.may_use_hyperv():
                refused[section] = (
                    "You do not have the required permission to complete this task. Contact the administrator "
                    "of the authorization policy for the computer '{computer}'."
                )
        return refused


#: The JEA endpoint's virtual account: RunAsVirtualAccountGroups = Hyper-V Administrators only.
JEA_VIRTUAL_ACCOUNT = Identity(groups=frozenset({HYPERV_ADMINISTRATORS}), no_language=True, network_logon=False)


@dataclass(frozen=True)
class HostAccounts:
    """The accounts a simulated host knows (lower-case user name -> identity) and its JEA role group."""

    accounts: Mapping[str, Identity] = field(default_factory=dict)
    jea_role_group: str = DEFAULT_JEA_ROLE_GROUP

    def identity(self, username: str) -> Identity:
        # An account the model does not list is a plain user: authenticated, member of nothing.
        return self.accounts.get(username.lower(), Identity(groups=frozenset()))

    def configurations(self) -> set[str]:
        """The endpoints registered on the host (lower case): PowerShell's own and the JEA endpoint."""
        return {*PLAIN_ENDPOINTS, JEA_ENDPOINT.lower()}

    def may_open(self, username: str, configuration: str | None) -> bool:
        """``configuration`` None: a WinRS cmd shell; else a PowerShell endpoint's name."""
        who = self.identity(username)
        if configuration is None:
            return who.is_admin
        if is_jea(configuration):
            return self.jea_role_group in who.groups
        return who.is_admin or REMOTE_MANAGEMENT_USERS in who.groups


def default_accounts(username: str) -> HostAccounts:
    """A host whose one account is an administrator (what a fleet file without ``Groups`` means)."""
    return HostAccounts({username.lower(): Identity(groups=frozenset({ADMINISTRATORS}))})


def least_privilege(username: str, jea_role_group: str = DEFAULT_JEA_ROLE_GROUP) -> HostAccounts:
    """The recommended monitoring account: only in the JEA endpoint's role group."""
    return HostAccounts({username.lower(): Identity(groups=frozenset({jea_role_group}))}, jea_role_group)


def _identity(keys: Mapping[str, Node], default_groups: frozenset[str]) -> Identity:
    groups = frozenset(item.string() for item in keys["Groups"].items()) if "Groups" in keys else default_groups
    wmi = frozenset(item.string() for item in keys["WmiRemoteEnable"].items()) if "WmiRemoteEnable" in keys else None
    return Identity(groups=groups, wmi_remote_enable=wmi or frozenset())


#: The keys of a host's Simulator block that this module reads.
SIMULATOR_KEYS = ("Groups", "WmiRemoteEnable", "JeaRoleGroup", "Accounts")


def parse_accounts(sim: Mapping[str, Node], username: str) -> HostAccounts:
    """The permission model from a host's ``Simulator`` block (already checked for unknown keys)."""
    accounts: dict[str, Identity] = {username.lower(): _identity(sim, frozenset({ADMINISTRATORS}))}
    for item in sim["Accounts"].items() if "Accounts" in sim else []:
        keys = item.mapping(["Username", "Groups", "WmiRemoteEnable"], required=["Username", "Groups"])
        name = keys["Username"].string()
        if name.lower() in accounts:
            keys["Username"].fail("this account is already listed")
        accounts[name.lower()] = _identity(keys, frozenset())
    role = sim["JeaRoleGroup"].string() if "JeaRoleGroup" in sim else DEFAULT_JEA_ROLE_GROUP
    return HostAccounts(accounts, role)


def restrict_document(doc: dict[str, Any], identity: Identity, computer: str) -> dict[str, Any]:
    """What collect.ps1 prints when ``identity`` lacks rights: each refused section carries the error
    PowerShell gave, and holds no data (the section's catch skipped the rest of its block)."""
    sections = doc.get("Sections", {})
    for section, message in identity.refusals(sections).items():
        sections[section]["Error"] = message.format(computer=computer)
        if section == "host":
            for key in ("OSCaption", "OSVersion", "UICulture"):
                doc["Host"][key] = None
        elif section == "vm":
            # No VMs: the sections that need them return early without an error of their own.
            doc["VMs"] = []
        elif section == "kvp":
            for vm in doc.get("VMs", []):
                vm["Kvp"] = None
    return doc
