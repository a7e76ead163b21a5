"""Simulated Hyper-V hosts: the command runner behind each WS-Management endpoint.

The runner plays ``cmd.exe`` + ``powershell.exe`` for exactly one program, the exporter's
collection script: it checks that the shell's environment carries the shipped ``collect.ps1``
(by digest) and that the command is the loader the exporter sends, then answers with the bytes
that script prints on a real host for the simulated VMs. Anything else gets the error a real
host would give (cmd.exe's "not recognized", or a PowerShell error record as CLIXML on stderr)
and a non-zero exit code.

``SimHost.output_fault`` makes a host misbehave for resilience tests: see :data:`OUTPUT_FAULTS`.
"""

from __future__ import annotations

import base64
import gzip
import logging
import ssl
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache, partial

from psrpcore.types import ErrorCategory

from hyperv_exporter import logutil
from hyperv_exporter.host import script
from hyperv_exporter.sim import scale
from hyperv_exporter.sim import wsman_soap as soap
from hyperv_exporter.sim.accounts import (
    ADMINISTRATORS,
    JEA_COMMAND,
    JEA_ENDPOINT,
    JEA_VIRTUAL_ACCOUNT,
    Identity,
    is_jea,
    least_privilege,
    restrict_document,
)
from hyperv_exporter.sim.cost import NO_COST, POWERSHELL, WSMPROVHOST, HostCounters, ProcessCost
from hyperv_exporter.sim.fleet import SimFleet, SimHost, to_ticks
from hyperv_exporter.sim.ps51json import dumps
from hyperv_exporter.sim.wsman import CommandResult, Shell, WSManEndpoint, clixml_error
from hyperv_exporter.sim.wsman_clixml import DEFAULT_ERROR_ID
from hyperv_exporter.sim.wsman_psrp import Command, PipelineError, PipelineResult, PoolInfo

log = logging.getLogger(__name__)

PROGRESS_CLIXML = (
    b"#< CLIXML\r\n"
    b'<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04"><Obj S="progress" RefId="0">'
    b'<TN RefId="0"><T>System.Management.Automation.PSCustomObject</T><T>System.Object</T></TN><MS>'
    b'<I64 N="SourceId">1</I64><PR N="Record"><AV>Preparing modules for first use.</AV><AI>0</AI><Nil />'
    b"<PI>-1</PI><PC>-1</PC><T>Completed</T><SR>-1</SR><SD> </SD></PR></MS></Obj></Objs>"
)

# What a faulty host can do instead of answering normally.
OUTPUT_FAULTS = {
    "not_json": "prints text that is not JSON",
    "truncated": "output cut off in the middle",
    "huge": "prints far more than any real host (a few MiB of JSON-looking text)",
    "zip_bomb": "gzip+base64 output that inflates to far more than the cap",
    "cp1252": "ignores the UTF-8 code page and prints JSON in Windows-1252",
    "powershell_error": "PowerShell fails (exit code 1, error record as CLIXML on stderr)",
    "progress_stderr": "succeeds, with progress records as CLIXML on stderr",
    "vm_section_error": "Get-VM fails inside the script (the vm section reports the error)",
    "old_schema": "a document of another schema version",
    "surrogates": "a VM name with JSON escapes for a lone surrogate, NUL and ESC (valid JSON, invalid text)",
    "deep_nesting": "JSON nested 100,000 arrays deep (a recursion bomb for naive parsers)",
    "bad_clixml": "PowerShell fails and stderr is CLIXML with an entity-expansion DTD",
    "huge_stderr": "PowerShell fails and writes 12 MiB to stderr (over PSRP: one 4 MiB error record)",
}
# Replaced in the JSON text by escapes that json.loads accepts but no UTF-8 encoder does.
_SURROGATE_NAME = "hyperv-sim-surrogate-name"
_SURROGATE_ESCAPES = "\\ud800broken\\u0000name\\u001b[31m"
_BAD_CLIXML = (
    b"#< CLIXML\r\n"
    b'<!DOCTYPE Objs [<!ENTITY a "aaaaaaaaaaaaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
    b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>'
    b'<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
    b'<S S="Error">&c;</S></Objs>'
)


