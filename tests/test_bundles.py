"""Portable bundles: `mlserve models export` / `import` move a version between registries with
its sha256, metrics, drift baseline and signature; changed or unsafe bundles are refused."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from support.data import IRIS_FEATURES, tamper
from support.data import iris_estimator as fit_iris_estimator
from support.data import text_estimator as fit_text_estimator
from typer.testing import Result

from mlserve import training
from mlserve.errors import InvalidModelError
from mlserve.registry import Registry
from mlserve.registry.bundle import (
    BUNDLE_FORMAT,
    build_bundle,
    export_bundle,
    import_bundle,
    read_bundle,
)
from mlserve.runtime.model import LoadedModel
from mlserve.schemas import ColumnSpec, ModelMetadata

FLOWERS = [
    {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2},
    {"sepal_length": 6.1, "sepal_width": 2.8, "petal_length": 4.7, "petal_width": 1.2},
    {"sepal_length": 7.7, "sepal_width": 3.0, "petal_length": 6.1, "petal_width": 2.3},
]
KEPT = (
    "sha256",
    "size_bytes",
    "artifact",
    "format",
    "format_details",
    "metrics",
    "training",
    "input_schema",
    "task",
    "classes",
    "estimator",
    "has_predict_proba",
    "n_outputs",
    "score_method",
    "description",
    "tags",
    "python_version",
    "sklearn_version",
    "joblib_version",
)


# ---------------------------------------------------------------------------- fixtures, helpers
@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """Registry A: iris trained by mlserve (hold-out metrics and drift profile), @production.
    Tests read it, never change it."""
    registry = Registry(tmp_path_factory.mktemp("bundles") / "a")
    training.train_and_register(
        registry, sample="iris", name="iris", aliases=["production"], tags={"team": "ml"}
    )
    return registry


@pytest.fixture(scope="module")
def iris_estimator() -> Any:
    return fit_iris_estimator()


@pytest.fixture
def target(tmp_path: Path) -> Registry:
    """Registry B, empty."""
    return Registry(tmp_path / "b")


@pytest.fixture
def bundle(source: Registry, tmp_path: Path) -> Path:
    return export_bundle(source, "iris@production", tmp_path / "iris.tar.gz")[1]


def members_of(path: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    out = []
    with tarfile.open(path, "r:gz") as tar:
        for info in tar.getmembers():
            reader = tar.extractfile(info)
            out.append((info, reader.read() if reader is not None else b""))
    return out


def write_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if info.isreg():
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path


def rewritten(
    path: Path,
    out: Path,
    change: Callable[[str, bytes], bytes],
    extra: Sequence[tuple[tarfile.TarInfo, bytes]] = (),
) -> Path:
    """A copy of the bundle at `path` with each member's bytes passed through change(name, data)."""
    members = [(info, change(info.name, data)) for info, data in members_of(path)]
    return write_tar(out, [*members, *extra])


def member(name: str, data: bytes = b"x", kind: bytes = tarfile.REGTYPE) -> Any:
    info = tarfile.TarInfo(name)
    info.type = kind
    if kind == tarfile.SYMTYPE:
        info.linkname = "/etc/passwd"
    return info, data


def answers(registry: Registry, ref: str) -> list[Any]:
    loaded = registry.load(ref)
    model = LoadedModel(loaded.estimator, loaded.metadata)
    rows = [model.prepare(features=dict(row)) for row in FLOWERS]
    return [(p.label, p.probabilities) for p in model.predict(rows)]


def assert_unchanged(registry: Registry) -> None:
    """Nothing was written: no model, no half-published version."""
    assert registry.names() == []
    staging = registry.root / ".staging"
    assert not staging.exists() or list(staging.iterdir()) == []


