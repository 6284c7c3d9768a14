"""MLflow model directories of the sklearn flavour: the MLmodel file (YAML) names the pickled
model, its MLflow signature types the inputs and its input example is the smoke test. Read
without the `mlflow` package (PyYAML, and cloudpickle for cloudpickled models)."""

from __future__ import annotations

import json
import logging
import pickle  # noqa: S403 - MLflow stores sklearn models pickled; loading them is the job
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mlserve.errors import InvalidModelError
from mlserve.runtime import introspect, signature
from mlserve.runtime.formats.base import Candidate
from mlserve.runtime.formats.joblib import read_file
from mlserve.schemas import ColumnSpec, ColumnType, ModelMetadata

__all__ = ["ARTIFACT", "INSTALL_HINT", "MLMODEL", "MlflowFormat", "read_mlmodel"]

log = logging.getLogger("mlserve.registry")

MLMODEL = "MLmodel"
ARTIFACT = "model.pkl"
INSTALL_HINT = "install the mlflow extra: pip install 'mlserve-sklearn[mlflow]'"
FLAVOR = "sklearn"
# MLflow column types → signature types; others (binary, datetime, arrays, objects) are refused
_DTYPES: dict[str, ColumnType] = {
    "double": "float",
    "float": "float",
    "long": "int",
    "integer": "int",
    "boolean": "bool",
    "string": "str",
}
_SERIALIZATIONS = ("pickle", "cloudpickle", "skops")


def read_mlmodel(directory: Path) -> dict[str, Any]:
    """The MLmodel file of an MLflow model directory, parsed (YAML)."""
    try:
        import yaml
    except ImportError:
        raise InvalidModelError(
            f"reading the MLflow model {directory} needs PyYAML: {INSTALL_HINT}"
        ) from None
    path = directory / MLMODEL
    try:
        parsed = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidModelError(f"cannot read {path}: {exc}") from None
    except yaml.YAMLError as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise InvalidModelError(f"{path} is not valid YAML: {first}") from None
    if not isinstance(parsed, dict):
        raise InvalidModelError(f"{path} is not an MLmodel file (no mapping of fields)")
    return parsed


def _inside(directory: Path, relative: Any, what: str) -> Path:
    """A file the MLmodel names, which must stay inside the model directory."""
    if not isinstance(relative, str) or not relative:
        raise InvalidModelError(f"{directory / MLMODEL} names no {what}")
    path = (directory / relative).resolve()
    if not path.is_relative_to(directory.resolve()):
        raise InvalidModelError(
            f"{directory / MLMODEL} names {what} {relative!r}, outside the model directory"
        )
    return path


def _flavor(directory: Path, mlmodel: Mapping[str, Any]) -> dict[str, Any]:
    """The sklearn flavour's configuration; any other flavour is refused by name."""
    flavors = mlmodel.get("flavors")
    if not isinstance(flavors, dict) or not flavors:
        raise InvalidModelError(f"{directory / MLMODEL} lists no flavors")
    conf = flavors.get(FLAVOR)
    if isinstance(conf, dict):
        return conf
    # python_function is MLflow's generic wrapper, present beside every real flavour
    others = [str(k) for k in flavors if k != "python_function"] or ["python_function"]
    names = ", ".join(f"'{k}'" for k in others)
    noun = "flavour" if len(others) == 1 else "flavours"
    verb = "is" if len(others) == 1 else "are"
    raise InvalidModelError(
        f"{directory} is an MLflow model of the {noun} {names}, which {verb} not served; "
        "mlserve serves the sklearn flavour"
    )


def _unpickle(data: bytes, *, serialization: str, origin: str) -> tuple[Any, str | None]:
    """The model from its bytes, and the scikit-learn version scikit-learn warned it was saved
    with (when not ours)."""
    from sklearn.exceptions import InconsistentVersionWarning

    loads: Callable[[bytes], Any]
    if serialization == "cloudpickle":
        try:
            import cloudpickle
        except ImportError:
            raise InvalidModelError(
                f"{origin} was saved with cloudpickle, which is not installed: {INSTALL_HINT}"
            ) from None
        loads = cloudpickle.loads
    else:
        loads = pickle.loads
    saved_with: str | None = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        obj = loads(data)
    for w in caught:
        if isinstance(w.message, InconsistentVersionWarning):
            saved_with = str(w.message.original_sklearn_version)
        else:
            log.debug("warning while loading %s: %s", origin, w.message)
    return obj, saved_with


