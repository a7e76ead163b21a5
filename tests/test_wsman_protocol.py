"""The simulated WinRM listener driven end to end by real pywinrm over real HTTP."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator

import pytest
import winrm
from winrm.exceptions import WinRMOperationTimeoutError, WSManFaultError
from winrm.protocol import Protocol

from hyperv_exporter.sim.wsman import (
    CMD_MAX_COMMAND_LINE,
    CommandResult,
    Shell,
    WSManEndpoint,
    clixml_error,
)

USER, PASSWORD = "monitor", "s3cret-pw"
SHELL_NOT_FOUND = 2150858843


class Recorder:
    """Echo runner that remembers every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[Shell, str, list[str]]] = []
        self.lock = threading.Lock()

    def __call__(self, shell: Shell, command: str, arguments: list[str]) -> CommandResult:
        with self.lock:
            self.calls.append((shell, command, arguments))
        return CommandResult(stdout=" ".join([command, *arguments]).encode())


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def endpoint(recorder: Recorder) -> Iterator[WSManEndpoint]:
    with WSManEndpoint(recorder, users={USER: PASSWORD}, name="hv-test") as ep:
        yield ep


def protocol(ep: WSManEndpoint) -> Protocol:
    # server_cert_validation="ignore": plain HTTP, and keeps pywinrm off REQUESTS_CA_BUNDLE (a warning).
    return Protocol(ep.url, transport="basic", username=USER, password=PASSWORD, server_cert_validation="ignore")


def session(ep: WSManEndpoint) -> winrm.Session:
    return winrm.Session(ep.url, auth=(USER, PASSWORD), transport="basic", server_cert_validation="ignore")


def test_session_run_cmd_end_to_end(endpoint: WSManEndpoint, recorder: Recorder) -> None:
    result = session(endpoint).run_cmd("ipconfig", ["/all"])

    assert (result.std_out, result.std_err, result.status_code) == (b"ipconfig /all", b"", 0)
    shell, command, arguments = recorder.calls[0]
    assert (command, arguments) == ("ipconfig", ["/all"])  # pywinrm joins arguments into one rsp:Arguments
    assert shell.username == USER
    stats = endpoint.stats.snapshot()
    counts = {key: stats[key] for key in ("create", "command", "receive", "signal", "delete")}
    assert counts == {"create": 1, "command": 1, "receive": 1, "signal": 1, "delete": 1}
    assert stats["requests"] == 5
    assert endpoint.shell_count == 0
    assert endpoint.command_count == 0


def test_session_run_ps_sends_encoded_command(endpoint: WSManEndpoint, recorder: Recorder) -> None:
    script = "Get-VM | Select-Object Name, State | ConvertTo-Json  # Grüße"
    result = session(endpoint).run_ps(script)

    assert result.status_code == 0
    _, command, arguments = recorder.calls[0]
    assert arguments == []
    program, flag, encoded = command.split(" ")
    assert (program, flag) == ("powershell", "-encodedcommand")
    assert base64.b64decode(encoded).decode("utf-16-le") == script


def test_shell_reuse_request_counts(endpoint: WSManEndpoint) -> None:
    p = protocol(endpoint)
    shell_id = p.open_shell()
    outputs = []
    for n in range(3):
        command_id = p.run_command(shell_id, "echo", [str(n)])
        outputs.append(p.get_command_output(shell_id, command_id))
        p.cleanup_command(shell_id, command_id)
    assert endpoint.command_count == 0
    p.close_shell(shell_id)

    assert outputs == [(f"echo {n}".encode(), b"", 0) for n in range(3)]
    stats = endpoint.stats.snapshot()
    assert {k: stats[k] for k in ("create", "command", "receive", "signal", "delete", "send")} == {
        "create": 1,
        "command": 3,
        "receive": 3,
        "signal": 3,
        "delete": 1,
        "send": 0,
    }
    # Steady state on a reused shell: Command + Receive + Signal = 3 round trips per command.
    assert stats["requests"] == 1 + 3 * 3 + 1
    assert stats["connections"] == 1  # one keep-alive connection for the whole conversation
    assert stats["soap_faults"] == stats["timeouts"] == stats["auth_failures"] == 0


