"""The exporter-toolkit web configuration file (``--web.config.file``): parsing and validation.

Same keys, defaults and rules as prometheus/exporter-toolkit's ``docs/web-configuration.md``.
What Python's ssl module cannot do is rejected with an error that says so, never ignored:

- ``client_auth_type`` RequestClientCert / RequireAnyClientCert (ssl cannot ask for a certificate
  without verifying it), and the verifying types without ``client_ca_file``/``client_ca`` (Go
  would fall back to the system roots, which is almost never what anyone wants for client auth);
- ``min_version``/``max_version`` TLS10 and TLS11 (deprecated in ssl, refused by OpenSSL's default
  security level, so accepting them would be a silent no-op);
- ``curve_preferences`` with more than one curve (ssl can only pin a single curve);
- ``cipher_suites`` naming only TLS 1.3 suites (those are always on, in Go and OpenSSL alike);
- ``http_server_config.http2: true`` (the stdlib server speaks HTTP/1.1 only);
- ``rate_limit`` with a burst below 1 (Go's limiter would then refuse every request).

``cipher_suites`` takes Go's names (``TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256``), mapped to OpenSSL's.
Unlike the toolkit, any key under ``tls_server_config`` turns TLS on, so a lone ``min_version`` is
an error (no certificate) instead of being silently ignored.

Parsing walks the YAML node tree rather than constructed Python objects, so that every error names
the key path and line, and so that scalars keep their literal text as in Go's yaml.v2
(``X-XSS-Protection: 1`` is the string "1"). Secrets (inline ``key``, password hashes) never
appear in error messages or reprs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .auth import is_bcrypt_hash


class WebConfigError(Exception):
    """An unusable web configuration; the message names the file and the offending key."""


TLS_VERSIONS = ("TLS10", "TLS11", "TLS12", "TLS13")  # ascending, so the index orders them
CLIENT_AUTH_TYPES = ("NoClientCert", "VerifyClientCertIfGiven", "RequireAndVerifyClientCert")
_UNSUPPORTED_CLIENT_AUTH = ("RequestClientCert", "RequireAnyClientCert", "RequireClientCert")

# Go's tls.CipherSuites() names -> OpenSSL names. None marks the TLS 1.3 suites, which neither Go
# nor OpenSSL lets a server configure: listing them is accepted and changes nothing.
CIPHER_SUITES: dict[str, str | None] = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_AES_128_GCM_SHA256": None,
    "TLS_AES_256_GCM_SHA384": None,
    "TLS_CHACHA20_POLY1305_SHA256": None,
}

# Go's curve names -> OpenSSL group names.
CURVES = {"CurveP256": "prime256v1", "CurveP384": "secp384r1", "CurveP521": "secp521r1", "X25519": "X25519"}

# The only headers the toolkit lets a config add, with their allowed values (empty: free text).
HEADERS: dict[str, tuple[str, ...]] = {
    "Content-Security-Policy": (),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-Content-Type-Options": ("nosniff",),
    "X-XSS-Protection": (),
    "Strict-Transport-Security": (),
}


@dataclass(frozen=True)
class TLSServerConfig:
    cert_file: str = ""  # absolute once parsed (relative paths resolve against the config file)
    key_file: str = ""
    cert: str = ""  # inline PEM, instead of cert_file
    key: str = field(default="", repr=False)  # inline PEM, a secret
    client_ca_file: str = ""
    client_ca: str = ""
    client_auth_type: str = "NoClientCert"
    client_allowed_sans: tuple[str, ...] = ()
    min_version: str = "TLS12"
    max_version: str = "TLS13"
    cipher_suites: tuple[str, ...] = ()
    prefer_server_cipher_suites: bool = True
    curve_preferences: tuple[str, ...] = ()

    @property
    def files(self) -> tuple[str, ...]:
        """The files this config reads, so a reload can notice a rotated certificate."""
        return tuple(p for p in (self.cert_file, self.key_file, self.client_ca_file) if p)


@dataclass(frozen=True)
class HTTPServerConfig:
    headers: Mapping[str, str] = field(default_factory=dict)
    http2: bool = False


@dataclass(frozen=True)
class RateLimitConfig:
    interval: float  # seconds between requests, > 0
    burst: int


@dataclass(frozen=True)
class WebConfig:
    path: str | None = None
    tls: TLSServerConfig | None = None  # None: plain HTTP
    http: HTTPServerConfig = field(default_factory=HTTPServerConfig)
    basic_auth_users: Mapping[str, str] = field(default_factory=dict, repr=False)
    rate_limit: RateLimitConfig | None = None

    @property
    def users(self) -> tuple[str, ...]:
        return tuple(sorted(self.basic_auth_users))


_TOP_KEYS = ("tls_server_config", "http_server_config", "basic_auth_users", "rate_limit")
_TLS_KEYS = (
    "cert_file",
    "key_file",
    "cert",
    "key",
    "client_ca_file",
    "client_ca",
    "client_auth_type",
    "client_allowed_sans",
    "min_version",
    "max_version",
    "cipher_suites",
    "prefer_server_cipher_suites",
    "curve_preferences",
)
_HTTP_KEYS = ("headers", "http2")
_RATE_LIMIT_KEYS = ("interval", "burst")

_NULL_TAG = "tag:yaml.org,2002:null"
_BOOL_TAG = "tag:yaml.org,2002:bool"
_INT_TAG = "tag:yaml.org,2002:int"

_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")  # Go accepts both micro signs
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_go_duration(text: str) -> float:
    """Go's ``time.ParseDuration`` syntax (``1m30s``, ``500ms``, ``0``) -> seconds; ValueError otherwise."""
    sign = -1.0 if text.startswith("-") else 1.0
    body = text[1:] if text.startswith(("-", "+")) else text
    if body == "0":
        return 0.0
    pos, total = 0, 0.0
    while pos < len(body):
        match = _DURATION_PART.match(body, pos)
        if match is None:
            raise ValueError(f"invalid duration {text!r} (use Go syntax such as 1s, 500ms, 1m30s)")
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if not body:
        raise ValueError("empty duration")
    return sign * total


