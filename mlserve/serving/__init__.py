"""Serving without HTTP: model manager, prediction service, traffic, quality, jobs, metrics."""

# A namespace of modules: import what you need from them (no imports here keep
# `import mlserve.serving.<module>` light).
__all__ = [
    "drift",
    "jobrunner",
    "manager",
    "metrics",
    "quality",
    "service",
    "state",
    "traffic",
    "watcher",
]
