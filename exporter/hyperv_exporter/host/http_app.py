"""HTTP routes of the exporter: ``/probe``, ``/sd``, ``/metrics``, ``/``, ``/config``, ``/-/healthy``, ``/-/reload``.

``/probe?target=HOST&module=NAME`` follows blackbox_exporter: a bad request is 400 with the
reason, a target outside the module's allowlist is 403 (refused before any connection, so the
module's credentials never go to a host nobody listed), and a host that fails is still HTTP 200
with ``hyperv_up 0``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from hyperv_exporter import logutil, openmetrics
from hyperv_exporter.host import exposition, sd
from hyperv_exporter.host.config import Config, ConfigError, Module, split_target
from hyperv_exporter.host.landing import render_landing
from hyperv_exporter.host.probe import Prober
from hyperv_exporter.host.selfmetrics import ExporterMetrics
from hyperv_exporter.web import Request, Response

log = logging.getLogger(__name__)

DEFAULT_MODULE = "default"
SCRAPE_TIMEOUT_HEADER = "X-Prometheus-Scrape-Timeout-Seconds"
DEFAULT_TIMEOUT_WITHOUT_HEADER = 30.0
TEXT = "text/plain; charset=utf-8"
Route = Callable[[Request], Response]


@dataclass
class ExporterApp:
    config: Config
    prober: Prober
    metrics: ExporterMetrics
    timeout_offset: float = 0.5
    reloader: Callable[[], Config] | None = None  # loads the config file again; None: nothing to reload
    example_targets: dict[str, str] = field(default_factory=dict)
    extra_routes: dict[str, Route] = field(default_factory=dict)
    extra_links: list[tuple[str, str]] = field(default_factory=list)
    _reload_lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        for name in self.config.modules:
            self.metrics.init_module(name)
        self.metrics.reload_success.set(1)
        self.metrics.reload_timestamp.set(time.time())

    # -- dispatch ----------------------------------------------------------------------------------
    def __call__(self, request: Request) -> Response:
        routes: dict[str, Route] = {
            "/": self.landing,
            "/probe": self.probe,
            "/sd": lambda r: sd.respond(r, self.config.modules, self.prober),
            "/metrics": self.self_metrics,
            "/config": self.show_config,
            "/-/healthy": lambda r: Response(body="Healthy\n"),
            "/-/ready": lambda r: Response(body="Ready\n"),
            "/-/reload": self.reload_route,
            **self.extra_routes,
        }
        route = routes.get(request.path)
        if route is None:
            return Response(status=404, body="not found\n")
        if request.path != "/-/reload" and request.method not in ("GET", "HEAD"):
            return Response(status=405, body="method not allowed\n", headers={"Allow": "GET, HEAD"})
        return route(request)

    # -- /probe -------------------------------------------------------------------------------------
    def _bad_request(self, reason: str, message: str, status: int = 400) -> Response:
        self.metrics.request_errors.labels(reason).inc()
        return Response(status=status, body=message + "\n")

    def probe_timeout(self, request: Request, module: Module) -> float:
        header = request.headers.get(SCRAPE_TIMEOUT_HEADER)
        timeout = module.timeout
        if header:
            try:
                scrape_timeout = float(header)
            except ValueError:
                scrape_timeout = 0.0
            if scrape_timeout > 0:
                # Leave Prometheus time to receive the answer; never go below a useful minimum.
                timeout = min(timeout, max(scrape_timeout - self.timeout_offset, scrape_timeout * 0.5))
        return max(timeout, 0.1)

    def probe(self, request: Request) -> Response:
        targets = request.query.get("target", [])
        modules = request.query.get("module", [DEFAULT_MODULE])
        if len(targets) != 1 or not targets[0]:
            return self._bad_request("bad_request", "target parameter is missing or given more than once")
        if len(modules) != 1:
            return self._bad_request("bad_request", "module parameter is given more than once")
        target, module_name = targets[0].strip(), modules[0]
        module = self.config.modules.get(module_name)
        if module is None:
            return self._bad_request("unknown_module", f"unknown module {module_name!r}")
        try:
            split_target(target)
        except ValueError as exc:
            return self._bad_request("bad_request", f"invalid target: {exc}")
        if not module.targets.allows(target, module.winrm.port):
            log.warning(
                "refused probe of a target outside the allowlist",
                extra=logutil.fields(module=module_name, target=target),
            )
            return self._bad_request(
                "forbidden",
                f"target {target!r} is not in the targets allowlist of module {module_name!r}; "
                "the exporter does not send credentials to unlisted hosts",
                status=403,
            )
        timeout = self.probe_timeout(request, module)
        result = self.prober.probe(module, target, timeout)
        if request.query.get("debug", [""])[0].lower() in ("true", "1", "yes"):
            return Response(body=self._debug(result.log, exposition.render(result, timeout), module), content_type=TEXT)
        wants_openmetrics, content_type = openmetrics.negotiate(request.headers.get("Accept"))
        if wants_openmetrics:
            return Response(body=exposition.render_openmetrics(result, timeout), content_type=content_type)
        return Response(body=exposition.render(result, timeout), content_type=content_type)

    def _debug(self, lines: list[str], body: bytes, module: Module) -> str:
        config = yaml.safe_dump(self._module_view(module), sort_keys=False, allow_unicode=True)
        text = (
            "Logs for the probe:\n" + "\n".join(lines) + "\n\n"
            "Metrics that would have been returned:\n" + body.decode("utf-8") + "\n"
            "Module configuration:\n" + config
        )
        return logutil.redact(text)

    # -- other routes -------------------------------------------------------------------------------
    def landing(self, request: Request) -> Response:
        page = render_landing(
            self.config.modules,
            self.prober.allowed_collectors,
            list(self.prober.history),
            self.config.source,
            self.example_targets,
            self.extra_links,
        )
        return Response(body=logutil.redact(page), content_type="text/html; charset=utf-8")

    def self_metrics(self, request: Request) -> Response:
        body, content_type = openmetrics.encode_registry(self.metrics.registry, request.headers.get("Accept"))
        return Response(body=body, content_type=content_type)

    @staticmethod
    def _module_view(module: Module) -> dict[str, Any]:
        return {
            "name": module.name,
            "targets": module.targets.describe(),
            "timeout": module.timeout,
            "collectors": list(module.collectors) if module.collectors is not None else "all enabled",
            "cache_ttl": module.cache_ttl,
            "refresh_interval": module.refresh_interval,
            "endpoints": dict(module.endpoints),
            "winrm": module.winrm.redacted(),
            "kvp": {
                "keys": list(module.kvp.keys),
                "sources": list(module.kvp.sources),
                "max_value_length": module.kvp.max_value_length,
            },
            "discovery": module.discovery.view() if module.discovery is not None else None,
        }

    def show_config(self, request: Request) -> Response:
        view = {"source": self.config.source, "modules": [self._module_view(m) for m in self.config.modules.values()]}
        return Response(
            body=logutil.redact(yaml.safe_dump(view, sort_keys=False, allow_unicode=True)), content_type=TEXT
        )

    def reload(self) -> None:
        """Load the config file again; on error keep the old config and raise ConfigError."""
        if self.reloader is None:
            raise ConfigError("no configuration file to reload (demo mode)")
        with self._reload_lock:
            try:
                new = self.reloader()
            except ConfigError:
                self.metrics.reload_success.set(0)
                raise
            old = self.config
            for name, module in old.modules.items():
                if new.modules.get(name) != module:
                    self.prober.forget_module(name)
            for name in new.modules:
                self.metrics.init_module(name)
            self.config = new
            self.metrics.reload_success.set(1)
            self.metrics.reload_timestamp.set(time.time())
            log.info("configuration reloaded", extra=logutil.fields(modules=",".join(new.modules)))

    def reload_route(self, request: Request) -> Response:
        if request.method not in ("POST", "PUT"):
            return Response(status=405, body="use POST to reload\n", headers={"Allow": "POST, PUT"})
        try:
            self.reload()
        except ConfigError as exc:
            log.error("configuration reload failed; keeping the previous configuration: %s", exc)
            return Response(status=500, body=f"failed to reload config: {exc}\n")
        return Response(body="configuration reloaded\n")
