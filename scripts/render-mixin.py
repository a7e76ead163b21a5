#!/usr/bin/env python3
"""Renders the monitoring mixin (mixin/) to the shipped rule files and dashboards.

    .venv/bin/python scripts/render-mixin.py            # writes alerts/, rules/, dashboards/
    .venv/bin/python scripts/render-mixin.py --check    # exit 1 and list the files that differ

alerts/<group>.yml: one file per alert group, its header comment from the group's hidden
``intro``/``notes`` fields and each rule's hidden ``threshold``; rules/hyperv-recording.yml: the
recording rules; dashboards/<name>.json: the dashboards. Needs the ``jsonnet`` package (test extras).
To render with your own settings, write a jsonnet file that imports mixin/mixin.libsonnet and
overrides ``_config`` (see mixin/README.md) and pass it with ``--mixin FILE --out DIR``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import _jsonnet  # type: ignore[import-not-found]
import yaml

REPO = Path(__file__).resolve().parent.parent
RENDER = REPO / "mixin" / "render.jsonnet"
GENERATED = "Generated from mixin/ by scripts/render-mixin.py: edit the mixin, not this file."

RULE_KEYS = ["alert", "record", "expr", "for", "labels", "annotations"]
ANNOTATION_KEYS = ["summary", "description", "runbook_url"]


class _Dumper(yaml.SafeDumper):
    """Block style the way people write rule files: ``|`` for expressions, ``>-`` for prose."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)  # lists indented under their key


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    if len(value) > 80:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=">")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _str)


def _ordered(obj: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    return {key: obj[key] for key in keys if key in obj} | {k: v for k, v in obj.items() if k not in keys}


def _rule(rule: dict[str, Any]) -> dict[str, Any]:
    rule = _ordered(rule, RULE_KEYS)
    if "annotations" in rule:
        rule["annotations"] = _ordered(rule["annotations"], ANNOTATION_KEYS)
    return rule


def _rules_yaml(doc: dict[str, Any]) -> str:
    groups = [{"name": g["name"], "rules": [_rule(r) for r in g["rules"]]} for g in doc["groups"]]
    return yaml.dump({"groups": groups}, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def _comment(text: str) -> list[str]:
    return [f"# {line}".rstrip() for line in text.rstrip("\n").split("\n")]


def _rule_file(spec: dict[str, Any], runbook_base: str) -> str:
    table = spec["table"]
    widths = [max(len(row[key]) for row in [*table, {"alert": "alert", "severity": "severity", "for": "for"}])
              for key in ("alert", "severity", "for")]
    lines = [*_comment(spec["intro"]), "#"]
    for row in [{"alert": "alert", "severity": "severity", "for": "for", "threshold": "threshold"}, *table]:
        cells = [row[key].ljust(width) for key, width in zip(("alert", "severity", "for"), widths, strict=True)]
        lines.append("#   " + "  ".join([*cells, row["threshold"]]))
    lines += ["#", *_comment(spec["notes"]), "#"]
    lines.append(f"# runbook_url base: {runbook_base} (_config.runbookURLBase in mixin/config.libsonnet).")
    lines.append(f"# {GENERATED}")
    return "\n".join(lines) + "\n" + _rules_yaml(spec["doc"])


def render(mixin: Path = RENDER) -> dict[str, str]:
    """Relative path -> file content, for every file the mixin generates."""
    rendered = json.loads(_jsonnet.evaluate_file(str(mixin)))
    files = {
        f"alerts/{spec['name']}.yml": _rule_file(spec, rendered["runbookURLBase"]) for spec in rendered["ruleFiles"]
    }
    if rendered["recordingRules"].get("groups"):
        files["rules/hyperv-recording.yml"] = f"# {GENERATED}\n" + _rules_yaml(rendered["recordingRules"])
    for name, dashboard in rendered["dashboards"].items():
        files[f"dashboards/{name}"] = json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n"
    return files


def _on_disk(path: Path) -> str | None:
    return path.read_text(encoding="utf-8") if path.is_file() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare with the files on disk, write nothing")
    parser.add_argument("--mixin", type=Path, default=RENDER, help="the jsonnet file to render (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=REPO, help="directory to write into (default: the repository)")
    args = parser.parse_args(argv)
    files = render(args.mixin)
    if args.check:
        stale = [rel for rel, text in files.items() if _on_disk(args.out / rel) != text]
        for kind in ("alerts", "rules", "dashboards"):
            for path in sorted((args.out / kind).glob("*.*")):
                rel = f"{kind}/{path.name}"
                if path.suffix in {".yml", ".json"} and rel not in files:
                    stale.append(f"{rel} (not generated by the mixin)")
        for path in stale:
            print(f"differs from the mixin: {path}", file=sys.stderr)
        if stale:
            print("run: .venv/bin/python scripts/render-mixin.py", file=sys.stderr)
        return 1 if stale else 0
    for rel, text in files.items():
        target = args.out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
