"""Bounded probes: deadlines from Prometheus' scrape timeout, one conversation per host, shared
results, and background refresh that serves the last good data with the latest attempt's status."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import ConfigurableStack, Stack, require_tool, sample
from hyperv_exporter.host.cli import build_parser
from hyperv_exporter.web import Request

TARGET = "HV-LONDON-01"


def _request(header: str | None) -> Request:
    headers = {} if header is None else {"X-Prometheus-Scrape-Timeout-Seconds": header}
    return Request("GET", "/probe", {}, headers, b"", "127.0.0.1")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, 10.0),  # no header: the module timeout
        ("", 10.0),
        ("abc", 10.0),
        ("0", 10.0),
        ("-5", 10.0),
        ("nan", 10.0),
        ("inf", 10.0),
        ("30", 10.0),  # the module timeout is the smaller one
        ("4", 3.5),  # minus --timeout-offset
        ("0.8", 0.4),  # never less than half the scrape timeout
        ("0.01", 0.1),  # never below 0.1 s
        ("1e-300", 0.1),
    ],
)
def test_deadline_is_the_smaller_of_module_and_scrape_timeout(
    stack: Stack, header: str | None, expected: float
) -> None:
    app = stack.running.app
    module = app.config.modules["default"]
    assert module.timeout == 10.0 and app.timeout_offset == 0.5
    assert app.probe_timeout(_request(header), module) == pytest.approx(expected)


@pytest.mark.parametrize("offset", ["-1", "nan", "inf", "x"])
def test_timeout_offset_must_be_a_sane_number(offset: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--timeout-offset", offset])
    assert "--timeout-offset" in capsys.readouterr().err


@pytest.fixture
def cached(tmp_path: Path) -> Iterator[ConfigurableStack]:
    stack = ConfigurableStack(tmp_path, module="    cache_ttl: 30s\n    timeout: 10s")
    try:
        yield stack
    finally:
        stack.stop()


def test_concurrent_probes_of_one_host_share_one_conversation(stack: Stack) -> None:
    """Two Prometheus servers (or ten) scraping at once: one WinRM conversation, one result."""
    stack.probe(TARGET)  # open the shell first
    endpoint = stack.sim.endpoint(TARGET)
    stack.fleet.host(TARGET).set(run_seconds=1.0)
    endpoint.stats.reset()
    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda _: stack.probe(TARGET), range(10)))
    assert all(sample(r, "hyperv_up") == 1.0 for r in results)
    assert endpoint.stats["command"] == 1
    _, metrics = stack.get("/metrics")
    assert 'hyperv_exporter_probe_shared_results_total{module="default"} 9.0' in metrics


def test_cache_ttl_reuses_a_recent_result_for_every_spelling_of_the_host(cached: ConfigurableStack) -> None:
    endpoint = cached.sim.endpoint(TARGET)
    for spelling in (TARGET, TARGET.lower(), TARGET + ".", TARGET.lower() + ".", TARGET):
        assert sample(cached.probe(spelling), "hyperv_up") == 1.0
    assert endpoint.stats["command"] == 1
    _, metrics = cached.get("/metrics")
    assert 'hyperv_exporter_probe_shared_results_total{module="default"} 4.0' in metrics


def test_spelling_variants_do_not_multiply_error_series(stack: Stack) -> None:
    stack.sim.endpoint(TARGET).stop()
    for spelling in (TARGET, TARGET.lower(), TARGET.swapcase() + ".", "hV-lOnDoN-01"):
        assert sample(stack.probe(spelling), "hyperv_up") == 0.0
    _, metrics = stack.get("/metrics")
    series = [line for line in metrics.splitlines() if line.startswith("hyperv_exporter_probe_errors_total{")]
    assert series == [
        f'hyperv_exporter_probe_errors_total{{module="default",reason="connection",target="{TARGET}"}} 4.0'
    ]


def test_one_conversation_per_host_at_a_time(stack: Stack) -> None:
    """Probes of one host never overlap on the host, even when the requests do."""
    stack.probe(TARGET)
    stack.fleet.host(TARGET).set(run_seconds=0.3)
    runner = stack.sim.runners[TARGET]
    active = 0
    most = 0
    original = runner.answer

    def counting(*args: object, **kwargs: object) -> object:
        nonlocal active, most
        active += 1
        most = max(most, active)
        try:
            return original(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            active -= 1

    runner.answer = counting  # type: ignore[method-assign]
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda i: stack.probe(TARGET if i % 2 else TARGET.lower()), range(12)))
    assert most == 1


def _wait_for(
    stack: ConfigurableStack, up: float, seconds: float = 10.0
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    end = time.monotonic() + seconds
    while True:
        samples = stack.probe(TARGET)
        if sample(samples, "hyperv_up") == up or time.monotonic() > end:
            assert sample(samples, "hyperv_up") == up, f"hyperv_up never became {up}"
            return samples
        time.sleep(0.1)


def test_background_refresh_serves_the_last_good_data_with_the_latest_status(tmp_path: Path) -> None:
    stack = ConfigurableStack(tmp_path, module="    refresh_interval: 0.3s\n    timeout: 2s")
    try:
        good = stack.probe(TARGET)
        assert sample(good, "hyperv_up") == 1.0
        good_time = sample(good, "hyperv_last_success_timestamp_seconds")
        assert good_time is not None and abs(good_time - time.time()) < 10
        vms = {ls for (n, ls), _ in good.items() if n == "hyperv_vm_info"}
        assert vms

        stack.sim.endpoint(TARGET).stop()
        stale = _wait_for(stack, up=0.0)
        assert sample(stale, "hyperv_last_success_timestamp_seconds") == pytest.approx(good_time)
        assert {ls for (n, ls), _ in stale.items() if n == "hyperv_vm_info"} == vms  # the last good data
        _, text = stack.get(f"/probe?module=default&target={TARGET}")
        promtool = require_tool("promtool")
        check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False)
        assert check.returncode == 0, check.stdout + check.stderr
        _, debug = stack.get(f"/probe?module=default&target={TARGET}&debug=true")
        assert "failed (connection)" in debug
        _, metrics = stack.get("/metrics")
        assert f'reason="connection",target="{TARGET}"' in metrics

        stack.sim.endpoint(TARGET).start()
        fresh = _wait_for(stack, up=1.0)
        fresh_time = sample(fresh, "hyperv_last_success_timestamp_seconds")
        assert fresh_time is not None and fresh_time > good_time
        # /probe answers from memory: no scrape waits for the host.
        stack.fleet.host(TARGET).set(run_seconds=5.0)
        started = time.monotonic()
        assert sample(stack.probe(TARGET), "hyperv_up") == 1.0
        assert time.monotonic() - started < 2.0
    finally:
        stack.stop()


def test_without_background_refresh_a_failure_serves_no_stale_data(stack: Stack) -> None:
    assert sample(stack.probe(TARGET), "hyperv_up") == 1.0
    stack.sim.endpoint(TARGET).stop()
    samples = stack.probe(TARGET)
    assert sample(samples, "hyperv_up") == 0.0
    assert sample(samples, "hyperv_last_success_timestamp_seconds") is None
    assert not [n for (n, _), _ in samples.items() if n == "hyperv_vm_info"]
