"""WS-Management wire format for the simulator: request parsing and response envelopes.

Everything here is pure (no sockets, no threads). The envelope shapes copy what a real Windows WinRM
listener answers, as recorded in the reference doc (``/work/shared/reference/hyperv-formats-and-winrm.md``
§4.3 and §4.4, taken from pypsrp's recordings of real hosts and pywinrm's fixtures): one unindented line,
no XML declaration, ``xml:lang="en-US"`` on the root, upper-case ``uuid:`` message ids, and per-action
namespace sets as the real server declares them.

Requests come from clients and are untrusted, so they are parsed with defusedxml (no DTDs, no entities).
"""

from __future__ import annotations

import base64
import re
import uuid
from dataclasses import dataclass
from xml.etree.ElementTree import Element, ParseError
from xml.sax.saxutils import escape, quoteattr

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

# --- namespaces (reference §4.2) -------------------------------------------------------------------
NS_S = "http://www.w3.org/2003/05/soap-envelope"
NS_A = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
NS_X = "http://schemas.xmlsoap.org/ws/2004/09/transfer"
NS_E = "http://schemas.xmlsoap.org/ws/2004/08/eventing"
NS_N = "http://schemas.xmlsoap.org/ws/2004/09/enumeration"
NS_W = "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"
NS_P = "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd"
NS_RSP = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
NS_F = "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault"

ANONYMOUS = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"
RESOURCE_URI_CMD = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd"
#: PowerShell remoting endpoints: this prefix plus the session configuration name (microsoft.powershell, ...).
RESOURCE_URI_POWERSHELL = "http://schemas.microsoft.com/powershell/"

ACTION_CREATE = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create"
ACTION_DELETE = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete"
ACTION_COMMAND = f"{NS_RSP}/Command"
ACTION_RECEIVE = f"{NS_RSP}/Receive"
ACTION_SEND = f"{NS_RSP}/Send"
ACTION_SIGNAL = f"{NS_RSP}/Signal"

#: a:Action URI -> the short name used for dispatch and in :class:`WSManStats`.
ACTIONS: dict[str, str] = {
    ACTION_CREATE: "create",
    ACTION_COMMAND: "command",
    ACTION_RECEIVE: "receive",
    ACTION_SEND: "send",
    ACTION_SIGNAL: "signal",
    ACTION_DELETE: "delete",
}

STATE_DONE = f"{NS_RSP}/CommandState/Done"
STATE_RUNNING = f"{NS_RSP}/CommandState/Running"
SIGNAL_TERMINATE = f"{NS_RSP}/signal/terminate"

#: What pywinrm (and every Windows client) sends in w:MaxEnvelopeSize (reference §4.2).
DEFAULT_MAX_ENVELOPE = 153600
#: WinRM's default MaxEnvelopeSizekb is 500; pypsrp asks for exactly 512000 and gets it (§4.10 recordings).
SERVER_MAX_ENVELOPE = 512000
#: WinRM's default MaxTimeoutms (60 s) is used when a request carries no w:OperationTimeout.
DEFAULT_OPERATION_TIMEOUT = 60.0

# Response root elements: the real server declares a different namespace set per action (pypsrp recordings,
# reference §4.3): Create/Command/Signal/Send carry x and rsp, Receive drops x, Delete drops x and rsp.
_NS_DECL = {
    "s": NS_S,
    "a": NS_A,
    "x": NS_X,
    "e": NS_E,
    "n": NS_N,
    "w": NS_W,
    "rsp": NS_RSP,
    "p": NS_P,
}
_ROOT_FULL = ("s", "a", "x", "w", "rsp", "p")
_ROOT_RECEIVE = ("s", "a", "w", "rsp", "p")
_ROOT_DELETE = ("s", "a", "w", "p")
_ROOT_FAULT = ("s", "a", "x", "e", "n", "w", "p")

FAULT_ACTION_WSMAN = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault"
FAULT_ACTION_ADDRESSING = "http://schemas.xmlsoap.org/ws/2004/08/addressing/fault"


