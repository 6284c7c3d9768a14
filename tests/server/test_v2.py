"""Open Inference Protocol (V2) REST endpoints, driven with JSON through the app's lifespan."""

from __future__ import annotations

import gzip
import json
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from support.data import IRIS_FEATURES

from mlserve import __version__
from mlserve.schemas import ModelMetadata

TEXTS = [
    "The staff were wonderful and the food was great",
    "Terrible service, the box arrived broken",
    "The meeting is on Tuesday",
]
FLOWERS = [[5.1, 3.5, 1.4, 0.2], [6.1, 2.8, 4.7, 1.2], [6.7, 3.0, 5.2, 2.3]]


def v2_error(response: Any, status: int) -> str:
    """Assert the protocol's error shape {"error": "<message>"} and status; returns the message."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"], str), body
    assert body["error"]
    return str(body["error"])


def text_input(texts: list[str], **overrides: Any) -> dict[str, Any]:
    tensor = {"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}
    return {**tensor, **overrides}


def iris_input(rows: list[list[float]], **overrides: Any) -> dict[str, Any]:
    tensor = {"name": "input", "shape": [len(rows), 4], "datatype": "FP64", "data": rows}
    return {**tensor, **overrides}


def infer(client: TestClient, model: str, *inputs: dict[str, Any], **body: Any) -> Any:
    return client.post(f"/v2/models/{model}/infer", json={"inputs": list(inputs), **body})


def outputs_of(response: Any) -> dict[str, dict[str, Any]]:
    assert response.status_code == 200, response.text
    return {o["name"]: o for o in response.json()["outputs"]}


def api_answers(client: TestClient, model: str, inputs: list[Any], field: str) -> list[Any]:
    answers = []
    for value in inputs:
        response = client.post("/api/predict", json={field: value, "model": model})
        assert response.status_code == 200, response.text
        answers.append(response.json())
    return answers


def assert_matches_api(
    outputs: dict[str, dict[str, Any]], answers: list[dict[str, Any]], classes: list[Any]
) -> None:
    n = len(answers)
    assert outputs["label"]["shape"] == [n]
    assert outputs["label"]["data"] == [a["prediction"] for a in answers]
    proba = outputs["probabilities"]
    assert proba["datatype"] == "FP64"
    assert proba["shape"] == [n, len(classes)]
    rows = np.asarray(proba["data"]).reshape(n, len(classes))
    for row, answer in zip(rows, answers, strict=True):
        expected = [answer["probabilities"][str(c)] for c in classes]
        assert row.tolist() == pytest.approx(expected, abs=1e-12)


def binary_body(header: dict[str, Any], *chunks: bytes) -> tuple[bytes, dict[str, str]]:
    """A request in Triton's binary tensor extension: JSON header, then raw tensor bytes."""
    head = json.dumps(header).encode()
    return head + b"".join(chunks), {"Inference-Header-Content-Length": str(len(head))}


def bytes_tensor(strings: list[str]) -> bytes:
    encoded = [s.encode() for s in strings]
    return b"".join(struct.pack("<I", len(b)) + b for b in encoded)


# ---------------------------------------------------------------------------- health and server
def test_live_and_ready_once_models_are_loaded(client: TestClient) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    response = client.get("/v2/health/ready")

    assert response.status_code == 200
    assert response.json() == {"ready": True}


def test_ready_is_400_with_no_model_loaded(serve: Callable[..., TestClient]) -> None:
    # The protocol says a 4xx for "not ready" (Triton answers 400); /api/ready keeps 503.
    client = serve()

    response = client.get("/v2/health/ready")

    assert response.status_code == 400
    assert response.json() == {"ready": False}
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/api/ready").status_code == 503


def test_ready_is_400_while_draining(client: TestClient) -> None:
    client.app.state.mlserve.draining = True  # type: ignore[attr-defined]

    response = client.get("/v2/health/ready")

    assert response.status_code == 400
    assert response.json() == {"ready": False}
    assert client.get("/api/ready").status_code == 503


def test_server_metadata_names_version_and_extensions(client: TestClient) -> None:
    body = client.get("/v2").json()

    assert body == {"name": "mlserve", "version": __version__, "extensions": ["model_repository"]}


# ---------------------------------------------------------------------------- model metadata
def test_text_model_metadata_has_one_bytes_input_and_label_and_probabilities(
    client: TestClient, text_estimator: Any
) -> None:
    body = client.get("/v2/models/sentiment").json()

    n_classes = len(text_estimator.classes_)
    assert body["name"] == "sentiment"
    assert body["versions"] == ["1"]
    assert body["platform"] == "sklearn"
    assert body["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert body["outputs"] == [
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP64", "shape": [-1, n_classes]},
    ]
    assert body["parameters"]["classes"] == list(text_estimator.classes_)
    assert body["parameters"]["task"] == "text-classification"


