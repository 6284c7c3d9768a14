"""Connections shared by the stores: Redis (scale-out) and SQLite (one host)."""

# A namespace of modules: import what you need from them (no imports here, so that
# `mlserve.backends.sqlite` never loads the Redis module, and the Redis one loads redis-py
# only when redis.url is set).
__all__ = ["redis", "sqlite"]
