"""skops files (.skops): the format for model files from someone else. Loading instantiates only
trusted types (scikit-learn's, numpy's, and those the user names with --trust), never runs code
from the file."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlserve.errors import InvalidModelError
from mlserve.runtime.formats.base import Candidate
from mlserve.runtime.formats.joblib import read_file
from mlserve.schemas import ModelMetadata

__all__ = ["ARTIFACT", "INSTALL_HINT", "SkopsFormat", "skops_io"]

log = logging.getLogger("mlserve.registry")

ARTIFACT = "model.skops"
INSTALL_HINT = "install the skops extra: pip install 'mlserve-sklearn[skops]'"


def skops_io() -> Any:
    """The skops.io module, or a one-line InvalidModelError naming the extra."""
    try:
        import skops.io
    except ImportError:
        raise InvalidModelError(f"a .skops model needs skops: {INSTALL_HINT}") from None
    return skops.io


def _loads(data: bytes, *, trusted: Sequence[str], origin: str) -> tuple[Any, str | None]:
    """skops.io.loads with exactly `trusted` as extra types; returns the object and the
    scikit-learn version it was saved with when that differs from ours (skops stores each
    estimator's `_sklearn_version`, and scikit-learn warns when it differs on loading)."""
    from sklearn.exceptions import InconsistentVersionWarning

    sio = skops_io()
    saved_with: str | None = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        obj = sio.loads(data, trusted=list(trusted))
    for w in caught:
        if isinstance(w.message, InconsistentVersionWarning):
            saved_with = str(w.message.original_sklearn_version)
        else:
            log.debug("warning while loading %s: %s", origin, w.message)
    return obj, saved_with


class SkopsFormat:
    name = "skops"

    def read(self, path: Path, *, trust: Sequence[str] = ()) -> Candidate:
        data = read_file(path, "a skops model file")
        sio = skops_io()
        try:
            found: list[str] = list(sio.get_untrusted_types(data=data))
        except Exception as exc:  # noqa: BLE001 - a malformed file can raise anything; report it
            raise InvalidModelError(
                f"{path} is not a loadable skops model: {type(exc).__name__}: {exc}"
            ) from None
        refused = [t for t in found if t not in trust]
        if refused:
            raise InvalidModelError(
                f"{path} holds types that are not trusted: {', '.join(refused)}; "
                "`--trust TYPE` accepts one (repeatable), and trusting a type runs its code "
                "when the model loads"
            )
        trusted = [t for t in found if t in trust]
        try:
            estimator, saved_with = _loads(data, trusted=trusted, origin=str(path))
        except Exception as exc:  # noqa: BLE001 - loading can raise anything; report, never crash
            raise InvalidModelError(
                f"{path} is not a loadable skops model: {type(exc).__name__}: {exc}"
            ) from None
        return Candidate(
            data=data,
            estimator=estimator,
            artifact=ARTIFACT,
            saved_with=saved_with,
            details={"trusted": trusted},
        )

    def load(self, data: bytes, *, origin: str, meta: ModelMetadata) -> Any:
        trusted = self.details_of(meta)["trusted"]
        return _loads(data, trusted=trusted, origin=origin)[0]

    def details_of(self, meta: ModelMetadata) -> Mapping[str, Any]:
        return {"trusted": [str(t) for t in meta.format_details.get("trusted", [])]}
