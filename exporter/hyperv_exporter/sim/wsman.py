"""A simulated Windows WinRM listener that speaks real WS-Management (WinRS) over HTTP(S).

The exporter talks to Hyper-V hosts with pywinrm's low-level ``winrm.protocol.Protocol``; this module
lets tests and the fleet simulator run that whole path against real pywinrm, real ``requests`` and real
sockets. One :class:`WSManEndpoint` is one host's listener at ``/wsman``; the Hyper-V side plugs in as a
:data:`CommandRunner` that turns a command line into stdout/stderr/exit code.

Wire behaviour follows ``/work/shared/reference/hyperv-formats-and-winrm.md`` §4 (what pywinrm 0.5.0 sends
and parses, real server envelopes and faults) and §4.9 (what a simulator must do)::

    ep = WSManEndpoint(runner, users={"monitor": "s3cret"})
    with ep:                                   # start() ... stop()
        p = winrm.protocol.Protocol(ep.url, transport="basic", username="monitor", password="s3cret")
        shell = p.open_shell(codepage=65001)
        cid = p.run_command(shell, "powershell", ["-encodedcommand", "..."])
        out, err, rc = p.get_command_output(shell, cid)
        p.cleanup_command(shell, cid)
        p.close_shell(shell)
    ep.stats.snapshot()  # {'requests': 5, 'connections': 1, 'create': 1, 'command': 1, 'receive': 1, ...}

Module layout: ``wsman_soap`` (envelopes, faults, request parsing), ``wsman_shells`` (shells, commands,
output paging, the action dispatcher), ``wsman_http`` (connections, auth, fault injection),
``wsman_clixml`` (PowerShell's CLIXML stderr), ``wsman_stats`` (counters); this module ties them together.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from .wsman_clixml import clixml_error, encode_console
from .wsman_http import Fault, FaultKind, WSManServer
from .wsman_psrp import PipelineRunner, PoolInfo, PsrpHost
from .wsman_shells import (
    CMD_MAX_COMMAND_LINE,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_SHELLS_PER_USER,
    Abort,
    Authorizer,
    CommandResult,
    CommandRunner,
    Shell,
    ShellHost,
)
from .wsman_stats import STAT_KEYS, WSManStats

__all__ = [
    "CMD_MAX_COMMAND_LINE",
    "STAT_KEYS",
    "CommandResult",
    "CommandRunner",
    "Fault",
    "FaultKind",
    "Shell",
    "WSManEndpoint",
    "WSManStats",
    "clixml_error",
    "encode_console",
]

logger = logging.getLogger(__name__)

#: How long stop() waits for connection threads to finish after closing their sockets. Only a runner
#: that blocks can keep one alive that long; the thread is a daemon and is left behind.
_STOP_JOIN_SECONDS = 2.0


class WSManEndpoint:
    """One simulated host's WinRM listener at ``/wsman``.

    ``users``: user -> password for Basic and, with ``ntlm`` (default), NTLM via HTTP Negotiate with
    SPNEGO message encryption (``wsman_ntlm``); ``None``: no auth (the Basic user name, if any, still
    becomes ``Shell.username``). With ``ssl_context`` the listener serves HTTPS; if that context verifies
    client certificates, pywinrm's ``transport="certificate"`` works too (subject CN = user name, must be
    in ``users``). ``allow_unencrypted=False`` refuses plaintext SOAP over HTTP, like a default Windows
    listener (AllowUnencrypted=false). ``latency_seconds`` is added to every request's round trip,
    half before handling it and half before answering (settable at any time).

    Beyond the contract: ``chunk_size`` (raw bytes per rsp:Stream), ``max_shells_per_user`` (WinRM's
    MaxShellsPerUser, 30 by default, ``None`` = unlimited), ``shell_idle_timeout`` (default WinRM's
    7200 s; ``None`` = never), ``shell_lifetime`` (``None`` by default; set e.g. 8 h to model hosts that
    recycle shells). stop() is a WinRM service stop: open shells are forgotten, so a later start() is a
    service restart on the same port.

    PowerShell remoting (PSRP, ``wsman_psrp``): with ``psrp_runner`` the listener also serves the
    endpoints ``configurations()`` names (lower-case; default ``microsoft.powershell``) as runspace pools;
    ``pool_opened`` is told of every pool opened. ``authorize(user, resource URI)`` decides who may
    create a cmd shell or a pool (``None``: everyone).
    """

    def __init__(
        self,
        runner: CommandRunner,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        users: Mapping[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        latency_seconds: float = 0.0,
        name: str = "wsman",
        chunk_size: int = 4096,
        max_shells_per_user: int | None = DEFAULT_MAX_SHELLS_PER_USER,
        shell_idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        shell_lifetime: float | None = None,
        ntlm: bool = True,
        allow_unencrypted: bool = True,
        authorize: Authorizer | None = None,
        psrp_runner: PipelineRunner | None = None,
        configurations: Callable[[], set[str]] | None = None,
        pool_opened: Callable[[PoolInfo], None] | None = None,
    ) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        self.name = name
        # Kept by reference: changing the mapping later (a password rotation) applies to the next request.
        self.users: Mapping[str, str] | None = users
        self.ssl_context = ssl_context
        self.ntlm = ntlm
        self.allow_unencrypted = allow_unencrypted
        self.latency_seconds = latency_seconds
        self.stats = WSManStats()
        self.service = ShellHost(
            runner,
            self.stats,
            chunk_size=chunk_size,
            max_shells_per_user=max_shells_per_user,
            shell_idle_timeout=shell_idle_timeout,
            shell_lifetime=shell_lifetime,
            authorize=authorize,
        )
        if psrp_runner is not None:
            self.service.psrp = PsrpHost(
                psrp_runner,
                configurations or (lambda: {"microsoft.powershell"}),
                machine=name,
                cond=self.service.cond,
                closed=lambda: self.service.closed,
                pool_opened=pool_opened,
            )
        self._bind_host = host
        self._port = port
        self._lifecycle = threading.Lock()
        self._server: WSManServer | None = None
        self._serve_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._stopping.set()  # not started yet: waits abort at once
        self._connections: dict[Any, threading.Thread] = {}
        self._connections_lock = threading.Lock()
        # The fault and its remaining count; the generation wakes requests hanging on an older fault.
        self._fault_cond = threading.Condition()
        self._fault: Fault | None = None
        self._fault_left: int | None = None
        self._fault_generation = 0

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Listen and serve in background threads. Idempotent; after stop() it restarts on the same port."""
        with self._lifecycle:
            if self._server is not None:
                return
            self.service.open()
            server = WSManServer(self, (self._bind_host, self._port))
            self._port = int(server.server_address[1])
            self._stopping.clear()
            thread = threading.Thread(target=server.serve, name=f"{self.name}-accept", daemon=True)
            self._server, self._serve_thread = server, thread
            thread.start()
        logger.debug("%s: listening on %s", self.name, self.url)

    def stop(self) -> None:
        """Stop listening, drop every connection (hanging requests included) and forget all shells.
        Idempotent; returns promptly whatever fault is active. Afterwards connections are refused."""
        with self._lifecycle:
            server, thread = self._server, self._serve_thread
            if server is None or thread is None:
                return
            self._server = self._serve_thread = None
            self._stopping.set()
            with self._fault_cond:
                self._fault_cond.notify_all()
            self.service.close()
            server.wake()
            thread.join()
            server.server_close()
            with self._connections_lock:
                connections = dict(self._connections)
            for sock in connections:
                # The plain-socket shutdown, also for TLS sockets: it wakes a thread blocked reading
                # without touching the SSL object that thread is using.
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
            deadline = time.monotonic() + _STOP_JOIN_SECONDS
            for conn_thread in connections.values():
                if conn_thread is not threading.current_thread():  # stop() called from a runner
                    conn_thread.join(max(0.0, deadline - time.monotonic()))
        logger.debug("%s: stopped", self.name)

    def __enter__(self) -> WSManEndpoint:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        """The bound port (the configured one until the first start())."""
        return self._port

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        host = f"[{self._bind_host}]" if ":" in self._bind_host else self._bind_host
        return f"{scheme}://{host}:{self._port}/wsman"

    @property
    def host(self) -> str:
        """The listen address; faults report it as f:WSManFault/@Machine, as a real host does (§4.4)."""
        return self._bind_host

    @property
    def runner(self) -> CommandRunner:
        """The CommandRunner; replaceable at any time (applies to following Command requests)."""
        return self.service.runner

    @runner.setter
    def runner(self, runner: CommandRunner) -> None:
        self.service.runner = runner

    # --- faults -----------------------------------------------------------------------------------

    @property
    def fault(self) -> Fault | None:
        with self._fault_cond:
            return self._fault

    @fault.setter
    def fault(self, fault: Fault | None) -> None:
        """Applies to the following requests; any assignment releases requests hanging on the old fault."""
        with self._fault_cond:
            self._fault = fault
            self._fault_left = fault.times if fault is not None else None
            self._fault_generation += 1
            self._fault_cond.notify_all()

    def take_fault(self) -> Fault | None:
        """The fault for the request being handled, consuming one of its ``times``."""
        with self._fault_cond:
            fault = self._fault
            if fault is not None and self._fault_left is not None:
                self._fault_left -= 1
                if self._fault_left <= 0:
                    self._fault, self._fault_left = None, None
            return fault

    def wait_for_fault_change(self) -> None:
        """Block (a ``hang``) until the fault is reassigned; raise Abort when the listener stops."""
        with self._fault_cond:
            generation = self._fault_generation
            while generation == self._fault_generation:
                if self._stopping.is_set():
                    raise Abort
                self._fault_cond.wait()

    def pause(self, seconds: float) -> None:
        """Sleep that stop() interrupts (raising Abort)."""
        if self._stopping.is_set():
            raise Abort
        if seconds > 0 and self._stopping.wait(seconds):
            raise Abort

    # --- shells -------------------------------------------------------------------------------------

    def expire_shells(self) -> None:
        """Forget every shell (idle timeout, lifetime, service restart); old ShellIds then get the real
        'shell not found' fault (WSManFault 2150858843)."""
        self.service.expire_all()

    @property
    def shell_idle_timeout(self) -> float | None:
        return self.service.shell_idle_timeout

    @shell_idle_timeout.setter
    def shell_idle_timeout(self, seconds: float | None) -> None:
        self.service.shell_idle_timeout = seconds

    @property
    def shell_lifetime(self) -> float | None:
        return self.service.shell_lifetime

    @shell_lifetime.setter
    def shell_lifetime(self, seconds: float | None) -> None:
        self.service.shell_lifetime = seconds

    @property
    def max_shells_per_user(self) -> int | None:
        return self.service.max_shells_per_user

    @max_shells_per_user.setter
    def max_shells_per_user(self, limit: int | None) -> None:
        self.service.max_shells_per_user = limit

    @property
    def shells(self) -> Mapping[str, Shell]:
        """Open shells by ShellId (a snapshot)."""
        return self.service.shells()

    @property
    def shell_count(self) -> int:
        return self.service.counts()[0]

    @property
    def pool_count(self) -> int:
        """Open PSRP runspace pools (after expiring idle ones)."""
        psrp = self.service.psrp
        if psrp is None:
            return 0
        self.service.counts()  # expires idle shells and pools
        with self.service.cond:
            return psrp.count()

    @property
    def pools_opened(self) -> int:
        """Runspace pools opened since the listener was built (a new wsmprovhost.exe each on a real host)."""
        return self.service.psrp.pools_opened if self.service.psrp is not None else 0

    @property
    def command_count(self) -> int:
        """Commands and PSRP pipelines not yet ended by Signal: a client that skips it leaks these."""
        return self.service.counts()[1]

    @property
    def last_runner_error(self) -> BaseException | None:
        """The last exception the runner raised (answered to the client as an InternalError fault)."""
        return self.service.last_runner_error

    # --- connection bookkeeping (called by WSManServer) ---------------------------------------------

    def track_connection(self, sock: Any, thread: threading.Thread) -> bool:
        with self._connections_lock:
            if self._stopping.is_set():
                return False
            self._connections[sock] = thread
            return True

    def untrack_connection(self, sock: Any) -> None:
        with self._connections_lock:
            self._connections.pop(sock, None)

    @property
    def open_connections(self) -> int:
        """Client connections open right now (a client that drops its session should close its own)."""
        with self._connections_lock:
            return len(self._connections)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"WSManEndpoint(name={self.name!r}, url={self.url!r}, {state})"