def test_shell_options_reach_the_runner(endpoint: WSManEndpoint, recorder: Recorder) -> None:
    p = protocol(endpoint)
    env = {"WINRM_SCRIPT": "Get-VM", "LANG_HINT": "Grüße & <tags>"}
    shell_id = p.open_shell(env_vars=env, codepage=65001, noprofile=True, working_directory=r"C:\Temp")
    command_id = p.run_command(shell_id, "hostname")
    p.get_command_output(shell_id, command_id)

    shell = recorder.calls[0][0]
    assert shell.shell_id == shell_id
    assert shell.env == env
    assert shell.codepage == 65001
    assert shell.noprofile is True
    assert shell.working_directory == r"C:\Temp"
    assert shell.encode("Grüße") == "Grüße".encode()
    assert endpoint.shells[shell_id] == shell

    default_shell = protocol(endpoint).open_shell()
    assert endpoint.shells[default_shell].codepage == 437
    assert endpoint.shells[default_shell].noprofile is False
    assert endpoint.shells[default_shell].encode("Grüße ✓") == "Grüße ?".encode("cp437")


class SizeRecordingProtocol(Protocol):
    """Protocol that remembers the size of every response envelope."""

    sizes: list[int]

    def send_message(self, message: str) -> bytes:
        response: bytes = super().send_message(message)
        self.sizes.append(len(response))
        return response


def test_output_larger_than_one_envelope_arrives_byte_exact() -> None:
    stdout = bytes(range(256)) * 4096  # 1 MiB, every byte value
    stderr = b"warning: " + bytes(range(256)) * 300

    def runner(shell: Shell, command: str, arguments: list[str]) -> CommandResult:
        return CommandResult(stdout=stdout, stderr=stderr, exit_code=3)

    with WSManEndpoint(runner, users={USER: PASSWORD}) as ep:
        p = SizeRecordingProtocol(
            ep.url, transport="basic", username=USER, password=PASSWORD, server_cert_validation="ignore"
        )
        p.sizes = []
        shell_id = p.open_shell()
        command_id = p.run_command(shell_id, "big")
        sizes_before = len(p.sizes)
        assert p.get_command_output(shell_id, command_id) == (stdout, stderr, 3)
        receive_sizes = p.sizes[sizes_before:]
        p.cleanup_command(shell_id, command_id)
        p.close_shell(shell_id)

    assert ep.stats["receive"] == len(receive_sizes) >= 8  # 1 MiB in base64 needs >= 8 envelopes of 150 KiB
    assert max(receive_sizes) <= p.max_env_sz  # w:MaxEnvelopeSize respected (153600)
    assert max(receive_sizes) > p.max_env_sz - 8192  # and used: each envelope is nearly full


def test_receive_paging_uses_several_stream_chunks() -> None:
    def runner(shell: Shell, command: str, arguments: list[str]) -> CommandResult:
        return CommandResult(stdout=b"x" * 10_000)

    with WSManEndpoint(runner, chunk_size=4096) as ep:
        p = Protocol(ep.url, transport="basic", username="any", password="thing", server_cert_validation="ignore")
        shell_id = p.open_shell()
        command_id = p.run_command(shell_id, "x")
        stdout, _, code, done = p.get_command_output_raw(shell_id, command_id)
    assert (stdout, code, done) == (b"x" * 10_000, 0, True)
    assert ep.stats["receive"] == 1


def test_long_running_command_times_out_receive_and_pywinrm_retries() -> None:
    def runner(shell: Shell, command: str, arguments: list[str]) -> CommandResult:
        return CommandResult(stdout=b"slow output", run_seconds=1.6)

    with WSManEndpoint(runner) as ep:
        p = Protocol(
            ep.url,
            transport="basic",
            username="u",
            password="p",
            server_cert_validation="ignore",
            operation_timeout_sec=1,
            read_timeout_sec=5,
        )
        shell_id = p.open_shell()
        command_id = p.run_command(shell_id, "Get-VM")
        with pytest.raises(WinRMOperationTimeoutError):
            p.get_command_output_raw(shell_id, command_id)  # one PT1S Receive, command still running
        assert p.get_command_output(shell_id, command_id) == (b"slow output", b"", 0)

    stats = ep.stats.snapshot()
    assert stats["timeouts"] >= 1
    assert stats["receive"] == stats["timeouts"] + 1
    assert stats["soap_faults"] == stats["timeouts"]


