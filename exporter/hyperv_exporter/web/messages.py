"""What a handler sees and returns: :class:`Request`, :class:`Response` and the :data:`Handler` type."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

# Credentials; left out of reprs so that logging a request cannot leak them.
_SENSITIVE_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})


class Headers(Mapping[str, str]):
    """Read-only, case-insensitive request headers; repeated headers are joined with ", " (RFC 9110)."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        merged: dict[str, tuple[str, str]] = {}
        for name, value in pairs:
            key = name.lower()
            if key in merged:
                merged[key] = (merged[key][0], f"{merged[key][1]}, {value}")
            else:
                merged[key] = (name, value)
        self._items = merged

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()][1]

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        shown = {name: "<secret>" if key in _SENSITIVE_HEADERS else value for key, (name, value) in self._items.items()}
        return f"Headers({shown!r})"


@dataclass(frozen=True)
class Request:
    method: str  # "GET", "POST", "HEAD", ...; HEAD is passed on, the server drops the body it returns
    path: str  # path only, no query string, percent-decoded
    query: dict[str, list[str]]  # urllib.parse.parse_qs(..., keep_blank_values=True)
    headers: Mapping[str, str]  # case-insensitive lookup
    body: bytes = field(repr=False)  # at most 1 MiB; larger requests are refused with 413
    remote_addr: str  # the client's IP address (IPv4-mapped IPv6 addresses are unmapped)
    user: str | None = None  # the authenticated basic-auth user, if any

    def __post_init__(self) -> None:
        if not isinstance(self.headers, Headers):
            object.__setattr__(self, "headers", Headers(self.headers))


@dataclass
class Response:
    status: int = 200
    body: bytes | str = b""  # str is encoded UTF-8
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)  # override content_type; Content-Length is the server's

    def body_bytes(self) -> bytes:
        return self.body.encode("utf-8") if isinstance(self.body, str) else bytes(self.body)


Handler = Callable[[Request], Response]
