"""The exporter's configuration file (``--config.file``), strictly validated.

Shape (every key is documented in docs/configuration.md)::

    modules:
      default:
        targets: [hv01.corp.example, "*.hyperv.corp.example", 10.20.0.0/24]   # allowlist (required)
        timeout: 30s
        collectors: [host, vm, integration_services, kvp]    # default: every collector the flags allow
        cache_ttl: 10s             # concurrent/nearby probes of one host share one result
        refresh_interval: 0s       # > 0: refresh in the background and serve the last good result
        endpoints: {}              # target -> WinRM URL, when a target is not reachable under its name
        winrm:
          protocol: psrp           # psrp (default, PowerShell remoting) or winrs (a cmd shell, administrators only)
          configuration_name: HyperVExporter   # psrp endpoint; default microsoft.powershell
          scheme: https            # https (default) or http
          port: 5986               # default by scheme
          transport: ntlm          # ntlm (default), kerberos, certificate, basic
          username: 'CORP\\svc-hyperv-monitor'
          password_file: /etc/hyperv_exporter/password     # or password_env: HYPERV_PASSWORD
          ca_file: /etc/hyperv_exporter/winrm-ca.pem
        kvp:
          keys: [OSName, OSVersion, FullyQualifiedDomainName, NetworkAddressIPv4]
        discovery:                 # optional: /sd lists the guest agents of running VMs (discovery.py)
          networks: [10.0.0.0/8]   # CIDR allowlist of guest addresses (required)

Passwords only come from a file or an environment variable and are read when the config is
loaded (so a missing file fails at start-up, not at the first scrape); they are held in
:class:`Secret`, whose ``repr``/``str`` is ``<secret>``. Every error names the file, the line and
the key; the process exits non-zero before serving.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hyperv_exporter.host.collectors import COLLECTORS
from hyperv_exporter.host.discovery import DiscoverySettings, parse_discovery
from hyperv_exporter.host.model import KVP_SOURCES
from hyperv_exporter.host.transport.http import DEFAULT_MAX_RESPONSE_BYTES, HAVE_KERBEROS
from hyperv_exporter.host.transport.settings import DEFAULT_CONFIGURATION_NAME, PROTOCOLS, Secret, WinRMSettings
from hyperv_exporter.yamlutil import Node, YamlError, document, read_text

DEFAULT_KVP_KEYS = ("OSName", "OSVersion", "FullyQualifiedDomainName", "NetworkAddressIPv4")
TRANSPORTS = ("ntlm", "kerberos", "certificate", "basic")
DEFAULT_PORTS = {"https": 5986, "http": 5985}
MAX_VALUE_LENGTH_LIMIT = 2048

# A probe target is a host name or an IP address, optionally with a port; nothing that could
# smuggle a scheme, credentials or a path into the WinRM URL. Matched with fullmatch: ``$`` would
# also match before a trailing newline.
_HOSTNAME = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*\.?",
    re.ASCII,
)
# A name whose last label is a number is an IPv4 address in one of the forms inet_aton() accepts
# (2130706433, 127.1, 0x7f.1, 0177.0.0.1 is octal): the allowlist would compare it as a name
# while the resolver connects to an address. Only canonical dotted quads are accepted.
_NUMERIC_LABEL = re.compile(r"[0-9]+|0[xX][0-9A-Fa-f]*", re.ASCII)
_PORT = re.compile(r"[0-9]{1,5}", re.ASCII)
_PATTERN = re.compile(r"[A-Za-z0-9.\-*?\[\]!]+", re.ASCII)


class ConfigError(ValueError):
    """The configuration is invalid; the message says where and why."""


def split_target(target: str) -> tuple[str, int | None]:
    """``host``, ``host:5986``, ``10.0.0.1``, ``[fe80::1]:5986`` -> (host, port). Raises ValueError.

    A trailing dot is dropped (``hv01.corp.example.`` is the same host). IPv6 zone IDs
    (``fe80::1%eth0``) are refused: they pick a network interface, so an allowlisted link-local
    address could reach a different machine on another link.
    """
    target = target.strip()
    if (
        not target
        or len(target) > 300
        or not target.isascii()
        or not target.isprintable()
        or any(c in target for c in "/@ \t\\?#%")
    ):
        raise ValueError(f"target {target[:80]!r} is not a host name or IP address (no scheme, user or path)")
    if target.startswith("["):
        end = target.find("]")
        if end < 0:
            raise ValueError(f"target {target!r}: unbalanced [")
        host, rest = target[1:end], target[end + 1 :]
        ipaddress.IPv6Address(host)
        port_text = rest[1:] if rest.startswith(":") else None
        if rest and port_text is None:
            raise ValueError(f"target {target!r}: unexpected text after ]")
    elif target.count(":") > 1:
        ipaddress.IPv6Address(target)
        return target, None
    else:
        host, _, port_text = target.partition(":")
        if not _HOSTNAME.fullmatch(host):
            raise ValueError(f"target {target!r} is not a host name or IP address")
        host = host.removesuffix(".")
        if _NUMERIC_LABEL.fullmatch(host.rpartition(".")[2]):
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                raise ValueError(f"target {target!r}: an IPv4 address must be four decimal numbers") from None
        port_text = port_text if ":" in target else None
    if port_text is None:
        return host, None
    if not _PORT.fullmatch(port_text) or not 0 < int(port_text) < 65536:
        raise ValueError(f"target {target!r}: invalid port")
    return host, int(port_text)


def canonical_host(host: str) -> str:
    """The form hosts are compared in: IP addresses normalised, names lower-case without a trailing dot."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host.lower().removesuffix(".")


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A shell pattern whose ``*`` and ``?`` stay inside one DNS label (as in TLS wildcards).

    With fnmatch's ``*``, ``hv*`` would also match ``hv01.attacker.example``: whoever controls
    that DNS zone would receive the module's credentials. ``*`` alone means any target.
    """
    if pattern == "*":
        return re.compile(r".*", re.DOTALL)
    if not _PATTERN.fullmatch(pattern):
        raise ValueError(f"pattern {pattern!r}: only letters, digits, '.', '-' and the wildcards * ? [...] are allowed")
    parts: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "*":
            parts.append("[^.]*")
        elif char == "?":
            parts.append("[^.]")
        elif char == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                raise ValueError(f"pattern {pattern!r}: unbalanced [")
            body = pattern[i + 1 : end]
            body = "^" + body[1:] if body.startswith("!") else body
            parts.append(f"[{body}]")
            i = end
        else:
            parts.append(re.escape(char))
        i += 1
    try:
        return re.compile("".join(parts), re.ASCII)
    except re.error as exc:
        raise ValueError(f"pattern {pattern!r}: {exc}") from None


@dataclass(frozen=True)
class TargetAllowlist:
    """Which targets a module may send its credentials to: names, shell patterns and networks.

    Names, patterns and networks allow a host on the module's WinRM port only; another port needs
    an entry that names it (``hv01.corp.example:15986``). Otherwise anyone who may call /probe could
    point the exporter at a port any local user of an allowed host can listen on, and collect the
    module's credentials (a Basic password, or an NTLM exchange to relay or crack).
    """

    names: frozenset[str] = frozenset()
    host_ports: frozenset[tuple[str, int]] = frozenset()
    patterns: tuple[str, ...] = ()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    _regexes: tuple[re.Pattern[str], ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_regexes", tuple(_pattern_regex(p) for p in self.patterns))

    @classmethod
    def parse(cls, entries: Iterable[str]) -> TargetAllowlist:
        names: set[str] = set()
        host_ports: set[tuple[str, int]] = set()
        patterns: list[str] = []
        networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for raw in entries:
            entry = raw.strip()
            if not entry:
                raise ValueError("empty target entry")
            if any(c in entry for c in "*?[") and not entry.startswith("["):  # "[v6]:port" is no pattern
                if ":" in entry:
                    raise ValueError(f"pattern {entry!r}: patterns cannot name a port; list host:port entries")
                _pattern_regex(entry.lower())  # fail at load time, not at the first probe
                patterns.append(entry.lower())
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            host, port = split_target(entry)
            if port is None:
                names.add(canonical_host(host))
            else:
                host_ports.add((canonical_host(host), port))
        return cls(frozenset(names), frozenset(host_ports), tuple(patterns), tuple(networks))

    def allows(self, target: str, default_port: int = DEFAULT_PORTS["https"]) -> bool:
        """Whether ``target`` may be probed; ``default_port`` is the module's WinRM port. Raises ValueError."""
        host, port = split_target(target)
        host = canonical_host(host)
        if port is not None and port != default_port:
            return (host, port) in self.host_ports
        if host in self.names or (host, default_port) in self.host_ports:
            return True
        if any(regex.fullmatch(host) for regex in self._regexes):
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in net for net in self.networks)

    def describe(self) -> list[str]:
        ports = sorted(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.host_ports)
        return sorted(self.names) + ports + list(self.patterns) + [str(n) for n in self.networks]


