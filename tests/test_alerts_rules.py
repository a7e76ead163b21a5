"""The alert rules in alerts/: promtool check + unit tests, conventions, documentation, test strength.

- ``promtool check rules`` on every rule file and ``promtool test rules`` on every
  ``tests/rules/*.test.yml``;
- every alert (each severity of it) has a unit test that expects it at some evaluation and not one
  evaluation interval earlier, with exact labels and the three annotations;
- conventions: HyperV prefix, severity, summary/description/runbook_url, the runbook exists;
- docs/alerts.md and the comment block at the top of each rule file list exactly the alerts,
  severities and ``for:`` durations of the rules;
- mutation check: dropping any ``and``/``unless``/``or`` clause of any expression makes the
  unit tests fail, so every guard (running VM, replica, uptime grace, ...) is really tested.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from promstack import (
    REPO,
    RULE_TESTS_DIR,
    RUNBOOK_URL_BASE,
    RUNBOOKS_DIR,
    alerting_rules,
    load_yaml,
    promtool_binary,
    rule_files,
    run_tool,
)

SEVERITIES = {"critical", "warning", "info"}
ANNOTATIONS = {"summary", "description", "runbook_url"}
DOCS = REPO / "docs" / "alerts.md"


def parse_duration(text: str) -> float:
    """A Prometheus duration (``90s``, ``5m``, ``1h30m``, ``7d``) in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w|y)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    return sum(int(n) * units[u] for n, u in parts)


def test_rule_files_exist() -> None:
    assert [p.name for p in rule_files()] == [
        "hyperv-exporter.yml",
        "hyperv-guest.yml",
        "hyperv-replication.yml",
        "hyperv-time.yml",
        "hyperv-vms.yml",
    ]


