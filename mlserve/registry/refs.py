"""Model references (`name`, `name:3`, `name@production`) and the rules for names and aliases."""

from __future__ import annotations

import re
from dataclasses import dataclass

from mlserve.errors import InvalidReferenceError

__all__ = ["ALIAS_RE", "NAME_RE", "REF_RE", "ModelRef", "validate_alias", "validate_name"]

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ALIAS_RE = re.compile(r"^[a-z0-9_-]{1,64}$")
REF_RE = re.compile(r"^(?P<name>[^:@]+)(?::(?P<version>[^:@]+)|@(?P<alias>[^:@]+))?$")


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A model reference: `name`, `name:3` (version) or `name@production` (alias)."""

    name: str
    version: int | None = None
    alias: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        match = REF_RE.match(text.strip())
        if not match:
            raise InvalidReferenceError(
                f"invalid model reference '{text}': use name, name:VERSION or name@ALIAS"
            )
        name = match["name"]
        validate_name(name)
        version: int | None = None
        if match["version"] is not None:
            # ASCII digits only: str.isdigit() also accepts '²' (int() refuses it) and '١'.
            if not re.fullmatch(r"[0-9]+", match["version"]) or int(match["version"]) < 1:
                raise InvalidReferenceError(
                    f"invalid model reference '{text}': the version must be a positive integer"
                )
            version = int(match["version"])
        alias = match["alias"]
        if alias is not None:
            validate_alias(alias)
        return cls(name=name, version=version, alias=alias)

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}:{self.version}"
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        return self.name


def validate_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise InvalidReferenceError(
            f"invalid model name '{name}': use letters, digits, '.', '_' or '-' "
            "(up to 64, starting with a letter or digit)"
        )
    return name


def validate_alias(alias: str) -> str:
    if not ALIAS_RE.match(alias) or alias.isdigit():
        raise InvalidReferenceError(
            f"invalid alias '{alias}': use lowercase letters, digits, '_' or '-' (not only digits)"
        )
    return alias
