"""Wire format of the simulated listener: envelopes compared with real Windows recordings, HTTP details,
hostile requests, output paging and PowerShell's CLIXML stderr."""

from __future__ import annotations

import base64
import json
import logging
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element

import defusedxml.ElementTree as ET
import pytest
import requests
import winrm
import xmltodict  # type: ignore[import-untyped]
from hypothesis import example, given, settings
from hypothesis import strategies as st
from winrm.exceptions import WSManFaultError
from winrm.protocol import Protocol

from hyperv_exporter.sim import wsman_soap as soap
from hyperv_exporter.sim.wsman import CommandResult, Shell, WSManEndpoint, clixml_error
from hyperv_exporter.sim.wsman_shells import page_output

FIXTURES = Path(__file__).parent / "fixtures" / "wsman"
USER, PASSWORD = "monitor", "hunter2-very-secret"
SOAP_HEADERS = {"Content-Type": "application/soap+xml;charset=UTF-8"}


def echo(shell: Shell, command: str, arguments: list[str]) -> CommandResult:
    return CommandResult(stdout=b"abc\r\n")


@pytest.fixture
def endpoint() -> Iterator[WSManEndpoint]:
    with WSManEndpoint(echo, users={USER: PASSWORD}) as ep:
        yield ep


@pytest.fixture
def client(endpoint: WSManEndpoint) -> Iterator[RawClient]:
    with RawClient(endpoint) as raw:
        yield raw


class RawClient:
    """Sends pywinrm-built envelopes with plain requests, so responses can be inspected as bytes."""

    def __init__(self, ep: WSManEndpoint) -> None:
        self.url = ep.url
        self.protocol = Protocol(
            ep.url, transport="basic", username=USER, password=PASSWORD, server_cert_validation="ignore"
        )
        self.http = requests.Session()
        self.http.auth = (USER, PASSWORD)

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def post(self, body: bytes | str, headers: dict[str, str] | None = None) -> requests.Response:
        return self.http.post(self.url, data=body, headers=headers or SOAP_HEADERS, timeout=10)

    def send(
        self,
        action: str,
        body: dict[str, Any] | None = None,
        *,
        shell_id: str | None = None,
        message_id: uuid.UUID | None = None,
        options: list[tuple[str, str]] | None = None,
    ) -> requests.Response:
        envelope = self.protocol.build_wsman_header(
            action=action, resource_uri=soap.RESOURCE_URI_CMD, shell_id=shell_id, message_id=message_id
        )
        if options:
            envelope["env:Header"]["w:OptionSet"] = {"w:Option": [{"@Name": k, "#text": v} for k, v in options]}
        envelope["env:Body"] = body or {}
        return self.post(xmltodict.unparse({"env:Envelope": envelope}))

    def create(self) -> str:
        response = self.send(
            soap.ACTION_CREATE, {"rsp:Shell": {"rsp:InputStreams": "stdin", "rsp:OutputStreams": "stdout stderr"}}
        )
        node = next(n for n in ET.fromstring(response.content).iter() if n.get("Name") == "ShellId")
        return str(node.text)

    def command(self, shell_id: str, command: str = "whoami") -> str:
        response = self.send(soap.ACTION_COMMAND, {"rsp:CommandLine": {"rsp:Command": command}}, shell_id=shell_id)
        node = next(n for n in ET.fromstring(response.content).iter() if n.tag.endswith("CommandId"))
        return str(node.text)

    def receive(self, shell_id: str, command_id: str) -> requests.Response:
        body = {"rsp:Receive": {"rsp:DesiredStream": {"@CommandId": command_id, "#text": "stdout stderr"}}}
        return self.send(soap.ACTION_RECEIVE, body, shell_id=shell_id)


# --- envelope shapes against real Windows recordings -------------------------------------------------------


def shape(xml: bytes | str) -> set[tuple[str, frozenset[str]]]:
    """Element paths with their attribute names: the structure a parser sees, values ignored."""
    paths: set[tuple[str, frozenset[str]]] = set()

    def walk(node: Element, prefix: str) -> None:
        path = f"{prefix}/{node.tag}"
        paths.add((path, frozenset(node.attrib)))
        for child in node:
            walk(child, path)

    walk(ET.fromstring(xml), "")
    return paths


