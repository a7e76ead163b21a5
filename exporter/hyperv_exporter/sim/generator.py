"""Large simulated fleets for benchmarks and load tests: N hosts x M VMs, deterministic from a seed.

The demo fleet (``demo_fleet.yml``) shows every case once; a benchmark needs a thousand ordinary
VMs per host whose *mix* looks like a real estate, because that mix decides the cost of a probe:
how many VMs run (only running VMs have KVP items, heartbeats and service statuses), how many KVP
items each guest reports (reference §2.3: Windows guests report the 19 documented intrinsic keys,
Linux's hv_kvp_daemon exactly 10), and how much guest and host KVP data sits next to them
(provisioning data included, which the exporter's allowlist must drop).

Everything is drawn from ``random.Random`` seeded with a string built from the seed and the host
index, so the same arguments give the same fleet on every machine and Python version (string
seeds are hashed with SHA-512, not with the per-process ``hash``), and host *k* of a 100-host
fleet is the same host as host *k* of a 10-host fleet. Only ``SimVM.started`` depends on ``now``.

Usage::

    fleet = generate_fleet(hosts=100, vms_per_host=1000, seed=1, latency=0.05, password="pw")
    sim = Simulator(fleet)          # hyperv_exporter.sim.host
    sim.start()
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass
from typing import Any

from hyperv_exporter.sim import tables
from hyperv_exporter.sim.fleet import SimFleet, SimHost, SimVM, kvp_item

# Weighted choices: (value, weight). Weights are rough shares of a production virtualisation estate.
HOST_OSES: tuple[tuple[tuple[str, str], float], ...] = (
    (("Microsoft Windows Server 2022 Datacenter", "10.0.20348"), 0.45),
    (("Microsoft Windows Server 2019 Datacenter", "10.0.17763"), 0.35),
    (("Microsoft Windows Server 2016 Datacenter", "10.0.14393"), 0.15),
    (("Microsoft Windows Server 2012 Datacenter", "6.2.9200"), 0.05),  # five services, no Guest Service Interface
)
HOST_CULTURES: tuple[tuple[str, float], ...] = (("en-US", 0.8), ("de-DE", 0.2))
VM_STATES: tuple[tuple[str, float], ...] = (
    ("Running", 0.85),
    ("Off", 0.09),
    ("Saved", 0.03),
    ("Paused", 0.01),
    ("RunningCritical", 0.005),
    ("OffCritical", 0.003),
    ("Starting", 0.004),
    ("Stopping", 0.004),
    ("Saving", 0.004),
)
WINDOWS_HEARTBEATS: tuple[tuple[str, float], ...] = (
    ("OkApplicationsHealthy", 0.93),
    ("OkApplicationsCritical", 0.02),
    ("LostCommunication", 0.02),
    ("NoContact", 0.02),
    ("OkApplicationsUnknown", 0.01),
)
LINUX_HEARTBEATS: tuple[tuple[str, float], ...] = (
    ("OkApplicationsUnknown", 0.96),  # Linux guests do not report application health
    ("LostCommunication", 0.02),
    ("NoContact", 0.02),
)
WINDOWS_GUESTS: tuple[tuple[tuple[str, str, str, str], float], ...] = (
    # (OSName, OSVersion, OSBuildNumber, OSEditionId)
    (("Windows Server 2022 Datacenter", "10.0.20348", "20348", "8"), 0.4),
    (("Windows Server 2019 Datacenter", "10.0.17763", "17763", "8"), 0.3),
    (("Windows Server 2019 Standard", "10.0.17763", "17763", "7"), 0.15),
    (("Windows Server 2016 Standard", "10.0.14393", "14393", "7"), 0.1),
    (("Windows 10 Enterprise", "10.0.19045", "19045", "4"), 0.05),
)
LINUX_GUESTS: tuple[tuple[tuple[str, str, str], float], ...] = (
    # (OSName = os-release NAME, VERSION_ID, uname -r)
    (("Ubuntu", "22.04", "5.15.0-91-generic"), 0.4),
    (("Ubuntu", "24.04", "6.8.0-1015-azure"), 0.2),
    (("Red Hat Enterprise Linux", "9.3", "5.14.0-362.8.1.el9_3.x86_64"), 0.2),
    (("Debian GNU/Linux", "12", "6.1.0-18-amd64"), 0.15),
    (("SLES", "15.5", "5.14.21-150500.55.39-default"), 0.05),
)
ROLES = ("web", "app", "db", "sql", "dc", "file", "k8s-node", "ci-runner", "jump", "mail", "print", "backup")
# A few names outside ASCII, as real estates have them (the exporter must escape them correctly).
NON_ASCII_ROLES = ("büro", "会計", "ñandú", "контроль")
CONFIG_VERSIONS: tuple[tuple[str, float], ...] = (("10.0", 0.4), ("9.0", 0.4), ("8.0", 0.15), ("5.0", 0.05))
PROCESSORS: tuple[tuple[int, float], ...] = ((1, 0.1), (2, 0.35), (4, 0.35), (8, 0.15), (16, 0.05))
MEMORY_GIB: tuple[tuple[int, float], ...] = ((2, 0.15), (4, 0.35), (8, 0.3), (16, 0.15), (64, 0.05))

# Shares of VMs with a particular trait.
LINUX_SHARE = 0.35
GUEST_SERVICE_INTERFACE_SHARE = 0.15  # enabled by admins for Copy-VMFile
TIME_SYNC_DISABLED_SHARE = 0.05  # typical for domain controllers and guests that use NTP only
UPDATE_REQUIRED_SHARE = 0.08  # Windows guests whose integration services are outdated
LINUX_VSS_MISSING_SHARE = 0.2  # hv_vss_daemon not installed: VSS reports NoContact
SERVICE_FAULT_SHARE = 0.01  # one random service unhealthy
CHECKPOINT_SHARE = 0.1
REPLICATED_SHARE = 0.05
DYNAMIC_MEMORY_SHARE = 0.3
GUEST_ITEMS_SHARE = 0.3  # software in the guest writes GuestExchangeItems
HOST_ITEMS_SHARE = 0.2  # the host pushed HostExchangeItems (provisioning data, often secret)


@dataclass(frozen=True)
class Mix:
    """What one generated fleet contains, counted (tests check it against the shares above)."""

    hosts: int
    vms: int
    running: int
    linux: int
    kvp_items: int


def _pick(rng: random.Random, table: tuple[tuple[Any, float], ...]) -> Any:
    values = [v for v, _ in table]
    weights = [w for _, w in table]
    return rng.choices(values, weights)[0]


def _guid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _ipv4(host_index: int, vm_index: int) -> str:
    return f"10.{(host_index // 250) % 250 + 1}.{host_index % 250}.{vm_index % 250 + 1}"


def _ipv6(rng: random.Random) -> str:
    return "fe80::" + ":".join(f"{rng.getrandbits(16):x}" for _ in range(4))


def _windows_intrinsic(rng: random.Random, fqdn: str, ipv4: str, ipv6: str, is_version: str) -> dict[str, str]:
    """The 19 keys a Windows guest writes to GuestIntrinsicExchangeItems (reference §2.3)."""
    name, version, build, edition = _pick(rng, WINDOWS_GUESTS)
    addresses = f"{ipv4};169.254.{rng.randrange(1, 255)}.{rng.randrange(1, 255)}"
    return {
        "FullyQualifiedDomainName": fqdn,
        "OSName": name,
        "OSVersion": version,
        "OSBuildNumber": build,
        "OSMajorVersion": version.split(".")[0],
        "OSMinorVersion": version.split(".")[1],
        "OSPlatformId": "2",
        "CSDVersion": "",
        "ServicePackMajor": "0",
        "ServicePackMinor": "0",
        "SuiteMask": "400" if "Datacenter" in name else "272",
        "ProductType": "1" if name.startswith("Windows 10") else "3",
        "OSEditionId": edition,
        "ProcessorArchitecture": "9",
        "IntegrationServicesVersion": is_version,
        "NetworkAddressIPv4": addresses,
        "NetworkAddressIPv6": ipv6,
        "RDPAddressIPv4": ipv4,
        "RDPAddressIPv6": ipv6,
    }


def _linux_intrinsic(rng: random.Random, fqdn: str, ipv4: str, ipv6: str) -> dict[str, str]:
    """The 10 keys hv_kvp_daemon writes (reference §2.3: index 0-9, values as the daemon builds them)."""
    name, version_id, release = _pick(rng, LINUX_GUESTS)
    return {
        "FullyQualifiedDomainName": fqdn,
        "IntegrationServicesVersion": "3.1",
        "NetworkAddressIPv4": ipv4,
        "NetworkAddressIPv6": ipv6,
        "OSBuildNumber": release,
        "OSName": name,
        "OSMajorVersion": version_id,
        "OSMinorVersion": "",
        "OSVersion": release.split("-", 1)[0],
        "ProcessorArchitecture": "x86_64",
    }


def _services(rng: random.Random, running: bool, linux: bool) -> dict[str, dict[str, Any]]:
    """Overrides of the simulator's default records (default-on services enabled and Ok; the
    heartbeat service's status follows the VM's Heartbeat there)."""
    services: dict[str, dict[str, Any]] = {}
    if rng.random() < GUEST_SERVICE_INTERFACE_SHARE:
        services[tables.GUEST_SERVICE_INTERFACE] = {"Enabled": True}
    if rng.random() < TIME_SYNC_DISABLED_SHARE:
        services["time_synchronization"] = {"Enabled": False}
    if not running:
        return services
    if linux and rng.random() < LINUX_VSS_MISSING_SHARE:
        services["vss"] = {"PrimaryOperationalStatus": "NoContact"}
    if rng.random() < SERVICE_FAULT_SHARE:
        service = rng.choice(("shutdown", "key_value_pair_exchange", "vss"))
        services.setdefault(service, {})["PrimaryOperationalStatus"] = rng.choice(
            ("Degraded", "LostCommunication", "ProtocolMismatch", "Error")
        )
    return services


def _vm(rng: random.Random, host_index: int, index: int, domain: str, now: float) -> SimVM:
    linux = rng.random() < LINUX_SHARE
    state = _pick(rng, VM_STATES)
    running = state in ("Running", "RunningCritical")
    role = rng.choice(NON_ASCII_ROLES) if rng.random() < 0.01 else rng.choice(ROLES)
    name = f"{role}-{index:04d}"
    vm_id = _guid(rng)
    ascii_name = name if name.isascii() else f"vm-{index:04d}"
    fqdn = f"{ascii_name}.{domain}"
    ipv4, ipv6 = _ipv4(host_index, index), _ipv6(rng)
    is_version = (
        "0.0" if linux else _pick(rng, (("10.0.20348.1", 0.5), ("10.0.17763.1", 0.35), ("6.3.9600.18907", 0.15)))
    )
    heartbeat = _pick(rng, LINUX_HEARTBEATS if linux else WINDOWS_HEARTBEATS) if running else None
    memory = _pick(rng, MEMORY_GIB) * 1024**3
    dynamic = rng.random() < DYNAMIC_MEMORY_SHARE
    uptime = rng.uniform(600, 90 * 86400) if running else 0.0
    if linux:
        is_state = ""  # Linux guests leave IntegrationServicesState empty (they are updated with the kernel)
    elif running:
        is_state = "Update required" if rng.random() < UPDATE_REQUIRED_SHARE else "Up to date"
    else:
        is_state = ""
    props: dict[str, Any] = {
        "Name": name,
        "Id": vm_id,
        "State": state,
        "Status": "Operating normally",
        "IntegrationServicesVersion": is_version,
        "IntegrationServicesState": is_state,
        "Generation": 1 if rng.random() < 0.1 else 2,
        "Version": _pick(rng, CONFIG_VERSIONS),
        "IsClustered": rng.random() < 0.3,
        "ProcessorCount": _pick(rng, PROCESSORS),
        "CPUUsage": rng.randrange(0, 60) if running else 0,
        "MemoryAssigned": memory,
        "MemoryDemand": int(memory * rng.uniform(0.3, 0.95)),
        "MemoryStartup": memory,
        "DynamicMemoryEnabled": dynamic,
    }
    if heartbeat is not None:
        props["Heartbeat"] = heartbeat
    if rng.random() < REPLICATED_SHARE:
        health = _pick(rng, (("Normal", 0.85), ("Warning", 0.1), ("Critical", 0.05)))
        props.update(
            ReplicationMode="Primary",
            ReplicationState="Replicating" if health != "Critical" else "Error",
            ReplicationHealth=health,
            LastReplicationAgeSeconds=rng.uniform(30, 300 if health == "Normal" else 7200),
        )
    kvp: dict[str, list[str]] = {}
    if running:
        intrinsic = (
            _linux_intrinsic(rng, fqdn, ipv4, ipv6) if linux else _windows_intrinsic(rng, fqdn, ipv4, ipv6, is_version)
        )
        kvp["GuestIntrinsicExchangeItems"] = [kvp_item(k, v, 2) for k, v in intrinsic.items()]
        if rng.random() < GUEST_ITEMS_SHARE:
            guest = {"Department": rng.choice(("Finance & Controlling", "R&D <lab>", "Ops")), "CostCenter": "4711"}
            kvp["GuestExchangeItems"] = [kvp_item(k, v, 1) for k, v in guest.items()]
        if rng.random() < HOST_ITEMS_SHARE:
            host_items = {"ProvisioningToken": f"tok-{rng.getrandbits(64):016x}", "Environment": "production"}
            kvp["HostExchangeItems"] = [kvp_item(k, v, 0) for k, v in host_items.items()]
    snapshots: list[dict[str, Any]] = []
    if rng.random() < CHECKPOINT_SHARE:
        for _ in range(rng.randrange(1, 4)):
            snapshots.append(
                {
                    "SnapshotType": _pick(rng, (("Standard", 0.8), ("Recovery", 0.2))),
                    "AgeSeconds": rng.uniform(3600, 120 * 86400),
                }
            )
    return SimVM(
        props=props,
        services=_services(rng, running, linux),
        kvp=kvp,
        snapshots=snapshots,
        started=now - uptime,
    )


def generate_host(
    index: int,
    vms: int,
    *,
    seed: int = 0,
    latency: float = 0.0,
    run_seconds: float = 0.05,
    password: str | None = None,
    now: float | None = None,
) -> SimHost:
    """Host number ``index`` of a generated fleet (the same host whatever the fleet's size)."""
    rng = random.Random(f"hyperv-sim-generator:{seed}:{index}")  # noqa: S311 - simulation data, not secrets
    now = time.time() if now is None else now
    os_caption, os_version = _pick(rng, HOST_OSES)
    culture = _pick(rng, HOST_CULTURES)
    # Most hosts are NTP-synchronised to a few ms; one in fifty drifted by seconds.
    offset = rng.uniform(-2.0, 5.0) if rng.random() < 0.02 else rng.gauss(0.0, 0.003)
    domain = f"site{index // 20:02d}.corp.example"
    host = SimHost(
        computer_name=f"HV-GEN-{index:04d}",
        os_caption=os_caption,
        os_version=os_version,
        ui_culture=culture,
        vms=[_vm(rng, index, i, domain, now) for i in range(vms)],
        clock_offset=round(offset, 6),
        password=password,
        latency=latency,
        run_seconds=run_seconds,
    )
    for vm in host.vms:
        vm.host = host
    return host


def generate_fleet(
    hosts: int,
    vms_per_host: int,
    *,
    seed: int = 0,
    latency: float = 0.0,
    run_seconds: float = 0.05,
    password: str | None = None,
    now: float | None = None,
) -> SimFleet:
    """``hosts`` simulated Hyper-V hosts with ``vms_per_host`` VMs each, usable with ``sim.host.Simulator``.

    ``latency`` is added by each host's WS-Management endpoint before answering every HTTP request
    (``WSManEndpoint.latency_seconds``); ``run_seconds`` is how long the collection script runs on
    the host before its output is available. ``now`` fixes the wall clock the VMs' uptimes count
    from (for byte-identical fleets in tests).
    """
    if hosts < 0 or vms_per_host < 0:
        raise ValueError("hosts and vms_per_host must not be negative")
    now = time.time() if now is None else now
    fleet_hosts = [
        generate_host(i, vms_per_host, seed=seed, latency=latency, run_seconds=run_seconds, password=password, now=now)
        for i in range(hosts)
    ]
    return SimFleet(hosts=fleet_hosts, source=f"<generated: {hosts} hosts x {vms_per_host} VMs, seed {seed}>")


def mix(fleet: SimFleet) -> Mix:
    """Count what a fleet holds (for tests and the benchmark's description of its input)."""
    vms = [vm for host in fleet.hosts for vm in host.vms]
    return Mix(
        hosts=len(fleet.hosts),
        vms=len(vms),
        running=sum(vm.running() for vm in vms),
        linux=sum(vm.props.get("IntegrationServicesVersion") == "0.0" for vm in vms),
        kvp_items=sum(len(items) for vm in vms for items in vm.kvp.values()),
    )
