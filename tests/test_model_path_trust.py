"""`serve --model-path` of a .skops file holding a type skops does not trust: refused before
the server listens, naming the type and --trust, unless the type is given with --trust (or
server.trusted_types), as `register --trust` does for a registry."""

from __future__ import annotations

import operator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.data import iris
from support.net import free_port
from support.servers import MlserveProcess, one_line_serve_error, process_env, serve_until_exit

from mlserve.errors import MlserveError
from mlserve.registry import FileModels

sio = pytest.importorskip("skops.io")

ABS = "_operator.abs"  # a plain Python function: not among skops' trusted types


def _abs_model(path: Path) -> tuple[Any, Path]:
    """LogisticRegression on iris after a FunctionTransformer of operator.abs, as .skops."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    x, y = iris()
    model = make_pipeline(FunctionTransformer(operator.abs), LogisticRegression(max_iter=1000))
    model.fit(x, y)
    path.parent.mkdir(parents=True, exist_ok=True)
    sio.dump(model, path)
    return model, path


def test_file_models_read_an_untrusted_type_only_when_trusted(tmp_path: Path) -> None:
    _, path = _abs_model(tmp_path / "abs.skops")
    with pytest.raises(MlserveError, match=ABS):
        FileModels([("flowers", path)]).check()
    (meta,) = FileModels([("flowers", path)], trust=[ABS]).check()
    assert (meta.name, meta.version, meta.format) == ("flowers", 1, "skops")
    assert meta.format_details == {"trusted": [ABS]}


def test_serve_refuses_the_untrusted_file_in_one_line_naming_the_type(tmp_path: Path) -> None:
    _, path = _abs_model(tmp_path / "models" / "abs.skops")
    done = serve_until_exit(tmp_path / "home", tmp_path, "--model-path", f"flowers={path}")
    one_line_serve_error(done, ABS, "--trust")


def test_trust_without_model_path_is_a_usage_error(tmp_path: Path) -> None:
    done = serve_until_exit(tmp_path / "home", tmp_path, "--trust", ABS, "--no-sample")
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "--trust" in done.stderr and "--model-path" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_serve_with_trust_answers_the_models_own_predictions(tmp_path: Path) -> None:
    model, path = _abs_model(tmp_path / "models" / "abs.skops")
    port = free_port()
    server = MlserveProcess.start(
        ["serve", "--port", str(port), "--model-path", f"flowers={path}", "--trust", ABS],
        cwd=tmp_path,
        env=process_env(tmp_path / "home"),
        name="serve-trust",
        url=f"http://127.0.0.1:{port}",
    )
    try:
        server.wait_ready()
        rows = np.asarray(iris()[0][:5], dtype=float)
        answer = server.post("/api/predict/batch", {"records": rows.tolist(), "model": "flowers"})
        assert answer.status_code == 200, answer.text
        got = [p["prediction"] for p in answer.json()["predictions"]]
        assert got == [str(label) for label in model.predict(rows)]
    finally:
        server.stop()