class RequestError(Exception):
    """The request is not a usable WS-Management message; carries the fault to answer with."""

    def __init__(self, fault: SoapFault, message_id: str | None = None) -> None:
        super().__init__(fault.reason)
        self.fault = fault
        self.message_id = message_id


@dataclass(frozen=True)
class SoapFault:
    """A SOAP 1.2 fault as WinRM sends it (always with HTTP 500, reference §4.1 and §4.4)."""

    code: str  # s:Sender | s:Receiver
    subcode: str  # e.g. w:TimedOut
    reason: str
    wsman_code: int  # f:WSManFault/@Code, what pywinrm exposes as wsman_fault_code
    message: str | None = None  # f:Message; defaults to reason
    detail: str | None = None  # w:FaultDetail URI
    provider: tuple[str, str] | None = None  # (provider name, dll path) -> f:Message/f:ProviderFault
    provider_fault_nested: bool = False  # the provider fault repeats the f:WSManFault inside itself
    action: str = FAULT_ACTION_WSMAN


@dataclass
class Request:
    """The parts of a WS-Management request the simulator acts on."""

    action: str
    message_id: str
    shell_id: str | None
    options: dict[str, str]
    max_envelope: int
    operation_timeout: float
    body: Element | None  # first child of s:Body, if any
    resource_uri: str = RESOURCE_URI_CMD  # w:ResourceURI: which plug-in (cmd shell or a PowerShell endpoint)


# --- faults a real host answers (codes from wsman.h / winerror.h; shapes from recordings) ------------


def fault_operation_timeout() -> SoapFault:
    """Receive found no output within w:OperationTimeout: pywinrm retries on this code (§4.4)."""
    text = "The WS-Management service cannot complete the operation within the time specified in OperationTimeout.  "
    return SoapFault("s:Receiver", "w:TimedOut", text, 2150858793)


def fault_shell_not_found() -> SoapFault:
    """Unknown or expired ShellId: pypsrp ``test_psrp_is_alive_invalid_selectors.yml`` (real host, request on
    a shell that no longer exists), verbatim, including the nested provider fault."""
    text = (
        "The WS-Management service cannot process the request because the request contained invalid selectors "
        "for the resource. "
    )
    return SoapFault(
        "s:Sender",
        "w:InvalidSelectors",
        text,
        2150858843,
        detail="http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/UnexpectedSelectors",
        provider=("Shell provider", r"%systemroot%\system32\WsmSvc.dll"),
        provider_fault_nested=True,
    )


def fault_command_not_found() -> SoapFault:
    """Unknown CommandId: pypsrp ``test_winrs_bad_cmd_id.yml`` (reference §4.4), verbatim."""
    return SoapFault(
        "s:Sender",
        "w:InvalidSelectors",
        "The WS-Management service cannot process the request because the request contained invalid selectors "
        "for the resource. ",
        2150858843,
        message="The Windows Remote Shell received a request to perform an operation on a command identifier that "
        "does not exist. Either the command has completed execution or the client specified an invalid command "
        "identifier. ",
        detail="http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/UnexpectedSelectors",
    )


def fault_access_denied() -> SoapFault:
    """The account may not use this plug-in or endpoint (ERROR_ACCESS_DENIED): what a Remote Management
    Users member gets for a WinRS cmd shell (pywinrm issues #336, #338: w:AccessDenied, WSManFault code 5)."""
    return SoapFault("s:Sender", "w:AccessDenied", "Access is denied. ", 5)


def fault_unknown_configuration(name: str, machine: str) -> SoapFault:
    """A PowerShell resource URI naming no registered session configuration
    (ERROR_WSMAN_INVALID_RESOURCE_URI 0x80338001)."""
    return SoapFault(
        "s:Sender",
        "w:InvalidResourceURI",
        "The WS-Management service cannot process the request because the resource URI is invalid. ",
        2150858753,
        message=f"The WS-Management service cannot process the request. Cannot find the {name} session "
        f"configuration in the WSMan: drive on the {machine} computer. ",
    )