def test_tabular_model_metadata_has_fp64_rows_of_its_features(client: TestClient) -> None:
    body = client.get("/v2/models/iris").json()

    assert body["inputs"] == [{"name": "input", "datatype": "FP64", "shape": [-1, 4]}]
    assert [o["name"] for o in body["outputs"]] == ["label", "probabilities"]
    assert body["outputs"][1]["shape"] == [-1, 3]
    assert body["parameters"]["feature_names"] == IRIS_FEATURES
    assert body["parameters"]["classes"] == ["setosa", "versicolor", "virginica"]


def test_regression_metadata_has_an_fp64_prediction_and_no_probabilities(
    client: TestClient,
) -> None:
    body = client.get("/v2/models/petal").json()

    assert body["inputs"] == [{"name": "input", "datatype": "FP64", "shape": [-1, 3]}]
    assert body["outputs"] == [{"name": "prediction", "datatype": "FP64", "shape": [-1]}]
    assert "classes" not in body["parameters"]


def test_classifier_without_predict_proba_has_a_label_and_decision_scores(
    client: TestClient,
) -> None:
    body = client.get("/v2/models/svc").json()

    assert body["outputs"] == [
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
        {"name": "scores", "datatype": "FP64", "shape": [-1, 3]},  # one per class
    ]


def test_version_metadata_by_number_and_by_alias(
    client: TestClient, register: Any, iris_estimator: Any
) -> None:
    register(iris_estimator, "iris", aliases=["staging"], feature_names=IRIS_FEATURES)

    by_number = client.get("/v2/models/iris/versions/2").json()
    by_alias = client.get("/v2/models/iris/versions/staging").json()

    assert by_number["versions"] == ["1", "2"]
    assert by_number["parameters"]["version"] == "2"
    assert by_alias["parameters"]["version"] == "2"
    assert client.get("/v2/models/iris").json()["parameters"]["version"] == "1"


def test_metadata_of_unknown_model_or_version_is_404(client: TestClient) -> None:
    assert "nope" in v2_error(client.get("/v2/models/nope"), 404)
    assert "version 9" in v2_error(client.get("/v2/models/iris/versions/9"), 404)
    assert "alias" in v2_error(client.get("/v2/models/iris/versions/nightly"), 404)


def test_integer_classes_are_int64_labels(
    register: Any, iris: tuple[Any, Any], serve: Callable[..., TestClient]
) -> None:
    from sklearn.linear_model import LogisticRegression

    x, y = iris
    numeric = LogisticRegression(max_iter=1000).fit(x, np.unique(y, return_inverse=True)[1])
    register(numeric, "digits", feature_names=IRIS_FEATURES)
    client = serve()

    meta = client.get("/v2/models/digits").json()
    outputs = outputs_of(infer(client, "digits", iris_input(FLOWERS)))

    assert meta["outputs"][0] == {"name": "label", "datatype": "INT64", "shape": [-1]}
    assert outputs["label"]["datatype"] == "INT64"
    assert outputs["label"]["data"] == numeric.predict(np.array(FLOWERS)).tolist()


# ---------------------------------------------------------------------------- model readiness
def test_model_ready_for_loaded_model_and_version(client: TestClient) -> None:
    response = client.get("/v2/models/iris/ready")

    assert response.status_code == 200
    assert response.json() == {"name": "iris", "ready": True}
    assert client.get("/v2/models/iris/versions/1/ready").json()["ready"] is True
    assert client.get("/v2/models/iris/versions/production/ready").json()["ready"] is True


def test_model_ready_is_400_for_a_version_that_is_not_loaded(
    client: TestClient, register: Any, iris_estimator: Any
) -> None:
    register(iris_estimator, "iris", aliases=[], feature_names=IRIS_FEATURES)

    response = client.get("/v2/models/iris/versions/2/ready")

    assert response.status_code == 400
    assert response.json() == {"name": "iris", "ready": False}


@pytest.mark.parametrize("version", ["0", "00", "1.5", "Production", "x" * 65])
def test_model_ready_of_an_invalid_version_is_400_in_the_error_shape(
    client: TestClient, version: str
) -> None:
    message = v2_error(client.get(f"/v2/models/iris/versions/{version}/ready"), 400)

    assert "version" in message