@lru_cache(maxsize=1)
def _zip_bomb() -> bytes:
    """About 32 KiB of base64 that inflates to 32 MiB (tests set max_output_bytes below that)."""
    raw = b'{"SchemaVersion":1,"Pad":"' + b" " * (32 * 1024 * 1024) + b'"}'
    return base64.b64encode(gzip.compress(raw, compresslevel=9, mtime=0))


def _encoded_command(tokens: list[str]) -> str | None:
    """The argument of -EncodedCommand (PowerShell accepts -e, -ec, -enc ... as prefixes)."""
    for index, token in enumerate(tokens):
        lowered = token.lower()
        if lowered.startswith("-e") and "-encodedcommand".startswith(lowered) and len(lowered) >= 2:
            return tokens[index + 1] if index + 1 < len(tokens) else None
    return None


#: A listener without users has no permission model: whoever connects may do everything.
UNCHECKED = Identity(groups=frozenset({ADMINISTRATORS}))


def encode_stdout(text: str, use_gzip: bool, codepage: int) -> bytes:
    """The bytes collect.ps1 prints for its JSON ``text``: gzip + base64 with ``-Gzip``, else the text."""
    if use_gzip:
        # zlib's default level: .NET's GZipStream in CompressionMode.Compress uses CompressionLevel.Optimal,
        # which its zlib-based Deflater maps to Z_DEFAULT_COMPRESSION (6), not Python's default 9.
        return base64.b64encode(gzip.compress(text.encode("utf-8"), compresslevel=6, mtime=0))
    # With the console code page left at 437, non-ASCII names come out as '?' on a real host.
    return text.encode("utf-8" if codepage == 65001 else f"cp{codepage}", errors="replace")


def _script_error(message: str, fq_error: str, category: ErrorCategory, reason: str, target: str) -> PipelineError:
    return PipelineError(
        message=message,
        fully_qualified_error_id=fq_error,
        category=category,
        reason=reason,
        exception_types=(f"System.Management.Automation.{reason}", "System.Management.Automation.RuntimeException"),
        target=target,
    )


@dataclass(frozen=True)
class ScriptFailure:
    """A run of the collection that fails, as a PowerShell ErrorRecord. Over WinRS powershell.exe
    writes it to stderr as console CLIXML: "<command> : <message>", then "CategoryInfo : <category>:
    (:) [<command>], <exception's short name>" and "FullyQualifiedErrorId : <error_id>" (``stderr``:
    the bytes instead, when a fault dictates them). Over PSRP it travels as the error record itself."""

    message: str
    command: str = ""  # the cmdlet that failed
    category: ErrorCategory = ErrorCategory.NotSpecified
    exception: str = "Microsoft.PowerShell.Commands.WriteErrorException"  # .NET type name
    error_id: str = DEFAULT_ERROR_ID
    stderr: bytes | None = None
    exit_code: int = 1  # powershell.exe's

    @property
    def reason(self) -> str:
        """ErrorCategoryInfo.Reason: the exception's type name without its namespace."""
        return self.exception.rsplit(".", 1)[-1]

    def console(self, codepage: int) -> bytes:
        if self.stderr is not None:
            return self.stderr
        text = f"{self.command} : {self.message}" if self.command else self.message
        info = f"{self.category.name}: (:) [{self.command}], {self.reason}"
        return clixml_error(text, category_info=info, error_id=self.error_id, codepage=codepage)

    def record(self) -> PipelineError:
        return PipelineError(
            message=self.message,
            fully_qualified_error_id=self.error_id,
            category=self.category,
            reason=self.reason,
            exception_types=(self.exception, "System.Exception"),
            target="",
        )


@dataclass
class RunOutcome:
    """One run of the collection script, whatever carries it: its output, or the failure that ended it."""

    stdout: bytes = b""
    failure: ScriptFailure | None = None
    stderr: bytes = b""  # what the console showed on stderr besides a failure (progress records)
    run_seconds: float = 0.0


_OUT_OF_MEMORY = ScriptFailure(
    scale.OUT_OF_MEMORY,
    category=ErrorCategory.OperationStopped,
    exception="System.OutOfMemoryException",
    error_id="System.OutOfMemoryException",
)