def fault_internal_error() -> SoapFault:
    """The ``http_500`` fault kind: a WinRS cmd plugin failure as a real host logged it (Packer log quoted
    in a public Windows-box README: s:Receiver / w:InternalError, CO_E_SERVER_EXEC_FAILURE 0x80080005)."""
    return SoapFault(
        "s:Receiver",
        "w:InternalError",
        "Server execution failed ",
        2148007941,
        provider=("Shell cmd plugin", r"%systemroot%\system32\winrscmd.dll"),
    )


def fault_runner_failed(exc: BaseException) -> SoapFault:
    """The simulated command could not be started (the runner raised): an internal error of the shell plugin."""
    return SoapFault(
        "s:Receiver",
        "w:InternalError",
        "Server execution failed ",
        2148007941,
        message=f"Server execution failed: {type(exc).__name__} ",
        provider=("Shell cmd plugin", r"%systemroot%\system32\winrscmd.dll"),
    )


def fault_max_shells(limit: int) -> SoapFault:
    """MaxShellsPerUser exceeded (ERROR_WSMAN_QUOTA_MAX_SHELLS, s:Sender / w:QuotaLimit, as WinRM clients'
    test fixtures record it)."""
    return SoapFault(
        "s:Sender",
        "w:QuotaLimit",
        "The WS-Management service cannot process the request. The maximum number of concurrent shells for this "
        "user has been exceeded. Close existing shells or raise the quota for this user. ",
        2150859173,
        message=f"The WS-Management service cannot process the request. This user is allowed a maximum number of "
        f"{limit} concurrent shells, which has been exceeded. Close existing shells or raise the quota for this "
        "user. ",
    )


def fault_invalid_timeout(raw: str) -> SoapFault:
    """Malformed w:OperationTimeout: pypsrp ``test_psrp_is_alive_other_wsman_error.yml`` (real host), verbatim."""
    return SoapFault(
        "s:Sender",
        "a:InvalidMessageInformationHeader",
        "The WS-Management service cannot process the request. The request contains one or more invalid SOAP headers. ",
        2150858767,
        message=f"The WS-Management service cannot process the request. The XML contains an invalid timeout field "
        f"in the SOAP header: {raw}. ",
        action=FAULT_ACTION_ADDRESSING,
    )


def fault_invalid_xml() -> SoapFault:
    """Body is not well-formed XML (or uses DTDs/entities): ERROR_WSMAN_INVALID_XML 0x80338043. The subcode
    is our choice (wsman.h names none for this code)."""
    return SoapFault(
        "s:Sender",
        "w:SchemaValidationError",
        "The WS-Management service cannot process the request because the XML is invalid. ",
        2150858819,
    )


def fault_schema(what: str) -> SoapFault:
    """Well-formed but missing a required part: ERROR_WSMAN_SCHEMA_VALIDATION_ERROR 0x80338041 (the code and
    subcode pywinrm's own tests use, reference §4.4)."""
    return SoapFault(
        "s:Sender",
        "w:SchemaValidationError",
        "The SOAP XML in the message does not match the corresponding XML schema definition. Change the XML and "
        "retry. ",
        2150858817,
        message=f"The SOAP XML in the message does not match the corresponding XML schema definition: {what}. ",
    )


def fault_action_not_supported(action: str) -> SoapFault:
    """Unknown a:Action: ERROR_WSMAN_ACTION_NOT_SUPPORTED 0x80338013 (wsman.h: wsa Sender/ActionNotSupported)."""
    return SoapFault(
        "s:Sender",
        "a:ActionNotSupported",
        "The WS-Management service does not support the action specified in the request. ",
        2150858771,
        message=f"The WS-Management service does not support the action specified in the request: {action}. ",
        action=FAULT_ACTION_ADDRESSING,
    )


