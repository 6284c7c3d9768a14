"""ONNX models (.onnx, e.g. exported by skl2onnx) run by onnxruntime behind a fitted scikit-learn
estimator's methods; what the model takes and answers is read from the graph."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlserve.errors import InvalidModelError
from mlserve.runtime import introspect
from mlserve.runtime.formats.base import Candidate
from mlserve.runtime.formats.joblib import read_file
from mlserve.schemas import Label, ModelMetadata, TaskKind

__all__ = [
    "ARTIFACT",
    "INSTALL_HINT",
    "OnnxClassifier",
    "OnnxFormat",
    "OnnxModel",
    "OnnxScorer",
    "graph_class_labels",
    "onnxruntime",
]

log = logging.getLogger("mlserve.registry")

ARTIFACT = "model.onnx"
INSTALL_HINT = "install the onnx extra: pip install 'mlserve-sklearn[onnx]'"

# ONNX tensor element types an input can take, as the numpy dtype fed to it.
INPUT_TYPES: dict[str, Any] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(string)": object,
}
LABEL_TYPES = ("tensor(string)", "tensor(int64)", "tensor(int32)")
FLOAT_TYPES = ("tensor(float)", "tensor(double)")
LOCALE_HINT = (
    "onnxruntime cannot build the graph's StringNormalizer (text lowercasing): it asks for a "
    "locale this host does not have; install that locale, or convert with skl2onnx "
    "options={TfidfVectorizer: {'locale': 'C'}}"
)


def onnxruntime() -> Any:
    """The onnxruntime module, or a one-line InvalidModelError naming the extra."""
    try:
        import onnxruntime
    except ImportError:
        raise InvalidModelError(f"an .onnx model needs onnxruntime: {INSTALL_HINT}") from None
    return onnxruntime


def _session(data: bytes) -> Any:
    ort = onnxruntime()
    options = ort.SessionOptions()
    options.log_severity_level = 4  # failures reach the user as our one-line errors, not logs
    return ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------- the graph's class labels
# onnxruntime does not show a graph's nodes, and the `onnx` package (31 MB installed) is not
# needed to serve: the few fields holding class labels are read from the protobuf wire format
# (field numbers from onnx.proto, which never change).


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("malformed varint")


def _fields(buf: memoryview) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of a protobuf message: an int for varints, a memoryview
    for length-delimited and fixed-size fields."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        value: Any
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = buf[pos : pos + size], pos + size
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > end:
            raise ValueError("truncated message")
        yield number, wire, value


def _ints(wire: int, value: Any) -> list[int]:
    """Repeated int64 (packed or not), two's complement."""
    if wire == 0:
        raw = [value]
    else:
        raw, pos = [], 0
        while pos < len(value):
            item, pos = _varint(value, pos)
            raw.append(item)
    return [v - (1 << 64) if v >= 1 << 63 else v for v in raw]


def _text(value: Any) -> str:
    return bytes(value).decode("utf-8", errors="replace")


@dataclass(slots=True)
class _Node:
    op_type: str = ""
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    labels: list[Label] | None = None  # a classlabels_* attribute


def _node(buf: memoryview) -> _Node:
    # NodeProto: input 1, output 2, op_type 4, attribute 5
    node = _Node()
    for number, wire, value in _fields(buf):
        if number == 1 and wire == 2:
            node.inputs.append(_text(value))
        elif number == 2 and wire == 2:
            node.outputs.append(_text(value))
        elif number == 4 and wire == 2:
            node.op_type = _text(value)
        elif number == 5 and wire == 2:
            name, strings, ints = "", [], []
            # AttributeProto: name 1, ints 8, strings 9
            for a_number, a_wire, a_value in _fields(value):
                if a_number == 1 and a_wire == 2:
                    name = _text(a_value)
                elif a_number == 8:
                    ints.extend(_ints(a_wire, a_value))
                elif a_number == 9 and a_wire == 2:
                    strings.append(_text(a_value))
            if name.startswith("classlabels_") and (strings or ints):
                node.labels = list(strings) if strings else list(ints)
    return node