# ---------------------------------------------------------------------------- signature
def _signature_columns(directory: Path, mlmodel: Mapping[str, Any]) -> list[ColumnSpec] | None:
    """The MLflow signature's input columns as typed columns (None: no signature, or a tensor
    or unnamed one, which names nothing)."""
    found = mlmodel.get("signature")
    inputs = found.get("inputs") if isinstance(found, dict) else None
    if not inputs:
        return None
    where = f"{directory / MLMODEL}: the signature's inputs"
    try:
        specs = json.loads(inputs) if isinstance(inputs, str) else inputs
    except ValueError:
        raise InvalidModelError(f"{where} are not valid JSON") from None
    if not isinstance(specs, list) or not all(isinstance(s, dict) for s in specs):
        raise InvalidModelError(f"{where} are not a list of column specs")
    if not specs or any(s.get("type") == "tensor" or not s.get("name") for s in specs):
        return None
    columns = []
    for spec in specs:
        mtype = spec.get("type")
        dtype = _DTYPES.get(mtype) if isinstance(mtype, str) else None
        if dtype is None:
            raise InvalidModelError(
                f"{where}: column '{spec['name']}' is of MLflow type {json.dumps(mtype)}, which "
                f"mlserve does not take (it takes {', '.join(_DTYPES)})"
            )
        columns.append(
            ColumnSpec(name=str(spec["name"]), dtype=dtype, nullable=spec.get("required") is False)
        )
    return columns


def _typed_columns(
    directory: Path,
    estimator: Any,
    declared: list[ColumnSpec],
    example: list[dict[str, Any]] | None,
) -> list[ColumnSpec]:
    """The signature of a model fitted on a DataFrame: MLflow's types in the model's column
    order, with what the model itself knows (an encoder's values, an imputer's gaps)."""
    names = [str(n) for n in estimator.feature_names_in_]
    by_name = {c.name: c for c in declared}
    if set(by_name) != set(names) or len(by_name) != len(declared):
        raise InvalidModelError(
            f"{directory / MLMODEL}: the signature's columns ({', '.join(by_name)}) are not "
            f"the model's features ({', '.join(names)})"
        )
    inferred, _ = signature.infer_columns(estimator, names, example)
    out = []
    for name, known in zip(names, inferred, strict=True):
        spec = by_name[name].model_copy()
        spec.nullable = spec.nullable or known.nullable
        if spec.dtype == "str" and known.dtype == "str" and known.categories:
            spec.categories = known.categories
        out.append(spec)
    return out


# ---------------------------------------------------------------------------- input example
def _cell(value: Any, where: str) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise InvalidModelError(
        f"{where} holds a {type(value).__name__}; mlserve takes a number, string, boolean or "
        "null per column"
    )


def _example_rows(
    directory: Path, mlmodel: Mapping[str, Any], names: Sequence[str] | None, text: bool
) -> list[dict[str, Any]] | None:
    """The saved input example as rows (column → value): MLflow's dataframe (split or values
    orient), records, one-row object, column lists, or a 2-D array."""
    info = mlmodel.get("saved_input_example_info")
    if not isinstance(info, dict):
        return None
    kind = info.get("type")
    if kind not in (None, "dataframe", "ndarray", "json_object"):
        log.warning("%s: MLflow input example of type %s is not read", directory, kind)
        return None
    path = _inside(directory, info.get("artifact_path", "input_example.json"), "input example")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InvalidModelError(f"cannot read the MLflow input example {path}: {exc}") from None
    if "params" in info and isinstance(raw, dict) and "inputs" in raw:
        raw = raw["inputs"]  # saved with inference params: {"inputs": ..., "params": ...}
    columns: Sequence[Any] | None = names
    if isinstance(raw, dict) and isinstance(raw.get("data"), list):  # dataframe split / values
        columns = raw.get("columns") or names
        rows: list[Any] = raw["data"]
    elif isinstance(raw, dict) and raw and all(isinstance(v, list) for v in raw.values()):
        length = {len(v) for v in raw.values()}  # columns of values
        if len(length) != 1:
            raise InvalidModelError(f"{path}: the example's columns differ in length")
        columns, rows = list(raw), [list(r) for r in zip(*raw.values(), strict=True)]
    elif isinstance(raw, dict):
        columns, rows = list(raw), [list(raw.values())]
    elif isinstance(raw, list) and raw and all(isinstance(r, dict) for r in raw):
        rows = raw  # records
    elif isinstance(raw, list) and raw and all(isinstance(r, list) for r in raw):
        rows = raw
    elif isinstance(raw, list) and raw:
        rows = [[v] for v in raw] if text else [raw]  # texts, or one 1-D row
    else:
        raise InvalidModelError(f"{path}: the input example holds no rows")
    out: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        where = f"{path}: row {i}"
        if isinstance(row, dict):
            values = {str(k): _cell(v, f"{where}, column '{k}'") for k, v in row.items()}
        elif isinstance(row, list):
            keys = [str(c) for c in columns] if columns and len(columns) == len(row) else None
            keys = keys or [str(j) for j in range(len(row))]
            values = {k: _cell(v, f"{where}, column '{k}'") for k, v in zip(keys, row, strict=True)}
        else:
            values = {"0": _cell(row, where)}
        if text:  # a text model's row is its one text
            values = {"text": next(iter(values.values()), None)}
        out.append(values)
    return out


