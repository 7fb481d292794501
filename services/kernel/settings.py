"""Typed settings read from environment variables, one object per process.

Every field is looked up first under the process's own prefix (``PROJECTS_DATABASE_URL``) and
then under the platform-wide prefix (``COCREATE_DATABASE_URL``); a few well-known names
(``KAFKA_BOOTSTRAP_SERVERS``) are accepted as they are. A missing required value or one that does
not parse fails at start with a message that names the variable.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PLATFORM_PREFIX = "COCREATE"


class SettingsError(RuntimeError):
    """A setting is missing or invalid; the message names the environment variable."""


def setting(default: Any = dataclasses.MISSING, *, aliases: tuple[str, ...] = (), doc: str = "",
            internal: bool = False):
    """Declare a settings field; ``aliases`` are extra unprefixed variable names.

    ``internal`` fields are set by the entry point, never from the environment.
    """
    metadata = {"aliases": aliases, "doc": doc, "internal": internal}
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _parse(value: str, type_: Any, name: str) -> Any:
    try:
        if type_ in (int, "int"):
            return int(value)
        if type_ in (float, "float"):
            return float(value)
        if type_ in (bool, "bool"):
            lowered = value.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"expected true/false, got {value!r}")
        if type_ in (Path, "Path"):
            return Path(value)
        if type_ in ("tuple[str, ...]",):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value
    except ValueError as exc:
        raise SettingsError(f"environment variable {name} is invalid: {exc}") from None


def env_names(prefix: str, field: dataclasses.Field) -> list[str]:
    upper = field.name.upper()
    names = [f"{prefix}_{upper}"] if prefix else []
    names.append(f"{PLATFORM_PREFIX}_{upper}")
    names.extend(field.metadata.get("aliases", ()))
    return names


def load(cls: type, prefix: str, environ: Mapping[str, str] | None = None, **overrides: Any):
    """Build the settings dataclass ``cls`` from ``environ`` (default ``os.environ``)."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        if field.name in overrides:
            values[field.name] = overrides[field.name]
            continue
        if field.metadata.get("internal"):
            continue
        names = env_names(prefix, field)
        for name in names:
            raw = environ.get(name)
            if raw is not None and raw != "":
                values[field.name] = _parse(raw, field.type, name)
                break
        else:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise SettingsError(f"environment variable {names[0]} is required but not set")
    instance = cls(**values)
    validate = getattr(instance, "validate", None)
    if validate is not None:
        validate(prefix)
    return instance


def describe(cls: type, prefix: str) -> list[tuple[str, str, str]]:
    """(variable, default, doc) for every field: used to document the configuration."""
    rows = []
    for field in dataclasses.fields(cls):
        if field.metadata.get("internal"):
            continue
        default = "" if field.default is dataclasses.MISSING else str(field.default)
        rows.append((" / ".join(env_names(prefix, field)), default, field.metadata.get("doc", "")))
    return rows
