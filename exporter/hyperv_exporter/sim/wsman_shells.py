"""The WinRS shell service of one simulated host: shells, commands, output paging, the action dispatcher.

This is the state machine behind the six WS-Management actions pywinrm uses (reference §4.2 table):
Create -> Command -> Receive* -> Signal -> Delete, plus Send for stdin. It knows nothing about HTTP:
:meth:`ShellHost.dispatch` takes a parsed :class:`~.wsman_soap.Request` and returns the response envelope,
or raises :class:`~.wsman_soap.RequestError` carrying the SOAP fault a real host would answer.

Timing model: a command's output (all of it) becomes available ``run_seconds`` after the Command request
(after stdin end-of-file for commands that read stdin, see :class:`CommandResult`). Until then Receive
blocks for at most the request's w:OperationTimeout and then answers the TimedOut fault, exactly what
pywinrm's ``get_command_output`` loop expects (reference §4.4, §4.9 item 5).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import wsman_soap as soap
from .wsman_clixml import encode_console
from .wsman_stats import WSManStats

if TYPE_CHECKING:
    from .wsman_psrp import PsrpHost

logger = logging.getLogger(__name__)

#: cmd.exe's maximum command-line length (reference §4.7): pywinrm runs commands with
#: WINRS_SKIP_CMD_SHELL=FALSE, so WinRS starts them through ``cmd /c``.
CMD_MAX_COMMAND_LINE = 8191
CMD_TOO_LONG = b"The command line is too long.\r\n"

#: WinRM's default shell IdleTimeout (7200000 ms), as the real Create response reports it (§4.3).
DEFAULT_IDLE_TIMEOUT = 7200.0
#: WinRM 3.0's default MaxShellsPerUser.
DEFAULT_MAX_SHELLS_PER_USER = 30

STREAMS = ("stdout", "stderr")


def effective_idle(requested: float | None, limit: float | None) -> float | None:
    """A shell's idle timeout: the smaller of the client's IdleTimeOut and the listener's limit."""
    limits = [t for t in (requested, limit) if t is not None]
    return min(limits) if limits else None


def expired(now: float, created: float, last_used: float, idle: float | None, lifetime: float | None) -> bool:
    """Whether the host has dropped a shell (a WinRS shell or a runspace pool): idle or too old."""
    return (idle is not None and now - last_used > idle) or (lifetime is not None and now - created > lifetime)


@dataclass(frozen=True)
class Shell:
    """One WinRS shell as the runner sees it (from the Create request)."""

    shell_id: str
    env: dict[str, str]  # rsp:Environment/rsp:Variable
    codepage: int  # WINRS_CODEPAGE (437 by default)
    noprofile: bool  # WINRS_NOPROFILE
    username: str  # authenticated user ("" when the listener has no auth)
    working_directory: str | None = None  # rsp:WorkingDirectory, if the client sent one

    def encode(self, text: str) -> bytes:
        """``text`` as a console program in this shell writes it (its code page; ``?`` for unmappable)."""
        return encode_console(text, self.codepage)


@dataclass
class CommandResult:
    """What one command produces.

    ``stdin_handler`` is for commands that read stdin (``powershell -Command -`` fed through pywinrm's
    ``send_command_input``): when set, the rest of this result is ignored, the command waits for the
    client's Send with ``End="true"``, then ``stdin_handler(all stdin bytes)`` is called once and its
    result is the command's output, with ``run_seconds`` counted from that end-of-file.
    """

    stdout: bytes = b""
    stderr: bytes = b""
    exit_code: int = 0
    run_seconds: float = 0.0  # output becomes available this long after the Command (simulated run time)
    stdin_handler: Callable[[bytes], CommandResult] | None = None


#: (shell, command, arguments) -> result; called once per Command request. ``arguments`` holds the text of
#: each rsp:Arguments element (pywinrm sends one, with its arguments joined by blanks).
CommandRunner = Callable[[Shell, str, list[str]], CommandResult]

#: (user name, resource URI) -> None to admit the user to that plug-in or endpoint, or the fault to answer
#: its Create with (a real host checks the plug-in's security descriptor, e.g. "Access is denied").
Authorizer = Callable[[str, str], "soap.SoapFault | None"]


class Abort(Exception):
    """The listener is stopping: drop the connection without an answer."""


