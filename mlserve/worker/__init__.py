"""The Celery app and the worker process that scores async jobs (composes serving + stores)."""

# A namespace of modules: `mlserve worker` imports mlserve.worker.app when it runs (Celery is an
# optional dependency).
__all__ = ["app"]
