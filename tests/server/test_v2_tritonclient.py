"""The real tritonclient.http against a real `mlserve serve` process speaking V2."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from support.data import IRIS_FEATURES
from support.servers import MlserveProcess, process_env, serve

from mlserve.registry import Registry

# A guard for environments without the test extra; CI installs it, so this module runs there.
httpclient = pytest.importorskip("tritonclient.http")
InferenceServerException = pytest.importorskip("tritonclient.utils").InferenceServerException

pytestmark = pytest.mark.slow

TEXTS = [
    "The staff were wonderful and the food was great",
    "Terrible service, the box arrived broken",
    "The meeting is on Tuesday",
]
TEXT_LABELS = ["positive", "negative", "neutral"]
FLOWERS = np.array([[5.1, 3.5, 1.4, 0.2], [6.1, 2.8, 4.7, 1.2], [6.7, 3.0, 5.2, 2.3]])
TRAIN_TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, iris_estimator: Any
) -> Iterator[MlserveProcess]:
    """`mlserve serve` over a registry with the bundled sentiment sample (text), trained once per
    module by `mlserve train` as a user would, and iris (tabular); V2 model control on."""
    root = tmp_path_factory.mktemp("v2-serve")
    registry = Registry(root / "registry")
    trained = subprocess.run(
        [sys.executable, "-m", "mlserve", "train", "--sample", "sentiment"]
        + ["--name", "sentiment", "--alias", "production", "--registry", str(registry.root)],
        capture_output=True,
        text=True,
        env=process_env(root / "home"),
        cwd=root,
        timeout=TRAIN_TIMEOUT_S,
        check=False,
    )
    assert trained.returncode == 0, (trained.stdout, trained.stderr)
    assert registry.aliases("sentiment") == {"production": 1}
    assert "sentiment.csv" in registry.metadata("sentiment", 1).source  # the bundled data
    registry.register_estimator(
        iris_estimator, name="iris", aliases=["production"], feature_names=IRIS_FEATURES
    )
    proc = serve(
        registry.root,
        root / "home",
        log_level=None,
        config={"server": {"model_control": "explicit"}},
    )
    try:
        proc.wait_ready(path="/v2/health/ready")
        yield proc
    finally:
        assert proc.terminate() == 0, proc.output()


@pytest.fixture
def client(server: MlserveProcess) -> Iterator[Any]:
    triton = httpclient.InferenceServerClient(url=server.url.removeprefix("http://"))
    try:
        yield triton
    finally:
        triton.close()


def _api_answers(server: MlserveProcess, model: str, field: str, inputs: list[Any]) -> list[Any]:
    with httpx.Client(base_url=server.url, timeout=10.0) as http:
        answers = []
        for value in inputs:
            response = http.post("/api/predict", json={field: value, "model": model})
            assert response.status_code == 200, response.text
            answers.append(response.json())
    return answers


def _assert_matches_api(result: Any, answers: list[Any], classes: list[str]) -> None:
    labels = result.as_numpy("label")
    proba = result.as_numpy("probabilities")
    assert [str(v) for v in labels.tolist()] == [a["prediction"] for a in answers]
    assert proba.shape == (len(answers), len(classes))
    for row, answer in zip(proba.tolist(), answers, strict=True):
        expected = [answer["probabilities"][c] for c in classes]
        assert row == pytest.approx(expected, abs=1e-12)


def _classes(client: Any, model: str) -> list[str]:
    return list(client.get_model_metadata(model)["parameters"]["classes"])


def test_server_is_live_and_ready(client: Any) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.get_server_metadata()["name"] == "mlserve"
    assert client.is_model_ready("sentiment")
    assert client.is_model_ready("iris", model_version="1")


def test_model_metadata_describes_the_tensors(client: Any) -> None:
    text = client.get_model_metadata("sentiment")
    iris = client.get_model_metadata("iris", model_version="1")

    assert text["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert iris["inputs"] == [{"name": "input", "datatype": "FP64", "shape": [-1, 4]}]
    assert [o["name"] for o in iris["outputs"]] == ["label", "probabilities"]
    assert iris["outputs"][0]["datatype"] == "BYTES"


def test_text_infer_with_the_clients_defaults_matches_api_predict(
    client: Any, server: MlserveProcess
) -> None:
    # Defaults: the input goes as binary tensor data, and binary outputs are asked for.
    tensor = httpclient.InferInput("text", [len(TEXTS)], "BYTES")
    tensor.set_data_from_numpy(np.array(TEXTS, dtype=object))

    result = client.infer("sentiment", [tensor], request_id="t-1")

    assert result.get_response()["id"] == "t-1"
    answers = _api_answers(server, "sentiment", "text", TEXTS)
    _assert_matches_api(result, answers, _classes(client, "sentiment"))
    # The bundled sample tells these apart (each with a wide margin), so the tensors and their
    # order really went through the model.
    assert [str(v) for v in result.as_numpy("label").tolist()] == TEXT_LABELS


def test_tabular_infer_with_json_tensors_matches_api_predict(
    client: Any, server: MlserveProcess
) -> None:
    tensor = httpclient.InferInput("input", list(FLOWERS.shape), "FP64")
    tensor.set_data_from_numpy(FLOWERS, binary_data=False)
    outputs = [
        httpclient.InferRequestedOutput("label", binary_data=False),
        httpclient.InferRequestedOutput("probabilities", binary_data=False),
    ]

    result = client.infer("iris", [tensor], outputs=outputs)

    answers = _api_answers(server, "iris", "features", FLOWERS.tolist())
    _assert_matches_api(result, answers, _classes(client, "iris"))


def test_tabular_infer_with_binary_input_compression_and_a_version(
    client: Any, server: MlserveProcess
) -> None:
    tensor = httpclient.InferInput("input", list(FLOWERS.shape), "FP64")
    tensor.set_data_from_numpy(FLOWERS)  # binary
    outputs = [httpclient.InferRequestedOutput(n) for n in ("label", "probabilities")]

    result = client.infer(
        "iris",
        [tensor],
        model_version="1",
        outputs=outputs,
        request_compression_algorithm="gzip",
        response_compression_algorithm="gzip",
    )

    assert result.get_response()["model_version"] == "1"
    answers = _api_answers(server, "iris", "features", FLOWERS.tolist())
    _assert_matches_api(result, answers, _classes(client, "iris"))


def test_errors_reach_the_client_with_status_and_message(client: Any) -> None:
    tensor = httpclient.InferInput("input", [1, 3], "FP64")
    tensor.set_data_from_numpy(FLOWERS[:1, :3])

    with pytest.raises(InferenceServerException) as unknown:
        client.infer("nope", [tensor])
    with pytest.raises(InferenceServerException) as wrong_shape:
        client.infer("iris", [tensor])

    assert unknown.value.status() == "404"
    assert "nope" in unknown.value.message()
    assert wrong_shape.value.status() == "400"
    assert "expects [n, 4]" in wrong_shape.value.message()


def test_repository_unload_and_load(client: Any) -> None:
    index = {m["name"]: m["state"] for m in client.get_model_repository_index()}
    assert index == {"iris": "READY", "sentiment": "READY"}

    client.unload_model("iris")
    try:
        assert not client.is_model_ready("iris")
        states = {m["name"]: m["state"] for m in client.get_model_repository_index()}
        assert states["iris"] == "UNAVAILABLE"
    finally:
        client.load_model("iris")

    assert client.is_model_ready("iris")


def test_not_ready_is_false_without_an_exception(client: Any, server: MlserveProcess) -> None:
    # Not ready is a 4xx (400, as Triton answers), which the client reads as False.
    client.unload_model("iris")
    client.unload_model("sentiment")
    try:
        assert client.is_server_live()
        assert client.is_server_ready() is False
        assert client.is_model_ready("iris") is False
        assert client.is_model_ready("sentiment", model_version="1") is False
        assert httpx.get(server.url + "/v2/health/ready").status_code == 400
        assert httpx.get(server.url + "/api/ready").status_code == 503  # Kubernetes' convention
    finally:
        client.load_model("iris")
        client.load_model("sentiment")

    assert client.is_server_ready()
    assert client.is_model_ready("sentiment", model_version="1")


def test_mlserver_output_names_through_the_client(client: Any) -> None:
    tensor = httpclient.InferInput("input", list(FLOWERS.shape), "FP64")
    tensor.set_data_from_numpy(FLOWERS)
    outputs = [httpclient.InferRequestedOutput(n) for n in ("predict", "predict_proba")]

    result = client.infer("iris", [tensor], outputs=outputs)

    ours = client.infer("iris", [tensor])
    assert result.as_numpy("predict").tolist() == ours.as_numpy("label").tolist()
    assert result.as_numpy("predict_proba").tolist() == ours.as_numpy("probabilities").tolist()