def _fault_failure(fault: str | None) -> ScriptFailure | None:
    """The failure an output fault makes a run end with (built on demand: huge_stderr's is 16 MiB)."""
    if fault == "powershell_error":
        # A Hyper-V cmdlet refused by the host's authorization policy. The parts as a real host shows them
        # for its sibling Start-VM (kubernetes/minikube#6918: "PermissionDenied: (:) [Start-VM],
        # VirtualizationException", "AccessDenied,Microsoft.HyperV.PowerShell.Commands.StartVM"); the
        # exception's namespace is inferred from that error id's. The text is Hyper-V's (John Howard,
        # "Hyper-V Remote Management: You do not have the required permission", blogs.technet.com, 2008).
        return ScriptFailure(
            "You do not have the required permission to complete this task. Contact the administrator of the "
            "authorization policy for the computer 'localhost'.",
            command="Get-VM",
            category=ErrorCategory.PermissionDenied,
            exception="Microsoft.HyperV.PowerShell.VirtualizationException",
            error_id="AccessDenied,Microsoft.HyperV.PowerShell.Commands.GetVM",
        )
    if fault == "bad_clixml":
        # A console-only fault: over PSRP the same text is only a message, escaped like any other.
        return ScriptFailure(_BAD_CLIXML.decode(), stderr=_BAD_CLIXML)
    if fault == "huge_stderr":
        # Over WinRS 12 MiB of raw stderr. Over PSRP one error record of 4 MiB: past twice a 1 MiB cap
        # on the wire (the tests' setting), and cheap enough for the simulator to serialise within a
        # probe deadline (a 12 MiB record took it 1-2 s of CPU).
        return ScriptFailure("E" * (4 * 1024 * 1024), stderr=b"E" * (12 * 1024 * 1024))
    return None


def _command_not_found(name: str) -> PipelineError:
    return _script_error(
        f"The term '{name}' is not recognized as the name of a cmdlet, function, script file, or operable program. "
        "Check the spelling of the name, or if a path was included, verify that the path is correct and try again.",
        "CommandNotFoundException",
        ErrorCategory.ObjectNotFound,
        "CommandNotFoundException",
        name,
    )