@dataclass(frozen=True)
class KvpSettings:
    keys: tuple[str, ...] = DEFAULT_KVP_KEYS
    sources: tuple[str, ...] = KVP_SOURCES
    max_value_length: int = 256


@dataclass(frozen=True)
class Module:
    name: str
    targets: TargetAllowlist
    winrm: WinRMSettings
    timeout: float = 30.0
    collectors: tuple[str, ...] | None = None  # None: every collector the command line allows
    kvp: KvpSettings = KvpSettings()
    endpoints: Mapping[str, str] = field(default_factory=dict)
    cache_ttl: float = 10.0
    refresh_interval: float = 0.0
    discovery: DiscoverySettings | None = None  # /sd: guest agents of running VMs (discovery.py)

    def endpoint_url(self, target: str) -> str:
        override = self.endpoints.get(target.lower()) or self.endpoints.get(self.target_key(target))
        if override:
            return override
        host, port = split_target(target)
        return self.winrm.url(host, port)

    def target_key(self, target: str) -> str:
        return target_key(target, self.winrm.port)


def target_key(target: str, default_port: int) -> str:
    """``target`` in canonical form, without ``default_port`` (how ``endpoints`` keys are compared)."""
    host, port = split_target(target)
    host = canonical_host(host)
    if port is None or port == default_port:
        return host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class Config:
    modules: Mapping[str, Module]
    source: str = "<built-in>"


