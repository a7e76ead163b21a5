"""PowerShell remoting (PSRP) over the simulated WS-Management listener: runspace pools and pipelines.

A PSRP runspace pool is a WS-Management shell whose resource URI names a PowerShell endpoint
(``http://schemas.microsoft.com/powershell/<configuration>``); its PSRP messages travel base64
encoded in the shell's streams. The protocol itself is psrpcore's server side (``ServerRunspacePool``,
``ServerPipeline``); this module carries its fragments over the same WS-Management actions as a WinRS
shell, as a real host does (shapes checked against pypsrp's recorded conversations with real hosts,
e.g. ``test_psrp_with_jea_configuration.yml``, ``test_psrp_multiple_commands.yml``):

- **Create** carries the first fragments (SESSION_CAPABILITY, INIT_RUNSPACEPOOL) in ``creationXml``;
  the answer echoes the client's ShellId in ``x:ResourceCreated`` and describes the shell in ``rsp:Shell``.
- **Receive** without a CommandId returns runspace-pool messages (``<rsp:Stream Name="stdout">``),
  with a CommandId a pipeline's, ending with ``rsp:CommandState`` Done once all is sent. It long-polls
  up to w:OperationTimeout, then answers the TimedOut fault.
- **Command** carries CREATE_PIPELINE in ``rsp:Arguments`` with CommandId = the pipeline id; **Send**
  carries further fragments (stdin) and host/key-exchange answers (pr); **Signal** ends a pipeline;
  **Delete** closes the pool.

Outgoing fragments are at most 32 KiB (what Windows uses), one per ``rsp:Stream``; runspace-pool
messages go one per Receive, one of the layouts pypsrp's recordings from real hosts show (in
``test_psrp_with_jea_configuration``: SESSION_CAPABILITY, APPLICATION_PRIVATE_DATA,
RUNSPACEPOOL_STATE each answer a Receive; ``test_psrp_error_failed`` has the first two in one
answer, as a host sends what is ready), pipeline messages as many as fit; a Receive answer never
exceeds the request's w:MaxEnvelopeSize. What a pipeline does is the host's business: a :data:`PipelineRunner`
gets the commands and returns output strings or an error record. psrpcore is not thread-safe: every
pool is used under this service's lock.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

from psrpcore import ServerPipeline, ServerRunspacePool, StreamType
from psrpcore._payload import PSRPPayload
from psrpcore.types import (
    ErrorCategory,
    ErrorCategoryInfo,
    ErrorRecord,
    NETException,
    PSInvocationState,
    RunspacePoolState,
)

from . import wsman_soap as soap
from .wsman_shells import DEFAULT_IDLE_TIMEOUT, Abort, CallContext, effective_idle, expired

logger = logging.getLogger(__name__)

#: Windows sends PSRP fragments of at most 32 KiB (MS-PSRP's default max fragment size).
FRAGMENT_BYTES = 32 * 1024


@dataclass(frozen=True)
class PipelineError:
    """A terminating error as PowerShell reports it (the pipeline ends Failed with this record)."""

    message: str
    fully_qualified_error_id: str
    category: ErrorCategory
    reason: str  # ErrorCategoryInfo.Reason: the exception's type name
    exception_types: tuple[str, ...]  # .NET type names of the exception, most derived first
    target: str | None = None


@dataclass
class PipelineResult:
    output: list[str] = field(default_factory=list)
    error: PipelineError | None = None
    run_seconds: float = 0.0  # output becomes available this long after the pipeline was created


@dataclass(frozen=True)
class Command:
    """One command of a pipeline as the host sees it."""

    text: str  # command name, or the script text
    is_script: bool
    parameters: dict[str, object]


@dataclass(frozen=True)
class PoolInfo:
    """Who opened a runspace pool on which endpoint."""

    shell_id: str
    username: str
    configuration: str


#: (pool, commands) -> result; called once per pipeline.
PipelineRunner = Callable[[PoolInfo, list[Command]], PipelineResult]


@dataclass
class _Pipeline:
    server: ServerPipeline
    ready_at: float = float("inf")  # monotonic time its output may be sent
    result: PipelineResult | None = None
    emitted: bool = False
    done: bool = False  # every message of a finished pipeline left


@dataclass
class _Pool:
    info: PoolInfo
    resource_uri: str
    server: ServerRunspacePool
    created: float
    last_used: float
    requested_idle: float | None
    pipelines: dict[str, _Pipeline] = field(default_factory=dict)
    # Outgoing payloads by target (None: the pool, else the pipeline's CommandId), each a run of
    # whole fragments of at most FRAGMENT_BYTES.
    queues: dict[str | None, list[bytes]] = field(default_factory=dict)


def _pipeline_id(command_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(command_id)
    except ValueError:
        raise soap.RequestError(soap.fault_schema(f"CommandId {command_id[:60]!r} is not a GUID")) from None


def _error_record(error: PipelineError) -> ErrorRecord:
    exception = NETException(Message=error.message)
    exception.PSObject.type_names = [*error.exception_types, "System.Object"]
    return ErrorRecord(
        Exception=exception,
        CategoryInfo=ErrorCategoryInfo(
            Category=error.category,
            Reason=error.reason,
            TargetName=error.target or "",
            TargetType="String" if error.target is not None else "",
        ),
        TargetObject=error.target,
        FullyQualifiedErrorId=error.fully_qualified_error_id,
    )


def _commands(server: ServerPipeline) -> list[Command]:
    metadata = server.metadata
    commands = getattr(metadata, "commands", None) or []
    return [
        Command(
            text=str(cmd.command_text),
            is_script=bool(cmd.is_script),
            parameters={str(name): value for name, value in cmd.parameters if name is not None},
        )
        for cmd in commands
    ]


class PsrpHost:
    """Runspace pools of one listener. ``runner`` answers pipelines, ``configurations`` lists the
    registered endpoints (lower-case names), ``pool_opened`` is told of every pool opened (a new
    ``wsmprovhost.exe`` on a real host)."""

    def __init__(
        self,
        runner: PipelineRunner,
        configurations: Callable[[], set[str]],
        machine: str,
        cond: threading.Condition,
        closed: Callable[[], bool],
        pool_opened: Callable[[PoolInfo], None] | None = None,
    ) -> None:
        self.runner = runner
        self.configurations = configurations
        self.machine = machine
        self.pool_opened = pool_opened
        self._cond = cond  # shared with the WinRS service: one lock, one stop, one expiry
        self._pools: dict[str, _Pool] = {}
        self.pools_opened = 0
        # Whether the WinRM service stopped (the WinRS service's flag, under the shared lock): then
        # every request, also a Receive waiting for output, drops its connection instead of answering.
        # An inference, as for WinRS shells: the service's process ends with the request in flight,
        # so nothing is left to write a SOAP answer; no recorded conversation shows a stop.
        self.closed = closed

    # -- bookkeeping (call with the lock held) ---------------------------------------------------

    def clear(self) -> None:
        self._pools.clear()

    def count(self) -> int:
        return len(self._pools)

    def pipeline_count(self) -> int:
        """Pipelines not yet ended by Signal."""
        return sum(len(pool.pipelines) for pool in self._pools.values())

    def expire(self, now: float, idle_limit: float | None, lifetime: float | None) -> None:
        for shell_id, pool in list(self._pools.items()):
            if expired(now, pool.created, pool.last_used, effective_idle(pool.requested_idle, idle_limit), lifetime):
                logger.debug("psrp runspace pool %s expired", shell_id)
                del self._pools[shell_id]

    def _pool(self, req: soap.Request) -> _Pool:
        if self.closed():
            raise Abort
        pool = self._pools.get((req.shell_id or "").upper())
        if pool is None or pool.resource_uri.lower() != req.resource_uri.lower():
            raise soap.RequestError(soap.fault_shell_not_found(), req.message_id)
        pool.last_used = time.monotonic()
        return pool

    @staticmethod
    def _drain(pool: _Pool) -> None:
        """Move psrpcore's outgoing messages into per-target queues of whole fragments."""
        while True:
            payload = pool.server.data_to_send(FRAGMENT_BYTES)
            if payload is None:
                return
            target = str(payload.pipeline_id).upper() if payload.pipeline_id is not None else None
            pool.queues.setdefault(target, []).extend(_fragments(payload.data))

    def _feed(self, pool: _Pool, data: bytes, pipeline_id: uuid.UUID | None) -> None:
        """Give incoming fragments to psrpcore and act on the events they complete."""
        pool.server.receive_data(PSRPPayload(data, StreamType.default, pipeline_id))
        while True:
            try:
                event = pool.server.next_event()
            except Exception as exc:  # a malformed fragment or message from the client
                logger.debug("psrp: refusing client data", exc_info=True)
                raise soap.RequestError(soap.fault_schema(f"PSRP data: {type(exc).__name__}")) from exc
            if event is None:
                break
            name = type(event).__name__
            if name == "CreatePipelineEvent" and event.pipeline_id is not None:
                self._start(pool, str(event.pipeline_id).upper())
        self._drain(pool)

    def _start(self, pool: _Pool, command_id: str) -> None:
        pipeline = pool.pipelines.get(command_id)
        if pipeline is None or pipeline.result is not None:
            return
        started = time.monotonic()  # run_seconds count from the pipeline's start, not the runner's end
        try:
            result = self.runner(pool.info, _commands(pipeline.server))
        except Exception as exc:
            logger.debug("psrp pipeline runner failed", exc_info=True)
            raise soap.RequestError(soap.fault_runner_failed(exc)) from exc
        pipeline.result = result
        pipeline.ready_at = started + max(result.run_seconds, 0.0)

    def _emit(self, pool: _Pool, pipeline: _Pipeline) -> None:
        """The pipeline's output and final state, once its simulated run time has passed."""
        result = pipeline.result
        if pipeline.emitted or result is None or time.monotonic() < pipeline.ready_at:
            return
        pipeline.emitted = True
        server = pipeline.server
        # Windows sends no PipelineState Running (psrpcore's start() would): change it silently.
        server._change_state(PSInvocationState.Running, emit=False)
        for item in result.output:
            server.write_output(item)
        if result.error is None:
            server.complete()
        else:
            # psrpcore has no public way to fail a pipeline; this is what its own stop() does.
            server._change_state(PSInvocationState.Failed, error=_error_record(result.error))
        self._drain(pool)

    # -- actions ----------------------------------------------------------------------------------

    def create(self, req: soap.Request, ctx: CallContext) -> str:
        configuration = req.resource_uri[len(soap.RESOURCE_URI_POWERSHELL) :]
        if configuration.lower() not in self.configurations():
            raise soap.RequestError(soap.fault_unknown_configuration(configuration, self.machine), req.message_id)
        shell = req.body
        if shell is None or shell.tag != f"{{{soap.NS_RSP}}}Shell":
            raise soap.RequestError(soap.fault_schema("Create needs an rsp:Shell body"), req.message_id)
        creation = shell.find("{http://schemas.microsoft.com/powershell}creationXml")
        if creation is None or not (creation.text or "").strip():
            raise soap.RequestError(soap.fault_schema("a PowerShell shell needs creationXml"), req.message_id)
        try:
            data = base64.b64decode((creation.text or "").strip(), validate=True)
        except ValueError:
            raise soap.RequestError(soap.fault_schema("creationXml is not base64"), req.message_id) from None
        body = soap.parse_create(req)
        shell_id = (shell.get("ShellId") or soap.new_resource_id()).upper()
        info = PoolInfo(shell_id=shell_id, username=ctx.username, configuration=configuration)
        now = time.monotonic()
        with self._cond:
            pool = _Pool(info, req.resource_uri, ServerRunspacePool(), now, now, body.idle_timeout)
            self._feed(pool, data, None)
            if pool.server.state != RunspacePoolState.Opened:
                raise soap.RequestError(soap.fault_schema("creationXml did not open a runspace pool"), req.message_id)
            self._pools[shell_id] = pool
            self.pools_opened += 1
            idle = min([t for t in (body.idle_timeout, DEFAULT_IDLE_TIMEOUT) if t is not None])
        if self.pool_opened is not None:
            self.pool_opened(info)
        return _create_response(req, ctx, info, req.resource_uri, idle)

    def command(self, req: soap.Request) -> str:
        line = req.body
        if line is None or line.tag != f"{{{soap.NS_RSP}}}CommandLine" or not line.get("CommandId"):
            raise soap.RequestError(soap.fault_schema("Command needs rsp:CommandLine with a CommandId"), req.message_id)
        command_id = str(line.get("CommandId")).upper()
        pipeline_id = _pipeline_id(command_id)
        try:
            data = b"".join(
                base64.b64decode((arg.text or "").strip(), validate=True)
                for arg in line.iterfind(f"{{{soap.NS_RSP}}}Arguments")
            )
        except ValueError:
            raise soap.RequestError(soap.fault_schema("rsp:Arguments is not base64"), req.message_id) from None
        with self._cond:
            pool = self._pool(req)
            if command_id in pool.pipelines:
                raise soap.RequestError(soap.fault_schema("CommandId already in use"), req.message_id)
            # psrpcore wants the pipeline registered before its CREATE_PIPELINE arrives.
            pool.pipelines[command_id] = _Pipeline(ServerPipeline(pool.server, pipeline_id))
            self._feed(pool, data, pipeline_id)
            self._cond.notify_all()
        body = f"<rsp:CommandResponse><rsp:CommandId>{command_id}</rsp:CommandId></rsp:CommandResponse>"
        return soap.envelope(f"{soap.NS_RSP}/CommandResponse", req.message_id, body)

    def send(self, req: soap.Request) -> str:
        node = req.body
        stream = node.find(f"{{{soap.NS_RSP}}}Stream") if node is not None else None
        if stream is None:
            raise soap.RequestError(soap.fault_schema("Send needs rsp:Stream"), req.message_id)
        try:
            data = base64.b64decode((stream.text or "").strip(), validate=True)
        except ValueError:
            raise soap.RequestError(soap.fault_schema("rsp:Stream is not base64"), req.message_id) from None
        command_id = (stream.get("CommandId") or "").upper() or None
        with self._cond:
            pool = self._pool(req)
            if command_id is not None and command_id not in pool.pipelines:
                raise soap.RequestError(soap.fault_command_not_found(), req.message_id)
            self._feed(pool, data, _pipeline_id(command_id) if command_id else None)
            self._cond.notify_all()
        return soap.send_response(req.message_id)

    def receive(self, req: soap.Request) -> str:
        node = req.body
        desired = node.find(f"{{{soap.NS_RSP}}}DesiredStream") if node is not None else None
        if desired is None:
            raise soap.RequestError(soap.fault_schema("Receive needs rsp:DesiredStream"), req.message_id)
        command_id = (desired.get("CommandId") or "").upper() or None
        head, tail = soap.receive_envelope_parts(req.message_id)
        budget = req.max_envelope - len(head.encode()) - len(tail.encode())
        deadline = time.monotonic() + req.operation_timeout
        with self._cond:
            while True:
                pool = self._pool(req)
                pipeline = None
                if command_id is not None:
                    pipeline = pool.pipelines.get(command_id)
                    if pipeline is None:
                        raise soap.RequestError(soap.fault_command_not_found(), req.message_id)
                    self._emit(pool, pipeline)
                queue = pool.queues.get(command_id, [])
                if queue or (pipeline is not None and pipeline.emitted and not pipeline.done):
                    break
                now = time.monotonic()
                if now >= deadline:
                    raise soap.RequestError(soap.fault_operation_timeout(), req.message_id)
                wake = deadline if pipeline is None or pipeline.emitted else min(deadline, pipeline.ready_at)
                self._cond.wait(max(0.0, wake - now))
            content = self._page(pool, command_id, pipeline, budget)
        return f"{head}{content}{tail}"

    @staticmethod
    def _page(pool: _Pool, command_id: str | None, pipeline: _Pipeline | None, budget: int) -> str:
        queue = pool.queues.setdefault(command_id, [])
        done_tail = _command_state(command_id, done=True) if command_id else ""
        avail = budget - len(done_tail)
        parts: list[str] = []
        while queue:
            element = _stream(command_id, queue[0])
            if len(element) > avail:
                break
            parts.append(element)
            avail -= len(element)
            fragment = queue.pop(0)
            if command_id is None and fragment[16] & _END_FRAGMENT:
                break  # runspace-pool messages one per Receive: a layout real hosts use (see the module docstring)
        if not parts and queue:
            raise soap.RequestError(soap.fault_envelope_too_small())
        if command_id is not None and pipeline is not None:
            finished = pipeline.emitted and not queue
            pipeline.done = finished
            parts.append(done_tail if finished else _command_state(command_id, done=False))
        return "".join(parts)

    def signal(self, req: soap.Request) -> str:
        command_id, code = soap.parse_signal(req)
        with self._cond:
            pool = self._pool(req)
            pipeline = pool.pipelines.pop(command_id.upper(), None)
            if pipeline is None:
                raise soap.RequestError(soap.fault_command_not_found(), req.message_id)
            # terminate (after the pipeline ended) and ctrl_c (stop it) both end it here.
            logger.debug("psrp signal %s", code.rsplit("/", 1)[-1])
            pool.server.pipeline_table.pop(pipeline.server.pipeline_id, None)
            pool.queues.pop(command_id.upper(), None)
            self._cond.notify_all()
        return soap.signal_response(req.message_id)

    def delete(self, req: soap.Request) -> str:
        with self._cond:
            self._pool(req)
            del self._pools[(req.shell_id or "").upper()]
            self._cond.notify_all()
        return soap.delete_response(req.message_id)

    def dispatch(self, name: str, req: soap.Request, ctx: CallContext) -> str:
        if self.closed():
            raise Abort
        if name == "create":
            return self.create(req, ctx)
        if name == "command":
            return self.command(req)
        if name == "receive":
            return self.receive(req)
        if name == "send":
            return self.send(req)
        if name == "signal":
            return self.signal(req)
        return self.delete(req)