# ---------------------------------------------------------------------------- round trip
def test_round_trip_through_the_cli_keeps_sha256_metrics_drift_baseline_and_signature(
    cli: Callable[..., Result], source: Registry, target: Registry, tmp_path: Path
) -> None:
    out = tmp_path / "out" / "iris.tar.gz"
    exported = cli("models", "export", "iris@production", "-o", out, "--registry", source.root)
    assert exported.exit_code == 0, exported.stderr
    assert out.is_file()
    assert "exported iris:1" in exported.stdout

    imported = cli(
        "models", "import", out, "--name", "flowers", "--alias", "production", "--alias",
        "staging", "--registry", target.root, "--json",
    )  # fmt: skip
    assert imported.exit_code == 0, imported.stderr
    shown = json.loads(imported.stdout)
    original = source.resolve("iris")
    copy = target.resolve("flowers@production")
    assert shown == copy.model_dump(mode="json")
    assert (copy.name, copy.version) == ("flowers", 1)
    assert target.aliases("flowers") == {"production": 1, "staging": 1}
    for field in KEPT:
        assert getattr(copy, field) == getattr(original, field), field
    assert copy.metrics["accuracy"] > 0.8
    assert copy.training["class_distribution"]  # the drift baseline came along
    assert copy.input_schema.feature_names == IRIS_FEATURES
    assert copy.source == "bundle iris.tar.gz (from iris:1)"
    assert copy.created_at >= original.created_at
    # The same bytes on disk, and the same answers.
    assert target.artifact_path(copy).read_bytes() == source.artifact_path(original).read_bytes()
    assert answers(target, "flowers") == answers(source, "iris")


def test_import_keeps_a_signature_it_could_not_infer_again(
    registry: Registry, target: Registry, tmp_path: Path, iris_estimator: Any
) -> None:
    # nullable columns come from the training data, not from the model: re-describing the
    # estimator would lose them; the bundle keeps them, with description and tags.
    columns = [ColumnSpec(name=n, dtype="float", nullable=True) for n in IRIS_FEATURES]
    meta = registry.register_estimator(
        iris_estimator,
        name="iris",
        feature_names=IRIS_FEATURES,
        columns=columns,
        description="flowers",
        tags={"owner": "me"},
        metrics={"accuracy": 0.97},
        training={"class_distribution": {"setosa": 0.33}},
    )
    _, path = export_bundle(registry, "iris:1", tmp_path)
    assert path.name == "iris-1.tar.gz"  # a directory: the version's file name in it
    copy = import_bundle(target, path)
    assert copy.name == "iris"  # the exported name by default
    assert copy.input_schema == meta.input_schema
    assert copy.input_schema.columns == columns
    assert (copy.description, copy.tags) == ("flowers", {"owner": "me"})
    assert copy.training == {"class_distribution": {"setosa": 0.33}}


def test_a_text_model_round_trips_and_imports_again_as_the_next_version(
    registry: Registry, target: Registry, tmp_path: Path
) -> None:
    registry.register_estimator(fit_text_estimator(), name="sentiment", metrics={"f1": 0.5})
    _, path = export_bundle(registry, "sentiment", tmp_path / "s.tar.gz")
    first = import_bundle(target, path)
    second = import_bundle(target, path, aliases=["production"])
    assert (first.version, second.version) == (1, 2)
    assert second.input_schema.kind == "text"
    assert second.sha256 == first.sha256 == registry.resolve("sentiment").sha256
    assert target.aliases("sentiment") == {"production": 2}


def test_exporting_a_version_twice_gives_the_same_bytes(source: Registry) -> None:
    assert build_bundle(source, "iris:1")[1] == build_bundle(source, "iris@production")[1]


def test_the_bundle_holds_metadata_then_the_artifact(bundle: Path, source: Registry) -> None:
    members = members_of(bundle)
    assert [info.name for info, _ in members] == ["metadata.json", "model.joblib"]
    document = json.loads(members[0][1])
    assert document["bundle_format"] == BUNDLE_FORMAT
    assert document["metadata"] == source.resolve("iris").model_dump(mode="json")
    assert read_bundle(bundle).data == members[1][1]


# ---------------------------------------------------------------------------- export errors
def test_export_of_an_unknown_version_writes_nothing(
    cli: Callable[..., Result],
    assert_user_error: Callable[..., None],
    source: Registry,
    tmp_path: Path,
) -> None:
    out = tmp_path / "out" / "kept.tar.gz"
    out.parent.mkdir()
    out.write_bytes(b"the previous file")
    result = cli("models", "export", "iris:9", "-o", out, "--registry", source.root)
    assert_user_error(result, "has no version 9", code=1)
    assert out.read_bytes() == b"the previous file"
    assert list(out.parent.iterdir()) == [out]  # no temp file left


