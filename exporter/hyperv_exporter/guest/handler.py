"""HTTP handler of the agent: ``/metrics`` and a small landing page at ``/``; served by ``hyperv_exporter.web``."""

from __future__ import annotations

import html

from prometheus_client import CollectorRegistry

from hyperv_exporter import __version__, openmetrics
from hyperv_exporter.web import Handler, Request, Response

METRICS_PATH = "/metrics"


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
    page = landing_page(collectors)

    def handle(request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return Response(405, "method not allowed\n", headers={"Allow": "GET, HEAD"})
        if request.path == METRICS_PATH:
            # OpenMetrics when the scraper asks for it. Encoding runs every probe now (fresh families
            # per scrape, bounded by the probe timeout); the web server gzips when the client asks.
            body, content_type = openmetrics.encode_registry(registry, request.headers.get("Accept"))
            return Response(200, body, content_type=content_type)
        if request.path == "/":
            return Response(200, page, content_type="text/html; charset=utf-8")
        return Response(404, "not found\n")

    return handle