_END_FRAGMENT = 0x2  # MS-PSRP 2.2.4: the flags byte after ObjectId and FragmentId; 0x1 start, 0x2 end


def _fragments(data: bytes) -> list[bytes]:
    """Split a run of PSRP fragments (ObjectId 8, FragmentId 8, flags 1, length 4 big-endian, blob)."""
    fragments = []
    pos = 0
    while pos + 21 <= len(data):
        end = pos + 21 + int.from_bytes(data[pos + 17 : pos + 21], "big")
        fragments.append(data[pos:end])
        pos = end
    return fragments


def _stream(command_id: str | None, data: bytes) -> str:
    """One rsp:Stream per fragment, as Windows sends them (pypsrp's recorded conversations)."""
    attr = f' CommandId="{command_id}"' if command_id else ""
    return f'<rsp:Stream Name="stdout"{attr}>{base64.b64encode(data).decode("ascii")}</rsp:Stream>'


def _command_state(command_id: str | None, *, done: bool) -> str:
    if done:
        return (
            f'<rsp:CommandState CommandId="{command_id}" State="{soap.STATE_DONE}">'
            "<rsp:ExitCode>0</rsp:ExitCode></rsp:CommandState>"
        )
    return f'<rsp:CommandState CommandId="{command_id}" State="{soap.STATE_RUNNING}"></rsp:CommandState>'


