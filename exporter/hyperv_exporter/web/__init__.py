"""The HTTP serving layer shared by the exporter and the guest agent.

A handler is a function from :class:`Request` to :class:`Response`; :class:`WebServer` serves it
on one or more listen addresses with what an exporter-toolkit web config file asks for (TLS,
client certificates, basic auth, extra headers, a rate limit), reloading that file when it
changes. :func:`add_web_flags` adds the toolkit's ``--web.listen-address`` and
``--web.config.file`` flags.

Modules: ``config`` (the file format), ``tls``, ``auth``, ``ratelimit``, ``reload`` (loading and
hot reload), ``listen`` (addresses and sockets), ``flags``, ``messages`` (Request/Response),
``metrics`` (a registry's /metrics beside a landing page) and ``server``.
"""

from .config import WebConfig, WebConfigError
from .flags import add_web_flags, positive_int
from .messages import Handler, Request, Response
from .reload import load_web_config
from .server import WebServer, web_config_reload_gauge

__all__ = [
    "Handler",
    "Request",
    "Response",
    "WebConfig",
    "WebConfigError",
    "WebServer",
    "add_web_flags",
    "load_web_config",
    "positive_int",
    "web_config_reload_gauge",
]
