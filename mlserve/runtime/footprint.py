"""How much memory a loaded estimator holds: a deep walk of its objects and arrays."""

from __future__ import annotations

import sys
import types
from typing import Any

import numpy as np

# Objects visited at most: a walk of a huge object graph stops there and reports what it saw
# (a lower bound); a TF-IDF vocabulary of 30k terms is about 60k objects.
MAX_OBJECTS = 2_000_000
_LEAVES = (str, bytes, bytearray, int, float, complex, bool, type(None), memoryview)
# Shared with the interpreter, not owned by one model: never counted.
_SHARED = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType)


def deep_size(root: Any) -> int:
    """Bytes held by `root` and everything it references (each object once): sys.getsizeof of
    every object reached through containers, instance dicts and slots; numpy arrays count their
    buffer (a view counts the array it views), object arrays their elements. Classes, modules
    and functions are shared and not counted. Memory behind C extensions that sys.getsizeof
    does not report (a native booster's own heap) is missed: callers take the larger of this
    and the artifact's size."""
    seen: set[int] = set()
    stack = [root]
    total = 0
    while stack and len(seen) < MAX_OBJECTS:
        obj = stack.pop()
        key = id(obj)
        if key in seen or isinstance(obj, _SHARED):
            continue
        seen.add(key)
        total += sys.getsizeof(obj)
        if isinstance(obj, _LEAVES):
            continue
        if isinstance(obj, np.ndarray):
            if obj.base is not None:  # a view: its size is that of the array it views
                stack.append(obj.base)
            if obj.dtype.hasobject:
                stack.extend(obj.ravel().tolist())
            continue
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
            continue
        if isinstance(obj, list | tuple | set | frozenset):
            stack.extend(obj)
            continue
        attrs = getattr(obj, "__dict__", None)
        if attrs is not None:
            stack.append(attrs)
        for slot in getattr(type(obj), "__slots__", ()):
            if isinstance(slot, str) and hasattr(obj, slot):
                stack.append(getattr(obj, slot))
    return total