def _tensor(buf: memoryview) -> tuple[str, list[Label] | None]:
    # TensorProto: data_type 2 (7 int64, 8 string), string_data 6, int64_data 7, name 8, raw_data 9
    name, data_type, strings, ints, raw = "", 0, [], [], None
    for number, wire, value in _fields(buf):
        if number == 2 and wire == 0:
            data_type = value
        elif number == 6 and wire == 2:
            strings.append(_text(value))
        elif number == 7:
            ints.extend(_ints(wire, value))
        elif number == 8 and wire == 2:
            name = _text(value)
        elif number == 9 and wire == 2:
            raw = value
    if data_type == 8:
        return name, list(strings)
    if data_type == 7:
        if raw is not None:
            return name, [int(v) for v in np.frombuffer(raw, dtype="<i8")]
        return name, list(ints)
    return name, None


def graph_class_labels(data: bytes, label_output: str) -> list[Label] | None:
    """The class labels a classifier graph records, in the order of its probability columns:
    a ZipMap's, a classifier operator's (LinearClassifier, TreeEnsembleClassifier, ...), or the
    labels tensor that skl2onnx picks the label from (ArrayFeatureExtractor). None if none."""
    model = memoryview(data)
    graph = None
    for number, wire, value in _fields(model):  # ModelProto: graph 7
        if number == 7 and wire == 2:
            graph = value
    if graph is None:
        return None
    nodes: list[_Node] = []
    tensors: dict[str, list[Label]] = {}
    for number, wire, value in _fields(graph):  # GraphProto: node 1, initializer 5
        if number == 1 and wire == 2:
            nodes.append(_node(value))
        elif number == 5 and wire == 2:
            name, labels = _tensor(value)
            if labels is not None:
                tensors[name] = labels
    for node in nodes:
        if node.op_type == "ZipMap" and node.labels:
            return node.labels
    labelled = [n for n in nodes if n.labels]
    for node in labelled:
        if label_output in node.outputs:
            return node.labels
    if labelled:
        return labelled[-1].labels
    picked = [
        tensors[n.inputs[0]]
        for n in nodes
        if n.op_type == "ArrayFeatureExtractor" and n.inputs and n.inputs[0] in tensors
    ]
    return picked[-1] if picked else None


# ---------------------------------------------------------------- the adapters