def test_model_ready_of_unknown_model_or_version_is_404(client: TestClient) -> None:
    v2_error(client.get("/v2/models/nope/ready"), 404)
    v2_error(client.get("/v2/models/iris/versions/9/ready"), 404)


# ---------------------------------------------------------------------------- inference
def test_text_infer_matches_api_predict(client: TestClient, text_estimator: Any) -> None:
    response = infer(client, "sentiment", text_input(TEXTS))

    body = response.json()
    assert body["model_name"] == "sentiment"
    assert body["model_version"] == "1"
    outputs = outputs_of(response)
    assert outputs["label"]["datatype"] == "BYTES"
    assert all(isinstance(v, str) for v in outputs["label"]["data"])
    answers = api_answers(client, "sentiment", TEXTS, "text")
    assert_matches_api(outputs, answers, list(text_estimator.classes_))
    assert outputs["label"]["data"] == text_estimator.predict(TEXTS).tolist()


def test_tabular_infer_matches_api_predict(client: TestClient, iris_estimator: Any) -> None:
    outputs = outputs_of(infer(client, "iris", iris_input(FLOWERS)))

    answers = api_answers(client, "iris", FLOWERS, "features")
    assert_matches_api(outputs, answers, list(iris_estimator.classes_))
    expected = iris_estimator.predict_proba(np.array(FLOWERS)).ravel().tolist()
    assert outputs["probabilities"]["data"] == pytest.approx(expected, abs=1e-12)


def test_nested_and_flat_data_give_the_same_answer(client: TestClient) -> None:
    flat = [v for row in FLOWERS for v in row]

    nested = outputs_of(infer(client, "iris", iris_input(FLOWERS)))
    flattened = outputs_of(infer(client, "iris", iris_input(flat, shape=[3, 4])))  # type: ignore[arg-type]

    assert nested == flattened


def test_text_accepts_shape_n_by_1_and_nested_data(client: TestClient) -> None:
    flat = outputs_of(infer(client, "sentiment", text_input(TEXTS)))
    column = outputs_of(
        infer(client, "sentiment", text_input([[t] for t in TEXTS], shape=[3, 1]))  # type: ignore[misc]
    )

    assert column == flat


def test_regression_infer_gives_fp64_predictions(
    client: TestClient, regression_estimator: Any
) -> None:
    rows = [f[:3] for f in FLOWERS]

    outputs = outputs_of(
        infer(client, "petal", {"name": "input", "shape": [3, 3], "datatype": "FP64", "data": rows})
    )

    assert set(outputs) == {"prediction"}
    assert outputs["prediction"]["datatype"] == "FP64"
    expected = regression_estimator.predict(np.array(rows)).tolist()
    assert outputs["prediction"]["data"] == pytest.approx(expected, abs=1e-12)


def test_other_numeric_datatypes_are_accepted_for_tabular_models(client: TestClient) -> None:
    as_fp64 = outputs_of(infer(client, "iris", iris_input([[5, 3, 1, 0]])))
    as_int = outputs_of(infer(client, "iris", iris_input([[5, 3, 1, 0]], datatype="INT64")))

    assert as_int == as_fp64


def test_outputs_selects_what_comes_back_in_the_order_asked(client: TestClient) -> None:
    only = infer(client, "iris", iris_input(FLOWERS), outputs=[{"name": "probabilities"}])
    both = infer(
        client, "iris", iris_input(FLOWERS), outputs=[{"name": "probabilities"}, {"name": "label"}]
    )

    assert [o["name"] for o in only.json()["outputs"]] == ["probabilities"]
    assert [o["name"] for o in both.json()["outputs"]] == ["probabilities", "label"]


def test_unknown_output_is_400_naming_the_outputs(client: TestClient) -> None:
    response = infer(client, "svc", iris_input(FLOWERS), outputs=[{"name": "probabilities"}])

    message = v2_error(response, 400)
    assert "probabilities" in message
    assert "'label'" in message


def test_mlserver_output_names_are_answered_under_the_name_asked(client: TestClient) -> None:
    # A client written for MLServer's scikit-learn runtime asks for predict / predict_proba.
    mlserver = infer(
        client,
        "iris",
        iris_input(FLOWERS),
        outputs=[{"name": "predict"}, {"name": "predict_proba"}],
    )
    ours = outputs_of(infer(client, "iris", iris_input(FLOWERS)))

    outputs = outputs_of(mlserver)
    assert list(outputs) == ["predict", "predict_proba"]
    assert {k: v for k, v in outputs["predict"].items() if k != "name"} == {
        k: v for k, v in ours["label"].items() if k != "name"
    }
    assert outputs["predict"]["data"] == ["setosa", "versicolor", "virginica"]
    assert outputs["predict_proba"]["shape"] == [3, 3]
    assert outputs["predict_proba"]["data"] == ours["probabilities"]["data"]