def test_powershell_error_exit_code_and_clixml_stderr() -> None:
    def runner(shell: Shell, command: str, arguments: list[str]) -> CommandResult:
        return CommandResult(stderr=clixml_error("Get-VM : Hyper-V is not installed."), exit_code=1)

    with WSManEndpoint(runner) as ep:
        result = winrm.Session(ep.url, auth=("u", "p"), transport="basic", server_cert_validation="ignore").run_ps(
            "Get-VM"
        )

    assert result.status_code == 1
    lines = result.std_err.decode().splitlines()
    assert lines[0] == "Get-VM : Hyper-V is not installed."  # _clean_error_msg decoded the CLIXML
    assert lines[1].startswith("    + CategoryInfo          : NotSpecified")
    assert "FullyQualifiedErrorId" in result.std_err.decode()


@pytest.mark.parametrize(("length", "accepted"), [(CMD_MAX_COMMAND_LINE, True), (CMD_MAX_COMMAND_LINE + 1, False)])
def test_cmd_exe_command_line_limit(endpoint: WSManEndpoint, recorder: Recorder, length: int, accepted: bool) -> None:
    command = "powershell -encodedcommand"
    argument = "A" * (length - len(command) - 1)  # command + " " + argument is `length` characters long
    p = protocol(endpoint)
    shell_id = p.open_shell()
    command_id = p.run_command(shell_id, command, [argument])
    stdout, stderr, code = p.get_command_output(shell_id, command_id)

    if accepted:
        assert (code, stderr, len(recorder.calls)) == (0, b"", 1)
    else:
        assert (stdout, stderr, code) == (b"", b"The command line is too long.\r\n", 1)
        assert recorder.calls == []  # cmd.exe refused it; nothing ran


def test_command_line_limit_does_not_apply_without_cmd_shell(endpoint: WSManEndpoint) -> None:
    p = protocol(endpoint)
    shell_id = p.open_shell()
    command_id = p.run_command(shell_id, "x" * (CMD_MAX_COMMAND_LINE + 10), skip_cmd_shell=True)
    assert p.get_command_output(shell_id, command_id)[2] == 0


def test_stdin_is_passed_to_a_stdin_handler() -> None:
    seen: list[bytes] = []

    def runner(shell: Shell, command: str, arguments: list[str]) -> CommandResult:
        def finish(data: bytes) -> CommandResult:
            seen.append(data)
            return CommandResult(stdout=data.upper(), exit_code=7)

        return CommandResult(stdin_handler=finish)

    with WSManEndpoint(runner) as ep:
        p = Protocol(
            ep.url,
            transport="basic",
            username="u",
            password="p",
            server_cert_validation="ignore",
            operation_timeout_sec=1,
            read_timeout_sec=5,
        )
        shell_id = p.open_shell()
        command_id = p.run_command(shell_id, "powershell", ["-Command", "-"])
        with pytest.raises(WinRMOperationTimeoutError):
            p.get_command_output_raw(shell_id, command_id)  # still waiting for stdin
        p.send_command_input(shell_id, command_id, b"get-vm\r\n")
        p.send_command_input(shell_id, command_id, "exit\r\n", end=True)
        assert p.get_command_output(shell_id, command_id) == (b"GET-VM\r\nEXIT\r\n", b"", 7)

    assert seen == [b"get-vm\r\nexit\r\n"]
    assert ep.stats["send"] == 2


def test_expired_shell_gets_the_real_fault(endpoint: WSManEndpoint) -> None:
    p = protocol(endpoint)
    shell_id = p.open_shell()
    endpoint.expire_shells()

    with pytest.raises(WSManFaultError) as info:
        p.run_command(shell_id, "hostname")
    assert info.value.code == 500
    assert info.value.wsman_fault_code == SHELL_NOT_FOUND
    assert (info.value.fault_code, info.value.fault_subcode) == ("s:Sender", "w:InvalidSelectors")

    # Recovering the way the exporter will: open a new shell.
    new_shell = p.open_shell()
    command_id = p.run_command(new_shell, "hostname")
    assert p.get_command_output(new_shell, command_id)[0] == b"hostname"


