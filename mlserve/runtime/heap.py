"""Giving the heap memory that unloaded models freed back to the operating system."""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable

HeapTrim = Callable[[], object]
"""Returns free heap memory to the OS; called with no arguments, its result is ignored."""


def malloc_trim() -> HeapTrim | None:
    """glibc's malloc_trim(0), or None where the C library has none (musl, macOS, Windows).

    glibc keeps what a model's arrays freed inside its heaps (one arena per thread that
    allocated; free, but still the process's RSS) and gives back only what lies at a heap's
    top; malloc_trim(0) also releases the free pages in the middle of every arena (madvise).
    ctypes drops the GIL for the call, so it may run on a worker thread."""
    try:
        libc = ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (OSError, AttributeError, TypeError):  # no dlopen(NULL) (Windows), or not glibc
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return functools.partial(trim, 0)