def fault_envelope_too_small() -> SoapFault:
    """w:MaxEnvelopeSize cannot hold even one byte of output: ERROR_WSMAN_MAX_ENVELOPE_SIZE_EXCEEDED 0x80338048."""
    return SoapFault(
        "s:Sender",
        "w:EncodingLimit",
        "The response that the WS-Management service computed exceeds the maximum envelope size in the request. ",
        2150858824,
    )


# --- request parsing ---------------------------------------------------------------------------------

_DURATION = re.compile(r"^P(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$")


def parse_duration(text: str) -> float:
    """xs:duration as WinRM uses it (``PT20S``, ``PT60.000S``, ``P0DT0H0M0S``) -> seconds; ValueError if not."""
    match = _DURATION.match(text.strip())
    if not match or text.strip() in ("P", "PT") or text.strip().endswith("T"):
        raise ValueError(f"not an xs:duration: {text!r}")
    parts = match.groupdict()
    return (
        int(parts["d"] or 0) * 86400 + int(parts["h"] or 0) * 3600 + int(parts["m"] or 0) * 60 + float(parts["s"] or 0)
    )


def format_seconds(seconds: float) -> str:
    """Seconds -> ``PT7200.000S``, the form the real Create response uses for IdleTimeOut (§4.3)."""
    return f"PT{seconds:.3f}S"


def _q(ns: str, local: str) -> str:
    return f"{{{ns}}}{local}"


def _find_message_id(root: Element) -> str | None:
    node = root.find(f"{_q(NS_S, 'Header')}/{_q(NS_A, 'MessageID')}")
    return node.text.strip() if node is not None and node.text else None


def message_id_of(body: bytes) -> str | None:
    """Best-effort a:MessageID of a request, for RelatesTo in faults answered before full parsing."""
    try:
        root = SafeET.fromstring(body)
    except (ParseError, DefusedXmlException, ValueError):
        return None
    return _find_message_id(root)


def parse_request(body: bytes) -> Request:
    """Parse a WS-Management request envelope; raise :class:`RequestError` with the fault to answer.

    a:To is not checked (pywinrm hard-codes ``http://windows-host:5985/wsman``, reference §4.2).
    w:ResourceURI picks the plug-in: a ``windows/shell/cmd`` shell or a PowerShell endpoint (PSRP).
    """
    try:
        root: Element = SafeET.fromstring(body)
    except (ParseError, DefusedXmlException, ValueError) as exc:
        # DefusedXmlException: DTDs, entity declarations, external references; never expanded.
        raise RequestError(fault_invalid_xml()) from exc
    if root.tag != _q(NS_S, "Envelope"):
        raise RequestError(fault_schema("root element is not a SOAP 1.2 Envelope"))
    header = root.find(_q(NS_S, "Header"))
    if header is None:
        raise RequestError(fault_schema("no s:Header"))
    message_id = _find_message_id(root)
    if not message_id:
        raise RequestError(fault_schema("no a:MessageID"))

    def text_of(ns: str, local: str) -> str:
        node = header.find(_q(ns, local))
        return (node.text or "").strip() if node is not None else ""

    action = text_of(NS_A, "Action")
    if not action:
        raise RequestError(fault_schema("no a:Action"), message_id)

    raw_timeout = text_of(NS_W, "OperationTimeout")
    operation_timeout = DEFAULT_OPERATION_TIMEOUT
    if raw_timeout:
        try:
            operation_timeout = parse_duration(raw_timeout)
        except ValueError:
            raise RequestError(fault_invalid_timeout(raw_timeout), message_id) from None

    raw_size = text_of(NS_W, "MaxEnvelopeSize")
    max_envelope = DEFAULT_MAX_ENVELOPE
    if raw_size:
        try:
            max_envelope = int(raw_size)
        except ValueError:
            raise RequestError(fault_schema(f"w:MaxEnvelopeSize {raw_size!r}"), message_id) from None
        if max_envelope <= 0:
            raise RequestError(fault_schema(f"w:MaxEnvelopeSize {raw_size!r}"), message_id)
    # Larger requests are clamped to the listener's own limit rather than refused (simulator choice).
    max_envelope = min(max_envelope, SERVER_MAX_ENVELOPE)

    shell_id: str | None = None
    for selector in header.iterfind(f"{_q(NS_W, 'SelectorSet')}/{_q(NS_W, 'Selector')}"):
        if selector.get("Name") == "ShellId":
            shell_id = (selector.text or "").strip()
    options = {
        opt.get("Name", ""): (opt.text or "").strip()
        for opt in header.iterfind(f"{_q(NS_W, 'OptionSet')}/{_q(NS_W, 'Option')}")
    }
    body_node = root.find(_q(NS_S, "Body"))
    first = body_node[0] if body_node is not None and len(body_node) else None
    return Request(
        resource_uri=text_of(NS_W, "ResourceURI") or RESOURCE_URI_CMD,
        action=action,
        message_id=message_id,
        shell_id=shell_id,
        options=options,
        max_envelope=max_envelope,
        operation_timeout=operation_timeout,
        body=first,
    )


