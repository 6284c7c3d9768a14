"""The FastAPI inference server: create_app(settings) builds a self-contained app."""
