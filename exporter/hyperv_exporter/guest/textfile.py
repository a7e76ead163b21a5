"""Atomic ``.prom`` files for node_exporter's / windows_exporter's textfile collector.

The collectors read every ``*.prom`` file in their directory at scrape time, so a file must never
be seen half-written: the text is written to a hidden temporary file in the same directory (same
file system, so the rename is atomic; a name not ending in ``.prom`` so it is never read), flushed
to disk, and renamed over the target. No sample timestamps are written (the textfile collectors
reject them).
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

# On Windows, os.replace fails with PermissionError while windows_exporter has the target open;
# a short retry rides that out.
_REPLACE_ATTEMPTS = 20
_REPLACE_PAUSE = 0.05


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.chmod(0o644)  # readable by the exporter's user whatever our umask
        for attempt in range(_REPLACE_ATTEMPTS):
            try:
                tmp.replace(path)
                break
            except PermissionError:
                if os.name != "nt" or attempt == _REPLACE_ATTEMPTS - 1:
                    raise
                time.sleep(_REPLACE_PAUSE)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
