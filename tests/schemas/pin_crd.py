"""Pin a CustomResourceDefinition's schema for tests/test_deploy_platforms.py.

    python tests/schemas/pin_crd.py CRD.yaml VERSION SOURCE > tests/schemas/crds/NAME.json

Reads the CRD (the project's published YAML, e.g. `git show v0.20.0:config/crd/full/...` in
its repository), takes the openAPIV3Schema of the served VERSION and drops every `description`
(documentation only: validation is unchanged, and the files shrink several times). SOURCE is
recorded beside it (repository, tag, path) so the pin can be checked and renewed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml


def strip_descriptions(node: Any, *, in_properties: bool = False) -> Any:
    if isinstance(node, dict):
        return {
            key: strip_descriptions(value, in_properties=key == "properties" and not in_properties)
            for key, value in node.items()
            # "description" as a property *name* (inside `properties`) stays.
            if in_properties or key != "description"
        }
    if isinstance(node, list):
        return [strip_descriptions(item) for item in node]
    return node


def main(path: str, version: str, source: str) -> None:
    crd = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    pinned = {
        "source": source,
        "crd": crd["metadata"]["name"],
        "group": crd["spec"]["group"],
        "kind": crd["spec"]["names"]["kind"],
        "version": version,
        "openAPIV3Schema": strip_descriptions(served["schema"]["openAPIV3Schema"]),
    }
    json.dump(pinned, sys.stdout, indent=None, separators=(",", ":"), sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