def test_mlserver_predict_of_a_regressor_is_its_prediction(client: TestClient) -> None:
    rows = [row[:3] for row in FLOWERS]
    tensor = {"name": "input", "shape": [3, 3], "datatype": "FP64", "data": rows}

    outputs = outputs_of(infer(client, "petal", tensor, outputs=[{"name": "predict"}]))
    ours = outputs_of(infer(client, "petal", tensor))

    assert list(outputs) == ["predict"]
    assert outputs["predict"]["data"] == ours["prediction"]["data"]
    assert outputs["predict"]["datatype"] == "FP64"


def test_both_names_of_an_output_may_be_asked_together(client: TestClient) -> None:
    outputs = outputs_of(
        infer(client, "iris", iris_input(FLOWERS), outputs=[{"name": "label"}, {"name": "predict"}])
    )

    assert list(outputs) == ["label", "predict"]
    assert outputs["label"]["data"] == outputs["predict"]["data"]


def test_predict_proba_of_a_model_without_probabilities_is_400(client: TestClient) -> None:
    response = infer(client, "svc", iris_input(FLOWERS), outputs=[{"name": "predict_proba"}])

    message = v2_error(response, 400)
    assert "unknown output 'predict_proba'" in message
    assert "'label'" in message and "'predict'" in message


def test_id_is_echoed(client: TestClient) -> None:
    response = infer(client, "iris", iris_input(FLOWERS), id="my-request-7")

    assert response.json()["id"] == "my-request-7"


def test_id_is_generated_when_absent(client: TestClient) -> None:
    first = infer(client, "iris", iris_input(FLOWERS))
    second = infer(client, "iris", iris_input(FLOWERS))

    assert first.json()["id"] == first.headers["x-request-id"]
    assert first.json()["id"] != second.json()["id"]


def test_binary_data_parameters_are_accepted_and_answered_with_json(client: TestClient) -> None:
    response = infer(
        client,
        "iris",
        iris_input(FLOWERS, parameters={"binary_data_size": None, "content_type": "np"}),
        parameters={"binary_data_output": True, "priority": 1, "custom": "x"},
        outputs=[
            {"name": "label", "parameters": {"binary_data": True}},
            {"name": "probabilities", "parameters": {"binary_data": True, "classification": 0}},
        ],
    )

    assert response.headers["content-type"] == "application/json"
    assert "inference-header-content-length" not in response.headers
    outputs = outputs_of(response)
    assert outputs["label"]["data"] == ["setosa", "versicolor", "virginica"]
    assert len(outputs["probabilities"]["data"]) == 9


def test_infer_on_a_version_by_number_or_alias(
    all_models: dict[str, ModelMetadata], register: Any, iris_estimator: Any, serve: Any
) -> None:
    register(iris_estimator, "iris", aliases=["staging"], feature_names=IRIS_FEATURES)
    client = serve()
    path = "/v2/models/iris/versions/{}/infer"
    body = {"inputs": [iris_input(FLOWERS)]}

    v1 = client.post(path.format(1), json=body).json()
    staging = client.post(path.format("staging"), json=body).json()

    assert v1["model_version"] == "1"
    assert staging["model_version"] == "2"
    assert v1["outputs"] == staging["outputs"]


def test_infer_counts_predictions_in_the_metrics(client: TestClient) -> None:
    outputs = outputs_of(infer(client, "iris", iris_input(FLOWERS)))

    metrics = client.get("/metrics").text
    for label in set(outputs["label"]["data"]):
        line = f'mlserve_predictions_total{{model="iris",predicted_class="{label}",version="1"}}'
        count = outputs["label"]["data"].count(label)
        assert f"{line} {float(count)}" in metrics, metrics


def test_any_content_type_is_read_as_json(client: TestClient) -> None:
    body = json.dumps({"inputs": [iris_input(FLOWERS)]})

    response = client.post(
        "/v2/models/iris/infer",
        content=body,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )

    assert response.status_code == 200, response.text