def _read_password(node: Node, keys: dict[str, Node], base: Path) -> tuple[Secret | None, str | None]:
    if "password_file" in keys and "password_env" in keys:
        node.fail("set password_file or password_env, not both")
    if "password_file" in keys:
        path = Path(keys["password_file"].string())
        if not path.is_absolute():
            path = base / path
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            keys["password_file"].fail(f"cannot read password file {path}: {exc.strerror}")
        password = text.rstrip("\r\n")
        if not password:
            keys["password_file"].fail(f"password file {path} is empty")
        return Secret(password), f"file {path}"
    if "password_env" in keys:
        name = keys["password_env"].string()
        value = os.environ.get(name)
        if not value:
            keys["password_env"].fail(f"environment variable {name} is not set or empty")
        return Secret(value), f"env {name}"
    return None, None


def _winrm(node: Node, base: Path) -> WinRMSettings:
    if isinstance(node.value, dict) and "password" in node.value:
        node.fail("passwords are never written into the config: use password_file or password_env")
    keys = node.mapping(
        [
            "protocol", "configuration_name",
            "scheme", "port", "path", "transport", "username", "password_file", "password_env", "ca_file",
            "server_cert_validation", "client_cert_file", "client_key_file", "allow_unencrypted",
            "message_encryption", "kerberos_hostname_override", "gzip", "max_output_bytes", "max_response_bytes",
            "shell_max_idle", "shell_max_lifetime",
        ]
    )  # fmt: skip
    scheme = keys["scheme"].string(DEFAULT_PORTS) if "scheme" in keys else "https"
    transport = keys["transport"].string(TRANSPORTS) if "transport" in keys else "ntlm"
    password, source = _read_password(node, keys, base)

    def path_of(key: str) -> str | None:
        if key not in keys:
            return None
        path = Path(keys[key].string())
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            keys[key].fail(f"file {path} does not exist")
        return str(path)

    configuration_name = (
        keys["configuration_name"].string() if "configuration_name" in keys else DEFAULT_CONFIGURATION_NAME
    )
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,128}", configuration_name):
        keys["configuration_name"].fail("a session configuration name: letters, digits, '.', '_' and '-'")
    settings = WinRMSettings(
        protocol=keys["protocol"].string(PROTOCOLS) if "protocol" in keys else "psrp",
        configuration_name=configuration_name,
        scheme=scheme,
        port=keys["port"].integer(1, 65535) if "port" in keys else DEFAULT_PORTS[scheme],
        path=keys["path"].string() if "path" in keys else "/wsman",
        transport=transport,
        username=keys["username"].string() if "username" in keys else None,
        password=password,
        password_source=source,
        ca_file=path_of("ca_file"),
        server_cert_validation=(
            keys["server_cert_validation"].string(("validate", "ignore"))
            if "server_cert_validation" in keys
            else "validate"
        ),
        client_cert_file=path_of("client_cert_file"),
        client_key_file=path_of("client_key_file"),
        allow_unencrypted=keys["allow_unencrypted"].boolean() if "allow_unencrypted" in keys else False,
        message_encryption=(
            keys["message_encryption"].string(("auto", "always", "never")) if "message_encryption" in keys else "auto"
        ),
        kerberos_hostname_override=(
            keys["kerberos_hostname_override"].string() if "kerberos_hostname_override" in keys else None
        ),
        gzip=keys["gzip"].boolean() if "gzip" in keys else True,
        max_output_bytes=keys["max_output_bytes"].size() if "max_output_bytes" in keys else 64 * 1024 * 1024,
        max_response_bytes=(
            keys["max_response_bytes"].size() if "max_response_bytes" in keys else DEFAULT_MAX_RESPONSE_BYTES
        ),
        shell_max_idle=keys["shell_max_idle"].duration() if "shell_max_idle" in keys else 600.0,
        shell_max_lifetime=keys["shell_max_lifetime"].duration() if "shell_max_lifetime" in keys else 3600.0,
    )
    if not settings.path.startswith("/"):
        keys["path"].fail("must start with /")
    if transport == "certificate":
        if settings.scheme != "https":
            node.fail("certificate transport needs scheme: https")
        if not (settings.client_cert_file and settings.client_key_file):
            node.fail("certificate transport needs client_cert_file and client_key_file")
    elif transport == "kerberos" and not HAVE_KERBEROS:
        node.fail("kerberos transport needs pywinrm's kerberos extra: pip install 'hyperv-exporter[kerberos]'")
    elif transport != "kerberos" and (settings.username is None or settings.password is None):
        node.fail(f"{transport} transport needs username and password_file or password_env")
    if transport == "basic" and scheme == "http" and not settings.allow_unencrypted:
        node.fail(
            "basic transport over plain http sends the password in clear text; use https, ntlm or kerberos, "
            "or set allow_unencrypted: true if you really mean it"
        )
    if settings.message_encryption == "always" and transport not in ("ntlm", "kerberos"):
        keys["message_encryption"].fail(f"{transport} transport cannot encrypt messages; use ntlm or kerberos")
    if settings.message_encryption == "never" and scheme == "http" and not settings.allow_unencrypted:
        node.fail("message_encryption: never over plain http needs allow_unencrypted: true")
    return settings


