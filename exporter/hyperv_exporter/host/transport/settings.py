"""Connection settings of one module's WinRM transport, and the secret type that keeps passwords out of
every repr, log line and debug page. Transports and the configuration loader both use them; neither
imports the other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hyperv_exporter import logutil
from hyperv_exporter.host.transport.http import DEFAULT_MAX_RESPONSE_BYTES


class Secret:
    """A password that never shows itself in reprs, logs or debug output."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        logutil.register_secret(value)

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))


PROTOCOLS = ("psrp", "winrs")
DEFAULT_CONFIGURATION_NAME = "microsoft.powershell"


@dataclass(frozen=True)
class WinRMSettings:
    protocol: str = "psrp"  # psrp: PowerShell remoting (runspace pool kept open); winrs: a cmd shell
    configuration_name: str = DEFAULT_CONFIGURATION_NAME  # psrp: the endpoint (HyperVExporter for JEA)
    scheme: str = "https"
    port: int = 5986
    path: str = "/wsman"
    transport: str = "ntlm"
    username: str | None = None
    password: Secret | None = None
    password_source: str | None = None  # "file /path" or "env NAME", for the landing page
    ca_file: str | None = None
    server_cert_validation: str = "validate"
    client_cert_file: str | None = None
    client_key_file: str | None = None
    allow_unencrypted: bool = False
    message_encryption: str = "auto"
    kerberos_hostname_override: str | None = None
    gzip: bool = True
    max_output_bytes: int = 64 * 1024 * 1024
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES  # one WinRM HTTP response body
    shell_max_idle: float = 600.0
    shell_max_lifetime: float = 3600.0

    def url(self, host: str, port: int | None) -> str:
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        return f"{self.scheme}://{host}:{port or self.port}{self.path}"

    def redacted(self) -> dict[str, Any]:
        """The settings as shown on the landing page and in debug output (no secrets)."""
        shown = {k: v for k, v in vars(self).items() if k != "password"}
        shown["password"] = "<secret>" if self.password is not None else None
        return shown
