"""Strict validation of a custom resource against its CRD's pinned openAPIV3Schema
(tests/schemas/crds), as the API server validates it, plus what strict clients add.

Kubernetes' structural schemas: `type`, `properties`, `required`, `items`, `additionalProperties`,
`enum`, `format`, `pattern`, bounds, `nullable`, `x-kubernetes-int-or-string`,
`x-kubernetes-preserve-unknown-fields`, `x-kubernetes-embedded-resource`, and the value
validations `allOf`/`anyOf`/`oneOf`/`not`. Strict: a field the schema does not name is an error
(the API server would prune it silently; `kubectl apply --validate=strict` refuses it), except
under `x-kubernetes-preserve-unknown-fields`. Not evaluated: CEL rules (`x-kubernetes-validations`).
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas" / "crds"
# What an object's metadata may hold in a manifest (the rest is written by the server).
OBJECT_META = {"name", "namespace", "labels", "annotations", "generateName", "finalizers"}
INT_FORMATS = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


@cache
def pinned(group: str, kind: str, version: str) -> dict[str, Any]:
    path = SCHEMAS / f"{group}_{kind}_{version}.json"
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def schema_for(obj: dict[str, Any]) -> dict[str, Any]:
    group, _, version = obj["apiVersion"].rpartition("/")
    schema: dict[str, Any] = pinned(group, obj["kind"], version)["openAPIV3Schema"]
    return schema


def validate(obj: dict[str, Any]) -> list[str]:
    """Every problem of `obj` (a custom resource) against its pinned CRD schema; [] when valid."""
    errors: list[str] = []
    _check(obj, schema_for(obj), "", errors, strict=True)
    for key, value in (obj.get("metadata") or {}).items():
        if key not in OBJECT_META:
            errors.append(f".metadata.{key}: not a field a manifest sets")
        elif key in ("labels", "annotations") and not (
            isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
        ):
            errors.append(f".metadata.{key}: must map strings to strings")
    if not isinstance((obj.get("metadata") or {}).get("name"), str):
        errors.append(".metadata.name: required")
    return errors


def _type_ok(value: Any, schema: dict[str, Any]) -> bool:
    if schema.get("x-kubernetes-int-or-string"):
        return isinstance(value, (int, str)) and not isinstance(value, bool)
    kind = schema.get("type")
    if kind is None:
        return True
    return {
        "object": isinstance(value, dict),
        "array": isinstance(value, list),
        "string": isinstance(value, str),
        "boolean": isinstance(value, bool),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, (int, float)) and not isinstance(value, bool),
    }[kind]


def _check(value: Any, schema: dict[str, Any], where: str, errors: list[str], *, strict: bool):
    at = where or "."
    if value is None:
        if not schema.get("nullable"):
            errors.append(f"{at}: null is not allowed")
        return
    if not _type_ok(value, schema):
        errors.append(f"{at}: {type(value).__name__} where the schema wants {schema.get('type')}")
        return
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{at}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{at}: {value!r} does not match {schema['pattern']}")
        if len(value) > schema.get("maxLength", len(value)):
            errors.append(f"{at}: longer than {schema['maxLength']}")
        if len(value) < schema.get("minLength", 0):
            errors.append(f"{at}: shorter than {schema['minLength']}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        low, high = INT_FORMATS.get(schema.get("format", ""), (None, None))
        if "minimum" in schema:
            low = schema["minimum"] if low is None else max(low, schema["minimum"])
        if "maximum" in schema:
            high = schema["maximum"] if high is None else min(high, schema["maximum"])
        if (low is not None and value < low) or (high is not None and value > high):
            errors.append(f"{at}: {value} is outside [{low}, {high}]")
    for name in ("allOf", "anyOf", "oneOf", "not"):
        if name in schema:
            _check_combinator(value, schema, name, at, errors)
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            errors.append(f"{at}: fewer than {schema['minItems']} items")
        if len(value) > schema.get("maxItems", len(value)):
            errors.append(f"{at}: more than {schema['maxItems']} items")
        for i, item in enumerate(value):
            _check(item, schema.get("items", {}), f"{where}[{i}]", errors, strict=strict)
    if isinstance(value, dict):
        _check_object(value, schema, where, errors, strict=strict)


def _check_object(
    value: dict[str, Any], schema: dict[str, Any], where: str, errors: list[str], *, strict: bool
) -> None:
    properties: dict[str, Any] = schema.get("properties", {})
    for name in schema.get("required", []):
        if name not in value:
            errors.append(f"{where}.{name}: required")
    extra = schema.get("additionalProperties")
    embedded = schema.get("x-kubernetes-embedded-resource")
    keep_unknown = schema.get("x-kubernetes-preserve-unknown-fields") or not strict
    if where == ".metadata":
        return  # the object's own metadata: an ObjectMeta, checked by validate()
    for key, item in value.items():
        if key in properties:
            _check(item, properties[key], f"{where}.{key}", errors, strict=strict)
        elif isinstance(extra, dict):
            _check(item, extra, f"{where}.{key}", errors, strict=strict)
        elif extra is True or keep_unknown:
            continue
        elif embedded and key in ("apiVersion", "kind", "metadata"):
            continue
        elif not properties and "type" not in schema:
            continue  # no structure given at all (a value-validation branch)
        else:
            errors.append(f"{where}.{key}: unknown field")


def _check_combinator(
    value: Any, schema: dict[str, Any], name: str, at: str, errors: list[str]
) -> None:
    """Value validations only (structural schemas): unknown fields are the main schema's
    business, so the branches are checked without strictness."""

    def passes(branch: dict[str, Any]) -> bool:
        found: list[str] = []
        _check(value, branch, at, found, strict=False)
        return not found

    if name == "not":
        if passes(schema["not"]):
            errors.append(f"{at}: matches a `not` schema")
        return
    results = [passes(branch) for branch in schema[name]]
    if name == "allOf" and not all(results):
        errors.append(f"{at}: fails an allOf branch")
    elif name == "anyOf" and not any(results):
        errors.append(f"{at}: matches no anyOf branch")
    elif name == "oneOf" and results.count(True) != 1:
        errors.append(f"{at}: matches {results.count(True)} oneOf branches, not 1")
