"""malloc_trim: glibc's, found through ctypes, or None on other C libraries."""

from __future__ import annotations

import platform

import pytest

from mlserve.runtime.heap import malloc_trim


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_malloc_trim_is_found_on_glibc_and_can_be_called() -> None:
    trim = malloc_trim()
    assert trim is not None
    assert trim() in (0, 1)  # 1: memory was given back, 0: there was none to give


@pytest.mark.skipif(platform.libc_ver()[0] == "glibc", reason="not glibc")
def test_there_is_no_malloc_trim_without_glibc() -> None:
    assert malloc_trim() is None
