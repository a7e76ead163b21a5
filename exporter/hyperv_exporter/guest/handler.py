"""HTTP handler of the agent: ``/metrics`` and a small landing page at ``/``; served by ``hyperv_exporter.web``."""

from __future__ import annotations

import html

from prometheus_client import CollectorRegistry

from hyperv_exporter import __version__
from hyperv_exporter.web import Handler, Response
from hyperv_exporter.web.metrics import METRICS_PATH, registry_handler


def landing_page(collectors: list[str]) -> str:
    items = "".join(f"<li><code>{html.escape(c)}</code></li>" for c in collectors)
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>Hyper-V guest agent</title></head><body>'
        "<h1>Hyper-V guest agent</h1>"
        f"<p>Version {html.escape(__version__)}. Clock offset against the Hyper-V host and NTP servers, "
        "kernel clock discipline, integration components and host identity from KVP.</p>"
        f'<p><a href="{METRICS_PATH}">Metrics</a></p>'
        f"<p>Enabled collectors:</p><ul>{items}</ul>"
        "</body></html>\n"
    )


def make_handler(registry: CollectorRegistry, collectors: list[str]) -> Handler:
    landing = Response(200, landing_page(collectors), content_type="text/html; charset=utf-8")
    return registry_handler(registry, landing)