def test_gzip_encoded_request_body_is_read(client: TestClient) -> None:
    body = gzip.compress(json.dumps({"inputs": [iris_input(FLOWERS)]}).encode())

    response = client.post(
        "/v2/models/iris/infer",
        content=body,
        headers={"content-type": "application/json", "content-encoding": "gzip"},
    )

    assert outputs_of(response)["label"]["data"] == ["setosa", "versicolor", "virginica"]


def test_gzip_body_inflating_past_the_limit_is_413(
    text_meta: ModelMetadata, serve: Callable[..., TestClient]
) -> None:
    client = serve(server={"max_body_bytes": 4096})
    bomb = gzip.compress(json.dumps({"inputs": [text_input(["x" * 100_000])]}).encode())
    assert len(bomb) < 4096

    response = client.post(
        "/v2/models/sentiment/infer", content=bomb, headers={"content-encoding": "gzip"}
    )

    assert "decompressed" in v2_error(response, 413)


# ---------------------------------------------------------------------------- binary extension
def test_binary_bytes_input_is_read(client: TestClient) -> None:
    raw = bytes_tensor(TEXTS)
    tensor: dict[str, Any] = {"name": "text", "shape": [3], "datatype": "BYTES"}
    tensor["parameters"] = {"binary_data_size": len(raw)}
    content, headers = binary_body({"inputs": [tensor]}, raw)

    response = client.post("/v2/models/sentiment/infer", content=content, headers=headers)

    assert outputs_of(response) == outputs_of(infer(client, "sentiment", text_input(TEXTS)))


def test_binary_fp64_input_is_read(client: TestClient) -> None:
    raw = np.array(FLOWERS, dtype="<f8").tobytes()
    tensor: dict[str, Any] = {"name": "input", "shape": [3, 4], "datatype": "FP64"}
    tensor["parameters"] = {"binary_data_size": len(raw)}
    content, headers = binary_body({"inputs": [tensor], "outputs": [{"name": "label"}]}, raw)

    response = client.post("/v2/models/iris/infer", content=content, headers=headers)

    assert outputs_of(response)["label"]["data"] == ["setosa", "versicolor", "virginica"]


@pytest.mark.parametrize(
    ("declared", "extra", "fragment"),
    [
        (10, b"", "remain"),  # says 10 bytes, none follow
        (0, b"\x00" * 8, "no input claims"),  # 8 bytes nobody asked for
        (3, b"\x00" * 3, "whole number"),  # not a multiple of 8 for FP64
    ],
)
def test_inconsistent_binary_data_is_400(
    client: TestClient, declared: int, extra: bytes, fragment: str
) -> None:
    tensor: dict[str, Any] = {"name": "input", "shape": [0, 4], "datatype": "FP64"}
    tensor["parameters"] = {"binary_data_size": declared}
    content, headers = binary_body({"inputs": [tensor]}, extra)

    response = client.post("/v2/models/iris/infer", content=content, headers=headers)

    assert fragment in v2_error(response, 400)


def test_header_length_past_the_body_is_400(client: TestClient) -> None:
    response = client.post(
        "/v2/models/iris/infer",
        content=b'{"inputs": []}',
        headers={"Inference-Header-Content-Length": "500"},
    )

    assert "Inference-Header-Content-Length" in v2_error(response, 400)


def test_binary_bytes_that_are_not_utf8_are_400(client: TestClient) -> None:
    raw = struct.pack("<I", 2) + b"\xff\xfe"
    tensor: dict[str, Any] = {"name": "text", "shape": [1], "datatype": "BYTES"}
    tensor["parameters"] = {"binary_data_size": len(raw)}
    content, headers = binary_body({"inputs": [tensor]}, raw)

    response = client.post("/v2/models/sentiment/infer", content=content, headers=headers)

    assert "UTF-8" in v2_error(response, 400)


# ---------------------------------------------------------------------------- errors
def test_unknown_model_is_404(client: TestClient) -> None:
    message = v2_error(infer(client, "nope", iris_input(FLOWERS)), 404)

    assert "nope" in message


def test_unknown_version_is_404(client: TestClient) -> None:
    response = client.post(
        "/v2/models/iris/versions/9/infer", json={"inputs": [iris_input(FLOWERS)]}
    )

    assert "version 9" in v2_error(response, 404)


