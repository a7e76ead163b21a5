"""The HTML landing page at ``/``: version, modules, links, and the recent probes with their errors.

Everything shown is escaped: targets are validated, but error messages can carry text from a
host, and VM data never appears here. Passwords are shown as ``<secret>`` (the settings come from
:meth:`WinRMSettings.redacted`).
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Mapping
from urllib.parse import quote

from hyperv_exporter import __version__
from hyperv_exporter.host.config import Module
from hyperv_exporter.host.probe import ProbeSummary

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
.ok { color: #1a7f37; } .fail { color: #b42318; font-weight: bold; }
code { background: #f6f6f6; padding: 1px 4px; }
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def render_landing(
    modules: Mapping[str, Module],
    collectors: Iterable[str],
    history: Iterable[ProbeSummary],
    config_source: str,
    example_targets: Mapping[str, str],
    extra_links: Iterable[tuple[str, str]] = (),
) -> str:
    rows = []
    for name, module in modules.items():
        w = module.winrm.redacted()
        example = example_targets.get(name) or (module.targets.describe() or ["hv01.example"])[0]
        link = f"/probe?module={quote(name)}&amp;target={quote(example)}"
        tls_note = ", validate TLS" if w["server_cert_validation"] == "validate" and w["scheme"] == "https" else ""
        # Per-host endpoints (the demo's simulated hosts listen on ports of their own) replace the
        # default URL for those hosts: show where the exporter really connects.
        endpoints = "".join(f"<br>{_e(host)}: {_e(url)}" for host, url in sorted(module.endpoints.items()))
        default = "other hosts: " if module.endpoints else ""
        rows.append(
            "<tr>"
            f"<td><code>{_e(name)}</code></td>"
            f"<td>{_e(', '.join(module.targets.describe()))}</td>"
            f"<td>{default}{_e(w['scheme'])}://…:{_e(w['port'])}{_e(w['path'])} ({_e(w['transport'])}"
            f"{', user ' + _e(w['username']) if w['username'] else ''}, password {_e(w['password'] or 'none')}"
            f"{tls_note}){endpoints}</td>"
            f"<td>{_e(module.timeout)}s</td>"
            f"<td>{_e(', '.join(module.collectors) if module.collectors is not None else 'all enabled')}</td>"
            f'<td><a href="{link}">probe {_e(example)}</a> · '
            f'<a href="{link}&amp;debug=true">debug</a></td>'
            "</tr>"
        )
    probes = []
    for result in history:
        status = '<span class="ok">ok</span>' if result.ok else f'<span class="fail">{_e(result.reason)}</span>'
        detail = "" if result.ok else _e(result.message or "")
        if result.ok:
            detail = f"{result.vms} VMs, {result.requests} WinRM requests"
            if result.shared:
                detail += " (shared result)"
        probes.append(
            "<tr>"
            f"<td>{_e(time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(result.started)))}</td>"
            f"<td><code>{_e(result.module)}</code></td><td>{_e(result.target)}</td>"
            f"<td>{status}</td><td>{result.duration:.3f}s</td><td>{detail}</td>"
            "</tr>"
        )
    links = "".join(f'<li><a href="{_e(href)}">{_e(text)}</a></li>' for href, text in extra_links)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Hyper-V Exporter</title><style>{_STYLE}</style></head>
<body>
<h1>Hyper-V Exporter</h1>
<p>Version {_e(__version__)} · configuration {_e(config_source)} · collectors {_e(", ".join(collectors))}</p>
<ul>
<li><a href="/metrics">Exporter metrics</a> (<code>/metrics</code>)</li>
<li>Probe a host: <code>/probe?module=NAME&amp;target=HOST</code>, add <code>&amp;debug=true</code> for the log</li>
<li><a href="/config">Configuration</a> (secrets redacted)</li>
{links}
</ul>
<h2>Modules</h2>
<table id="modules">
<tr><th>Module</th><th>Allowed targets</th><th>WinRM</th><th>Timeout</th><th>Collectors</th><th></th></tr>
{"".join(rows)}
</table>
<h2>Recent probes</h2>
<table id="probes"><tr><th>Time</th><th>Module</th><th>Target</th><th>Result</th><th>Duration</th><th>Detail</th></tr>
{"".join(probes) or '<tr><td colspan="6">No probes yet.</td></tr>'}
</table>
</body></html>
"""
