"""The source distribution: SPDX license, classifiers, a description that renders on PyPI, and the
operator's files (the mixin, the rendered alerts and dashboards) inside.

Builds the sdist with ``python -m build`` (PEP 517, isolated: setuptools from the index), so it is
marked slow like the other tests that run a real tool end to end.
"""

from __future__ import annotations

import email
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from promstack import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> tarfile.TarFile:
    out = tmp_path_factory.mktemp("sdist")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--outdir", str(out), str(REPO)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (archive,) = out.glob("hyperv_exporter-*.tar.gz")
    return tarfile.open(archive)


def members(sdist: tarfile.TarFile) -> set[str]:
    return {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}


def test_sdist_has_the_mixin_and_what_it_renders(sdist: tarfile.TarFile) -> None:
    names = members(sdist)
    shipped = {
        str(p.relative_to(REPO))
        for d in ("mixin", "alerts", "rules", "dashboards", "docs/runbooks")
        for p in (REPO / d).rglob("*")
        if p.is_file()
    }
    assert shipped <= names, sorted(shipped - names)
    assert {"scripts/render-mixin.py", "LICENSE", "examples/alertmanager/alertmanager.yml"} <= names


def test_metadata_spdx_license_classifiers_and_a_pypi_description(sdist: tarfile.TarFile) -> None:
    (pkg_info,) = [m for m in sdist.getmembers() if re.fullmatch(r"[^/]+/PKG-INFO", m.name)]
    handle = sdist.extractfile(pkg_info)
    assert handle is not None
    meta = email.message_from_bytes(handle.read())
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta["License"] is None, "the deprecated license table is gone"
    classifiers = meta.get_all("Classifier") or []
    assert "Topic :: System :: Monitoring" in classifiers
    assert not any(c.startswith("License ::") for c in classifiers), "SPDX expression, no license classifier"
    assert meta["Description-Content-Type"] == "text/markdown"
    description = meta.get_payload()
    assert "hyperv-exporter" in description
    # PyPI renders Markdown without the repository around it: no relative links or images.
    targets = re.findall(r"\]\(([^)]+)\)", description)
    assert all(t.startswith(("https://", "http://")) for t in targets), targets
    assert "github.com/" + "hyperv-exporter" not in description  # split: tests/test_mixin.py greps the tree


def test_description_file_is_in_the_tree() -> None:
    assert (REPO / "docs" / "pypi.md").is_file()
    assert Path(REPO / "MANIFEST.in").read_text(encoding="utf-8").count("graft mixin") == 1
