"""OpenMetrics when the scraper asks for it, on /probe and /metrics of both programs.

- the fast /probe renderer's OpenMetrics form is byte-identical to prometheus_client's OpenMetrics
  encoder of the same families: on every demo host and on a generated 1,000-VM host whose VM
  names need escaping;
- negotiation over HTTP: Prometheus' Accept header gets OpenMetrics (``# EOF``, its content type),
  no Accept header gets the text format, on the exporter's /probe and /metrics and on the guest
  agent's /metrics (the latter two exactly as client_python encodes the registry);
- no ``*_created`` series on the exporter's /metrics in either format.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterable, Iterator

import pytest
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as om_generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse

from conftest import Stack, thousand_vm_result
from hyperv_exporter import metricsdoc
from hyperv_exporter.guest.handler import make_handler
from hyperv_exporter.host import exposition
from hyperv_exporter.host.probe import ProbeResult
from hyperv_exporter.web import Request

# What Prometheus 2.x/3.x sends (scrape_protocols default, text and OpenMetrics preferred in order).
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


class Families:
    def __init__(self, metrics: Iterable[Metric]) -> None:
        self.metrics = list(metrics)

    def collect(self) -> Iterator[Metric]:
        return iter(self.metrics)


def assert_like_client_python(result: ProbeResult) -> None:
    output = exposition._collect(result, 9.5, result.collected_at, keep_families=True)  # as render_openmetrics
    expected = om_generate_latest(Families(f.to_metric() for f in output.families))  # type: ignore[arg-type]
    assert exposition.render_openmetrics(result, 9.5) == expected


@pytest.mark.parametrize("index", range(len(metricsdoc.demo_results())))
def test_probe_openmetrics_is_client_pythons_on_the_demo_fleet(index: int) -> None:
    assert_like_client_python(metricsdoc.demo_results()[index])


def test_probe_openmetrics_is_client_pythons_on_a_large_host_with_escaping() -> None:
    result = thousand_vm_result()
    assert_like_client_python(result)
    families = {f.name: f for f in om_parse(exposition.render_openmetrics(result, 9.5).decode("utf-8"))}
    assert families["hyperv_vm"].type == "info" and families["hyperv_vm_state"].type == "gauge"


def get(url: str, accept: str | None) -> tuple[str, bytes]:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.headers["Content-Type"], response.read()


@pytest.fixture
def exporter(tmp_path) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    s = Stack(tmp_path)
    try:
        yield s
    finally:
        s.stop()


def test_exporter_negotiates_openmetrics(exporter: Stack) -> None:
    probe = f"{exporter.url}/probe?module=default&target=HV-LONDON-01"
    content_type, body = get(probe, PROMETHEUS_ACCEPT)
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    assert body.endswith(b"# EOF\n")
    families = {f.name: f for f in om_parse(body.decode("utf-8"))}
    assert families["hyperv_up"].samples[0].value == 1.0
    assert families["hyperv_vm"].type == "info"
    content_type, body = get(probe, None)
    assert content_type.startswith("text/plain; version=0.0.4")
    assert b"# EOF" not in body and b"# TYPE hyperv_vm_info gauge" in body

    content_type, body = get(f"{exporter.url}/metrics", PROMETHEUS_ACCEPT)
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")
    assert {"hyperv_exporter_probes", "hyperv_exporter_build_info"} <= {f.name for f in om_parse(body.decode())}
    assert b"_created" not in body
    content_type, body = get(f"{exporter.url}/metrics", None)
    assert content_type.startswith("text/plain; version=0.0.4")
    assert b"hyperv_exporter_probes_total" in body and b"_created" not in body


def test_guest_agent_negotiates_openmetrics() -> None:
    registry = CollectorRegistry()
    Gauge("hyperv_guest_example", 'A gauge with "quotes" in its help.', registry=registry).set(1.5)
    handle = make_handler(registry, ["ptp"])

    def metrics(accept: str | None) -> tuple[str, bytes]:
        headers = {"Accept": accept} if accept else {}
        response = handle(Request("GET", "/metrics", {}, headers, b"", "127.0.0.1"))
        body = response.body if isinstance(response.body, bytes) else response.body.encode()
        return response.content_type, body

    content_type, body = metrics(PROMETHEUS_ACCEPT)
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    assert body == om_generate_latest(registry)
    content_type, body = metrics(None)
    assert content_type.startswith("text/plain; version=0.0.4")
    assert body.endswith(b"hyperv_guest_example 1.5\n")