class _Parser:
    """Typed access to YAML nodes; every failure becomes a WebConfigError naming file, key and line."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.base_dir = Path(path).absolute().parent

    def error(self, key: str, node: yaml.Node | None, message: str) -> WebConfigError:
        line = f" (line {node.start_mark.line + 1})" if node is not None else ""
        where = f"{key}: " if key else ""
        return WebConfigError(f"web config {self.path}: {where}{message}{line}")

    def is_null(self, node: yaml.Node) -> bool:
        return isinstance(node, yaml.ScalarNode) and node.tag == _NULL_TAG

    def is_empty(self, node: yaml.Node) -> bool:
        return isinstance(node, yaml.ScalarNode) and (node.tag == _NULL_TAG or node.value == "")

    def mapping(self, node: yaml.Node, key: str, allowed: tuple[str, ...] | None) -> dict[str, yaml.Node]:
        """Entries of a mapping node; unknown (when ``allowed`` is given) and duplicate keys are errors."""
        if self.is_null(node):
            return {}
        if not isinstance(node, yaml.MappingNode):
            raise self.error(key, node, "expected a mapping")
        entries: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _NULL_TAG:
                raise self.error(key, key_node, "keys must be plain strings")
            name = key_node.value
            path = f"{key}.{name}" if key else name
            if allowed is not None and name not in allowed:
                raise self.error(path, key_node, f"unknown key {name!r} (allowed: {', '.join(allowed)})")
            if name in entries:
                raise self.error(path, key_node, "duplicate key")
            entries[name] = value_node
        return entries

    def string(self, node: yaml.Node, key: str) -> str:
        """Any scalar as its literal text, like yaml.v2 decoding into a Go string; null is empty."""
        if not isinstance(node, yaml.ScalarNode):
            raise self.error(key, node, "expected a string")
        if node.tag == _NULL_TAG:
            return ""
        return str(node.value)

    def choice(self, node: yaml.Node, key: str, choices: tuple[str, ...]) -> str:
        value = self.string(node, key)
        if value not in choices:
            raise self.error(key, node, f"unknown value {value!r} (one of: {', '.join(choices)})")
        return value

    def boolean(self, node: yaml.Node, key: str, default: bool) -> bool:
        if self.is_null(node):
            return default
        if not isinstance(node, yaml.ScalarNode) or node.tag != _BOOL_TAG:
            raise self.error(key, node, "expected true or false")
        return bool(yaml.SafeLoader.bool_values[str(node.value).lower()])

    def integer(self, node: yaml.Node, key: str) -> int:
        if not isinstance(node, yaml.ScalarNode) or node.tag != _INT_TAG:
            raise self.error(key, node, "expected an integer")
        value = yaml.SafeLoader("").construct_yaml_int(node)
        assert isinstance(value, int)
        return value

    def strings(self, node: yaml.Node, key: str) -> tuple[str, ...]:
        if self.is_null(node):
            return ()
        if not isinstance(node, yaml.SequenceNode):
            raise self.error(key, node, "expected a list")
        return tuple(self.string(item, f"{key}[{i}]") for i, item in enumerate(node.value))

    def file(self, node: yaml.Node, key: str) -> str:
        value = self.string(node, key)
        if "\0" in value:
            raise self.error(key, node, "file names cannot contain NUL characters")
        return str(self.base_dir / value) if value else ""


def parse_web_config(text: str, path: str) -> WebConfig:
    """Parse and validate the YAML text of a web config; ``path`` names it in errors and anchors relative paths.

    This checks everything that can be checked without opening the certificate files;
    :func:`hyperv_exporter.web.load_web_config` also loads them.
    """
    parser = _Parser(path)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        # str(exc) quotes the offending source line, which may be a password hash or key material.
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise parser.error("", None, f"invalid YAML: {exc.problem or exc.context}{where}") from None
    except yaml.YAMLError as exc:
        raise parser.error("", None, f"invalid YAML: {exc}") from None
    except RecursionError:  # PyYAML composes nested collections recursively
        raise parser.error("", None, "nested too deeply to be a web configuration") from None
    if root is None:
        return WebConfig(path=path)
    top = parser.mapping(root, "", _TOP_KEYS)
    return WebConfig(
        path=path,
        tls=_parse_tls(parser, top["tls_server_config"]) if "tls_server_config" in top else None,
        http=_parse_http(parser, top["http_server_config"]) if "http_server_config" in top else HTTPServerConfig(),
        basic_auth_users=_parse_users(parser, top["basic_auth_users"]) if "basic_auth_users" in top else {},
        rate_limit=_parse_rate_limit(parser, top["rate_limit"]) if "rate_limit" in top else None,
    )


def _parse_tls(p: _Parser, node: yaml.Node) -> TLSServerConfig | None:
    section = "tls_server_config"
    # Any key that is set turns TLS on; null and empty values count as absent, as in Go.
    entries = {k: v for k, v in p.mapping(node, section, _TLS_KEYS).items() if not p.is_empty(v)}
    if not entries:
        return None

    def key(name: str) -> str:
        return f"{section}.{name}"

    files = {
        name: p.file(entries[name], key(name))
        for name in ("cert_file", "key_file", "client_ca_file")
        if name in entries
    }
    inline = {name: p.string(entries[name], key(name)) for name in ("cert", "key", "client_ca") if name in entries}
    for name in inline:
        if f"{name}_file" in files:
            raise p.error(key(name), entries[name], f"set only one of {name} and {name}_file")
    for name in ("cert", "key"):
        if name not in inline and f"{name}_file" not in files:
            raise p.error(section, node, f"TLS is enabled but {name}_file (or an inline {name}) is missing")

    auth_type = "NoClientCert"
    if "client_auth_type" in entries:
        auth_node = entries["client_auth_type"]
        auth_type = p.string(auth_node, key("client_auth_type"))
        if auth_type in _UNSUPPORTED_CLIENT_AUTH:
            raise p.error(
                key("client_auth_type"),
                auth_node,
                f"{auth_type} is not supported: Python's ssl module cannot accept a client certificate without "
                "verifying it; use RequireAndVerifyClientCert (or VerifyClientCertIfGiven) with client_ca_file",
            )
        auth_type = p.choice(auth_node, key("client_auth_type"), CLIENT_AUTH_TYPES)
    has_ca = "client_ca" in inline or "client_ca_file" in files
    if has_ca and auth_type == "NoClientCert":
        raise p.error(
            key("client_auth_type"),
            node,
            "client CAs are configured but client_auth_type is NoClientCert; "
            "set it to RequireAndVerifyClientCert or VerifyClientCertIfGiven",
        )
    if not has_ca and auth_type != "NoClientCert":
        raise p.error(key("client_ca_file"), node, f"client_auth_type {auth_type} needs client_ca_file or client_ca")

    sans: tuple[str, ...] = ()
    if "client_allowed_sans" in entries:
        sans = p.strings(entries["client_allowed_sans"], key("client_allowed_sans"))
        if auth_type != "RequireAndVerifyClientCert":
            raise p.error(
                key("client_allowed_sans"),
                entries["client_allowed_sans"],
                "client_allowed_sans requires client_auth_type RequireAndVerifyClientCert "
                "(otherwise a client may send no certificate, leaving no SAN to match)",
            )

    versions: dict[str, str] = {}
    for version_key, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        version = default
        if version_key in entries:
            version = p.choice(entries[version_key], key(version_key), TLS_VERSIONS)
            if version in ("TLS10", "TLS11"):
                raise p.error(
                    key(version_key),
                    entries[version_key],
                    f"{version} is not supported: Python's ssl module deprecates TLS 1.0/1.1 and "
                    "OpenSSL's default security level refuses them; use TLS12 or TLS13",
                )
        versions[version_key] = version
    if TLS_VERSIONS.index(versions["min_version"]) > TLS_VERSIONS.index(versions["max_version"]):
        raise p.error(
            key("min_version"), node, f"{versions['min_version']} is above max_version {versions['max_version']}"
        )

    ciphers = _choices(p, entries, key("cipher_suites"), "cipher_suites", tuple(CIPHER_SUITES))
    if ciphers and all(CIPHER_SUITES[c] is None for c in ciphers) and versions["min_version"] != "TLS13":
        raise p.error(
            key("cipher_suites"),
            entries["cipher_suites"],
            "lists only TLS 1.3 suites, which are always enabled, and would leave TLS 1.2 with none; "
            "add TLS 1.2 suites or set min_version: TLS13",
        )
    curves = _choices(p, entries, key("curve_preferences"), "curve_preferences", tuple(CURVES))
    if len(curves) > 1:
        raise p.error(
            key("curve_preferences"),
            entries["curve_preferences"],
            "Python's ssl module can only restrict key exchange to a single curve; list exactly one",
        )
    prefer = True
    if "prefer_server_cipher_suites" in entries:
        prefer = p.boolean(entries["prefer_server_cipher_suites"], key("prefer_server_cipher_suites"), True)

    return TLSServerConfig(
        cert_file=files.get("cert_file", ""),
        key_file=files.get("key_file", ""),
        cert=inline.get("cert", ""),
        key=inline.get("key", ""),
        client_ca_file=files.get("client_ca_file", ""),
        client_ca=inline.get("client_ca", ""),
        client_auth_type=auth_type,
        client_allowed_sans=sans,
        min_version=versions["min_version"],
        max_version=versions["max_version"],
        cipher_suites=ciphers,
        prefer_server_cipher_suites=prefer,
        curve_preferences=curves,
    )


def _choices(
    p: _Parser, entries: dict[str, yaml.Node], key: str, name: str, allowed: tuple[str, ...]
) -> tuple[str, ...]:
    if name not in entries:
        return ()
    values = p.strings(entries[name], key)
    for i, value in enumerate(values):
        if value not in allowed:
            raise p.error(
                f"{key}[{i}]", entries[name], f"unknown value {value!r} (Go names, one of: {', '.join(allowed)})"
            )
    return values


def _parse_http(p: _Parser, node: yaml.Node) -> HTTPServerConfig:
    entries = p.mapping(node, "http_server_config", _HTTP_KEYS)
    http2 = p.boolean(entries["http2"], "http_server_config.http2", False) if "http2" in entries else False
    if http2:
        raise p.error(
            "http_server_config.http2",
            entries["http2"],
            "HTTP/2 not supported (this server speaks HTTP/1.1); remove it or set false",
        )
    headers: dict[str, str] = {}
    if "headers" in entries:
        for name, value_node in p.mapping(entries["headers"], "http_server_config.headers", None).items():
            key = f"http_server_config.headers.{name}"
            if name not in HEADERS:
                raise p.error(
                    key, value_node, f"HTTP header {name!r} can not be configured (allowed: {', '.join(HEADERS)})"
                )
            value = p.string(value_node, key)
            allowed = HEADERS[name]
            if allowed and value not in allowed:
                raise p.error(key, value_node, f"invalid value {value!r} (one of: {', '.join(allowed)})")
            if any(c in value for c in "\r\n\0"):
                raise p.error(key, value_node, "header values cannot contain line breaks")
            if value:
                headers[name] = value
    return HTTPServerConfig(headers=headers, http2=False)


def _parse_users(p: _Parser, node: yaml.Node) -> dict[str, str]:
    users: dict[str, str] = {}
    for user, value_node in p.mapping(node, "basic_auth_users", None).items():
        key = f"basic_auth_users.{user}"
        if ":" in user:
            raise p.error(key, value_node, "user names cannot contain ':' (basic auth splits on it)")
        hashed = p.string(value_node, key)
        if not is_bcrypt_hash(hashed):
            # Never echo the value: it may be a plaintext password pasted by mistake.
            raise p.error(
                key, value_node, "not a bcrypt hash (expected $2y$, $2b$ or $2a$, a cost of 04-31, 53 characters)"
            )
        users[user] = hashed
    return users


def _parse_rate_limit(p: _Parser, node: yaml.Node) -> RateLimitConfig | None:
    entries = p.mapping(node, "rate_limit", _RATE_LIMIT_KEYS)
    interval = 0.0
    if "interval" in entries:
        interval_node = entries["interval"]
        if isinstance(interval_node, yaml.ScalarNode) and interval_node.tag in (_INT_TAG, _NULL_TAG):
            if interval_node.value not in ("0", ""):
                raise p.error(
                    "rate_limit.interval",
                    interval_node,
                    "a bare number has no unit; write a duration such as 1s or 500ms",
                )
        else:
            text = p.string(interval_node, "rate_limit.interval")
            try:
                interval = parse_go_duration(text)
            except ValueError as exc:
                raise p.error("rate_limit.interval", interval_node, str(exc)) from None
            if interval < 0:
                raise p.error("rate_limit.interval", interval_node, "must not be negative")
    burst = (
        p.integer(entries["burst"], "rate_limit.burst") if "burst" in entries and not p.is_null(entries["burst"]) else 0
    )
    if interval == 0:
        return None  # the toolkit's documented way to disable the limiter
    if burst < 1:
        raise p.error(
            "rate_limit.burst", entries.get("burst", node), "must be at least 1 (with 0 every request would be refused)"
        )
    return RateLimitConfig(interval=interval, burst=burst)


def read_web_config(path: str) -> WebConfig:
    """Read and parse a web config file (without loading the certificates it names)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise WebConfigError(f"web config {path}: cannot read: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WebConfigError(f"web config {path}: not UTF-8 (byte {exc.start})") from None
    return parse_web_config(text, path)