@pytest.mark.parametrize("path", rule_files(), ids=lambda p: p.name)
def test_promtool_check_rules(path: Path) -> None:
    result = run_tool([promtool_binary(), "check", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def rule_test_files() -> list[Path]:
    return sorted(RULE_TESTS_DIR.glob("*.test.yml"))


def test_every_rule_file_has_a_unit_test_file() -> None:
    assert [p.name.removesuffix(".test.yml") for p in rule_test_files()] == [p.stem for p in rule_files()]
    for test_file in rule_test_files():
        doc = load_yaml(test_file)
        assert doc["rule_files"] == [f"../../alerts/{test_file.name.removesuffix('.test.yml')}.yml"]


@pytest.mark.parametrize("path", rule_test_files(), ids=lambda p: p.name)
def test_promtool_test_rules(path: Path) -> None:
    result = run_tool([promtool_binary(), "test", "rules", path.name], cwd=path.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize(
    "path,rule", alerting_rules(), ids=lambda v: v.get("alert", "") if isinstance(v, dict) else v.name
)
def test_rule_conventions(path: Path, rule: dict[str, Any]) -> None:
    name = rule["alert"]
    assert re.fullmatch(r"HyperV[A-Z][A-Za-z]+", name), name
    assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, sorted(rule)
    parse_duration(rule["for"])
    assert rule["labels"] == {"severity": rule["labels"]["severity"]}
    assert rule["labels"]["severity"] in SEVERITIES
    annotations = rule["annotations"]
    assert set(annotations) == ANNOTATIONS
    summary = annotations["summary"]
    assert summary[0].isupper() and summary.endswith(".") and "{{" not in summary, summary
    description = annotations["description"]
    assert "$labels.instance" in description, "the description names the host or guest"
    if "hyperv_vm_" in rule["expr"].split("\n", 1)[0]:
        assert "$labels.vm }}" in description, "a VM alert names the VM"
    assert annotations["runbook_url"] == f"{RUNBOOK_URL_BASE}{name}.md"
    assert (RUNBOOKS_DIR / f"{name}.md").is_file(), f"missing runbook docs/runbooks/{name}.md"


def test_alert_names_and_severities_are_unique() -> None:
    seen = [(rule["alert"], rule["labels"]["severity"]) for _, rule in alerting_rules()]
    assert len(seen) == len(set(seen)), "an alert name is used twice with the same severity"


# --- every alert is unit tested ------------------------------------------------------------------
def unit_test_expectations() -> dict[tuple[str, str], list[tuple[str, float, set[str]]]]:
    """(file stem, alertname) -> [(group name, eval time, severities expected then)]."""
    found: dict[tuple[str, str], list[tuple[str, float, set[str]]]] = {}
    for path in rule_test_files():
        stem = path.name.removesuffix(".test.yml")
        for group in load_yaml(path)["tests"]:
            for check in group.get("alert_rule_test", []):
                severities = set()
                for alert in check.get("exp_alerts") or []:
                    labels = alert.get("exp_labels", {})
                    assert "severity" in labels, f"{path.name} {group['name']}: exp_labels without severity"
                    assert set(alert.get("exp_annotations", {})) == ANNOTATIONS, (
                        f"{path.name} {group['name']}: expected annotations must be exactly {sorted(ANNOTATIONS)}"
                    )
                    severities.add(labels["severity"])
                entry = (group["name"], parse_duration(check["eval_time"]), severities)
                found.setdefault((stem, check["alertname"]), []).append(entry)
    return found


@pytest.mark.parametrize(
    "path,rule", alerting_rules(), ids=lambda v: v.get("alert", "") if isinstance(v, dict) else v.name
)
def test_alert_is_unit_tested_before_and_after_its_for(path: Path, rule: dict[str, Any]) -> None:
    name, severity = rule["alert"], rule["labels"]["severity"]
    checks = unit_test_expectations().get((path.stem, name), [])
    assert checks, f"tests/rules/{path.stem}.test.yml has no alert_rule_test for {name}"
    interval = parse_duration(load_yaml(RULE_TESTS_DIR / f"{path.stem}.test.yml")["evaluation_interval"])
    by_group: dict[str, dict[float, set[str]]] = {}
    for group, at, severities in checks:
        by_group.setdefault(group, {})[at] = severities
    proven = []
    for group, timeline in by_group.items():
        firing = sorted(at for at, severities in timeline.items() if severity in severities)
        if firing and severity not in timeline.get(firing[0] - interval, {severity}):
            proven.append(group)
    assert proven, (
        f"no unit test of {name} ({severity}) expects it at some time and not one evaluation interval earlier"
    )


# --- documentation -------------------------------------------------------------------------------
def rule_table() -> set[tuple[str, str, str, str]]:
    return {(rule["alert"], rule["labels"]["severity"], rule["for"], path.name) for path, rule in alerting_rules()}


def test_docs_alert_table_matches_the_rules() -> None:
    rows = set()
    for line in DOCS.read_text(encoding="utf-8").splitlines():
        match = re.match(
            r"^\|\s*\[?`(HyperV\w+)`\]?(?:\([^)]*\))?\s*\|\s*(\w+)\s*\|\s*(\w+)\s*\|.*\|\s*`?([\w.-]+\.yml)`?\s*\|$",
            line,
        )
        if match:
            rows.add(match.groups())
    assert rows == rule_table(), (
        f"docs/alerts.md differs from alerts/*.yml\nonly in docs: {sorted(rows - rule_table())}\n"
        f"only in rules: {sorted(rule_table() - rows)}"
    )


def test_rule_file_header_lists_its_rules() -> None:
    for path in rule_files():
        header = []
        for line in path.read_text(encoding="utf-8").splitlines():
            match = re.match(r"^#\s+(HyperV\w+)\s+(critical|warning|info)\s+(\w+)\s+\S", line)
            if match:
                header.append((*match.groups(), path.name))
        in_file = {row for row in rule_table() if row[3] == path.name}
        assert set(header) == in_file and len(header) == len(in_file), (
            f"{path.name}: header {header} vs rules {in_file}"
        )


# --- mutation check ------------------------------------------------------------------------------
CLAUSE = re.compile(r"^\s*(and|unless|or)\b\s*(?:(?:on|ignoring)\s*\([^)]*\))?\s*(?:group_(?:left|right)\s*\([^)]*\))?")
CONTINUATION = re.compile(r"^\s*(?:[-+*/%^]|[<>]=?|==|!=)")


def paren_depth(line: str) -> int:
    depth = 0
    in_string = False
    for char in line:
        if char == '"':
            in_string = not in_string
        elif not in_string:
            depth += {"(": 1, ")": -1}.get(char, 0)
    return depth


def clauses(expr: str) -> list[tuple[int, int]]:
    """Line ranges [start, end) of every ``and``/``unless``/``or`` clause that begins a line."""
    lines = expr.rstrip("\n").split("\n")
    found = []
    for i, line in enumerate(lines):
        match = CLAUSE.match(line)
        if not match:
            continue
        depth = paren_depth(line)
        has_operand = bool(line[match.end() :].strip())
        j = i + 1
        while j < len(lines) and (depth > 0 or not has_operand):
            depth += paren_depth(lines[j])
            has_operand = True
            j += 1
        while j < len(lines) and depth == 0 and CONTINUATION.match(lines[j]):
            depth += paren_depth(lines[j])
            j += 1
            while j < len(lines) and depth > 0:
                depth += paren_depth(lines[j])
                j += 1
        found.append((i, j))
    return found


def mutants() -> list[tuple[str, str, int, str]]:
    """(rule file, alert, rule index in file, mutated expression) for every droppable clause."""
    found = []
    for path in rule_files():
        index = 0
        for group in load_yaml(path)["groups"]:
            for rule in group["rules"]:
                lines = rule["expr"].rstrip("\n").split("\n")
                for start, end in clauses(rule["expr"]):
                    mutated = "\n".join(lines[:start] + lines[end:]) + "\n"
                    found.append((path.name, f"{rule['alert']}/{rule['labels']['severity']}", index, mutated))
                index += 1
    return found


def test_clause_parser_finds_the_guards() -> None:
    expr = (
        "a == 1\nand on (instance, job, vm_id) (b == 1)\nunless on (instance, job)\n(\n  c\n  * on (vm_id) group_left ()\n"
        "  max by (vm_id) (d)\n)\nand\nabs(e)\n- f > 1\n"
    )
    assert clauses(expr) == [(1, 2), (2, 8), (8, 11)]
    assert len(mutants()) >= 30


def test_every_clause_of_every_rule_is_covered_by_a_unit_test(tmp_path: Path) -> None:
    promtool = promtool_binary()
    (tmp_path / "alerts").mkdir()
    rules_dir = tmp_path / "tests" / "rules"
    rules_dir.mkdir(parents=True)
    survivors = []
    for file_name, alert, index, mutated in mutants():
        doc = load_yaml(REPO / "alerts" / file_name)
        rules = [rule for group in doc["groups"] for rule in group["rules"]]
        rules[index]["expr"] = mutated
        target = tmp_path / "alerts" / file_name
        target.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
        checked = run_tool([promtool, "check", "rules", str(target)])
        assert checked.returncode == 0, (
            f"mutant of {alert} does not parse:\n{mutated}\n{checked.stdout}{checked.stderr}"
        )
        test_file = f"{file_name.removesuffix('.yml')}.test.yml"
        shutil.copy(RULE_TESTS_DIR / test_file, rules_dir / test_file)
        result = run_tool([promtool, "test", "rules", test_file], cwd=rules_dir)
        if result.returncode == 0:
            survivors.append(f"{file_name} {alert}: the tests still pass without a clause:\n{mutated}")
    assert not survivors, "\n".join(survivors)
