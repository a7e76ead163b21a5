"""The file-system root the agent reads /proc, /sys, /dev, /etc and /var/lib/hyperv under.

``--root`` exists so that tests (and a containerised agent that bind-mounts the host at /host) can
point every probe at another tree. All paths the probes read go through :meth:`Root.join`, so no
probe can accidentally read the real /proc while the tests believe they are using a fixture.
"""

from __future__ import annotations

from pathlib import Path


class Root:
    """Maps absolute guest paths (``/proc/modules``) onto the configured root directory."""

    def __init__(self, path: str | Path = "/") -> None:
        self.path = Path(path)

    def join(self, absolute: str) -> Path:
        """``/sys/module`` under root ``/tmp/x`` -> ``/tmp/x/sys/module`` (the argument must be absolute)."""
        if not absolute.startswith("/"):
            raise ValueError(f"expected an absolute path, got {absolute!r}")
        return self.path / absolute.lstrip("/")

    def read_text(self, absolute: str, limit: int = 65536) -> str | None:
        """A small text file, or None when it does not exist or cannot be read.

        /proc and /sys files are read with a size cap: they are tiny, and the cap keeps a wrong
        ``--root`` (pointing at a huge file) from costing memory.
        """
        try:
            with self.join(absolute).open("rb") as f:
                return f.read(limit).decode("utf-8", "replace")
        except OSError:
            return None

    def __repr__(self) -> str:
        return f"Root({str(self.path)!r})"
