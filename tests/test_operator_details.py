"""What a newcomer tripped over (issue 14, item 10), each checked where it shows:

- PowerShell's error text arrives wrapped at the console width in the middle of words; the
  exporter undoes the wrapping ("Contact", not "Contac t");
- hyperv_probe_winrm_requests counts the requests of a failed conversation, such as one 401;
- the landing page shows the per-host WinRM endpoints the exporter really uses (the demo's ports),
  not only the module's default URL.
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from conftest import ConfigurableStack, sample
from hyperv_exporter.host.cli import build_parser, start
from hyperv_exporter.host.transport.winrs import clixml_errors
from hyperv_exporter.sim.wsman import Fault, clixml_error

LONG_MESSAGE = (
    "Get-VM : You do not have the required permission to complete this task. Contact the administrator "
    "of the authorization policy for the computer 'HV-LONDON-01'."
)


def test_wrapped_powershell_error_text_is_joined_without_spaces_inside_words() -> None:
    stderr = clixml_error(LONG_MESSAGE)
    assert b"Contac" in stderr  # the console row really is cut inside a word here ...
    text = clixml_errors(stderr)
    assert LONG_MESSAGE in text, text  # ... and the exporter puts it back together
    assert "WriteErrorException" in text and "WriteErrorExcep tion" not in text
    assert "Contac t" not in text


def test_an_error_with_a_literal_underscore_x_survives() -> None:
    text = clixml_errors(clixml_error("Cannot find file C:\\temp\\_x_report.txt"))
    assert "C:\\temp\\_x_report.txt" in text


def test_a_probe_that_only_got_a_401_counts_its_request(tmp_path: Path) -> None:
    stack = ConfigurableStack(tmp_path)
    try:
        stack.sim.endpoint("HV-LONDON-01").fault = Fault("unauthorized")
        samples = stack.probe("HV-LONDON-01")
        assert sample(samples, "hyperv_up") == 0.0
        assert (sample(samples, "hyperv_probe_winrm_requests") or 0.0) >= 1.0
        _, text = stack.get("/metrics")
        counted = [
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "hyperv_exporter_winrm_requests_total"
        ]
        assert counted and counted[0] >= 1.0
    finally:
        stack.stop()


def test_landing_page_shows_the_demo_hosts_real_endpoints() -> None:
    running = start(build_parser().parse_args(["--demo", "--web.listen-address", "127.0.0.1:0"]))
    try:
        endpoints = running.app.config.modules["default"].endpoints
        assert endpoints
        page = running.app.landing(None).body  # type: ignore[arg-type]
        text = page.decode() if isinstance(page, bytes) else page
        for host, url in endpoints.items():
            assert f"{host}: {url}" in text, (host, url)
            assert ":5985/" not in url
        assert "other hosts: http://…:5985/wsman" in text
    finally:
        running.stop()

