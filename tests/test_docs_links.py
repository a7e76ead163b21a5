"""README.md and the deployment-side docs: links resolve, anchors exist, the quick start stays two commands."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import REPO

DOCS = [
    REPO / "README.md",
    *(REPO / "docs" / name for name in ("deployment.md", "configuration.md", "troubleshooting.md", "simulator.md")),
]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {slug(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_relative_links_resolve(doc: Path) -> None:
    text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.S)
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto
        path_part, _, anchor = target.partition("#")
        resolved = (doc.parent / path_part).resolve() if path_part else doc
        assert resolved.exists(), f"{doc.name}: link to {target} does not resolve"
        if anchor and resolved.suffix == ".md":
            assert anchor in anchors(resolved), f"{doc.name}: {target}: no heading with anchor #{anchor}"


def test_quick_start_is_still_the_two_commands() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block, *next_steps = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["./scripts/demo.sh", "./scripts/test.sh"]
    # The next step after the demo: the exporter from a configuration file against hyperv-sim.
    assert any("hyperv-sim" in b and "--exporter-config" in b and "--config.file" in b for b in next_steps)


def test_readme_leads_from_the_demo_to_each_deployment_step() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    order = [
        "## Quick start",
        "docs/images/landing.png",
        "docker compose up",
        "docker build -t hyperv-exporter .",
        "/etc/hyperv_exporter/hyperv.yml",
        "job_name: hyperv",
        "import the dashboards",
        "deploy/systemd/hyperv-guest-agent.service",
        "deploy/windows/install-guest-agent.ps1",
        "http_sd_configs",
        "hashmod",
    ]
    positions = [readme.find(needle) for needle in order]
    assert -1 not in positions, [n for n, p in zip(order, positions, strict=True) if p < 0]
    assert positions == sorted(positions), "the README's steps are out of order"