@dataclass(frozen=True)
class CreateBody:
    env: dict[str, str]
    working_directory: str | None
    idle_timeout: float | None
    input_streams: str
    output_streams: str


def parse_create(req: Request) -> CreateBody:
    shell = req.body
    if shell is None or shell.tag != _q(NS_RSP, "Shell"):
        raise RequestError(fault_schema("Create needs an rsp:Shell body"), req.message_id)
    env = {
        var.get("Name", ""): var.text or ""
        for var in shell.iterfind(f"{_q(NS_RSP, 'Environment')}/{_q(NS_RSP, 'Variable')}")
    }
    wd = shell.findtext(_q(NS_RSP, "WorkingDirectory"))
    raw_idle = (shell.findtext(_q(NS_RSP, "IdleTimeOut")) or "").strip()
    idle: float | None = None
    if raw_idle:
        # pywinrm passes idle_timeout through unconverted, so accept plain seconds as well as xs:duration.
        try:
            idle = float(raw_idle) if raw_idle.replace(".", "", 1).isdigit() else parse_duration(raw_idle)
        except ValueError:
            raise RequestError(fault_schema(f"rsp:IdleTimeOut {raw_idle!r}"), req.message_id) from None
    return CreateBody(
        env=env,
        working_directory=wd,
        idle_timeout=idle,
        input_streams=(shell.findtext(_q(NS_RSP, "InputStreams")) or "stdin").strip(),
        output_streams=(shell.findtext(_q(NS_RSP, "OutputStreams")) or "stdout stderr").strip(),
    )


@dataclass(frozen=True)
class CommandBody:
    command: str
    arguments: list[str]


def parse_command(req: Request) -> CommandBody:
    line = req.body
    if line is None or line.tag != _q(NS_RSP, "CommandLine"):
        raise RequestError(fault_schema("Command needs an rsp:CommandLine body"), req.message_id)
    command = line.findtext(_q(NS_RSP, "Command"))
    if command is None:
        raise RequestError(fault_schema("no rsp:Command"), req.message_id)
    # MS-WSMV allows one rsp:Arguments per argument; pywinrm sends a single one, joined by spaces.
    arguments = [arg.text or "" for arg in line.iterfind(_q(NS_RSP, "Arguments"))]
    return CommandBody(command=command, arguments=arguments)


def parse_receive(req: Request) -> str:
    """CommandId of rsp:Receive/rsp:DesiredStream."""
    node = req.body
    stream = node.find(_q(NS_RSP, "DesiredStream")) if node is not None and node.tag == _q(NS_RSP, "Receive") else None
    if stream is None or not stream.get("CommandId"):
        raise RequestError(fault_schema("Receive needs rsp:DesiredStream with a CommandId"), req.message_id)
    return str(stream.get("CommandId"))


@dataclass(frozen=True)
class SendBody:
    command_id: str
    data: bytes
    end: bool


