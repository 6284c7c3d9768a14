"""The FastAPI inference server: create_app(settings) builds a self-contained app."""

# A namespace of modules: import what you need from them (no imports here keep
# `import mlserve.server.<module>` light).
__all__ = [
    "app",
    "auth",
    "deps",
    "errors",
    "jsonbody",
    "openapi",
    "run",
    "scope",
    "v2codec",
    "middleware",
    "routes",
]