# ---------------------------------------------------------------------------- the format
class MlflowFormat:
    name = "mlflow"

    def read(self, path: Path, *, trust: Sequence[str] = ()) -> Candidate:
        mlmodel = read_mlmodel(path)
        conf = _flavor(path, mlmodel)
        # MLflow writes pickle when it names no format (models saved before it recorded one)
        serialization = str(conf.get("serialization_format") or "pickle")
        if serialization not in _SERIALIZATIONS:
            raise InvalidModelError(
                f"{path / MLMODEL}: serialization_format {serialization!r} is not one MLflow "
                "writes (pickle, cloudpickle, skops)"
            )
        model_path = _inside(path, conf.get("pickled_model"), "model file")
        if serialization == "skops":
            # A skops file is read like a .skops file: only trusted types, --trust for others
            # (never the skops_trusted_types the MLmodel file itself lists).
            from mlserve.runtime import formats

            listed = conf.get("skops_trusted_types") or []
            try:
                inner = formats.get("skops").read(model_path, trust=trust)
            except InvalidModelError as exc:
                if not listed:
                    raise
                raise InvalidModelError(
                    f"{exc.message} (the MLmodel file's skops_trusted_types, "
                    f"{', '.join(map(str, listed))}, are trusted only when passed with --trust)"
                ) from None
            data, estimator, saved_with = inner.data, inner.estimator, inner.saved_with
            artifact, extra = "model.skops", dict(inner.details)
        else:
            data = read_file(model_path, f"a {serialization} model file")
            try:
                estimator, saved_with = _unpickle(
                    data, serialization=serialization, origin=str(model_path)
                )
            except InvalidModelError:
                raise
            except Exception as exc:  # noqa: BLE001 - unpickling can raise anything; report it
                code = ""
                if conf.get("code"):  # modules the model may need, which mlserve never imports
                    code = f" (mlserve does not load its code directory '{conf['code']}')"
                raise InvalidModelError(
                    f"{model_path} is not a loadable {serialization} model: "
                    f"{type(exc).__name__}: {exc}{code}"
                ) from None
            artifact, extra = ARTIFACT, {}
        sklearn_version = conf.get("sklearn_version")
        if sklearn_version is not None:
            import sklearn

            sklearn_version = str(sklearn_version)
            saved_with = sklearn_version if sklearn_version != sklearn.__version__ else None

        declared = _signature_columns(path, mlmodel)
        text = introspect.is_text_model(estimator)
        dataframe = getattr(estimator, "feature_names_in_", None) is not None
        names: list[str] | None = None
        if dataframe:
            names = [str(n) for n in estimator.feature_names_in_]
        elif declared is not None and not text:
            if getattr(estimator, "n_features_in_", None) == len(declared):
                names = [c.name for c in declared]  # a float matrix: the columns' names only
        example = _example_rows(path, mlmodel, names, text)
        columns = None
        if declared is not None and dataframe:
            columns = _typed_columns(path, estimator, declared, example)

        run_id = mlmodel.get("run_id")
        details: dict[str, Any] = {
            "flavor": FLAVOR,
            "serialization_format": serialization,
            "sklearn_version": sklearn_version,
            "run_id": str(run_id) if run_id else None,
            "model_uuid": mlmodel.get("model_uuid"),
            "mlflow_version": mlmodel.get("mlflow_version"),
            **extra,
        }
        return Candidate(
            data=data,
            estimator=estimator,
            artifact=artifact,
            saved_with=saved_with,
            example=example,
            columns=columns,
            feature_names=None if dataframe else names,
            details=details,
            tags={"mlflow_run_id": str(run_id)} if run_id else {},
        )

    def load(self, data: bytes, *, origin: str, meta: ModelMetadata) -> Any:
        serialization = str(meta.format_details.get("serialization_format") or "pickle")
        if serialization == "skops":
            from mlserve.runtime import formats

            return formats.get("skops").load(data, origin=origin, meta=meta)
        return _unpickle(data, serialization=serialization, origin=origin)[0]

    def details_of(self, meta: ModelMetadata) -> Mapping[str, Any]:
        return dict(meta.format_details)
