"""ASGI middlewares, one class per module."""

# A namespace of modules: import what you need from them (no imports here keep
# `import mlserve.server.middleware.<module>` light).
__all__ = [
    "auth",
    "context",
    "fastlane",
    "ratelimit",
]