def parse_send(req: Request) -> SendBody:
    node = req.body
    stream = node.find(_q(NS_RSP, "Stream")) if node is not None and node.tag == _q(NS_RSP, "Send") else None
    if stream is None or not stream.get("CommandId"):
        raise RequestError(fault_schema("Send needs rsp:Stream with a CommandId"), req.message_id)
    try:
        data = base64.b64decode((stream.text or "").strip(), validate=True)
    except ValueError:
        raise RequestError(fault_schema("rsp:Stream is not base64"), req.message_id) from None
    return SendBody(str(stream.get("CommandId")), data, (stream.get("End") or "").lower() == "true")


def parse_signal(req: Request) -> tuple[str, str]:
    """(CommandId, signal code URI) of rsp:Signal."""
    node = req.body
    if node is None or node.tag != _q(NS_RSP, "Signal") or not node.get("CommandId"):
        raise RequestError(fault_schema("Signal needs rsp:Signal with a CommandId"), req.message_id)
    return str(node.get("CommandId")), (node.findtext(_q(NS_RSP, "Code")) or "").strip()


def option_true(options: dict[str, str], name: str) -> bool:
    return options.get(name, "").strip().upper() == "TRUE"


# --- response envelopes ----------------------------------------------------------------------------


def new_message_id() -> str:
    return f"uuid:{str(uuid.uuid4()).upper()}"


def new_resource_id() -> str:
    """ShellId / CommandId: an upper-case GUID as Windows hands them out."""
    return str(uuid.uuid4()).upper()


def _root(prefixes: tuple[str, ...]) -> str:
    decls = " ".join(f'xmlns:{p}="{_NS_DECL[p]}"' for p in prefixes)
    return f'<s:Envelope xml:lang="en-US" {decls}>'


def envelope(action: str, relates_to: str | None, body: str, prefixes: tuple[str, ...] = _ROOT_FULL) -> str:
    """One response envelope: header with a fresh a:MessageID and the request's id in a:RelatesTo."""
    relates = f"<a:RelatesTo>{escape(relates_to)}</a:RelatesTo>" if relates_to else ""
    return (
        f"{_root(prefixes)}<s:Header><a:Action>{action}</a:Action><a:MessageID>{new_message_id()}</a:MessageID>"
        f"<a:To>{ANONYMOUS}</a:To>{relates}</s:Header><s:Body>{body}</s:Body></s:Envelope>"
    )


def fault_envelope(fault: SoapFault, relates_to: str | None, machine: str) -> str:
    message = escape(fault.message if fault.message is not None else fault.reason)
    wsman_fault = f'<f:WSManFault xmlns:f="{NS_F}" Code="{fault.wsman_code}" Machine={quoteattr(machine)}>'
    if fault.provider:
        # Faults raised by a provider wrap their text in f:ProviderFault, sometimes around a second
        # f:WSManFault (real recordings: the Packer log for winrscmd.dll, pypsrp for WsmSvc.dll).
        name, path = fault.provider
        if fault.provider_fault_nested:
            message = f"{wsman_fault}<f:Message>{message}</f:Message></f:WSManFault>"
        message = f"<f:ProviderFault provider={quoteattr(name)} path={quoteattr(path)}>{message}</f:ProviderFault>"
    detail = f"<w:FaultDetail>{fault.detail}</w:FaultDetail>" if fault.detail else ""
    body = (
        f"<s:Fault><s:Code><s:Value>{fault.code}</s:Value><s:Subcode><s:Value>{fault.subcode}</s:Value></s:Subcode>"
        f'</s:Code><s:Reason><s:Text xml:lang="en-US">{escape(fault.reason)}</s:Text></s:Reason><s:Detail>{detail}'
        f"{wsman_fault}<f:Message>{message}</f:Message></f:WSManFault></s:Detail></s:Fault>"
    )
    return envelope(fault.action, relates_to, body, _ROOT_FAULT)


