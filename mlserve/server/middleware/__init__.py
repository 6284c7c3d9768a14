"""ASGI middlewares, one class per module."""
