"""Serving without HTTP: model manager, prediction service, traffic, quality, jobs, metrics."""
