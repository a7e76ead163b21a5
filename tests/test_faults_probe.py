"""Fault injection through the simulator: one case per fault, with healthy hosts probed alongside.

For every fault the faulty host answers ``hyperv_up 0`` by its deadline with the right reason (on
/metrics, in the log, on the debug page and the landing page), the healthy hosts probed at the
same moment answer on time, no WinRM conversation outlives its deadline, the process stays up,
and the host recovers once the fault is gone. Timing asserts are generous upper bounds only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import ConfigurableStack, sample
from hyperv_exporter.host.transport.psrp import POOL_OPEN_SECONDS
from hyperv_exporter.sim.wsman import Fault
from pki import Pki

FAULTY = "HV-LONDON-01"
HEALTHY = ("HV-BERLIN-01", "HV-DUBLIN-01", "HV-LEGACY-01")
SCRAPE_TIMEOUT = 3.0
DEADLINE = SCRAPE_TIMEOUT - 0.5  # the default --timeout-offset
WINRM = ConfigurableStack.DEFAULT_WINRM.replace("max_output_bytes: 8MiB", "max_output_bytes: 1MiB")


@dataclass(frozen=True)
class Case:
    reason: str
    apply: Callable[[ConfigurableStack], None]
    clear: Callable[[ConfigurableStack], None]
    detail: str = ""  # expected in the error message
    psrp_detail: str | None = None  # expected instead over PSRP, where it differs


def _endpoint_fault(fault: Fault) -> tuple[Callable[[ConfigurableStack], None], Callable[[ConfigurableStack], None]]:
    def apply(stack: ConfigurableStack) -> None:
        stack.sim.endpoint(FAULTY).fault = fault

    def clear(stack: ConfigurableStack) -> None:
        stack.sim.endpoint(FAULTY).fault = None

    return apply, clear


def _output_fault(name: str) -> tuple[Callable[[ConfigurableStack], None], Callable[[ConfigurableStack], None]]:
    return (
        lambda stack: stack.fleet.host(FAULTY).set(output_fault=name),
        lambda stack: stack.fleet.host(FAULTY).set(output_fault=None),
    )


CASES: dict[str, Case] = {
    "connection_refused": Case(
        "connection",
        lambda stack: stack.sim.endpoint(FAULTY).stop(),
        lambda stack: stack.sim.endpoint(FAULTY).start(),
        "cannot connect",
    ),
    "hang": Case("timeout", *_endpoint_fault(Fault("hang"))),
    "slow_response": Case("timeout", *_endpoint_fault(Fault("slow", seconds=6))),
    "slow_drip": Case("timeout", *_endpoint_fault(Fault("drip", seconds=0.05))),
    "http_500_wsman_fault": Case("winrm_fault", *_endpoint_fault(Fault("http_500")), "WS-Management fault"),
    "http_401": Case("auth", *_endpoint_fault(Fault("unauthorized")), "HTTP 401"),
    "password_rotated_on_host": Case(
        "auth",
        lambda stack: stack.fleet.host(FAULTY).set(password="rotated-elsewhere"),
        lambda stack: stack.fleet.host(FAULTY).set(password=stack.password),
    ),
    "tcp_reset": Case("connection", *_endpoint_fault(Fault("reset"))),
    "garbage_body": Case("winrm_fault", *_endpoint_fault(Fault("garbage"))),
    "huge_http_body": Case("output_too_large", *_endpoint_fault(Fault("huge_body")), "exceeds 4194304 bytes"),
    "gzip_bomb_body": Case("winrm_fault", *_endpoint_fault(Fault("gzip_body"))),
    "entity_expansion": Case("winrm_fault", *_endpoint_fault(Fault("dtd")), "document type declaration"),
    "not_json": Case("parse", *_output_fault("not_json"), "not JSON"),
    "truncated_output": Case("parse", *_output_fault("truncated")),
    "deeply_nested_json": Case("parse", *_output_fault("deep_nesting")),
    "huge_output": Case("output_too_large", *_output_fault("huge")),
    "zip_bomb_output": Case("output_too_large", *_output_fault("zip_bomb")),
    "other_schema": Case("parse", *_output_fault("old_schema"), "SchemaVersion"),
    "exit_code_with_clixml_error": Case("powershell", *_output_fault("powershell_error"), "required permission"),
    "clixml_with_entity_expansion": Case(
        "powershell", *_output_fault("bad_clixml"), "exited with code 1", psrp_detail="PowerShell pipeline Failed"
    ),
    "huge_stderr": Case("output_too_large", *_output_fault("huge_stderr")),
}


@pytest.fixture(params=["winrs", "psrp"])
def fault_stack(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ConfigurableStack]:
    stack = ConfigurableStack(tmp_path, winrm=WINRM.replace("protocol: winrs", f"protocol: {request.param}"))
    try:
        yield stack
    finally:
        stack.stop()


def _timed_probe(stack: ConfigurableStack, target: str) -> tuple[dict[str, float], float]:
    started = time.monotonic()
    status, text = stack.get(
        f"/probe?module=default&target={quote(target)}",
        headers={"X-Prometheus-Scrape-Timeout-Seconds": str(SCRAPE_TIMEOUT)},
    )
    elapsed = time.monotonic() - started
    assert status == 200, text
    values = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels}
    return values, elapsed


def _probe_all(stack: ConfigurableStack) -> dict[str, tuple[dict[str, float], float]]:
    targets = (FAULTY, *HEALTHY)
    with ThreadPoolExecutor(len(targets)) as pool:
        return dict(zip(targets, pool.map(lambda t: _timed_probe(stack, t), targets), strict=True))


def _errors(stack: ConfigurableStack, reason: str) -> float:
    _, text = stack.get("/metrics")
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "hyperv_exporter_probe_errors_total" and s.labels == {
                "module": "default",
                "reason": reason,
                "target": FAULTY,
            }:
                return s.value
    return 0.0


def _wait_idle(stack: ConfigurableStack, seconds: float) -> None:
    """No WinRM conversation may outlive its deadline (the watchdog ends even a dripping answer)."""
    end = time.monotonic() + seconds
    while stack.running.prober.in_flight() and time.monotonic() < end:
        time.sleep(0.05)
    assert stack.running.prober.in_flight() == 0, "a WinRM conversation outlived its deadline"


@pytest.mark.parametrize("name", list(CASES))
def test_fault(fault_stack: ConfigurableStack, name: str, caplog: pytest.LogCaptureFixture) -> None:
    _run_case(fault_stack, CASES[name], caplog)


def _swap_certificate(pki: Pki, name: str) -> Callable[[ConfigurableStack], None]:
    def swap(stack: ConfigurableStack) -> None:
        endpoint = stack.sim.endpoint(FAULTY)
        endpoint.stop()  # drops the kept-alive connection, so the next one shakes hands again
        endpoint.ssl_context = pki.server_context(pki[name])
        endpoint.start()

    return swap


@pytest.fixture
def https_stack(tmp_path: Path, pki: Pki) -> Iterator[ConfigurableStack]:
    winrm = f"""      scheme: https
      transport: ntlm
      ca_file: {pki.ca.cert}
      username: monitor
      password_file: {{password_file}}"""
    stack = ConfigurableStack(tmp_path, winrm=winrm, ssl_context=pki.server_context(), allow_unencrypted=False)
    try:
        yield stack
    finally:
        stack.stop()


@pytest.mark.parametrize(
    ("certificate", "detail"),
    [("stranger_server", "unable to get local issuer certificate"), ("expired_server", "certificate has expired")],
    ids=["wrong_ca", "expired"],
)
def test_tls_fault(
    https_stack: ConfigurableStack, pki: Pki, certificate: str, detail: str, caplog: pytest.LogCaptureFixture
) -> None:
    case = Case("tls", _swap_certificate(pki, certificate), _swap_certificate(pki, "server"), detail)
    _run_case(https_stack, case, caplog)


def _run_case(stack: ConfigurableStack, case: Case, caplog: pytest.LogCaptureFixture) -> None:
    # Warm up: every host has a shell, so the faulty host fails on the path a real scrape takes.
    assert all(values["hyperv_up"] == 1.0 for values, _ in _probe_all(stack).values())
    case.apply(stack)
    caplog.set_level(logging.WARNING, logger="hyperv_exporter")

    results = _probe_all(stack)

    values, elapsed = results[FAULTY]
    assert values["hyperv_up"] == 0.0
    assert elapsed < DEADLINE + 2.0, f"the faulty host held the scrape for {elapsed:.1f}s"
    for target in HEALTHY:
        healthy, healthy_elapsed = results[target]
        assert healthy["hyperv_up"] == 1.0, target
        assert healthy_elapsed < DEADLINE, f"{target} waited {healthy_elapsed:.1f}s for the faulty host"
    assert _errors(stack, case.reason) == 1.0
    logged = [r for r in caplog.records if getattr(r, "kv", {}).get("target") == FAULTY]
    assert [r.kv["reason"] for r in logged if "reason" in r.kv] == [case.reason]  # type: ignore[attr-defined]
    _wait_idle(stack, DEADLINE + 3.0)

    _, debug = stack.get(
        f"/probe?module=default&target={FAULTY}&debug=true",
        headers={"X-Prometheus-Scrape-Timeout-Seconds": str(SCRAPE_TIMEOUT)},
    )
    assert f"failed ({case.reason})" in debug
    detail = case.psrp_detail if stack.protocol == "psrp" and case.psrp_detail is not None else case.detail
    assert detail in debug
    _, landing = stack.get("/")
    assert f'<td>{FAULTY}</td><td><span class="fail">{case.reason}</span>' in landing
    assert stack.get("/-/healthy")[0] == 200

    case.clear(stack)
    recovered, _ = _timed_probe(stack, FAULTY)
    if stack.protocol == "psrp":
        # A runspace pool opening that a slow answer held up goes on in the background (bounded by
        # psrp.POOL_OPEN_SECONDS) and the next probes wait for it: the host is back once it ends.
        give_up = time.monotonic() + POOL_OPEN_SECONDS + 5
        while recovered["hyperv_up"] != 1.0 and time.monotonic() < give_up:
            recovered, _ = _timed_probe(stack, FAULTY)
    assert recovered["hyperv_up"] == 1.0, "the host did not recover once the fault was gone"
    assert sample(stack.probe(FAULTY), "hyperv_up") == 1.0


def test_slow_but_in_time_host_is_fine(fault_stack: ConfigurableStack) -> None:
    fault_stack.sim.endpoint(FAULTY).fault = Fault("slow", seconds=0.3, times=2)
    values, _ = _timed_probe(fault_stack, FAULTY)
    assert values["hyperv_up"] == 1.0


def test_fault_during_output_loop_is_bounded(fault_stack: ConfigurableStack) -> None:
    """The host starts answering, then hangs in the middle of the Receive loop."""
    stack = fault_stack
    stack.fleet.host(FAULTY).set(run_seconds=60.0)  # the command keeps running: Receive long-polls
    values, elapsed = _timed_probe(stack, FAULTY)
    assert values["hyperv_up"] == 0.0 and elapsed < DEADLINE + 2.0
    _wait_idle(stack, 3.0)
    assert _errors(stack, "timeout") == 1.0