@pytest.mark.parametrize(
    ("model", "tensor", "fragments"),
    [
        ("sentiment", text_input(["a"], datatype="FP64"), ["FP64", "BYTES"]),
        ("iris", iris_input(FLOWERS, datatype="BYTES"), ["BYTES", "FP64"]),
        ("iris", iris_input(FLOWERS, datatype="FLOAT"), ["unknown datatype 'FLOAT'"]),
    ],
)
def test_bad_datatype_is_400(
    client: TestClient, model: str, tensor: dict[str, Any], fragments: list[str]
) -> None:
    message = v2_error(infer(client, model, tensor), 400)

    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    ("tensor", "fragment"),
    [
        (iris_input(FLOWERS, shape=[2, 4]), "shape [2, 4] (8 elements) but 12 values"),
        (iris_input(FLOWERS, shape=[4, 4]), "(16 elements) but 12 values"),
        (iris_input([*FLOWERS[0], 1.0], shape=[1, 4]), "but 5 values"),  # type: ignore[list-item]
    ],
)
def test_shape_and_data_mismatch_is_400(
    client: TestClient, tensor: dict[str, Any], fragment: str
) -> None:
    assert fragment in v2_error(infer(client, "iris", tensor), 400)


def test_negative_shape_is_400(client: TestClient) -> None:
    message = v2_error(infer(client, "iris", iris_input(FLOWERS, shape=[-3, -4])), 400)

    assert "shape" in message


@pytest.mark.parametrize(
    ("tensor", "fragment"),
    [
        (iris_input([r[:3] for r in FLOWERS], shape=[3, 3]), "expects [n, 4]"),
        (iris_input(FLOWERS[0], shape=[4]), "expects [n, 4]"),  # type: ignore[arg-type]
    ],
)
def test_wrong_feature_count_is_400_naming_the_features(
    client: TestClient, tensor: dict[str, Any], fragment: str
) -> None:
    message = v2_error(infer(client, "iris", tensor), 400)

    assert fragment in message
    assert ", ".join(IRIS_FEATURES) in message


def test_missing_input_is_400(client: TestClient) -> None:
    renamed = v2_error(infer(client, "sentiment", text_input(TEXTS, name="sentence")), 400)
    none = v2_error(infer(client, "sentiment"), 400)

    assert "missing input 'text'" in renamed
    assert "'sentence'" in renamed
    assert "missing input 'text'" in none


def test_extra_input_is_400(client: TestClient) -> None:
    extra = text_input(TEXTS, name="more")

    message = v2_error(infer(client, "sentiment", text_input(TEXTS), extra), 400)

    assert "unexpected input 'more'" in message


def test_text_with_several_strings_per_row_is_400(client: TestClient) -> None:
    tensor = text_input(["a", "b", "c", "d"], shape=[2, 2])

    assert "one string per row" in v2_error(infer(client, "sentiment", tensor), 400)


def test_wrong_element_types_are_400_naming_the_element(client: TestClient) -> None:
    text = v2_error(infer(client, "sentiment", text_input(["fine", 42])), 400)  # type: ignore[list-item]
    number = v2_error(infer(client, "iris", iris_input([[5.1, "wide", 1.4, 0.2]])), 400)  # type: ignore[list-item]

    assert "'text[1]' must be a string" in text
    assert "input[0].sepal_width" in number


def test_more_rows_than_max_batch_items_is_400(
    iris_meta: ModelMetadata, serve: Callable[..., TestClient]
) -> None:
    client = serve(server={"max_batch_items": 2})

    assert "limit is 2" in v2_error(infer(client, "iris", iris_input(FLOWERS)), 400)


@pytest.mark.parametrize(
    "content",
    [
        b'{"inputs": [',  # not JSON
        b'{"id": "1"}',  # no inputs
        b'{"inputs": [{"name": "input", "datatype": "FP64", "data": []}]}',  # no shape
        b'{"inputs": {"name": "input"}}',  # inputs not a list
        b"",
    ],
)
def test_malformed_body_is_400(client: TestClient, content: bytes) -> None:
    response = client.post(
        "/v2/models/iris/infer", content=content, headers={"content-type": "application/json"}
    )

    v2_error(response, 400)


def test_model_failure_is_500_in_the_v2_shape(
    iris_meta: ModelMetadata, register: Any, broken_estimator: Any, serve: Any
) -> None:
    register(broken_estimator, "broken", feature_names=IRIS_FEATURES)
    client = serve(raise_server_exceptions=False)

    message = v2_error(infer(client, "broken", iris_input(FLOWERS)), 500)

    assert "secret" not in message


