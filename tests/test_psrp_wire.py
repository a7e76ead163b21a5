"""The simulator's PSRP messages have the shapes a real Windows host sends (checked against pypsrp's
recorded conversations, e.g. tests/responses/test_psrp_with_jea_configuration.yml and
test_psrp_multiple_commands.yml in jborean93/pypsrp): what real pypsrp receives, element by element."""

from __future__ import annotations

import base64
import struct
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import requests
from defusedxml.ElementTree import fromstring
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan, _TransportHTTP

from hyperv_exporter.sim.wsman import WSManEndpoint
from hyperv_exporter.sim.wsman_psrp import Command, PipelineResult, PoolInfo

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "x": "http://schemas.xmlsoap.org/ws/2004/09/transfer",
    "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "w": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
}
SESSION_CAPABILITY, APPLICATION_PRIVATE_DATA, RUNSPACEPOOL_STATE = 0x00010002, 0x00021009, 0x00021005
PIPELINE_OUTPUT, PIPELINE_STATE = 0x00041004, 0x00041006


def run(pool: PoolInfo, commands: list[Command]) -> PipelineResult:
    return PipelineResult(output=["first", "second"])


@contextmanager
def pool_on_sim(
    runner: Callable[[PoolInfo, list[Command]], PipelineResult],
) -> Iterator[tuple[WSManEndpoint, RunspacePool]]:
    """A runspace pool opened by real pypsrp (Basic, plain HTTP) on a simulated endpoint whose
    pipelines ``runner`` answers; the pool is closed on the way out."""
    endpoint = WSManEndpoint(lambda *args: None, users={"monitor": "pw"}, psrp_runner=runner)  # type: ignore[arg-type,return-value]
    with endpoint:
        wsman = WSMan(
            "127.0.0.1",
            port=endpoint.port,
            ssl=False,
            auth="basic",
            username="monitor",
            password="pw",
            encryption="never",
        )
        with RunspacePool(wsman) as pool:
            yield endpoint, pool


@pytest.fixture
def conversation(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[ET.Element, ET.Element]]]:
    """(request, response) envelopes of one pool opened, one pipeline run, the pool closed."""
    recorded: list[tuple[ET.Element, ET.Element]] = []
    send = _TransportHTTP._send_request

    def recording(self: _TransportHTTP, request: object, timeout: object = None) -> bytes:
        response: bytes = send(self, request, timeout)  # type: ignore[arg-type]
        body = getattr(request, "body", None)
        if body and response:
            recorded.append((fromstring(body), fromstring(response)))
        return response

    monkeypatch.setattr(_TransportHTTP, "_send_request", recording)
    with pool_on_sim(run) as (_, pool):
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-Thing")
        assert ps.invoke() == ["first", "second"]
        ps.close()
    yield recorded


def action(envelope: ET.Element) -> str:
    return (envelope.findtext("s:Header/a:Action", namespaces=NS) or "").rsplit("/", 1)[-1]


def messages(stream: ET.Element) -> list[int]:
    """The PSRP message types in one rsp:Stream (fragment header 21 bytes, then destination, type)."""
    data = base64.b64decode(stream.text or "")
    types = []
    while data:
        length = struct.unpack(">I", data[17:21])[0]
        if data[16] & 0x1:  # start fragment: the message header follows
            types.append(struct.unpack("<I", data[25:29])[0])
        data = data[21 + length :]
    return types


def test_the_conversation_has_the_recorded_shape(conversation: list[tuple[ET.Element, ET.Element]]) -> None:
    assert [action(request) for request, _ in conversation] == [
        "Create", "Receive", "Receive", "Receive", "Command", "Receive", "Signal", "Delete",
    ]  # fmt: skip
    create_request, create = conversation[0]
    shell_id = create_request.find("s:Body/rsp:Shell", NS).get("ShellId")  # type: ignore[union-attr]
    selector = create.find("s:Body/x:ResourceCreated/a:ReferenceParameters/w:SelectorSet/w:Selector", NS)
    assert selector is not None and selector.get("Name") == "ShellId" and selector.text == shell_id
    shell = create.find("s:Body/rsp:Shell", NS)
    assert shell is not None
    assert [child.tag.split("}")[1] for child in shell] == [
        "ShellId", "ResourceUri", "Owner", "ClientIP", "ProcessId", "IdleTimeOut", "InputStreams", "OutputStreams",
        "MaxIdleTimeOut", "Locale", "DataLocale", "CompressionMode", "ProfileLoaded", "Encoding", "BufferMode",
        "State", "ShellRunTime", "ShellInactivity",
    ]  # fmt: skip
    assert (
        shell.findtext("rsp:ResourceUri", namespaces=NS)
        == "http://schemas.microsoft.com/powershell/Microsoft.PowerShell"
    )


