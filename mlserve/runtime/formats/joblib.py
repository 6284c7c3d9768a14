"""joblib / pickle files: what scikit-learn documents for persistence. Loading runs code from
the file: only for files you trust (skops is the format for files from someone else)."""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlserve.errors import InvalidModelError
from mlserve.runtime import introspect
from mlserve.runtime.formats.base import Candidate
from mlserve.schemas import ModelMetadata

__all__ = ["JoblibFormat", "dump", "read_file", "unpickle"]

log = logging.getLogger("mlserve.registry")

ARTIFACT = "model.joblib"


def unpickle(data: bytes, *, origin: str) -> tuple[Any, str | None]:
    """joblib.load from bytes; returns the object and the scikit-learn version it was saved with
    when that differs from ours (scikit-learn warns about it on unpickling)."""
    import joblib
    from sklearn.exceptions import InconsistentVersionWarning

    saved_with: str | None = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        obj = joblib.load(io.BytesIO(data))
    for w in caught:
        if isinstance(w.message, InconsistentVersionWarning):
            saved_with = str(w.message.original_sklearn_version)
        else:
            log.debug("warning while loading %s: %s", origin, w.message)
    return obj, saved_with


def dump(estimator: Any) -> bytes:
    import joblib

    buf = io.BytesIO()
    joblib.dump(estimator, buf)
    return buf.getvalue()


def read_file(path: Path, what: str = "a joblib model file") -> bytes:
    """The bytes of a file offered for registration; InvalidModelError when there are none."""
    if not path.exists():
        raise InvalidModelError(f"{path} does not exist")
    if path.is_dir():
        raise InvalidModelError(f"{path} is a directory, not {what}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidModelError(f"cannot read {path}: {exc.strerror}") from None
    if not data:
        raise InvalidModelError(f"{path} is empty, not {what}")
    return data


class JoblibFormat:
    name = "joblib"

    def read(self, path: Path, *, trust: Sequence[str] = ()) -> Candidate:
        data = read_file(path)
        try:
            estimator, saved_with = unpickle(data, origin=str(path))
        except Exception as exc:  # noqa: BLE001 - unpickling can raise anything; report, never crash
            library = introspect.sniff_native_booster(data)
            if library is not None:
                raise InvalidModelError(
                    introspect.native_booster_message(str(path), library)
                ) from None
            raise InvalidModelError(
                f"{path} is not a loadable joblib model: {type(exc).__name__}: {exc}"
            ) from None
        return Candidate(data=data, estimator=estimator, artifact=ARTIFACT, saved_with=saved_with)

    def load(self, data: bytes, *, origin: str, meta: ModelMetadata) -> Any:
        return unpickle(data, origin=origin)[0]

    def details_of(self, meta: ModelMetadata) -> Mapping[str, Any]:
        return {}