def _kvp(node: Node) -> KvpSettings:
    keys = node.mapping(["keys", "sources", "max_value_length"])
    kvp_keys = tuple(keys["keys"].strings()) if "keys" in keys else DEFAULT_KVP_KEYS
    for key_node in keys["keys"].items() if "keys" in keys else []:
        if not key_node.string().strip() or len(key_node.string()) > 512:
            key_node.fail("KVP keys are 1 to 512 characters")
    sources = tuple(item.string(KVP_SOURCES) for item in keys["sources"].items()) if "sources" in keys else KVP_SOURCES
    return KvpSettings(
        keys=kvp_keys,
        sources=sources,
        max_value_length=(
            keys["max_value_length"].integer(1, MAX_VALUE_LENGTH_LIMIT) if "max_value_length" in keys else 256
        ),
    )


def _module(name: str, node: Node, base: Path) -> Module:
    keys = node.mapping(
        ["targets", "timeout", "collectors", "kvp", "winrm", "endpoints", "cache_ttl", "refresh_interval", "discovery"],
        required=["targets", "winrm"],
    )
    targets_node = keys["targets"]
    entries = targets_node.strings()
    if not entries:
        targets_node.fail("list at least one target, pattern or network (use '*' to allow any, which is unsafe)")
    targets = targets_node.convert(lambda _: TargetAllowlist.parse(entries))
    collectors = None
    if "collectors" in keys:
        collectors = tuple(item.string(COLLECTORS) for item in keys["collectors"].items())
    winrm = _winrm(keys["winrm"], base)
    endpoints: dict[str, str] = {}
    for target, url_node in keys["endpoints"].entries() if "endpoints" in keys else []:
        url = url_node.string()
        if not re.fullmatch(r"https?://[^/\s@]+(/\S*)?", url):
            url_node.fail("expected an http(s)://host:port/path URL without credentials")
        try:
            endpoints[target_key(target, winrm.port)] = url
        except ValueError:
            endpoints[target.lower()] = url  # never matches a valid target, but harmless
    timeout = keys["timeout"].duration(minimum=0.1) if "timeout" in keys else 30.0
    kvp = _kvp(keys["kvp"]) if "kvp" in keys else KvpSettings()
    return Module(
        name=name,
        targets=targets,
        winrm=winrm,
        timeout=timeout,
        collectors=collectors,
        kvp=kvp,
        endpoints=endpoints,
        cache_ttl=keys["cache_ttl"].duration() if "cache_ttl" in keys else 10.0,
        refresh_interval=keys["refresh_interval"].duration() if "refresh_interval" in keys else 0.0,
        discovery=(
            parse_discovery(keys["discovery"], kvp.keys, kvp.sources, collectors) if "discovery" in keys else None
        ),
    )


def parse_config(text: str, filename: str, base: Path | None = None) -> Config:
    """Validate config text. ``base`` is where relative paths are resolved (the file's folder)."""
    try:
        root = document(text, filename)
        if root.value is None:
            root.fail("the file is empty; it needs a modules: mapping")
        top = root.mapping(["modules"], required=["modules"])
        modules = {name: _module(name, node, base or Path(filename).parent) for name, node in top["modules"].entries()}
        if not modules:
            top["modules"].fail("define at least one module")
    except YamlError as exc:
        raise ConfigError(str(exc)) from None
    return Config(modules=modules, source=filename)


def load_config(path: str) -> Config:
    try:
        text = read_text(path, "config file")
    except YamlError as exc:
        raise ConfigError(str(exc)) from None
    return parse_config(text, path, Path(path).resolve().parent)
