"""``--web.listen-address`` values (Go's ``host:port`` syntax) and the listening sockets for them."""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ListenAddress:
    host: str  # "" means every interface; IPv6 without brackets
    port: int
    text: str  # as given, for messages


def parse_listen_address(text: str) -> ListenAddress:
    """``:10020``, ``0.0.0.0:10020``, ``[::1]:10020``, ``localhost:0`` -> ListenAddress; ValueError otherwise."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise ValueError(f"invalid listen address {text!r}: missing port (use host:port, :port or [ipv6]:port)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            if ipaddress.ip_address(host).version != 6:
                raise ValueError
        except ValueError:
            raise ValueError(f"invalid listen address {text!r}: brackets must hold an IPv6 address") from None
    elif ":" in host or "[" in host or "]" in host:
        raise ValueError(f"invalid listen address {text!r}: put IPv6 addresses in brackets, e.g. [::1]:10020")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"invalid listen address {text!r}: port must be a number from 0 to 65535")
    if any(c.isspace() for c in host) or "/" in host:
        raise ValueError(f"invalid listen address {text!r}: bad host")
    return ListenAddress(host=host, port=int(port_text), text=text)


# Errors that mean "this machine has no usable IPv6", as opposed to "the port is taken"; Windows
# reports its WSA codes instead of the POSIX ones.
_NO_IPV6 = {
    code
    for name in ("EAFNOSUPPORT", "EADDRNOTAVAIL", "EPROTONOSUPPORT")
    for code in (getattr(errno, name, None), getattr(errno, f"WSA{name}", None))
    if code is not None
}


def _listening_socket(family: socket.AddressFamily, sockaddr: tuple[Any, ...], dual_stack: bool) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # On Windows SO_REUSEADDR would let another process steal the port; elsewhere it only
        # allows a quick restart while old connections sit in TIME_WAIT.
        if os.name != "nt":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if dual_stack else 1)
        sock.bind(sockaddr)
        sock.listen()
    except BaseException:
        sock.close()
        raise
    return sock


def open_listener(address: ListenAddress) -> socket.socket:
    """Bind and listen; raises OSError (port in use, unknown host, ...)."""
    if address.host in ("", "::"):
        # Go listens dual-stack for an empty host; fall back to IPv4 where IPv6 is missing or disabled.
        if socket.has_ipv6:
            try:
                return _listening_socket(socket.AF_INET6, ("::", address.port), dual_stack=True)
            except OSError as exc:
                if exc.errno not in _NO_IPV6 or address.host == "::":
                    raise
        return _listening_socket(socket.AF_INET, ("0.0.0.0", address.port), dual_stack=False)  # noqa: S104
    infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    # Like Go, a host name binds one of its addresses, IPv4 first ("localhost" -> 127.0.0.1).
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    family, _, _, _, sockaddr = infos[0]
    return _listening_socket(family, tuple(sockaddr), dual_stack=False)
