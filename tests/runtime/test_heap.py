"""malloc_trim: glibc's, found through ctypes, or None on other C libraries."""

from __future__ import annotations

import platform

from mlserve.runtime.heap import malloc_trim


def test_malloc_trim_is_callable_on_glibc_and_absent_elsewhere() -> None:
    trim = malloc_trim()
    if platform.libc_ver()[0] == "glibc":
        assert trim is not None
        assert trim() in (0, 1)  # 1: memory was given back, 0: there was none to give
    else:
        assert trim is None