def test_unhandled_error_is_a_plain_500_in_the_v2_shape(
    iris_meta: ModelMetadata, serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlserve.serving.manager import ModelManager

    async def explode(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("/srv/internal detail")

    monkeypatch.setattr(ModelManager, "get", explode)
    client = serve(raise_server_exceptions=False)

    message = v2_error(infer(client, "iris", iris_input(FLOWERS)), 500)

    assert message == "internal server error"


def test_body_over_max_body_bytes_is_413_in_the_v2_shape(
    text_meta: ModelMetadata, serve: Any
) -> None:
    client = serve(server={"max_body_bytes": 2048, "max_text_length": 100_000})

    declared = infer(client, "sentiment", text_input(["x" * 4000]))
    chunked = client.post(
        "/v2/models/sentiment/infer", content=iter([b'{"inputs": [', b"x" * 4000, b"]}"])
    )

    v2_error(declared, 413)
    v2_error(chunked, 413)


def test_unknown_v2_route_and_wrong_method_use_the_v2_shape(client: TestClient) -> None:
    v2_error(client.get("/v2/models/iris/config"), 404)
    v2_error(client.get("/v2/models/iris/infer"), 405)


def test_api_errors_keep_their_own_shape(client: TestClient) -> None:
    body = client.post("/api/predict", json={"text": "x", "model": "nope"}).json()

    assert set(body["error"]) == {"code", "message", "request_id"}


# ---------------------------------------------------------------------------- model repository
def test_index_lists_every_model_ready(client: TestClient) -> None:
    index = client.post("/v2/repository/index").json()

    assert index == [
        {"name": name, "version": "1", "state": "READY", "reason": ""}
        for name in ["iris", "petal", "sentiment", "svc"]
    ]


EXPLICIT = {"model_control": "explicit"}


@pytest.fixture
def control(all_models: dict[str, ModelMetadata], serve: Callable[..., TestClient]) -> TestClient:
    """A server over all four models with V2 model control on (server.model_control)."""
    return serve(raise_server_exceptions=False, server=EXPLICIT)


@pytest.mark.parametrize("action", ["load", "unload"])
def test_load_and_unload_are_403_by_default_naming_the_setting(
    client: TestClient, action: str
) -> None:
    response = client.post(f"/v2/repository/models/iris/{action}", json={})

    message = v2_error(response, 403)
    assert 'server.model_control = "explicit"' in message
    assert client.get("/v2/models/iris/ready").status_code == 200  # still served
    index = {m["name"]: m["state"] for m in client.post("/v2/repository/index").json()}
    assert index["iris"] == "READY"  # the index stays readable


def test_the_index_says_how_to_serve_a_model_that_is_not_served(
    text_meta: ModelMetadata, iris_meta: ModelMetadata, serve: Callable[..., TestClient]
) -> None:
    off = serve(server={"models": ["sentiment"]})
    on = serve(server={"models": ["sentiment"], **EXPLICIT})

    reason_off = {m["name"]: m for m in off.post("/v2/repository/index").json()}["iris"]["reason"]
    reason_on = {m["name"]: m for m in on.post("/v2/repository/index").json()}["iris"]["reason"]

    assert reason_off == "not served; see server.models"
    assert reason_on == "not served; see POST /v2/repository/models/iris/load"


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "text/json"],
)
@pytest.mark.parametrize("action", ["load", "unload"])
def test_load_and_unload_refuse_bodies_that_are_not_json(
    control: TestClient, action: str, content_type: str
) -> None:
    # What a web page can send anywhere without a CORS preflight: a form post, text/plain.
    for body in (b"{}", b""):
        response = control.post(
            f"/v2/repository/models/iris/{action}",
            content=body,
            headers={"content-type": content_type},
        )

        assert "Content-Type" in v2_error(response, 400)
    assert control.get("/v2/models/iris/ready").status_code == 200  # nothing changed


@pytest.mark.parametrize("headers", [{}, {"content-type": "application/json; charset=utf-8"}])
def test_load_and_unload_take_json_or_a_body_without_a_content_type(
    control: TestClient, headers: dict[str, str]
) -> None:
    # tritonclient sends its JSON without a Content-Type.
    unloaded = control.post("/v2/repository/models/iris/unload", content=b"{}", headers=headers)
    loaded = control.post("/v2/repository/models/iris/load", content=b"", headers=headers)

    assert unloaded.status_code == 200, unloaded.text
    assert loaded.status_code == 200, loaded.text