def test_pool_messages_come_one_per_receive_without_a_command_id(
    conversation: list[tuple[ET.Element, ET.Element]],
) -> None:
    pool_receives = [response for _, response in conversation[1:4]]
    found = []
    for response in pool_receives:
        (stream,) = response.findall("s:Body/rsp:ReceiveResponse/rsp:Stream", NS)
        assert stream.get("Name") == "stdout" and stream.get("CommandId") is None
        assert response.find("s:Body/rsp:ReceiveResponse/rsp:CommandState", NS) is None
        found += messages(stream)
    assert found == [SESSION_CAPABILITY, APPLICATION_PRIVATE_DATA, RUNSPACEPOOL_STATE]


def test_a_pipeline_answers_one_stream_per_message_then_done(conversation: list[tuple[ET.Element, ET.Element]]) -> None:
    command_request, command = conversation[4]
    command_id = command_request.find("s:Body/rsp:CommandLine", NS).get("CommandId")  # type: ignore[union-attr]
    assert command.findtext("s:Body/rsp:CommandResponse/rsp:CommandId", namespaces=NS) == command_id
    receive = conversation[5][1].find("s:Body/rsp:ReceiveResponse", NS)
    assert receive is not None
    streams = receive.findall("rsp:Stream", NS)
    assert all(s.get("CommandId") == command_id and s.get("Name") == "stdout" for s in streams)
    # Output, output, state: no PipelineState Running (psrpcore would send one; Windows does not).
    assert [t for s in streams for t in messages(s)] == [PIPELINE_OUTPUT, PIPELINE_OUTPUT, PIPELINE_STATE]
    state = receive[-1]
    assert state.tag == f"{{{NS['rsp']}}}CommandState" and state.get("State", "").endswith("/CommandState/Done")
    assert state.findtext("rsp:ExitCode", namespaces=NS) == "0"


def test_a_pipeline_larger_than_one_envelope_arrives_whole_through_send() -> None:
    """CREATE_PIPELINE fragments beyond the first travel in Send requests (stdin); the host sees the
    whole command only once the last fragment arrived."""
    seen: list[Command] = []

    def remember(pool: PoolInfo, commands: list[Command]) -> PipelineResult:
        seen.extend(commands)
        return PipelineResult(output=["ok"])

    with pool_on_sim(remember) as (endpoint, pool):
        ps = PowerShell(pool)
        ps.add_script("#" + "x" * 1_200_000)  # more than two 500 KiB envelopes
        assert ps.invoke() == ["ok"]
        ps.close()
        assert endpoint.stats["send"] >= 2
    assert [len(c.text) for c in seen] == [1_200_001]


def test_stopping_the_service_drops_a_waiting_receive() -> None:
    # As for a WinRS Receive (test_wsman_faults): a stopping WinRM service drops the connection of a
    # Receive waiting for output; it does not answer "shell not found" for a pool it just forgot.
    def slow(pool: PoolInfo, commands: list[Command]) -> PipelineResult:
        return PipelineResult(output=["late"], run_seconds=60)

    endpoint = WSManEndpoint(lambda *args: None, users={"monitor": "pw"}, psrp_runner=slow)  # type: ignore[arg-type,return-value]
    with endpoint:
        wsman = WSMan(
            "127.0.0.1", port=endpoint.port, ssl=False, auth="basic", username="monitor", password="pw",
            encryption="never", reconnection_retries=0, operation_timeout=20,
        )  # fmt: skip
        pool = RunspacePool(wsman)
        pool.open()
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-VM")
        ps.begin_invoke()
        outcome: list[BaseException] = []

        def receive() -> None:
            try:
                ps.poll_invoke()
            except BaseException as exc:
                outcome.append(exc)

        receives = endpoint.stats["receive"]
        thread = threading.Thread(target=receive)
        thread.start()
        deadline = time.monotonic() + 10
        while endpoint.stats["receive"] == receives and time.monotonic() < deadline:
            time.sleep(0.005)
        endpoint.stop()
        thread.join(10)
    assert not thread.is_alive()
    assert isinstance(outcome[0], requests.exceptions.ConnectionError), outcome
    assert endpoint.stats["soap_faults"] == 0  # the forgotten pool was not answered as a fault