class HostRunner:
    """The CommandRunner (WinRS: every ``powershell`` command is a new process) and PipelineRunner
    (PSRP: pipelines in the runspace pool's already running process) for one simulated host."""

    def __init__(self, host: SimHost, counters: HostCounters | None = None) -> None:
        self.host = host
        self.counters = counters if counters is not None else HostCounters()
        self.runs = 0
        self.last_invocation: script.Invocation | None = None  # what the latest run was asked for
        self._imported: set[str] = set()  # runspace pools whose process has loaded the Hyper-V module

    def identity(self, username: str) -> Identity:
        return self.host.access.identity(username) if self.host.password is not None else UNCHECKED

    # -- PowerShell remoting -----------------------------------------------------------------------
    def pipeline(self, pool: PoolInfo, commands: list[Command]) -> PipelineResult:
        """One PSRP pipeline: collect.ps1 as script text on a plain endpoint, or the JEA command."""
        jea = is_jea(pool.configuration)
        # A JEA session runs as the endpoint's virtual account, whoever connected.
        identity = JEA_VIRTUAL_ACCOUNT if jea else self.identity(pool.username)
        if len(commands) != 1:
            return PipelineResult(error=_script_error(
                "hyperv-sim: this simulated Hyper-V host runs only the hyperv-exporter collection.",
                "hyperv-sim", ErrorCategory.NotImplemented, "NotSupportedException", "",
            ))  # fmt: skip
        command = commands[0]
        if command.is_script and identity.no_language:
            # A RestrictedRemoteServer (JEA) session is in NoLanguage mode: the parser refuses script text.
            return PipelineResult(error=PipelineError(
                message="The syntax is not supported by this runspace. This can occur if the runspace is in "
                "no-language mode.",
                fully_qualified_error_id="ScriptsNotAllowed",
                category=ErrorCategory.ParserError,
                reason="ParseException",
                exception_types=(
                    "System.Management.Automation.ParseException",
                    "System.Management.Automation.RuntimeException",
                    "System.SystemException",
                    "System.Exception",
                ),
                target=command.text,
            ))  # fmt: skip
        if jea and command.text.lower() != JEA_COMMAND.lower():
            return PipelineResult(error=_command_not_found(command.text))
        if not jea and not command.is_script:
            return PipelineResult(error=_command_not_found(command.text))
        if not jea and script.text_hash(command.text) != script.script_hash():
            return PipelineResult(error=_script_error(
                "hyperv-sim: this simulated Hyper-V host runs only the hyperv-exporter collection script.",
                "hyperv-sim", ErrorCategory.NotImplemented, "NotSupportedException", "",
            ))  # fmt: skip
        unknown = [name for name in command.parameters if name.lower() not in ("collectors", "kvpkeys", "gzip")]
        if unknown:
            return PipelineResult(error=_script_error(
                f"A parameter cannot be found that matches parameter name '{unknown[0]}'.",
                f"NamedParameterNotFound,{JEA_COMMAND if jea else 'collect.ps1'}",
                ErrorCategory.InvalidArgument, "ParameterBindingException", "",
            ))  # fmt: skip
        params = {name.lower(): value for name, value in command.parameters.items()}
        sections = [s for s in str(params.get("collectors") or "vm").split(",") if s]
        raw_keys = params.get("kvpkeys")
        kvp_keys = [str(key) for key in raw_keys] if isinstance(raw_keys, list | tuple) else None
        self.runs += 1
        # The pool's process is up (its start-up was paid at the pool's Create). On the JEA endpoint the
        # role capability's ModulesToImport loaded the Hyper-V module then too; on a plain endpoint
        # module autoloading imports it on the first Get-VM, so the pool's first collection pays it.
        process = NO_COST
        if not jea and pool.shell_id not in self._imported:
            self._imported.add(pool.shell_id)
            process = ProcessCost(import_seconds=(self.host.process_cost or NO_COST).import_seconds)
        outcome = self.run(sections, params.get("gzip") not in (None, False), 65001, kvp_keys, identity, process)
        if outcome.failure is not None:
            # Over PSRP the error record travels as such, not as console CLIXML.
            return PipelineResult(error=outcome.failure.record(), run_seconds=outcome.run_seconds)
        # In a runspace the script's output is one string object (no console, so no code page).
        return PipelineResult([outcome.stdout.decode("utf-8", errors="replace")], run_seconds=outcome.run_seconds)

    # -- WinRS -------------------------------------------------------------------------------------
    def __call__(self, shell: Shell, command: str, arguments: list[str]) -> CommandResult:
        tokens = " ".join([command, *arguments]).split()
        program = tokens[0].lower() if tokens else ""
        if program not in ("powershell", "powershell.exe"):
            return CommandResult(
                stderr=f"'{tokens[0] if tokens else ''}' is not recognized as an internal or external command,\r\n"
                "operable program or batch file.\r\n".encode(),
                exit_code=1,
            )
        # WinRS starts powershell.exe for this command whatever it then runs; it pays the start-up
        # before its first line and the Hyper-V module import on the script's first Get-VM.
        process = self.counters.start_process(POWERSHELL, self.host.process_cost or NO_COST)
        encoded = _encoded_command(tokens)
        try:
            text = script.decode_command(encoded) if encoded else ""
        except ValueError:
            text = ""
        invocation = script.parse_invocation(text)
        if invocation is None:
            return CommandResult(
                stderr=clixml_error(
                    "hyperv-sim: this simulated Hyper-V host runs only the hyperv-exporter collection script."
                ),
                exit_code=1,
                run_seconds=process.start_seconds,
            )
        shipped = shell.env.get(script.SCRIPT_ENV)
        if shipped is None:
            return CommandResult(
                stderr=clixml_error(
                    'Exception calling "Create" with "1" argument(s): "Value cannot be null.\r\nParameter name: script"'
                ),
                exit_code=1,
                run_seconds=process.start_seconds,
            )
        if script.text_hash(shipped) != script.script_hash():
            return CommandResult(
                stderr=clixml_error(
                    "hyperv-sim: the script in the shell environment is not this version's collect.ps1."
                ),
                exit_code=1,
                run_seconds=process.start_seconds,
            )
        self.runs += 1
        self.last_invocation = invocation
        return self.answer(
            invocation.sections,
            invocation.gzip,
            shell.codepage,
            invocation.kvp_keys,
            identity=self.identity(shell.username),
            process=process,
        )

    def _run_clock(self, process: ProcessCost) -> tuple[float, float]:
        """(when the script's first line runs, seconds from the Command to its output), and the script's
        CPU charged. The first line runs once the process is up (its ClockStart and the VMs' uptimes
        are read then); the output exists after the module import and the script's own run time."""
        self.counters.module_imported(process)  # on its first Get-VM (nothing if already loaded)
        self.counters.script_ran(self.host.run_seconds)
        return time.time() + process.start_seconds, process.total + self.host.run_seconds

    def answer(
        self,
        sections: list[str],
        use_gzip: bool,
        codepage: int,
        kvp_keys: Sequence[str] | None = None,
        identity: Identity = UNCHECKED,
        process: ProcessCost = NO_COST,
    ) -> CommandResult:
        """The script's run as powershell.exe gives it over WinRS: its output on stdout, an error as
        console CLIXML on stderr. The arguments are :meth:`run`'s."""
        outcome = self.run(sections, use_gzip, codepage, kvp_keys, identity, process)
        failure = outcome.failure
        if failure is not None:
            return CommandResult(outcome.stdout, failure.console(codepage), failure.exit_code, outcome.run_seconds)
        return CommandResult(outcome.stdout, outcome.stderr, 0, outcome.run_seconds)

    def run(
        self,
        sections: list[str],
        use_gzip: bool,
        codepage: int,
        kvp_keys: Sequence[str] | None = None,
        identity: Identity = UNCHECKED,
        process: ProcessCost = NO_COST,
    ) -> RunOutcome:
        """One run of the collection script, whatever carries it. ``kvp_keys``: -KvpKeys, filtered on
        the host; ``identity``: whose rights it runs with; ``process``: the cost of the new process it
        runs in (WinRS); NO_COST for a pipeline in an already running one (a kept PSRP runspace)."""
        host = self.host
        fault = host.output_fault
        started, run_seconds = self._run_clock(process)
        failure = _fault_failure(fault)
        if failure is not None:
            return RunOutcome(failure=failure, run_seconds=run_seconds)
        doc = restrict_document(host.document(sections, started), identity, host.computer_name)
        if kvp_keys is not None:
            scale.filter_document_kvp(doc, kvp_keys)
        host.migrate_after_run()  # a VM live-migrating between cluster nodes is on the other node next time
        if fault == "vm_section_error":
            doc["VMs"] = []
            doc["Sections"]["vm"]["Error"] = (
                "The Hyper-V Virtual Machine Management service is not running on the computer 'localhost'."
            )
        if fault == "old_schema":
            doc["SchemaVersion"] = 99
        if fault == "surrogates" and doc.get("VMs"):
            doc["VMs"][0]["Name"] = _SURROGATE_NAME
        text = dumps(doc, compress=True)
        if fault == "surrogates":
            text = text.replace(_SURROGATE_NAME, _SURROGATE_ESCAPES)
        # The script reads its end clock right before printing; the shell service makes the output
        # available run_seconds after the Command arrived (about when this method began), or when
        # this method is done if building the answer took longer: that is the moment the end clock
        # stands for.
        end = max(started - process.start_seconds + run_seconds, time.time())
        text = text[:-1] + ',"ClockEndTicks":' + str(to_ticks(end + host.clock_offset)) + "}"
        if fault == "huge":
            text = '{"SchemaVersion":1,"VMs":[' + ",".join(['{"Name":"x"}'] * 400_000) + "]}"
        elif fault == "deep_nesting":
            text = '{"SchemaVersion":1,"VMs":' + "[" * 100_000 + "]" * 100_000 + "}"
        if fault == "zip_bomb":
            stdout = _zip_bomb()
        elif fault == "cp1252":
            stdout = text.encode("cp1252", errors="replace")
        else:
            stdout = encode_stdout(text, use_gzip, codepage)
        if host.max_memory_per_shell_mb:
            peak = scale.MODEL.peak_bytes(
                len(doc.get("VMs") or ()), scale.kvp_chars(doc), len(text), use_gzip, len(stdout) * 3 // 4
            )
            host.last_peak_memory_bytes = peak
            if peak > host.max_memory_per_shell_mb * scale.MIB:
                return RunOutcome(failure=_OUT_OF_MEMORY, run_seconds=run_seconds)
        if fault == "not_json":
            stdout = b"WARNING: something went wrong, and this is not JSON"
        elif fault == "truncated":
            stdout = stdout[: len(stdout) // 2]
        stderr = PROGRESS_CLIXML if fault == "progress_stderr" else b""
        return RunOutcome(stdout=stdout, stderr=stderr, run_seconds=run_seconds)


# The WinRM block for a simulator: Basic over plain HTTP is acceptable only because the listeners
# are simulated hosts on loopback; a real module uses https, ntlm or kerberos. A WinRS cmd shell, so
# the account must be an administrator (the default for a fleet file's account).
SIM_WINRM = """      protocol: winrs
      scheme: http
      transport: basic
      allow_unencrypted: true
      message_encryption: never
      username: {username}
      password_file: {password_file}
"""


# The recommended set-up against a simulator: PowerShell remoting to the read-only JEA endpoint with
# NTLM and message encryption (plain HTTP on loopback only; a real module uses https).
SIM_WINRM_JEA = """      protocol: psrp
      configuration_name: HyperVExporter
      scheme: http
      transport: ntlm
      username: {username}
      password_file: {password_file}
"""
# PowerShell remoting to the plain endpoint, for accounts the JEA endpoint does not admit.
SIM_WINRM_PSRP = SIM_WINRM.replace("protocol: winrs", "protocol: psrp")


def winrm_block_for(fleet: SimFleet) -> str:
    """The WinRM block that works for every host's account: JEA where all accounts may use it."""
    if all(h.access.may_open(h.username, JEA_ENDPOINT) for h in fleet.hosts):
        return SIM_WINRM_JEA
    return SIM_WINRM_PSRP


def exporter_config(
    urls: Mapping[str, str],
    password_file: str,
    *,
    modules: Sequence[str] = ("default",),
    module_keys: str = "    cache_ttl: 0s\n",
    winrm: str | None = None,
    username: str = "monitor",
) -> str:
    """An exporter configuration (YAML) whose modules probe these simulated hosts.

    ``urls`` maps host names to their WS-Management URLs (``Simulator.urls()``); the host names
    become the allowlisted targets. ``module_keys`` are extra module lines (4-space indent),
    ``winrm`` replaces the whole ``winrm:`` block (6-space indent, ``{password_file}`` is filled in).
    """
    endpoints = "".join(f"      {name}: {url}\n" for name, url in urls.items())
    block = (winrm if winrm is not None else SIM_WINRM).format(username=username, password_file=password_file)
    if not block.endswith("\n"):
        block += "\n"
    module = f"    targets: [{', '.join(urls)}]\n    endpoints:\n{endpoints}    winrm:\n{block}{module_keys}"
    return "modules:\n" + "".join(f"  {name}:\n{module}" for name in modules)


def _authorizer(host: SimHost) -> Callable[[str, str], soap.SoapFault | None]:
    """Who may create a cmd shell or a runspace pool on ``host`` (checked at every Create)."""

    def authorize(username: str, resource_uri: str) -> soap.SoapFault | None:
        uri = resource_uri.lower()
        if uri == soap.RESOURCE_URI_CMD.lower():
            configuration = None
        elif uri.startswith(soap.RESOURCE_URI_POWERSHELL):
            configuration = uri[len(soap.RESOURCE_URI_POWERSHELL) :]
            if configuration not in host.access.configurations():
                return None  # the PSRP service answers "cannot find the session configuration"
        else:
            return None
        return None if host.access.may_open(username, configuration) else soap.fault_access_denied()

    return authorize


def _pool_opened(host: SimHost, counters: HostCounters, pause: Callable[[float], None]) -> Callable[[PoolInfo], None]:
    def opened(pool: PoolInfo) -> None:
        # A runspace pool is a new wsmprovhost.exe on a real host: it pays the start-up once, before
        # the pool's Create is answered, and stays up, so the pool's pipelines start no process. The
        # JEA endpoint imports the Hyper-V module while the session opens (its role capability's
        # ModulesToImport; JEA does not autoload modules); a plain endpoint on the first collection
        # (HostRunner.pipeline), where its CPU is counted too.
        cost = counters.start_process(WSMPROVHOST, host.process_cost or NO_COST)
        if is_jea(pool.configuration):
            counters.module_imported(cost)
            pause(cost.total)
        else:
            pause(cost.start_seconds)
        log.debug("runspace pool opened", extra=logutil.fields(host=host.computer_name, endpoint=pool.configuration))

    return opened


def use_least_privilege(fleet: SimFleet) -> SimFleet:
    """Make every host's account the recommended monitoring account: only in the JEA endpoint's role
    group (not an administrator, not in Hyper-V Administrators). Used by the demo."""
    for host in fleet.hosts:
        host.access = least_privilege(host.username, host.access.jea_role_group)
    return fleet


class _HostUsers(Mapping[str, str]):
    """The host's credentials, read at each request, so ``SimHost.set(password=...)`` rotates them live."""

    def __init__(self, host: SimHost) -> None:
        self.host = host

    def _users(self) -> dict[str, str]:
        # Every account of the host's permission model shares its password (a simulator choice).
        if self.host.password is None:
            return {}
        names = {self.host.username, *self.host.access.accounts}
        return dict.fromkeys(names, self.host.password)

    def __getitem__(self, key: str) -> str:
        return self._users()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._users())

    def __len__(self) -> int:
        return len(self._users())