class OnnxModel:
    """An ONNX graph behind a fitted estimator's methods: predict(X) runs the graph on a float
    matrix (tabular: one tensor [n, features], or one input per named column) or a list of
    strings (text: one string tensor). Answers the label output (classifiers, clusterers) or
    the value output (regressors)."""

    def __init__(
        self, session: Any, data: bytes, spec: Mapping[str, Any], classes: Sequence[Label] = ()
    ) -> None:
        self._session = session
        self._data = data
        self.spec = dict(spec)
        self._inputs: list[dict[str, Any]] = list(self.spec["inputs"])
        self._one_row = any(i["shape"] and i["shape"][0] == 1 for i in self._inputs)
        self.is_text = self._inputs[0]["type"] == "tensor(string)"
        if not self.is_text:
            self.n_features_in_ = _n_features(self._inputs)
        self.n_outputs_ = int(self.spec.get("n_outputs", 1))
        if classes:
            self.classes_ = np.asarray(list(classes), dtype=object if _any_str(classes) else None)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Pickled as its bytes and spec (onnxruntime sessions do not pickle).
        return _rebuild, (self._data, self.spec, list(getattr(self, "classes_", [])))

    def _feed(self, x: Any) -> dict[str, Any]:
        if self.is_text:
            spec = self._inputs[0]
            texts = np.asarray(list(x), dtype=object)
            return {spec["name"]: texts.reshape(_batch_shape(spec, len(texts)))}
        matrix = np.asarray(x)
        if len(self._inputs) == 1:
            spec = self._inputs[0]
            values = matrix.astype(INPUT_TYPES[spec["type"]], copy=False)
            return {spec["name"]: values[:, 0] if len(spec["shape"]) == 1 else values}
        return {
            spec["name"]: matrix[:, j]
            .astype(INPUT_TYPES[spec["type"]])
            .reshape(_batch_shape(spec, matrix.shape[0]))
            for j, spec in enumerate(self._inputs)
        }

    def _run(self, outputs: Sequence[str], x: Any) -> list[Any]:
        """The graph's `outputs` for the rows `x`, from one run of the graph (per row for a
        graph exported for one row at a time)."""
        feed = self._feed(x)
        if not self._one_row:
            return list(self._session.run(list(outputs), feed))
        n = len(next(iter(feed.values())))
        runs = [
            self._session.run(list(outputs), {k: v[i : i + 1] for k, v in feed.items()})
            for i in range(n)
        ]
        return [_joined([run[j] for run in runs]) for j in range(len(outputs))]

    def _labels(self, out: Any) -> Any:
        out = np.asarray(out)
        if out.ndim == 2 and out.shape[1] == 1:
            out = out[:, 0]
        return out

    def predict(self, x: Any) -> Any:
        name = self.spec.get("label") or self.spec["value"]
        return self._labels(self._run([name], x)[0])

    def _matrix(self, out: Any) -> Any:
        """A (n, classes) float matrix from a tensor or from ZipMap's list of dicts."""
        if isinstance(out, list):
            keys = list(getattr(self, "classes_", []))
            return np.asarray([[row[k] for k in keys] for row in out], dtype=float)
        return np.asarray(out, dtype=float)

    def _predict_with(self, output: str, x: Any) -> tuple[Any, Any]:
        """The labels and the `output` matrix from one run of the graph."""
        labels, second = self._run([self.spec["label"], output], x)
        return self._labels(labels), self._matrix(second)


class OnnxClassifier(OnnxModel):
    """A classifier graph with a probabilities output (a tensor or skl2onnx's ZipMap)."""

    def predict_proba(self, x: Any) -> Any:
        return self._matrix(self._run([self.spec["probabilities"]], x)[0])

    def predict_with_proba(self, x: Any) -> tuple[Any, Any]:
        """predict(x) and predict_proba(x) from one run of the graph (LoadedModel asks for
        both at once: the graph computes both anyway)."""
        return self._predict_with(self.spec["probabilities"], x)


class OnnxScorer(OnnxModel):
    """A classifier graph whose second output is raw scores (skl2onnx's LinearSVC, SVC without
    probability=True): served as decision_function, as scikit-learn's would be."""

    def decision_function(self, x: Any) -> Any:
        return self._scores(self._matrix(self._run([self.spec["scores"]], x)[0]))

    def predict_with_decision_function(self, x: Any) -> tuple[Any, Any]:
        """predict(x) and decision_function(x) from one run of the graph."""
        labels, scores = self._predict_with(self.spec["scores"], x)
        return labels, self._scores(scores)

    def _scores(self, scores: Any) -> Any:
        if len(getattr(self, "classes_", ())) == 2 and scores.ndim == 2:
            # scikit-learn answers one score per row for two classes: the positive one's
            scores = scores[:, -1]
        return scores


def _joined(parts: list[Any]) -> Any:
    """One output of per-row runs, as one run over all the rows would answer it."""
    if parts and isinstance(parts[0], list):
        return [row for part in parts for row in part]
    return np.concatenate(parts) if parts else np.empty((0,))


def _any_str(values: Sequence[Any]) -> bool:
    return any(isinstance(v, str) for v in values)


def _batch_shape(spec: Mapping[str, Any], n: int) -> tuple[int, ...]:
    return (n, 1) if len(spec["shape"] or [None, None]) == 2 else (n,)


def _n_features(inputs: Sequence[Mapping[str, Any]]) -> int:
    if len(inputs) > 1:
        return len(inputs)
    shape = inputs[0]["shape"] or []
    if len(shape) == 2 and isinstance(shape[1], int):
        return int(shape[1])
    return 1 if len(shape) == 1 else 0