def declared_prefixes(xml: bytes | str) -> set[str]:
    text = xml.decode() if isinstance(xml, bytes) else xml
    root_tag = text[: text.index(">")]
    return set(re.findall(r"xmlns:(\w+)=", root_tag))


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_conversation_matches_real_server_envelopes(client: RawClient) -> None:
    create = client.send(
        soap.ACTION_CREATE, {"rsp:Shell": {"rsp:InputStreams": "stdin", "rsp:OutputStreams": "stdout stderr"}}
    )
    shell_id = next(n.text for n in ET.fromstring(create.content).iter() if n.get("Name") == "ShellId")
    command = client.send(soap.ACTION_COMMAND, {"rsp:CommandLine": {"rsp:Command": "dir"}}, shell_id=shell_id)
    command_id = next(n.text for n in ET.fromstring(command.content).iter() if n.tag.endswith("CommandId"))
    receive = client.receive(str(shell_id), str(command_id))
    signal = client.send(
        soap.ACTION_SIGNAL,
        {"rsp:Signal": {"@CommandId": command_id, "rsp:Code": soap.SIGNAL_TERMINATE}},
        shell_id=shell_id,
    )
    unknown_command = client.receive(str(shell_id), "6A3E2C1B-0000-4000-8000-000000000000")
    delete = client.send(soap.ACTION_DELETE, shell_id=shell_id)
    unknown_shell = client.receive(str(shell_id), str(command_id))

    pairs = [
        (create, "real_create_response.xml"),
        (command, "real_command_response.xml"),
        (receive, "real_receive_done.xml"),
        (signal, "real_signal_response.xml"),
        (delete, "real_delete_response.xml"),
    ]
    for response, name in pairs:
        assert response.status_code == 200, name
        assert shape(response.content) == shape(fixture(name)), name
        assert declared_prefixes(response.content) == declared_prefixes(fixture(name)), name
    # Faults: the real bad-CommandId fault also carries p:ActivityId, a tracing id the simulator leaves out.
    real_command_fault = {p for p in shape(fixture("real_bad_command_fault.xml")) if "ActivityId" not in p[0]}
    assert unknown_command.status_code == unknown_shell.status_code == 500
    assert shape(unknown_command.content) == real_command_fault
    assert shape(unknown_shell.content) == shape(fixture("real_shell_not_found_fault.xml"))
    assert declared_prefixes(unknown_shell.content) == declared_prefixes(fixture("real_shell_not_found_fault.xml"))


def test_receive_payload_is_the_real_one(client: RawClient) -> None:
    shell_id = client.create()
    response = client.receive(shell_id, client.command(shell_id))
    streams = [n for n in ET.fromstring(response.content).iter() if n.tag.endswith("Stream")]
    # Real host: one data chunk "YWJjDQo=" then empty End="true" stdout and stderr (reference §4.3).
    assert [(s.get("Name"), s.get("End"), s.text) for s in streams] == [
        ("stdout", None, "YWJjDQo="),
        ("stdout", "true", None),
        ("stderr", "true", None),
    ]


def test_running_and_timeout_shapes_match_real_server(endpoint: WSManEndpoint, client: RawClient) -> None:
    def big(shell: Shell, command: str, arguments: list[str]) -> CommandResult:
        return CommandResult(stdout=b"y" * 400_000)

    endpoint.runner = big
    shell_id = client.create()
    running = client.receive(shell_id, client.command(shell_id))
    assert shape(running.content) == shape(fixture("real_receive_running.xml"))

    def slow(shell: Shell, command: str, arguments: list[str]) -> CommandResult:
        return CommandResult(run_seconds=60)

    endpoint.runner = slow
    command_id = client.command(shell_id)
    body = {"rsp:Receive": {"rsp:DesiredStream": {"@CommandId": command_id, "#text": "stdout stderr"}}}
    envelope = client.protocol.build_wsman_header(
        action=soap.ACTION_RECEIVE, resource_uri=soap.RESOURCE_URI_CMD, shell_id=shell_id
    )
    envelope["env:Header"]["w:OperationTimeout"] = "PT0.050S"
    envelope["env:Body"] = body
    timed_out = client.post(xmltodict.unparse({"env:Envelope": envelope}))
    assert timed_out.status_code == 500
    assert shape(timed_out.content) == shape(fixture("real_timeout_fault.xml"))
    assert declared_prefixes(timed_out.content) == declared_prefixes(fixture("real_timeout_fault.xml"))


# --- HTTP and WS-Addressing details ----------------------------------------------------------------------