def test_export_refuses_an_artifact_changed_on_disk(
    cli: Callable[..., Result],
    assert_user_error: Callable[..., None],
    registry: Registry,
    iris_estimator: Any,
    tmp_path: Path,
) -> None:
    tamper(registry, registry.register_estimator(iris_estimator, name="iris"))
    out = tmp_path / "iris.tar.gz"
    result = cli("models", "export", "iris", "-o", out, "--registry", registry.root)
    assert_user_error(result, "refusing to export", code=1)
    assert not out.exists()


# ---------------------------------------------------------------------------- import refusals
def _flip_artifact(name: str, data: bytes) -> bytes:
    if name != "model.joblib":
        return data
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]


def _edit_sha(name: str, data: bytes) -> bytes:
    if name != "metadata.json":
        return data
    document = json.loads(data)
    document["metadata"]["sha256"] = "0" * 64
    return json.dumps(document).encode()


def _truncate_artifact(name: str, data: bytes) -> bytes:
    return data[:-10] if name == "model.joblib" else data


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (_flip_artifact, "tampered or damaged: its artifact's sha256"),
        (_edit_sha, "tampered or damaged: its artifact's sha256"),
        (_truncate_artifact, "tampered or damaged: its artifact is"),
    ],
    ids=["artifact-byte-flipped", "metadata-sha-edited", "artifact-truncated"],
)
def test_a_tampered_bundle_is_refused_with_exit_2_and_nothing_written(
    cli: Callable[..., Result],
    assert_user_error: Callable[..., None],
    bundle: Path,
    target: Registry,
    tmp_path: Path,
    change: Callable[[str, bytes], bytes],
    fragment: str,
) -> None:
    bad = rewritten(bundle, tmp_path / "bad.tar.gz", change)
    result = cli("models", "import", bad, "--alias", "production", "--registry", target.root)
    assert_user_error(result, fragment, "refusing it", code=2)
    assert_unchanged(target)


def test_a_tampered_bundle_leaves_an_existing_model_unchanged(
    bundle: Path, target: Registry, tmp_path: Path
) -> None:
    import_bundle(target, bundle, aliases=["production"])
    before = (target.versions("iris"), target.aliases("iris"))
    bad = rewritten(bundle, tmp_path / "bad.tar.gz", _flip_artifact)
    with pytest.raises(InvalidModelError, match="tampered"):
        import_bundle(target, bad, aliases=["production", "canary"])
    assert (target.versions("iris"), target.aliases("iris")) == before


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (member("../evil.py"), "'../evil.py' (only plain file names)"),
        (member("/etc/cron.d/evil"), "only plain file names"),
        (member("sub/model.joblib"), "only plain file names"),
        (member("link", b"", tarfile.SYMTYPE), "'link', which is not a regular file"),
        (member("hard", b"", tarfile.LNKTYPE), "not a regular file"),
        (member("dir", b"", tarfile.DIRTYPE), "not a regular file"),
        (member("notes.txt"), "more than two files"),
    ],
    ids=["dot-dot", "absolute", "subfolder", "symlink", "hardlink", "directory", "extra-file"],
)
def test_an_unsafe_member_is_refused_before_anything_is_read(
    cli: Callable[..., Result],
    assert_user_error: Callable[..., None],
    bundle: Path,
    target: Registry,
    tmp_path: Path,
    extra: tuple[tarfile.TarInfo, bytes],
    fragment: str,
) -> None:
    bad = rewritten(bundle, tmp_path / "bad.tar.gz", lambda _, data: data, [extra])
    result = cli("models", "import", bad, "--registry", target.root)
    assert_user_error(result, fragment, code=2)
    assert_unchanged(target)
    assert not (tmp_path / "evil.py").exists()


