"""allocator.tune: glibc malloc settings for many probe threads; the MALLOC_* environment wins. tune_gc: GC threshold."""

from __future__ import annotations

import gc
import platform
import sys

import pytest

from hyperv_exporter import allocator

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_settings_are_applied(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    assert allocator.tune() == {"MALLOC_MMAP_THRESHOLD_": 128 * 1024, "MALLOC_ARENA_MAX": 2}


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_the_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    assert allocator.tune() == {"MALLOC_MMAP_THRESHOLD_": 128 * 1024}


def test_other_platforms_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert allocator.tune() == {}


def test_gc_threshold_is_raised_and_never_lowered() -> None:
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        assert allocator.tune_gc() == (allocator.GC_THRESHOLD_0, 10, 10)
        gc.set_threshold(200_000, 5, 7)
        assert allocator.tune_gc() == (200_000, 5, 7)
    finally:
        gc.set_threshold(*before)
