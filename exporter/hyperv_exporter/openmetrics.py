"""OpenMetrics on request: content negotiation for both programs, and the fast /probe renderer.

Prometheus asks for ``application/openmetrics-text`` first in its ``Accept`` header; other clients
(curl, older scrapers) get the classic text format. The choice is prometheus_client's own
``choose_encoder``, so /metrics of both programs answers exactly what client_python would.

/probe is rendered by :mod:`hyperv_exporter.host.exposition`'s fast text renderer. Its OpenMetrics
form differs from the text form only in the family headers (OpenMetrics names an info family
without ``_info``, types it ``info`` and escapes ``"`` in HELP) and the closing ``# EOF``: the
sample lines are the same bytes (same label escaping, same ``floatToGoString`` values). So the
text is converted header by header in one pass instead of being rendered again; the result is
byte-identical to prometheus_client's ``openmetrics.exposition.generate_latest`` of the same
families (tests/test_openmetrics.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_CONTENT_TYPE


class Family(Protocol):
    """What is needed of a :class:`hyperv_exporter.host.collectors.base.Family` (no import of the host
    package here: the guest agent uses this module too)."""

    @property
    def name(self) -> str: ...
    @property
    def documentation(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def sample_name(self) -> str: ...

__all__ = ["OPENMETRICS_CONTENT_TYPE", "encode_registry", "negotiate", "text_to_openmetrics"]

_HEADER = re.compile(r"^# HELP (\S+) [^\n]*\n# TYPE \S+ \w+\n", re.MULTILINE)


def negotiate(accept: str | None) -> tuple[bool, str]:
    """(OpenMetrics?, content type) for a request's ``Accept`` header, as client_python decides."""
    _, content_type = choose_encoder(accept or "")
    return content_type.startswith("application/openmetrics-text"), content_type


def encode_registry(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """``registry`` in the format the client asked for: (body, content type)."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


def _om_escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def text_to_openmetrics(text: str, families: Iterable[Family]) -> str:
    """The text exposition of ``families`` (in their order) as OpenMetrics 1.0."""
    headers: Mapping[str, str] = {
        family.sample_name: (
            f"# HELP {family.name} {_om_escape_help(family.documentation)}\n# TYPE {family.name} {family.kind}\n"
        )
        for family in families
    }

    def replace(match: re.Match[str]) -> str:
        return headers[match.group(1)]

    return _HEADER.sub(replace, text) + "# EOF\n"
