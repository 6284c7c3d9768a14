"""The Celery app and the worker process that scores async jobs (composes serving + stores)."""
