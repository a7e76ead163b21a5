"""The handler of a program whose whole page is one registry's ``/metrics`` and a landing page."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from hyperv_exporter import openmetrics
from hyperv_exporter.web.messages import Handler, Request, Response

METRICS_PATH = "/metrics"


def registry_handler(registry: CollectorRegistry, landing: Response) -> Handler:
    """``/metrics`` from ``registry`` (OpenMetrics when the scraper asks for it, else the text format;
    the web server gzips when the client asks), ``landing`` at ``/``, 404 elsewhere, GET and HEAD only."""

    def handle(request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return Response(405, "method not allowed\n", headers={"Allow": "GET, HEAD"})
        if request.path == METRICS_PATH:
            # Encoding runs on every scrape: the collectors build fresh families each time.
            body, content_type = openmetrics.encode_registry(registry, request.headers.get("Accept"))
            return Response(200, body, content_type=content_type)
        if request.path == "/":
            return landing
        return Response(404, "not found\n")

    return handle
