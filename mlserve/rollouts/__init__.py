"""Canary rollouts: the store protocol and value objects (base), the SQLite (one host) and
Redis (replicas) stores, and the factory that picks one from the settings."""
