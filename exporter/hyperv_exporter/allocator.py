"""glibc malloc settings for a long-running exporter whose probes run in many threads.

Why: every probe allocates a few large, short-lived buffers (the host's JSON text, 2 MiB for a
100-VM host and 24 MiB for a 1,000-VM one; the exposition; gzip) in whichever worker thread runs
it. glibc gives threads their own arenas (up to 8 per core), and after the first large buffer is
freed it raises its mmap threshold to that buffer's size, so later large buffers are carved from
those arenas and their memory is kept there. Probing 100 hosts of 100 VMs every 15 s, the exporter
then settled at 205 MiB resident for about 20 MiB of live Python objects. With a fixed mmap
threshold large buffers go back to the operating system when freed, and two arenas bound what the
rest can strand: 80 MiB for the same fleet, and 180 instead of 337 MiB when all 100 hosts are
probed at once (docs/performance.md). Time per probe did not change measurably.

``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_ARENA_MAX`` in the environment win over these defaults.
Nothing happens on other C libraries (musl, macOS, Windows).

:func:`tune_gc` sets the cyclic garbage collector's first threshold. A 1,000-VM probe allocates
about 250,000 container objects (the decoded document, the records, the exposition's samples),
almost all freed by reference counting, none part of a cycle; with CPython's default threshold of
700 they caused about 90 young collections per probe and, every probe or two, a full collection
that walks every report the exporter keeps (cache, last good result): 21 ms of a 1,000-VM probe's
CPU. At 50,000 that is under 1 ms (docs/performance.md); cyclic garbage still goes, at most one
threshold's worth of objects later.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import platform
import sys

from hyperv_exporter import logutil

log = logging.getLogger(__name__)

# glibc's <malloc.h> parameter numbers.
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD = 128 * 1024  # glibc's initial value, kept fixed instead of growing to 32 MiB
ARENA_MAX = 2
GC_THRESHOLD_0 = 50_000  # allocations of container objects between young collections (CPython: 700)


def tune() -> dict[str, int]:
    """Apply the settings above for this process; returns what was applied (empty if nothing)."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return {}
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return {}
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    applied: dict[str, int] = {}
    for env, param, value in (
        ("MALLOC_MMAP_THRESHOLD_", M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        ("MALLOC_ARENA_MAX", M_ARENA_MAX, ARENA_MAX),
    ):
        if env not in os.environ and mallopt(param, value) == 1:
            applied[env] = value
    log.debug("malloc tuned", extra=logutil.fields(settings=" ".join(f"{k}={v}" for k, v in applied.items())))
    return applied


def tune_gc() -> tuple[int, int, int]:
    """Raise the young-generation threshold of the garbage collector (see above); returns the thresholds."""
    young, older, oldest = gc.get_threshold()
    gc.set_threshold(max(GC_THRESHOLD_0, young), older, oldest)
    return gc.get_threshold()
