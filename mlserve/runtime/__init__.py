"""In-process model runtime: input validation, vectorized prediction and adaptive batching."""

# A namespace of modules: import what you need from them (no imports here keep
# `import mlserve.runtime.<module>` light).
__all__ = [
    "batcher",
    "breaker",
    "introspect",
    "model",
    "signature",
]
