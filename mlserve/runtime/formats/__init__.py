"""Model formats behind the one LoadedModel interface: each reads a user's file at registration
and loads the stored artifact when serving. Chosen by the file's type; recorded in the metadata
as `format`.

| format | file | module |
|---|---|---|
| joblib | any other file (.joblib, .pkl) | formats.joblib |
| skops | .skops | formats.skops |
| onnx | .onnx | formats.onnx |
| mlflow | a directory with an MLmodel file | formats.mlflow |

Format modules are imported when a model of theirs is met (their libraries are extras).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from mlserve.errors import InvalidModelError
from mlserve.runtime.formats.base import Candidate, ModelFormat

__all__ = ["FORMATS", "Candidate", "ModelFormat", "detect", "get"]

# format name → (module, class): imported on first use
FORMATS: dict[str, tuple[str, str]] = {
    "joblib": ("mlserve.runtime.formats.joblib", "JoblibFormat"),
    "skops": ("mlserve.runtime.formats.skops", "SkopsFormat"),
    "onnx": ("mlserve.runtime.formats.onnx", "OnnxFormat"),
    "mlflow": ("mlserve.runtime.formats.mlflow", "MlflowFormat"),
}
_loaded: dict[str, ModelFormat] = {}


def get(name: str) -> ModelFormat:
    """The format called `name` (as recorded in a version's metadata)."""
    if name not in _loaded:
        if name not in FORMATS:
            raise InvalidModelError(
                f"unknown model format '{name}' (this mlserve reads {', '.join(FORMATS)})"
            )
        module, cls = FORMATS[name]
        try:
            found: ModelFormat = getattr(importlib.import_module(module), cls)()
        except (ImportError, AttributeError) as exc:
            raise InvalidModelError(f"the {name} format is not available: {exc}") from None
        _loaded[name] = found
    return _loaded[name]


def detect(path: Path) -> ModelFormat:
    """The format of a file or directory offered for registration, by its type."""
    if path.is_dir() and (path / "MLmodel").is_file():
        return get("mlflow")
    suffix = path.suffix.lower()
    if suffix == ".skops":
        return get("skops")
    if suffix == ".onnx":
        return get("onnx")
    if path.is_dir():
        raise InvalidModelError(
            f"{path} is a directory, not a model file (an MLflow model directory has an "
            "MLmodel file)"
        )
    return get("joblib")