@dataclass
class Simulator:
    """Every host of a fleet, each behind its own WS-Management endpoint on 127.0.0.1.

    Listeners accept Basic and NTLM (with message encryption over HTTP); with ``ssl_context`` they
    serve HTTPS. ``allow_unencrypted=False`` refuses plaintext SOAP over HTTP, as Windows does by default.
    ``process_cost`` is what a new PowerShell process costs a host whose fleet entry does not say
    (sim.cost: zero here, ``WINDOWS`` in hyperv-sim and --demo); ``counters`` count it per host.
    """

    fleet: SimFleet
    bind: str = "127.0.0.1"
    ssl_context: ssl.SSLContext | None = None
    allow_unencrypted: bool = True
    process_cost: ProcessCost = NO_COST
    endpoints: dict[str, WSManEndpoint] = field(default_factory=dict)
    runners: dict[str, HostRunner] = field(default_factory=dict)
    counters: dict[str, HostCounters] = field(default_factory=dict)
    # Builds each host's command runner on its counters; replayed captures bring their own
    # (sim.replay.runner_for).
    runner_factory: Callable[[SimHost, HostCounters], HostRunner] = HostRunner

    def start(self) -> None:
        for host in self.fleet.hosts:
            if host.process_cost is None:
                host.process_cost = self.process_cost
            counters = self.counters.setdefault(host.computer_name, HostCounters())
            runner = self.runner_factory(host, counters)
            users = _HostUsers(host) if host.password is not None else None
            endpoint = WSManEndpoint(
                runner,
                authorize=_authorizer(host) if users is not None else None,
                psrp_runner=runner.pipeline,
                configurations=lambda host=host: host.access.configurations(),  # type: ignore[misc]
                pool_opened=_pool_opened(host, counters, partial(self._pause, host.computer_name)),
                host=self.bind,
                port=host.port,
                users=users,
                ssl_context=self.ssl_context,
                latency_seconds=host.latency,
                name=host.computer_name,
                allow_unencrypted=self.allow_unencrypted,
            )
            endpoint.start()
            self.endpoints[host.computer_name] = endpoint
            self.runners[host.computer_name] = runner
            log.debug("simulated host listening", extra=logutil.fields(host=host.computer_name, url=endpoint.url))

    def stop(self) -> None:
        for endpoint in self.endpoints.values():
            endpoint.stop()

    def _pause(self, computer_name: str, seconds: float) -> None:
        self.endpoints[computer_name].pause(seconds)  # interrupted by the listener's stop()

    def set_process_cost(self, cost: ProcessCost) -> None:
        """What a new process costs every host from now on (tests and benchmarks)."""
        for host in self.fleet.hosts:
            host.set(process_cost=cost)

    def url(self, computer_name: str) -> str:
        return self.endpoints[computer_name].url

    def urls(self) -> dict[str, str]:
        return {name: endpoint.url for name, endpoint in self.endpoints.items()}

    def endpoint(self, computer_name: str) -> WSManEndpoint:
        return self.endpoints[computer_name]