def test_a_traversal_member_first_is_refused(
    bundle: Path, target: Registry, tmp_path: Path
) -> None:
    data = {info.name: content for info, content in members_of(bundle)}
    bad = write_tar(
        tmp_path / "bad.tar.gz",
        [member("../../model.joblib", data["model.joblib"]), member("metadata.json", b"{}")],
    )
    with pytest.raises(InvalidModelError, match="only plain file names"):
        import_bundle(target, bad)
    assert_unchanged(target)


def test_an_oversized_artifact_is_refused_from_its_header(bundle: Path, target: Registry) -> None:
    with pytest.raises(InvalidModelError, match=r"'model.joblib' of [\d,]+ bytes \(limit 1,000\)"):
        import_bundle(target, bundle, max_artifact_bytes=1000)
    assert_unchanged(target)


def test_an_artifact_not_named_by_the_metadata_is_refused(
    bundle: Path, target: Registry, tmp_path: Path
) -> None:
    renamed = [
        (member("model.pkl", content) if info.name == "model.joblib" else (info, content))
        for info, content in members_of(bundle)
    ]
    bad = write_tar(tmp_path / "bad.tar.gz", renamed)
    with pytest.raises(InvalidModelError, match="'model.pkl', not the artifact its metadata names"):
        import_bundle(target, bad)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"not json", "metadata.json that is not JSON"),
        (b"[" * 100_000, "metadata.json that is not JSON"),
        (b"[]", "without the version's metadata"),
        (json.dumps({"metadata": {}}).encode(), "no valid bundle_format"),
        (json.dumps({"bundle_format": 99, "metadata": {}}).encode(), "newer than this mlserve"),
        (json.dumps({"bundle_format": 1, "metadata": {"name": "x"}}).encode(), "invalid metadata"),
    ],
    ids=[
        "not-json",
        "nested-too-deep",
        "not-an-object",
        "no-format",
        "newer-format",
        "invalid-metadata",
    ],
)
def test_a_bad_metadata_file_is_refused(
    bundle: Path, target: Registry, tmp_path: Path, content: bytes, fragment: str
) -> None:
    bad = rewritten(
        bundle, tmp_path / "bad.tar.gz", lambda n, d: content if n == "metadata.json" else d
    )
    with pytest.raises(InvalidModelError, match=fragment):
        import_bundle(target, bad)
    assert_unchanged(target)


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda p: p.write_bytes(b"plain text"), "is not an mlserve bundle"),
        (lambda p: p.write_bytes(p.with_name("good").read_bytes()[:-200]), "not an mlserve bundle"),
        (lambda p: None, "does not exist"),
    ],
    ids=["not-gzip", "truncated-file", "missing"],
)
def test_a_file_that_is_not_a_bundle_is_a_one_line_error(
    cli: Callable[..., Result],
    assert_user_error: Callable[..., None],
    bundle: Path,
    target: Registry,
    tmp_path: Path,
    make: Callable[[Path], Any],
    fragment: str,
) -> None:
    (tmp_path / "good").write_bytes(bundle.read_bytes())
    path = tmp_path / "x.tar.gz"
    make(path)
    result = cli("models", "import", path, "--registry", target.root)
    assert_user_error(result, fragment, code=2)
    assert_unchanged(target)


def test_an_invalid_name_or_alias_is_refused_before_writing(
    cli: Callable[..., Result],
    assert_user_error: Callable[..., None],
    bundle: Path,
    target: Registry,
) -> None:
    result = cli("models", "import", bundle, "--name", "../x", "--registry", target.root)
    assert_user_error(result, "invalid model name", code=2)
    result = cli("models", "import", bundle, "--alias", "Prod!", "--registry", target.root)
    assert_user_error(result, "invalid alias", code=2)
    assert_unchanged(target)


def test_import_help_explains_what_is_checked(cli: Callable[..., Result]) -> None:
    result = cli("models", "import", "--help")
    assert result.exit_code == 0
    assert "sha256" in result.stdout
    assert "exit 2" in result.stdout


def test_the_imported_metadata_is_what_the_registry_serves(
    bundle: Path, target: Registry, source: Registry
) -> None:
    meta = import_bundle(target, bundle, name="copy")
    assert isinstance(meta, ModelMetadata)
    assert target.load("copy").metadata == meta
    assert answers(target, "copy") == answers(source, "iris")
