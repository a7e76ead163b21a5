"""A session that drops its runspace pool or shell closes that connection at once, for every protocol.

urllib3 2.x no longer closes a pool's connections when a PoolManager is cleared: it leaves them to a
finalizer that runs when the pool is freed, and requests' objects sit in reference cycles, so that
happened only at the next cyclic garbage collection. Under faults (one new pool per failed probe)
the soak test saw up to 70 extra sockets for 20 hosts, each also a connection held open on the host.
Here the garbage collector is off, so only an explicit close can end a connection.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator

import pytest

from conftest import basic_http_settings
from hyperv_exporter.host import script
from hyperv_exporter.host.transport.errors import ProbeError
from hyperv_exporter.host.transport.psrp import PSRPSession
from hyperv_exporter.host.transport.winrs import WinRMSession
from hyperv_exporter.sim.generator import generate_fleet
from hyperv_exporter.sim.host import Simulator
from hyperv_exporter.sim.wsman import Fault, WSManEndpoint

PASSWORD = "Conn-Pa55word"
FAILED_PROBES = 6


@pytest.fixture
def endpoint() -> Iterator[WSManEndpoint]:
    fleet = generate_fleet(hosts=1, vms_per_host=2, seed=3, password=PASSWORD, run_seconds=0.01)
    sim = Simulator(fleet)
    sim.start()
    try:
        yield sim.endpoint(fleet.hosts[0].computer_name)
    finally:
        sim.stop()


@pytest.fixture
def no_gc() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _settle(endpoint: WSManEndpoint, at_most: int) -> int:
    """The endpoint's open connections once background deletes (bounded at 7 s) have finished."""
    deadline = time.monotonic() + 15.0
    while endpoint.open_connections > at_most and time.monotonic() < deadline:
        time.sleep(0.05)
    return endpoint.open_connections


@pytest.mark.parametrize("kind", [PSRPSession, WinRMSession], ids=["psrp", "winrs"])
@pytest.mark.usefixtures("no_gc")
def test_dropped_pools_and_shells_close_their_connections(
    endpoint: WSManEndpoint, kind: type[PSRPSession] | type[WinRMSession]
) -> None:
    settings = basic_http_settings("monitor", PASSWORD, protocol="psrp" if kind is PSRPSession else "winrs")
    session = kind(endpoint.url, settings, script.script_text())
    session.collect(["host"], False, time.monotonic() + 10)
    # Each failure drops the pool or shell (its connection answered completely and went back to
    # its urllib3 pool); the next probe opens a new one on a new connection.
    endpoint.fault = Fault("http_500")
    for _ in range(FAILED_PROBES):
        with pytest.raises(ProbeError):
            session.collect(["host"], False, time.monotonic() + 5)
    endpoint.fault = None
    session.collect(["host"], False, time.monotonic() + 10)
    assert _settle(endpoint, 1) <= 1  # the live pool's or shell's connection only
    session.close()
    assert _settle(endpoint, 0) == 0
    assert endpoint.stats["connections"] >= 2