def test_unload_makes_the_model_unavailable_and_load_brings_it_back(
    control: TestClient,
) -> None:
    client = control
    unloaded = client.post("/v2/repository/models/iris/unload")

    assert unloaded.status_code == 200, unloaded.text
    assert unloaded.json() == {"name": "iris", "version": None, "state": "UNAVAILABLE"}
    index = {m["name"]: m for m in client.post("/v2/repository/index").json()}
    assert index["iris"]["state"] == "UNAVAILABLE"
    assert "unloaded" in index["iris"]["reason"]
    not_ready = client.get("/v2/models/iris/ready")
    assert not_ready.status_code == 400
    assert not_ready.json() == {"name": "iris", "ready": False}
    assert "not loaded" in v2_error(infer(client, "iris", iris_input(FLOWERS)), 503)
    assert client.get("/v2/health/ready").status_code == 200  # the others still serve
    ready_only = client.post("/v2/repository/index", json={"ready": True}).json()
    assert "iris" not in [m["name"] for m in ready_only]

    loaded = client.post("/v2/repository/models/iris/load")

    assert loaded.json() == {"name": "iris", "version": "1", "state": "READY"}
    assert client.get("/v2/models/iris/ready").status_code == 200
    assert outputs_of(infer(client, "iris", iris_input(FLOWERS)))["label"]["data"] == [
        "setosa",
        "versicolor",
        "virginica",
    ]


def test_unloading_every_model_makes_the_server_not_ready(
    text_meta: ModelMetadata, serve: Callable[..., TestClient]
) -> None:
    client = serve(server=EXPLICIT)

    client.post("/v2/repository/models/sentiment/unload", json={"parameters": {}})

    assert client.get("/v2/health/ready").status_code == 400
    assert client.get("/api/ready").status_code == 503


def test_load_serves_a_registry_model_that_was_not_served(
    text_meta: ModelMetadata, iris_meta: ModelMetadata, serve: Callable[..., TestClient]
) -> None:
    client = serve(server={"models": ["sentiment"], **EXPLICIT})
    index = {m["name"]: m for m in client.post("/v2/repository/index").json()}
    assert index["iris"]["state"] == "UNAVAILABLE"
    assert "not served" in index["iris"]["reason"]
    v2_error(infer(client, "iris", iris_input(FLOWERS)), 404)

    loaded = client.post("/v2/repository/models/iris/load", json={})

    assert loaded.status_code == 200, loaded.text
    assert outputs_of(infer(client, "iris", iris_input(FLOWERS)))["label"]["data"] == [
        "setosa",
        "versicolor",
        "virginica",
    ]
    index = {m["name"]: m for m in client.post("/v2/repository/index").json()}
    assert index["iris"]["state"] == "READY"


def test_load_picks_up_a_moved_alias(
    control: TestClient, register: Any, iris_estimator: Any
) -> None:
    register(iris_estimator, "iris", feature_names=IRIS_FEATURES)  # takes production

    loaded = control.post("/v2/repository/models/iris/load")

    assert loaded.json()["version"] == "2"
    assert infer(control, "iris", iris_input(FLOWERS)).json()["model_version"] == "2"


def test_load_or_unload_of_an_unknown_model_is_404(control: TestClient) -> None:
    v2_error(control.post("/v2/repository/models/nope/load"), 404)
    v2_error(control.post("/v2/repository/models/nope/unload"), 404)


def test_load_with_a_config_override_is_400(control: TestClient) -> None:
    response = control.post(
        "/v2/repository/models/iris/load", json={"parameters": {"config": "{}"}}
    )

    assert "not supported" in v2_error(response, 400)


@pytest.mark.parametrize("body", [{"ready": 0}, {"ready": "true"}, {"ready": 1}])
def test_index_reads_ready_as_a_boolean_only(client: TestClient, body: dict[str, Any]) -> None:
    v2_error(client.post("/v2/repository/index", json=body), 400)


# ---------------------------------------------------------------------------- OpenAPI
def test_v2_routes_are_documented_with_summaries_and_examples(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]

    expected = {
        ("get", "/v2"),
        ("get", "/v2/health/live"),
        ("get", "/v2/health/ready"),
        ("get", "/v2/models/{name}"),
        ("get", "/v2/models/{name}/versions/{version}"),
        ("get", "/v2/models/{name}/ready"),
        ("get", "/v2/models/{name}/versions/{version}/ready"),
        ("post", "/v2/models/{name}/infer"),
        ("post", "/v2/models/{name}/versions/{version}/infer"),
        ("post", "/v2/repository/index"),
        ("post", "/v2/repository/models/{name}/load"),
        ("post", "/v2/repository/models/{name}/unload"),
    }
    for method, path in expected:
        assert paths[path][method]["summary"], (method, path)
    infer_body = paths["/v2/models/{name}/infer"]["post"]["requestBody"]
    examples = infer_body["content"]["application/json"]["examples"]
    assert {"text", "tabular"} <= set(examples)
