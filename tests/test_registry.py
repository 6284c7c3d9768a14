"""The registry: references, versions, aliases, deletion, integrity, crash and concurrency."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

from mlserve.errors import (
    IntegrityError,
    InvalidModelError,
    InvalidReferenceError,
    ModelNotFoundError,
    NotFoundError,
    RegistryError,
    UsageError,
)
from mlserve.registry import ModelRef, Registry, validate_alias, validate_name


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(root: Path) -> list[str]:
    """Every path under root (for 'registry unchanged' checks)."""
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# ---------------------------------------------------------------- model references


@pytest.mark.parametrize(
    ("text", "name", "version", "alias"),
    [
        ("sentiment", "sentiment", None, None),
        ("sentiment:3", "sentiment", 3, None),
        ("sentiment@production", "sentiment", None, "production"),
        ("  iris:12  ", "iris", 12, None),
        ("My.model-v2_x@canary-2", "My.model-v2_x", None, "canary-2"),
        ("m:007", "m", 7, None),
    ],
)
def test_model_ref_parses_valid_references(
    text: str, name: str, version: int | None, alias: str | None
) -> None:
    ref = ModelRef.parse(text)
    assert (ref.name, ref.version, ref.alias) == (name, version, alias)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [("m", "m"), ("m:3", "m:3"), ("m@prod", "m@prod"), ("m:03", "m:3")],
)
def test_model_ref_str_is_the_canonical_reference(text: str, canonical: str) -> None:
    assert str(ModelRef.parse(text)) == canonical
    assert ModelRef.parse(str(ModelRef.parse(text))) == ModelRef.parse(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        ":3",
        "@production",
        "m:",
        "m@",
        "m:0",
        "m:-1",
        "m:x",
        "m:1.5",
        "m: 1",
        "m:1:2",
        "m@a@b",
        "m:1@prod",
        "m@Production",
        "m@123",
        "m@with space",
        "m:\u00b2",  # superscript two: str.isdigit() is True, int() refuses it
        "m:\u0661",  # Arabic-Indic one
        "bad name",
        "../etc",
        ".hidden",
        "a/b",
        "x" * 65,
    ],
)
def test_model_ref_rejects_malformed_references(text: str) -> None:
    with pytest.raises(InvalidReferenceError) as info:
        ModelRef.parse(text)
    assert info.value.exit_code == 2


def test_validate_name_and_alias_accept_the_documented_forms() -> None:
    assert validate_name("a") == "a"
    assert validate_name("x" * 64) == "x" * 64
    assert validate_alias("production") == "production"
    assert validate_alias("canary_2-b") == "canary_2-b"
    with pytest.raises(InvalidReferenceError, match="invalid alias 'Prod'"):
        validate_alias("Prod")


# ---------------------------------------------------------------- registering and reading


def test_register_records_complete_metadata(
    registry: Registry, model_file: Path, classifier: Any
) -> None:
    import joblib
    import sklearn

    meta = registry.register(
        model_file,
        name="clf",
        description="tiny model",
        tags={"team": "ml", "stage": "dev"},
        metrics={"accuracy": 0.5},
    )
    assert (meta.name, meta.version) == ("clf", 1)
    assert meta.sha256 == sha256_file(model_file)
    assert meta.size_bytes == model_file.stat().st_size
    assert meta.source == str(model_file.resolve())
    assert meta.description == "tiny model"
    assert meta.tags == {"team": "ml", "stage": "dev"}
    assert meta.metrics == {"accuracy": 0.5}
    assert meta.task == "tabular-classification"
    assert meta.estimator == "LogisticRegression"
    assert meta.input_schema.kind == "tabular"
    assert meta.input_schema.n_features == 2
    assert meta.classes == [0, 1]
    assert meta.has_predict_proba is True
    assert meta.sklearn_version == sklearn.__version__
    assert meta.joblib_version == joblib.__version__
    assert meta.python_version == ".".join(map(str, sys.version_info[:3]))
    assert meta.created_at.tzinfo is not None
    assert meta.created_at.utcoffset() == UTC.utcoffset(None)

    stored = registry.artifact_path(meta)
    assert stored.read_bytes() == model_file.read_bytes()
    assert registry.metadata("clf", 1) == meta


def test_register_estimator_stores_an_artifact_that_loads_and_predicts(
    registry: Registry, classifier: Any
) -> None:
    meta = registry.register_estimator(classifier, name="clf", metrics={"accuracy": 1.0})
    assert meta.source == "mlserve train"
    assert meta.sha256 == sha256_file(registry.artifact_path(meta))
    loaded = registry.load("clf")
    assert loaded.warnings == []
    assert loaded.metadata == meta
    rows = [[0.0, 1.0], [2.0, 0.5]]
    assert list(loaded.estimator.predict(rows)) == list(classifier.predict(rows))


def test_register_estimator_names_the_features_of_an_array_model(
    registry: Registry, classifier: Any
) -> None:
    meta = registry.register_estimator(classifier, name="clf", feature_names=["width", "height"])
    assert meta.input_schema.feature_names == ["width", "height"]
    with pytest.raises(InvalidModelError, match="3 feature names given"):
        registry.register_estimator(classifier, name="clf", feature_names=["a", "b", "c"])


def test_register_records_a_regressor_without_classes_or_probabilities(
    registry: Registry, regressor: Any
) -> None:
    meta = registry.register_estimator(regressor, name="reg")
    assert meta.task == "tabular-regression"
    assert meta.classes is None
    assert meta.has_predict_proba is False


def test_register_records_a_text_pipeline(registry: Registry, text_classifier: Any) -> None:
    meta = registry.register_estimator(text_classifier, name="txt")
    assert meta.task == "text-classification"
    assert meta.input_schema.kind == "text"
    assert meta.estimator == "Pipeline[TfidfVectorizer, LogisticRegression]"
    assert meta.classes == ["neg", "pos"]


def test_versions_count_up_from_one(registry: Registry, model_file: Path) -> None:
    assert [registry.register(model_file, name="m").version for _ in range(3)] == [1, 2, 3]
    assert registry.versions("m") == [1, 2, 3]
    assert registry.names() == ["m"]


def test_models_have_independent_version_numbers(registry: Registry, model_file: Path) -> None:
    registry.register(model_file, name="a")
    registry.register(model_file, name="a")
    assert registry.register(model_file, name="b").version == 1
    assert [m.name for m in registry.list_models()] == ["a", "b"]


def test_empty_or_missing_registry_lists_nothing(registry: Registry) -> None:
    assert registry.names() == []
    assert registry.list_models() == []
    assert not registry.root.exists()  # reading never creates it


def test_list_models_and_summaries_describe_versions_and_aliases(
    registry: Registry, model_file: Path
) -> None:
    registry.register(model_file, name="m", metrics={"accuracy": 0.7})
    registry.register(model_file, name="m", aliases=["production"])
    [summary] = registry.list_models()
    assert summary.name == "m"
    assert summary.latest_version == 2
    assert summary.versions == [1, 2]
    assert summary.aliases == {"production": 2}
    rows = registry.version_summaries("m")
    assert [(r.version, r.aliases) for r in rows] == [(1, []), (2, ["production"])]
    assert rows[0].metrics == {"accuracy": 0.7}
    assert rows[0].sha256 == sha256_file(model_file)


# ---------------------------------------------------------------- resolving and aliases


def test_resolve_by_version_alias_and_bare_name(registry: Registry, model_file: Path) -> None:
    registry.register(model_file, name="m", aliases=["production"])
    registry.register(model_file, name="m", aliases=["staging"])
    registry.register(model_file, name="m")
    assert registry.resolve("m:2").version == 2
    assert registry.resolve("m@production").version == 1
    assert registry.resolve("m@staging").version == 2
    assert registry.resolve("m").version == 1  # the default alias wins over latest
    assert registry.resolve("m", default_alias="staging").version == 2
    assert registry.resolve(ModelRef(name="m", version=3)).version == 3


def test_bare_name_without_default_alias_resolves_to_latest(
    registry: Registry, model_file: Path
) -> None:
    registry.register(model_file, name="m")
    registry.register(model_file, name="m")
    assert registry.resolve("m").version == 2


def test_resolve_unknown_model_version_or_alias_is_not_found(
    registry: Registry, model_file: Path
) -> None:
    registry.register(model_file, name="m", aliases=["production"])
    with pytest.raises(ModelNotFoundError, match="model 'nope' is not in the registry"):
        registry.resolve("nope")
    with pytest.raises(ModelNotFoundError, match=r"has no version 4 \(versions: 1\)"):
        registry.resolve("m:4")
    with pytest.raises(ModelNotFoundError, match=r"no alias 'canary' \(aliases: production\)"):
        registry.resolve("m@canary")


def test_register_with_alias_moves_it_to_the_new_version(
    registry: Registry, model_file: Path
) -> None:
    registry.register(model_file, name="m", aliases=["production", "staging"])
    registry.register(model_file, name="m", aliases=["production"])
    assert registry.aliases("m") == {"production": 2, "staging": 1}


def test_set_and_remove_alias(registry: Registry, model_file: Path) -> None:
    registry.register(model_file, name="m")
    registry.register(model_file, name="m")
    registry.set_alias("m", "production", 1)
    assert registry.resolve("m@production").version == 1
    registry.set_alias("m", "production", 2)
    assert registry.aliases("m") == {"production": 2}
    assert registry.remove_alias("m", "production") == 2
    assert registry.aliases("m") == {}
    assert registry.versions("m") == [1, 2]  # the version stays


def test_alias_to_a_missing_version_or_model_is_refused(
    registry: Registry, model_file: Path
) -> None:
    registry.register(model_file, name="m")
    with pytest.raises(NotFoundError, match="has no version 7"):
        registry.set_alias("m", "production", 7)
    with pytest.raises(ModelNotFoundError):
        registry.set_alias("ghost", "production", 1)
    with pytest.raises(InvalidReferenceError):
        registry.set_alias("m", "Not-Valid", 1)
    assert registry.aliases("m") == {}


def test_removing_an_unknown_alias_is_not_found(registry: Registry, model_file: Path) -> None:
    registry.register(model_file, name="m")
    with pytest.raises(NotFoundError, match="has no alias 'production'"):
        registry.remove_alias("m", "production")
    with pytest.raises(ModelNotFoundError, match="'ghost' is not in the registry"):
        registry.remove_alias("ghost", "production")


def test_state_token_changes_on_register_and_alias(registry: Registry, model_file: Path) -> None:
    before = registry.state_token()
    registry.register(model_file, name="m")
    after_register = registry.state_token()
    registry.set_alias("m", "production", 1)
    after_alias = registry.state_token()
    assert len({before, after_register, after_alias}) == 3
    assert registry.state_token() == after_alias


# ---------------------------------------------------------------- deleting


def test_delete_one_unaliased_version(registry: Registry, model_file: Path) -> None:
    for _ in range(3):
        registry.register(model_file, name="m")
    assert registry.delete("m:2") == [2]
    assert registry.versions("m") == [1, 3]
    assert not (registry.root / "m" / "versions" / "2").exists()


def test_delete_of_an_aliased_version_needs_force(registry: Registry, model_file: Path) -> None:
    registry.register(model_file, name="m", aliases=["production"])
    registry.register(model_file, name="m")
    with pytest.raises(UsageError, match=r"m:1 is pointed at by alias\(es\) production"):
        registry.delete("m:1")
    assert registry.versions("m") == [1, 2]
    assert registry.aliases("m") == {"production": 1}

    assert registry.delete("m:1", force=True) == [1]
    assert registry.versions("m") == [2]
    assert registry.aliases("m") == {}


def test_delete_by_alias_removes_the_version_it_points_at(
    registry: Registry, model_file: Path
) -> None:
    registry.register(model_file, name="m")
    registry.register(model_file, name="m", aliases=["staging"])
    registry.set_alias("m", "production", 1)
    with pytest.raises(UsageError):
        registry.delete("m@staging")
    assert registry.delete("m@staging", force=True) == [2]
    assert registry.versions("m") == [1]
    assert registry.aliases("m") == {"production": 1}


def test_delete_whole_model(registry: Registry, model_file: Path) -> None:
    registry.register(model_file, name="m", aliases=["production"])
    registry.register(model_file, name="m")
    registry.register(model_file, name="other")
    with pytest.raises(UsageError):
        registry.delete("m")
    assert registry.delete("m", force=True) == [1, 2]
    assert registry.names() == ["other"]
    with pytest.raises(ModelNotFoundError):
        registry.resolve("m")
    assert registry.aliases("m") == {}


def test_delete_unknown_model_or_version_is_not_found(registry: Registry, model_file: Path) -> None:
    registry.register(model_file, name="m")
    with pytest.raises(ModelNotFoundError):
        registry.delete("ghost")
    with pytest.raises(ModelNotFoundError):
        registry.delete("m:5")
    assert registry.versions("m") == [1]


def test_version_numbers_are_never_reused_after_delete(
    registry: Registry, model_file: Path
) -> None:
    registry.register(model_file, name="m")
    registry.register(model_file, name="m")
    registry.delete("m:2")
    assert registry.register(model_file, name="m").version == 3
    registry.delete("m", force=True)
    assert registry.register(model_file, name="m").version == 4


# ---------------------------------------------------------------- integrity


def test_flipped_byte_in_artifact_is_refused_naming_the_file(
    registry: Registry, model_file: Path
) -> None:
    meta = registry.register(model_file, name="m")
    stored = registry.artifact_path(meta)
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01
    stored.write_bytes(bytes(data))
    with pytest.raises(IntegrityError) as info:
        registry.load("m")
    assert str(stored) in info.value.message
    assert "sha256" in info.value.message
    assert "m:1" in info.value.message


def test_truncated_artifact_is_refused_naming_the_file(
    registry: Registry, model_file: Path
) -> None:
    meta = registry.register(model_file, name="m")
    stored = registry.artifact_path(meta)
    stored.write_bytes(stored.read_bytes()[:100])
    with pytest.raises(IntegrityError) as info:
        registry.load("m:1")
    message = info.value.message
    assert str(stored) in message
    # (the test's tmp path contains "truncated" too: check the words after it)
    assert f"is 100 bytes, {meta.size_bytes} were registered: truncated" in message


def test_swapped_artifact_of_the_same_size_is_refused(
    registry: Registry, model_file: Path, classifier: Any, save_joblib: Callable[..., Path]
) -> None:
    meta = registry.register(model_file, name="m")
    classifier.coef_ = -classifier.coef_  # same shape, same size, different behaviour
    swapped = save_joblib(classifier, model_file.parent / "swapped.joblib")
    assert swapped.stat().st_size == meta.size_bytes
    registry.artifact_path(meta).write_bytes(swapped.read_bytes())
    with pytest.raises(IntegrityError, match="changed after registration"):
        registry.load(meta)


def test_missing_artifact_is_refused(registry: Registry, model_file: Path) -> None:
    meta = registry.register(model_file, name="m")
    registry.artifact_path(meta).unlink()
    with pytest.raises(IntegrityError, match="is missing"):
        registry.load("m")


def test_corrupt_metadata_is_a_registry_error(registry: Registry, model_file: Path) -> None:
    meta = registry.register(model_file, name="m")
    path = registry.artifact_path(meta).with_name("metadata.json")
    path.write_text("{not json")
    with pytest.raises(RegistryError, match="metadata.json is corrupt"):
        registry.resolve("m:1")


@pytest.mark.parametrize("content", ["{broken", '["production"]', '{"production": "one"}'])
def test_corrupt_aliases_file_is_a_registry_error(
    registry: Registry, model_file: Path, content: str
) -> None:
    registry.register(model_file, name="m", aliases=["production"])
    (registry.root / "m" / "aliases.json").write_text(content)
    with pytest.raises(RegistryError, match="registry file m/aliases.json is corrupt"):
        registry.resolve("m@production")


def test_other_sklearn_version_in_metadata_loads_with_a_warning(
    registry: Registry, model_file: Path
) -> None:
    import sklearn

    meta = registry.register(model_file, name="m")
    path = registry.artifact_path(meta).with_name("metadata.json")
    data = json.loads(path.read_text())
    data["sklearn_version"] = "0.0.1"
    path.write_text(json.dumps(data))

    loaded = registry.load("m")
    assert len(loaded.warnings) == 1
    assert "0.0.1" in loaded.warnings[0]
    assert sklearn.__version__ in loaded.warnings[0]
    assert "m:1" in loaded.warnings[0]


def test_file_pickled_by_another_sklearn_records_that_version(
    registry: Registry,
    classifier: Any,
    tmp_path: Path,
    save_joblib: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sklearn
    import sklearn.base

    with monkeypatch.context() as patched:
        # BaseEstimator.__getstate__ stamps pickles with sklearn.base.__version__.
        patched.setattr(sklearn.base, "__version__", "0.0.1")
        old = save_joblib(classifier, tmp_path / "old.joblib")
    meta = registry.register(old, name="m")
    assert meta.sklearn_version == "0.0.1"
    loaded = registry.load("m")
    assert [w for w in loaded.warnings if "0.0.1" in w and sklearn.__version__ in w]


def test_same_sklearn_version_loads_without_warning(registry: Registry, model_file: Path) -> None:
    registry.register(model_file, name="m")
    assert registry.load("m").warnings == []


# ---------------------------------------------------------------- refusing bad candidates


@pytest.fixture
def bad_candidates(tmp_path: Path, save_joblib: Callable[..., Path]) -> dict[str, tuple[Path, str]]:
    from sklearn.linear_model import LogisticRegression

    empty = tmp_path / "empty.joblib"
    empty.write_bytes(b"")
    text = tmp_path / "notes.txt"
    text.write_text("just some text, not a model\n")
    folder = tmp_path / "folder"
    folder.mkdir()
    return {
        "missing": (tmp_path / "nope.joblib", "does not exist"),
        "directory": (folder, "is a directory"),
        "empty": (empty, "is empty"),
        "text": (text, "is not a loadable joblib model"),
        "dict": (save_joblib({"weights": [1, 2]}, tmp_path / "d.joblib"), "holds a dict"),
        "class": (
            save_joblib(LogisticRegression, tmp_path / "c.joblib"),
            "holds the class LogisticRegression",
        ),
        "unfitted": (save_joblib(LogisticRegression(), tmp_path / "u.joblib"), "is not fitted"),
    }


@pytest.mark.parametrize(
    "case", ["missing", "directory", "empty", "text", "dict", "class", "unfitted"]
)
def test_register_refuses_bad_candidates_and_leaves_registry_unchanged(
    registry: Registry,
    model_file: Path,
    bad_candidates: dict[str, tuple[Path, str]],
    case: str,
) -> None:
    registry.register(model_file, name="m")
    before = tree(registry.root)
    path, fragment = bad_candidates[case]
    with pytest.raises(InvalidModelError, match=fragment):
        registry.register(path, name="m")
    assert tree(registry.root) == before
    assert registry.versions("m") == [1]


def test_refused_candidate_creates_no_registry(
    registry: Registry, bad_candidates: dict[str, tuple[Path, str]]
) -> None:
    with pytest.raises(InvalidModelError):
        registry.register(bad_candidates["dict"][0], name="m")
    assert not registry.root.exists()


def test_register_refuses_invalid_name_or_alias_before_writing(
    registry: Registry, model_file: Path
) -> None:
    with pytest.raises(InvalidReferenceError):
        registry.register(model_file, name="../escape")
    with pytest.raises(InvalidReferenceError):
        registry.register(model_file, name="m", aliases=["Production"])
    assert not registry.root.exists()


def test_registry_path_that_is_a_file_is_a_registry_error(tmp_path: Path, model_file: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    registry = Registry(blocker)
    with pytest.raises(RegistryError, match="not a directory"):
        registry.names()
    with pytest.raises(RegistryError):
        registry.register(model_file, name="m")


# ---------------------------------------------------------------- crash safety (real processes)

HANGING_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    import mlserve.registry.store as registry

    root, artifact, stage = sys.argv[1:4]

    def hang():
        print("ready", flush=True)
        signal.pause()  # wait here until the test kills us

    if stage == "publish":
        # Everything is staged and the lock is held; hang instead of the publishing rename.
        registry.os.rename = lambda *args, **kwargs: hang()
    else:
        def half_write(path, data):
            with open(path, "wb") as fh:
                fh.write(data[: len(data) // 2])
                fh.flush()
                os.fsync(fh.fileno())
            hang()
        registry.write_synced = half_write

    registry.Registry(root).register(artifact, name="m")
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["mid-artifact", "publish"])
def test_writer_killed_mid_write_leaves_no_half_visible_version(
    registry: Registry, model_file: Path, stage: str
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", HANGING_WRITER, str(registry.root), str(model_file), stage],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "ready", proc.stderr.read() if proc.stderr else ""
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    assert proc.returncode == -signal.SIGKILL

    assert registry.names() == []
    assert registry.list_models() == []
    with pytest.raises(ModelNotFoundError):
        registry.resolve("m")
    assert list((registry.root / ".staging").iterdir()), "the dead writer's staging is left over"

    # The dead writer's lock is gone with it: the next writer's version is intact. A writer
    # killed at the publishing rename had reserved number 1 (never handed out twice): 2.
    meta = registry.register(model_file, name="m")
    assert meta.version == (2 if stage == "publish" else 1)
    assert registry.load("m").metadata.sha256 == sha256_file(model_file)


@pytest.mark.slow
def test_concurrent_register_processes_get_distinct_consecutive_versions(
    registry: Registry, tmp_path: Path, classifier: Any, save_joblib: Callable[..., Path]
) -> None:
    count = 20
    files = []
    for i in range(count):
        classifier.intercept_ = classifier.intercept_ * 0 + i  # a distinct artifact per writer
        files.append(save_joblib(classifier, tmp_path / f"model-{i}.joblib"))
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "mlserve", "register", str(f), "--name", "m", "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for f in files
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err

    reported = sorted(json.loads(out)["version"] for out, _ in outputs)
    assert reported == list(range(1, count + 1))
    assert registry.versions("m") == list(range(1, count + 1))

    by_source = {}
    for version in registry.versions("m"):
        loaded = registry.load(f"m:{version}")  # verifies sha256 and size, then unpickles
        by_source[loaded.metadata.source] = loaded
    assert set(by_source) == {str(f.resolve()) for f in files}  # none lost, none duplicated
    for f in files:
        loaded = by_source[str(f.resolve())]
        assert loaded.metadata.sha256 == sha256_file(f)
        assert loaded.estimator.intercept_[0] == int(f.stem.split("-")[1])
    assert not list((registry.root / ".staging").iterdir())
