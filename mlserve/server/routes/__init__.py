"""HTTP routes, one module per area."""

# A namespace of modules: import what you need from them (no imports here keep
# `import mlserve.server.routes.<module>` light).
__all__ = [
    "aliases",
    "compare",
    "feedback",
    "health",
    "jobs",
    "models",
    "predict",
    "v2",
]