def _create_response(req: soap.Request, ctx: CallContext, info: PoolInfo, resource_uri: str, idle: float) -> str:
    """x:ResourceCreated (pypsrp echoes its SelectorSet on every later request) and the rsp:Shell
    description a real PowerShell endpoint returns (the recorded JEA conversation's layout)."""
    uri = escape(resource_uri)
    body = (
        f"<x:ResourceCreated><a:Address>{escape(ctx.address)}</a:Address><a:ReferenceParameters>"
        f"<w:ResourceURI>{uri}</w:ResourceURI><w:SelectorSet>"
        f'<w:Selector Name="ShellId">{info.shell_id}</w:Selector></w:SelectorSet></a:ReferenceParameters>'
        f'</x:ResourceCreated><rsp:Shell xmlns:rsp="{soap.NS_RSP}"><rsp:ShellId>{info.shell_id}</rsp:ShellId>'
        f"<rsp:ResourceUri>{uri}</rsp:ResourceUri><rsp:Owner>{escape(ctx.username)}</rsp:Owner>"
        f"<rsp:ClientIP>{escape(ctx.client_ip)}</rsp:ClientIP><rsp:ProcessId>{4000 + abs(hash(info.shell_id)) % 4000}"
        f"</rsp:ProcessId><rsp:IdleTimeOut>{soap.format_seconds(idle)}</rsp:IdleTimeOut>"
        "<rsp:InputStreams>stdin pr</rsp:InputStreams><rsp:OutputStreams>stdout</rsp:OutputStreams>"
        "<rsp:MaxIdleTimeOut>PT2147483.647S</rsp:MaxIdleTimeOut><rsp:Locale>en-US</rsp:Locale>"
        "<rsp:DataLocale>en-US</rsp:DataLocale><rsp:CompressionMode>NoCompression</rsp:CompressionMode>"
        "<rsp:ProfileLoaded>Yes</rsp:ProfileLoaded><rsp:Encoding>UTF8</rsp:Encoding><rsp:BufferMode>Block"
        "</rsp:BufferMode><rsp:State>Connected</rsp:State><rsp:ShellRunTime>P0DT0H0M0S</rsp:ShellRunTime>"
        "<rsp:ShellInactivity>P0DT0H0M0S</rsp:ShellInactivity></rsp:Shell>"
    )
    return soap.envelope("http://schemas.xmlsoap.org/ws/2004/09/transfer/CreateResponse", req.message_id, body)