def _rebuild(data: bytes, spec: Mapping[str, Any], classes: Sequence[Label]) -> OnnxModel:
    return _adapter(_session(data), data, spec, classes)


def _adapter(
    session: Any, data: bytes, spec: Mapping[str, Any], classes: Sequence[Label]
) -> OnnxModel:
    if spec.get("probabilities"):
        return OnnxClassifier(session, data, spec, classes)
    if spec.get("scores"):
        return OnnxScorer(session, data, spec, classes)
    return OnnxModel(session, data, spec, classes)


# ---------------------------------------------------------------- reading a graph


def _describe(args: Any) -> dict[str, Any]:
    shape = [d if isinstance(d, int) else None for d in (args.shape or [])]
    return {"name": str(args.name), "type": str(args.type), "shape": shape}


def _check_inputs(inputs: list[dict[str, Any]], path: Path) -> None:
    if not inputs:
        raise InvalidModelError(f"{path}: the ONNX graph has no inputs")
    for spec in inputs:
        if spec["type"] not in INPUT_TYPES:
            raise InvalidModelError(
                f"{path}: input '{spec['name']}' is a {spec['type']}; this mlserve feeds "
                f"{', '.join(INPUT_TYPES)}"
            )
    strings = [s["name"] for s in inputs if s["type"] == "tensor(string)"]
    if strings and len(inputs) > 1:
        raise InvalidModelError(
            f"{path}: inputs {', '.join(s['name'] for s in inputs)} mix strings and other "
            "columns; this mlserve serves graphs taking one numeric tensor [n, features], one "
            "numeric input per column, or one string tensor (text)"
        )
    if len(inputs) > 1:
        wide = [s["name"] for s in inputs if len(s["shape"]) == 2 and s["shape"][1] != 1]
        if wide:
            raise InvalidModelError(
                f"{path}: inputs {', '.join(wide)} take several columns each; with several "
                "inputs, each must be one column ([n, 1])"
            )
    elif not strings and _n_features(inputs) < 1:
        raise InvalidModelError(
            f"{path}: input '{inputs[0]['name']}' has shape {inputs[0]['shape']}, which does "
            "not fix the number of features; export it with a fixed one (e.g. skl2onnx "
            "FloatTensorType([None, n_features]))"
        )


def _probe(inputs: list[dict[str, Any]]) -> Any:
    """Rows to learn what a graph answers: a few seeded random ones (and zeros)."""
    if inputs[0]["type"] == "tensor(string)":
        return ["mlserve probe", "another short text", "x"]
    n = _n_features(inputs)
    rng = np.random.default_rng(0)
    return np.vstack([np.zeros((1, n)), rng.normal(size=(4, n))])


def _is_probabilities(matrix: Any) -> bool:
    m = np.asarray(matrix, dtype=float)
    if m.ndim != 2 or m.shape[1] < 2 or not np.isfinite(m).all():
        return False
    in_range = bool((m >= -1e-6).all() and (m <= 1 + 1e-6).all())
    return in_range and bool(np.allclose(m.sum(axis=1), 1.0, atol=1e-3))


