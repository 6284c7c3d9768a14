"""Connections shared by the stores: Redis (scale-out) and SQLite (one host)."""