def create_response(
    relates_to: str,
    *,
    address: str,
    shell_id: str,
    owner: str,
    client_ip: str,
    idle_timeout: float,
    input_streams: str,
    output_streams: str,
) -> str:
    """x:ResourceCreated (what pywinrm reads: the element with Name="ShellId") plus the rsp:Shell
    description a real Windows server appends (reference §4.3, "Create response from a real Windows server")."""
    body = (
        f"<x:ResourceCreated><a:Address>{escape(address)}</a:Address><a:ReferenceParameters>"
        f"<w:ResourceURI>{RESOURCE_URI_CMD}</w:ResourceURI><w:SelectorSet>"
        f'<w:Selector Name="ShellId">{shell_id}</w:Selector></w:SelectorSet></a:ReferenceParameters>'
        f'</x:ResourceCreated><rsp:Shell xmlns:rsp="{NS_RSP}"><rsp:ShellId>{shell_id}</rsp:ShellId>'
        f"<rsp:ResourceUri>{RESOURCE_URI_CMD}</rsp:ResourceUri><rsp:Owner>{escape(owner)}</rsp:Owner>"
        f"<rsp:ClientIP>{escape(client_ip)}</rsp:ClientIP><rsp:IdleTimeOut>{format_seconds(idle_timeout)}"
        f"</rsp:IdleTimeOut><rsp:InputStreams>{escape(input_streams)}</rsp:InputStreams>"
        f"<rsp:OutputStreams>{escape(output_streams)}</rsp:OutputStreams><rsp:ShellRunTime>P0DT0H0M0S"
        f"</rsp:ShellRunTime><rsp:ShellInactivity>P0DT0H0M0S</rsp:ShellInactivity></rsp:Shell>"
    )
    return envelope("http://schemas.xmlsoap.org/ws/2004/09/transfer/CreateResponse", relates_to, body)


def command_response(relates_to: str, command_id: str) -> str:
    body = f"<rsp:CommandResponse><rsp:CommandId>{command_id}</rsp:CommandId></rsp:CommandResponse>"
    return envelope(f"{NS_RSP}/CommandResponse", relates_to, body)


def send_response(relates_to: str) -> str:
    return envelope(f"{NS_RSP}/SendResponse", relates_to, "<rsp:SendResponse/>")


def signal_response(relates_to: str) -> str:
    return envelope(f"{NS_RSP}/SignalResponse", relates_to, "<rsp:SignalResponse/>")


def delete_response(relates_to: str) -> str:
    return envelope("http://schemas.xmlsoap.org/ws/2004/09/transfer/DeleteResponse", relates_to, "", _ROOT_DELETE)


# Receive responses are assembled from pieces so the output pager can measure them before building.
RECEIVE_ACTION = f"{NS_RSP}/ReceiveResponse"


def receive_envelope_parts(relates_to: str) -> tuple[str, str]:
    """(text before the first rsp:Stream, text after the CommandState) of a ReceiveResponse."""
    whole = envelope(RECEIVE_ACTION, relates_to, "<rsp:ReceiveResponse>\x00</rsp:ReceiveResponse>", _ROOT_RECEIVE)
    head, tail = whole.split("\x00")
    return head, tail


def stream_element(name: str, command_id: str, data: bytes, *, end: bool = False) -> str:
    """One rsp:Stream chunk; the empty End="true" form closes a stream (real layout, reference §4.3)."""
    end_attr = ' End="true"' if end else ""
    payload = base64.b64encode(data).decode("ascii")
    return f'<rsp:Stream Name="{name}" CommandId="{command_id}"{end_attr}>{payload}</rsp:Stream>'


def stream_overhead(name: str, command_id: str) -> int:
    """Bytes an rsp:Stream element adds around its base64 payload."""
    return len(stream_element(name, command_id, b""))


def command_state(command_id: str, *, exit_code: int | None) -> str:
    """CommandState Done with rsp:ExitCode, or Running (no ExitCode: pywinrm keeps receiving)."""
    if exit_code is None:
        return f'<rsp:CommandState CommandId="{command_id}" State="{STATE_RUNNING}"></rsp:CommandState>'
    return (
        f'<rsp:CommandState CommandId="{command_id}" State="{STATE_DONE}">'
        f"<rsp:ExitCode>{exit_code}</rsp:ExitCode></rsp:CommandState>"
    )