def test_unknown_command_id_gets_the_real_fault(endpoint: WSManEndpoint) -> None:
    p = protocol(endpoint)
    shell_id = p.open_shell()
    with pytest.raises(WSManFaultError) as info:
        p.get_command_output_raw(shell_id, "6A3E2C1B-0000-4000-8000-000000000000")
    assert info.value.wsman_fault_code == SHELL_NOT_FOUND
    assert "command identifier that does not exist" in info.value.response

    command_id = p.run_command(shell_id, "hostname")
    p.cleanup_command(shell_id, command_id)
    with pytest.raises(WSManFaultError):  # a signalled command is gone
        p.cleanup_command(shell_id, command_id)


def test_idle_timeout_expires_unused_shells(endpoint: WSManEndpoint) -> None:
    p = protocol(endpoint)
    shell_id = p.open_shell()
    endpoint.shell_idle_timeout = 0.0  # every shell is now older than the idle timeout
    with pytest.raises(WSManFaultError) as info:
        p.run_command(shell_id, "hostname")
    assert info.value.wsman_fault_code == SHELL_NOT_FOUND
    assert endpoint.shell_count == 0


def test_max_shells_per_user_quota(endpoint: WSManEndpoint) -> None:
    endpoint.max_shells_per_user = 2
    p = protocol(endpoint)
    first = p.open_shell()
    p.open_shell()
    with pytest.raises(WSManFaultError) as info:
        p.open_shell()
    assert (info.value.wsman_fault_code, info.value.fault_subcode) == (2150859173, "w:QuotaLimit")
    p.close_shell(first)
    assert protocol(endpoint).open_shell()


def test_runner_exception_becomes_internal_error_fault() -> None:
    def runner(shell: Shell, command: str, arguments: list[str]) -> CommandResult:
        raise RuntimeError("simulator bug")

    with WSManEndpoint(runner) as ep:
        p = Protocol(ep.url, transport="basic", username="u", password="p", server_cert_validation="ignore")
        shell_id = p.open_shell()
        with pytest.raises(WSManFaultError) as info:
            p.run_command(shell_id, "hostname")
    assert (info.value.fault_code, info.value.fault_subcode) == ("s:Receiver", "w:InternalError")
    assert isinstance(ep.last_runner_error, RuntimeError)
    assert ep.stats["runner_errors"] == 1


def test_concurrent_clients_on_one_endpoint(endpoint: WSManEndpoint) -> None:
    clients, commands = 8, 5
    errors: list[BaseException] = []
    results: dict[int, list[bytes]] = {}

    def client(n: int) -> None:
        try:
            p = protocol(endpoint)
            shell_id = p.open_shell()
            outputs = []
            for i in range(commands):
                command_id = p.run_command(shell_id, f"client{n}", [f"cmd{i}"])
                outputs.append(p.get_command_output(shell_id, command_id)[0])
                p.cleanup_command(shell_id, command_id)
            p.close_shell(shell_id)
            results[n] = outputs
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert errors == []
    assert results == {n: [f"client{n} cmd{i}".encode() for i in range(commands)] for n in range(clients)}
    stats = endpoint.stats.snapshot()
    assert (stats["create"], stats["command"], stats["receive"], stats["signal"], stats["delete"]) == (
        clients,
        clients * commands,
        clients * commands,
        clients * commands,
        clients,
    )
    assert stats["connections"] == clients
    assert endpoint.shell_count == 0


def test_several_endpoints_are_independent(recorder: Recorder) -> None:
    with (
        WSManEndpoint(recorder, name="hv-a") as a,
        WSManEndpoint(lambda s, c, args: CommandResult(stdout=b"from b"), name="hv-b") as b,
    ):
        assert a.port != b.port
        a.latency_seconds = 30.0  # a slow host must not hold up another one
        blocked: list[BaseException] = []

        def call_a() -> None:
            try:
                Protocol(
                    a.url, transport="basic", username="u", password="p", server_cert_validation="ignore"
                ).open_shell()
            except BaseException as exc:
                blocked.append(exc)

        thread = threading.Thread(target=call_a)
        thread.start()
        b_session = winrm.Session(b.url, auth=("u", "p"), transport="basic", server_cert_validation="ignore")
        assert b_session.run_cmd("x").std_out == b"from b"
        a.stop()  # interrupts the latency sleep
        thread.join(10)
        assert not thread.is_alive()
        assert blocked  # the connection to a was dropped