def test_http_headers_and_message_ids(client: RawClient) -> None:
    request_id = uuid.uuid4()
    response = client.send(soap.ACTION_CREATE, {"rsp:Shell": {"rsp:InputStreams": "stdin"}}, message_id=request_id)
    assert response.headers["Content-Type"] == "application/soap+xml;charset=UTF-8"
    assert response.headers["Server"] == "Microsoft-HTTPAPI/2.0"
    root = ET.fromstring(response.content)
    relates = root.findtext(f"{{{soap.NS_S}}}Header/{{{soap.NS_A}}}RelatesTo")
    first_id = root.findtext(f"{{{soap.NS_S}}}Header/{{{soap.NS_A}}}MessageID")
    assert relates == f"uuid:{request_id}"
    second = ET.fromstring(client.send(soap.ACTION_CREATE, {"rsp:Shell": {}}).content)
    second_id = second.findtext(f"{{{soap.NS_S}}}Header/{{{soap.NS_A}}}MessageID")
    assert first_id and second_id and first_id != second_id
    assert re.fullmatch(r"uuid:[0-9A-F-]{36}", first_id)


def test_signal_and_delete_relate_to_the_request(endpoint: WSManEndpoint) -> None:
    p = Protocol(endpoint.url, transport="basic", username=USER, password=PASSWORD, server_cert_validation="ignore")
    shell_id = p.open_shell()
    command_id = p.run_command(shell_id, "x")
    p.cleanup_command(shell_id, command_id)  # pywinrm asserts RelatesTo == its MessageID
    p.close_shell(shell_id)  # same assertion


def test_other_paths_and_methods(endpoint: WSManEndpoint, client: RawClient) -> None:
    assert requests.post(endpoint.url.replace("/wsman", "/other"), data=b"", timeout=5).status_code == 404
    response = requests.get(endpoint.url, timeout=5)
    assert (response.status_code, response.headers["Allow"]) == (405, "POST")
    assert client.post(b"<x/>", headers={"Content-Type": "text/plain"}).status_code == 415
    too_big = client.post(b" " * 600_000)
    assert too_big.status_code == 413


def test_keep_alive_survives_errors(endpoint: WSManEndpoint, client: RawClient) -> None:
    assert client.post(b"not xml").status_code == 500
    assert client.send("http://example.invalid/NoSuchAction").status_code == 500
    shell_id = client.create()
    assert client.receive(shell_id, client.command(shell_id)).status_code == 200
    assert endpoint.stats["connections"] == 1


# --- hostile and malformed requests ------------------------------------------------------------------


def fault_of(client: RawClient, body: str) -> WSManFaultError:
    with pytest.raises(WSManFaultError) as info:
        client.protocol.send_message(body)
    return info.value


def test_malformed_xml_is_a_fault(client: RawClient) -> None:
    error = fault_of(client, "<env:Envelope><unclosed>")
    assert (error.code, error.wsman_fault_code) == (500, 2150858819)


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"><env:Header/><env:Body>&lol3;</env:Body></env:Envelope>"""

EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE x [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"><env:Header/><env:Body>&secret;</env:Body></env:Envelope>"""


@pytest.mark.parametrize("body", [BILLION_LAUGHS, EXTERNAL_ENTITY], ids=["entity-expansion", "external-entity"])
def test_dtds_and_entities_are_refused(client: RawClient, body: str) -> None:
    error = fault_of(client, body)
    assert error.wsman_fault_code == 2150858819
    assert "root:" not in error.response


def test_unknown_action_is_a_fault(client: RawClient) -> None:
    response = client.send("http://schemas.xmlsoap.org/ws/2004/09/transfer/Get")
    assert response.status_code == 500
    assert 'Code="2150858771"' in response.text
    assert "<s:Value>a:ActionNotSupported</s:Value>" in response.text


def test_invalid_operation_timeout_is_the_real_fault(client: RawClient) -> None:
    envelope = client.protocol.build_wsman_header(action=soap.ACTION_CREATE, resource_uri=soap.RESOURCE_URI_CMD)
    envelope["env:Header"]["w:OperationTimeout"] = "PT-1S"
    envelope["env:Body"] = {"rsp:Shell": {}}
    error = fault_of(client, xmltodict.unparse({"env:Envelope": envelope}))
    assert (error.wsman_fault_code, error.fault_subcode) == (2150858767, "a:InvalidMessageInformationHeader")
    assert "invalid timeout field in the SOAP header: PT-1S" in error.response


def test_missing_shell_selector_and_missing_body(client: RawClient) -> None:
    response = client.send(soap.ACTION_COMMAND, {"rsp:CommandLine": {"rsp:Command": "x"}})
    assert 'Code="2150858843"' in response.text
    response = client.send(soap.ACTION_COMMAND, {}, shell_id=client.create())
    assert 'Code="2150858817"' in response.text


def test_receive_after_done_repeats_done(client: RawClient) -> None:
    shell_id = client.create()
    command_id = client.command(shell_id)
    client.receive(shell_id, command_id)
    again = ET.fromstring(client.receive(shell_id, command_id).content)
    states = [n.get("State", "") for n in again.iter() if n.tag.endswith("CommandState")]
    assert states == [soap.STATE_DONE]
    assert not [n for n in again.iter() if n.tag.endswith("Stream") and n.text]


# --- output paging -----------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@example(stdout=b"z" * 400_000, stderr=b"e" * 3_000, chunk_size=4096, max_envelope=153_600)  # pywinrm's size
@given(
    stdout=st.binary(max_size=30_000),
    stderr=st.binary(max_size=5_000),
    chunk_size=st.integers(min_value=1, max_value=8192),
    max_envelope=st.integers(min_value=2_500, max_value=40_000),
)
def test_paging_is_byte_exact_and_fits_the_envelope(
    stdout: bytes, stderr: bytes, chunk_size: int, max_envelope: int
) -> None:
    command_id = soap.new_resource_id()
    result = CommandResult(stdout=stdout, stderr=stderr, exit_code=5)
    sent = {"stdout": 0, "stderr": 0}
    received = {"stdout": b"", "stderr": b""}
    for _ in range(10_000):
        head, tail = soap.receive_envelope_parts(f"uuid:{uuid.uuid4()}")
        content, done = page_output(command_id, result, sent, max_envelope - len(head) - len(tail), chunk_size)
        whole = f"{head}{content}{tail}".encode()
        assert len(whole) <= max_envelope
        root = ET.fromstring(whole)
        for node in root.iter(f"{{{soap.NS_RSP}}}Stream"):
            assert len(base64.b64decode(node.text or "")) <= chunk_size
            received[str(node.get("Name"))] += base64.b64decode(node.text or "")
        if done:
            assert root.findtext(f".//{{{soap.NS_RSP}}}ExitCode") == "5"
            break
    assert received == {"stdout": stdout, "stderr": stderr}


def test_envelope_too_small_for_any_output_is_a_fault() -> None:
    with pytest.raises(soap.RequestError) as info:
        page_output("ID", CommandResult(stdout=b"x"), {"stdout": 0, "stderr": 0}, 300, 4096)
    assert info.value.fault.wsman_code == 2150858824


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("PT20S", 20.0),
        ("PT60.000S", 60.0),
        ("PT0.5S", 0.5),
        ("P0DT0H0M0S", 0.0),
        ("PT1H2M3S", 3723.0),
        ("P1D", 86400.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert soap.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["PT-1S", "20", "PT", "P", "PTS", "PT1H2"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        soap.parse_duration(text)


# --- CLIXML ------------------------------------------------------------------------------------------------


def test_clixml_error_reproduces_powershell_byte_for_byte() -> None:
    recorded = json.loads((FIXTURES / "pywinrm_write_error_stderr.json").read_text())
    expected = b"".join(base64.b64decode(chunk) for chunk in recorded["stderr_chunks_b64"])
    assert clixml_error('Write-Error "Error" : Error') == expected


def test_clixml_error_decodes_with_pywinrm() -> None:
    session = winrm.Session("127.0.0.1", auth=("u", "p"))
    message = "Get-VM : You do not have the required permission to complete this task. <Hyper-V> & more"
    decoded = session._clean_error_msg(clixml_error(message)).decode()
    first_rows = decoded.splitlines()[:2]
    assert first_rows[0] == message[:78] + " "  # PowerShell wraps long rows at the console width
    assert first_rows[1] == "   " + message[78:]
    short = session._clean_error_msg(clixml_error("boom")).decode()
    assert short.splitlines()[0] == "boom"


def test_clixml_error_uses_the_console_code_page() -> None:
    assert "Grüße ✓".encode("cp437", errors="replace") in clixml_error("Grüße ✓")
    assert "Grüße ✓".encode() in clixml_error("Grüße ✓", codepage=65001)


# --- logging -------------------------------------------------------------------------------------------


def test_debug_logs_never_contain_credentials(endpoint: WSManEndpoint, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="hyperv_exporter.sim")
    p = Protocol(endpoint.url, transport="basic", username=USER, password=PASSWORD, server_cert_validation="ignore")
    shell_id = p.open_shell()
    p.run_command(shell_id, "x")
    with pytest.raises(Exception):  # noqa: B017 - any rejection will do, the point is what gets logged
        Protocol(
            endpoint.url, transport="basic", username=USER, password="wrong", server_cert_validation="ignore"
        ).open_shell()
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert caplog.records  # it does log at debug
    assert all(record.levelno == logging.DEBUG for record in caplog.records)
    assert PASSWORD not in caplog.text
    assert token not in caplog.text
    assert "Authorization" not in caplog.text