def _roles(
    session: Any, data: bytes, spec: dict[str, Any], path: Path
) -> tuple[TaskKind | None, list[Label]]:
    """Which output is the label, probabilities, scores or value (written into `spec`), the
    task the graph performs and its classes."""
    outputs: list[dict[str, Any]] = spec["outputs"]
    text = spec["inputs"][0]["type"] == "tensor(string)"
    label = next((o for o in outputs if o["type"] in LABEL_TYPES and len(o["shape"]) <= 2), None)
    if label is None:
        value = next((o for o in outputs if o["type"] in FLOAT_TYPES), None)
        if value is None:
            raise InvalidModelError(
                f"{path}: the ONNX graph has no label output and no float output "
                f"(outputs: {', '.join(o['name'] + ' ' + o['type'] for o in outputs)})"
            )
        if text:
            raise InvalidModelError(
                f"{path}: text models are served as classifiers; this graph answers numbers"
            )
        spec["value"] = value["name"]
        shape = value["shape"]
        spec["n_outputs"] = shape[1] if len(shape) == 2 and isinstance(shape[1], int) else 1
        return "tabular-regression", []
    spec["label"] = label["name"]
    second = next(
        (
            o
            for o in outputs
            if o is not label and (o["type"].startswith("seq(map(") or o["type"] in FLOAT_TYPES)
        ),
        None,
    )
    if second is None:
        return None, []  # labels only (e.g. a clusterer): --task says what they are
    plain = OnnxModel(session, data, spec)
    probe = _probe(spec["inputs"])
    predicted, raw = plain._run([label["name"], second["name"]], probe)
    labels = [introspect.to_label(v) for v in plain._labels(predicted)]
    if isinstance(raw, list):  # ZipMap: its keys are the classes, in column order
        classes: list[Label] | None = [introspect.to_label(k) for k in (raw[0] if raw else {})]
        matrix = np.asarray([list(row.values()) for row in raw], dtype=float)
    else:
        try:
            classes = graph_class_labels(data, label["name"])
        except (ValueError, IndexError):  # onnxruntime took the file: only our reading failed
            classes = None
        matrix = np.asarray(raw, dtype=float)
    if classes is not None:
        columns = matrix.shape[1] if matrix.ndim == 2 else 1
        known = {str(c) for c in classes}
        if (columns != len(classes) and not (columns == 1 and len(classes) == 2)) or any(
            str(v) not in known for v in labels
        ):
            classes = None
    probabilities = _is_probabilities(matrix)
    if classes is None:
        if probabilities:
            raise InvalidModelError(
                f"{path}: cannot read the class labels of this classifier graph (its "
                f"'{second['name']}' output has one column per class); export it with "
                "skl2onnx's default ZipMap output, which records them"
            )
        return None, []  # a clusterer's label and distances, say: --task says what they are
    spec["probabilities" if probabilities else "scores"] = second["name"]
    return ("text-classification" if text else "tabular-classification"), classes


def _read(data: bytes, path: Path) -> Candidate:
    try:
        session = _session(data)
    except InvalidModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types; report them
        first = (str(exc).strip().splitlines() or [""])[0]
        if "StringNormalizer" in first and "locale" in first:
            raise InvalidModelError(f"{path}: {LOCALE_HINT}") from None
        raise InvalidModelError(
            f"{path} is not a loadable ONNX model: {type(exc).__name__}: {first[:300]}"
        ) from None
    inputs = [_describe(i) for i in session.get_inputs()]
    _check_inputs(inputs, path)
    spec: dict[str, Any] = {
        "inputs": inputs,
        "outputs": [_describe(o) for o in session.get_outputs()],
        "producer": str(session.get_modelmeta().producer_name or ""),
    }
    task, classes = _roles(session, data, spec, path)
    estimator = _adapter(session, data, spec, classes)
    names = [i["name"] for i in inputs] if len(inputs) > 1 else None
    return Candidate(
        data=data,
        estimator=estimator,
        artifact=ARTIFACT,
        task=task,
        feature_names=names,
        details=spec,
    )


class OnnxFormat:
    name = "onnx"

    def read(self, path: Path, *, trust: Sequence[str] = ()) -> Candidate:
        data = read_file(path, "an ONNX model file")
        onnxruntime()
        return _read(data, path)

    def load(self, data: bytes, *, origin: str, meta: ModelMetadata) -> Any:
        return _rebuild(data, self.details_of(meta), list(meta.classes or []))

    def details_of(self, meta: ModelMetadata) -> Mapping[str, Any]:
        details = dict(meta.format_details)
        if not details.get("inputs") or not (details.get("label") or details.get("value")):
            raise InvalidModelError(
                f"model {meta.name}:{meta.version} has no ONNX input and output names in its "
                "metadata (format_details); register the .onnx file again"
            )
        return details