@dataclass
class _Command:
    command_id: str
    ready_at: float  # monotonic time the output becomes available (inf while waiting for stdin)
    result: CommandResult | None  # None until stdin_handler ran
    stdin_handler: Callable[[bytes], CommandResult] | None
    stdin: bytearray = field(default_factory=bytearray)
    stdin_closed: bool = False
    sent: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STREAMS, 0))


@dataclass
class _ShellState:
    shell: Shell
    created: float
    last_used: float
    requested_idle: float | None  # rsp:IdleTimeOut from the client, if any
    commands: dict[str, _Command] = field(default_factory=dict)


@dataclass(frozen=True)
class CallContext:
    """Facts about the HTTP request that the shell service needs."""

    username: str
    client_ip: str
    address: str  # the listener URL, echoed as a:Address in CreateResponse


def _streams_of(result: CommandResult) -> dict[str, bytes]:
    return {"stdout": result.stdout, "stderr": result.stderr}


def page_output(
    command_id: str,
    result: CommandResult,
    sent: dict[str, int],
    budget: int,
    chunk_size: int,
) -> tuple[str, bool]:
    """Next ReceiveResponse body content for a finished command; advances ``sent`` in place.

    ``budget`` is what w:MaxEnvelopeSize leaves after the envelope head and tail. Output goes out as
    rsp:Stream chunks of at most ``chunk_size`` raw bytes, stdout before stderr. When everything fits, the
    content ends with the empty ``End="true"`` streams and CommandState Done + ExitCode (real layout,
    reference §4.3); otherwise with CommandState Running, and the next Receive continues.
    Returns ``(xml, done)``.
    """
    end_streams = "".join(soap.stream_element(name, command_id, b"", end=True) for name in STREAMS)
    final_tail = end_streams + soap.command_state(command_id, exit_code=result.exit_code)
    running_tail = soap.command_state(command_id, exit_code=None)
    # Reserve the larger (final) tail so that whatever we add still fits if it turns out to be the last.
    avail = budget - len(final_tail)
    parts: list[str] = []
    streams = _streams_of(result)
    for name in STREAMS:
        data, pos = streams[name], sent[name]
        overhead = soap.stream_overhead(name, command_id)
        while pos < len(data):
            n = min(chunk_size, len(data) - pos, ((avail - overhead) // 4) * 3)
            if n <= 0:
                break
            element = soap.stream_element(name, command_id, data[pos : pos + n])
            parts.append(element)
            avail -= len(element)
            pos += n
        sent[name] = pos
        if pos < len(data):
            break
    done = all(sent[name] >= len(streams[name]) for name in STREAMS)
    if (not parts and not done) or avail < 0:
        raise soap.RequestError(soap.fault_envelope_too_small())
    parts.append(final_tail if done else running_tail)
    return "".join(parts), done


class ShellHost:
    """Shells and commands of one listener, safe to drive from many connection threads."""

    def __init__(
        self,
        runner: CommandRunner,
        stats: WSManStats,
        *,
        chunk_size: int,
        max_shells_per_user: int | None,
        shell_idle_timeout: float | None,
        shell_lifetime: float | None,
        authorize: Authorizer | None = None,
    ) -> None:
        self.runner = runner
        self.authorize = authorize
        # PowerShell endpoints (PSRP runspace pools), when the listener serves them (attach_psrp).
        self.psrp: PsrpHost | None = None
        self.stats = stats
        self.chunk_size = chunk_size
        self.max_shells_per_user = max_shells_per_user
        self.shell_idle_timeout = shell_idle_timeout
        self.shell_lifetime = shell_lifetime
        self.last_runner_error: BaseException | None = None
        self._cond = threading.Condition()
        self._shells: dict[str, _ShellState] = {}
        self._closed = False

    # --- lifecycle --------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """The WinRM service stopped (read with :attr:`cond` held): requests drop their connections."""
        return self._closed

    @property
    def cond(self) -> threading.Condition:
        """The lock and wake-up of every shell and pool of this listener."""
        return self._cond

    def open(self) -> None:
        with self._cond:
            self._closed = False

    def close(self) -> None:
        """Service stopped: forget every shell and wake blocked Receives so they drop their connections."""
        with self._cond:
            self._closed = True
            self._shells.clear()
            if self.psrp is not None:
                self.psrp.clear()
            self._cond.notify_all()

    def expire_all(self) -> None:
        with self._cond:
            self._shells.clear()
            if self.psrp is not None:
                self.psrp.clear()
            self._cond.notify_all()

    def counts(self) -> tuple[int, int]:
        """(open cmd shells, open commands and PSRP pipelines), after expiring idle shells and pools."""
        with self._cond:
            self._expire_locked(time.monotonic())
            pipelines = self.psrp.pipeline_count() if self.psrp is not None else 0
            return len(self._shells), sum(len(s.commands) for s in self._shells.values()) + pipelines

    # --- dispatch ---------------------------------------------------------------------------------

    def dispatch(self, req: soap.Request, ctx: CallContext) -> str:
        """Run one parsed request; return the response envelope or raise RequestError."""
        name = soap.ACTIONS.get(req.action)
        if name is None:
            raise soap.RequestError(soap.fault_action_not_supported(req.action), req.message_id)
        self.stats.incr(name)
        logger.debug("wsman %s shell=%s", name, req.shell_id)
        try:
            if name == "create" and self.authorize is not None:
                fault = self.authorize(ctx.username, req.resource_uri)
                if fault is not None:
                    self.stats.incr("access_denied")
                    raise soap.RequestError(fault)
            if req.resource_uri.lower().startswith(soap.RESOURCE_URI_POWERSHELL):
                if self.psrp is None:
                    name_part = req.resource_uri[len(soap.RESOURCE_URI_POWERSHELL) :]
                    raise soap.RequestError(soap.fault_unknown_configuration(name_part, "localhost"))
                with self._cond:
                    self._expire_locked(time.monotonic())
                return self.psrp.dispatch(name, req, ctx)
            if name == "create":
                return self._create(req, ctx)
            if name == "command":
                return self._command(req)
            if name == "receive":
                return self._receive(req)
            if name == "send":
                return self._send(req)
            if name == "signal":
                return self._signal(req)
            return self._delete(req)
        except soap.RequestError as exc:
            if exc.message_id is None:
                exc.message_id = req.message_id
            raise

    # --- helpers (call with self._cond held) --------------------------------------------------------

    def _expire_locked(self, now: float) -> None:
        if self.psrp is not None:
            self.psrp.expire(now, self.shell_idle_timeout, self.shell_lifetime)
        for shell_id, state in list(self._shells.items()):
            idle = effective_idle(state.requested_idle, self.shell_idle_timeout)
            if expired(now, state.created, state.last_used, idle, self.shell_lifetime):
                logger.debug("wsman shell %s expired", shell_id)
                del self._shells[shell_id]

    def _shell_locked(self, req: soap.Request) -> _ShellState:
        if self._closed:
            raise Abort
        now = time.monotonic()
        self._expire_locked(now)
        state = self._shells.get(req.shell_id or "")
        if state is None:
            raise soap.RequestError(soap.fault_shell_not_found(), req.message_id)
        state.last_used = now
        return state

    @staticmethod
    def _command_locked(state: _ShellState, command_id: str) -> _Command:
        command = state.commands.get(command_id)
        if command is None:
            raise soap.RequestError(soap.fault_command_not_found())
        return command

    def _run(self, func: Callable[[], CommandResult]) -> CommandResult:
        """Call runner code outside the lock; a failure becomes the shell plugin's InternalError fault."""
        try:
            result = func()
            if not isinstance(result, CommandResult):
                raise TypeError(f"runner returned {type(result).__name__}, not CommandResult")
        except Exception as exc:
            self.stats.incr("runner_errors")
            self.last_runner_error = exc
            logger.debug("wsman runner failed", exc_info=True)
            raise soap.RequestError(soap.fault_runner_failed(exc)) from exc
        return result

    # --- actions ----------------------------------------------------------------------------------

    def _create(self, req: soap.Request, ctx: CallContext) -> str:
        body = soap.parse_create(req)
        raw_codepage = req.options.get("WINRS_CODEPAGE", "437") or "437"
        try:
            codepage = int(raw_codepage)
        except ValueError:
            raise soap.RequestError(soap.fault_schema(f"WINRS_CODEPAGE {raw_codepage!r}")) from None
        shell = Shell(
            shell_id=soap.new_resource_id(),
            env=body.env,
            codepage=codepage,
            noprofile=soap.option_true(req.options, "WINRS_NOPROFILE"),
            username=ctx.username,
            working_directory=body.working_directory,
        )
        now = time.monotonic()
        with self._cond:
            if self._closed:
                raise Abort
            self._expire_locked(now)
            limit = self.max_shells_per_user
            if limit is not None and sum(s.shell.username == ctx.username for s in self._shells.values()) >= limit:
                raise soap.RequestError(soap.fault_max_shells(limit))
            state = _ShellState(shell, created=now, last_used=now, requested_idle=body.idle_timeout)
            self._shells[shell.shell_id] = state
            idle = effective_idle(state.requested_idle, self.shell_idle_timeout)
        return soap.create_response(
            req.message_id,
            address=ctx.address,
            shell_id=shell.shell_id,
            owner=ctx.username,
            client_ip=ctx.client_ip,
            idle_timeout=DEFAULT_IDLE_TIMEOUT if idle is None else idle,
            input_streams=body.input_streams,
            output_streams=body.output_streams,
        )

    def _command(self, req: soap.Request) -> str:
        body = soap.parse_command(req)
        with self._cond:
            shell = self._shell_locked(req).shell
        started = time.monotonic()
        line = " ".join([body.command, *body.arguments])
        if not soap.option_true(req.options, "WINRS_SKIP_CMD_SHELL") and len(line) > CMD_MAX_COMMAND_LINE:
            # cmd.exe refuses before anything runs; the runner never sees the command (reference §4.7).
            result = CommandResult(stderr=CMD_TOO_LONG, exit_code=1)
        else:
            result = self._run(lambda: self.runner(shell, body.command, list(body.arguments)))
        handler = result.stdin_handler
        command = _Command(
            command_id=soap.new_resource_id(),
            ready_at=float("inf") if handler else started + max(result.run_seconds, 0.0),
            result=None if handler else result,
            stdin_handler=handler,
        )
        with self._cond:
            # The shell may have been deleted or expired while the runner ran.
            self._shell_locked(req).commands[command.command_id] = command
        return soap.command_response(req.message_id, command.command_id)

    def _receive(self, req: soap.Request) -> str:
        command_id = soap.parse_receive(req)
        head, tail = soap.receive_envelope_parts(req.message_id)
        budget = req.max_envelope - len(head.encode()) - len(tail.encode())
        deadline = time.monotonic() + req.operation_timeout
        with self._cond:
            while True:
                command = self._command_locked(self._shell_locked(req), command_id)
                result, now = command.result, time.monotonic()
                if result is not None and now >= command.ready_at:
                    break
                if now >= deadline:
                    self.stats.incr("timeouts")
                    raise soap.RequestError(soap.fault_operation_timeout())
                # Woken early by Send (stdin EOF), Signal, Delete, expiry and stop.
                self._cond.wait(min(command.ready_at, deadline) - now)
            content, _ = page_output(command_id, result, command.sent, budget, self.chunk_size)
        return f"{head}{content}{tail}"

    def _send(self, req: soap.Request) -> str:
        body = soap.parse_send(req)
        with self._cond:
            command = self._command_locked(self._shell_locked(req), body.command_id)
            if command.stdin_closed:
                # Input after end-of-file has nowhere to go; accepted and dropped (simulator choice).
                return soap.send_response(req.message_id)
            command.stdin += body.data
            if not body.end:
                return soap.send_response(req.message_id)
            command.stdin_closed = True
            handler, data = command.stdin_handler, bytes(command.stdin)
        if handler is not None:
            result = self._run(lambda: handler(data))
            with self._cond:
                command.result = result
                command.ready_at = time.monotonic() + max(result.run_seconds, 0.0)
                self._cond.notify_all()
        return soap.send_response(req.message_id)

    def _signal(self, req: soap.Request) -> str:
        command_id, code = soap.parse_signal(req)
        with self._cond:
            state = self._shell_locked(req)
            self._command_locked(state, command_id)
            # terminate (what cleanup_command sends), ctrl_c and ctrl_break all end the process here.
            logger.debug("wsman signal %s", code.rsplit("/", 1)[-1])
            del state.commands[command_id]
            self._cond.notify_all()
        return soap.signal_response(req.message_id)

    def _delete(self, req: soap.Request) -> str:
        with self._cond:
            self._shell_locked(req)
            del self._shells[req.shell_id or ""]
            self._cond.notify_all()
        return soap.delete_response(req.message_id)

    def shells(self) -> Mapping[str, Shell]:
        """Open shells by ShellId (a copy), for tests and the fleet simulator's introspection."""
        with self._cond:
            self._expire_locked(time.monotonic())
            return {shell_id: state.shell for shell_id, state in self._shells.items()}
