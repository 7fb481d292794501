"""The operators' CustomResourceDefinitions vendored in ``tests/data/crds`` and a validator of custom
resources against their ``openAPIV3Schema``, offline.

As strict as the API server with strict field validation (``kubectl apply`` warns or fails on a
field that structural pruning would drop): where a schema object declares ``properties`` (or only
``type: object``) without ``x-kubernetes-preserve-unknown-fields: true`` or ``additionalProperties``,
any other field is an error. An ``apiVersion`` the CRD does not serve and a kind no vendored CRD
defines are errors too. CEL rules (``x-kubernetes-validations``) and ``format`` are not checked;
``metadata`` only loosely (see ``METADATA``). The targeted operator versions are those of
``tests/data/crds/README.md``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import yaml

CRDS = Path(__file__).resolve().parents[1] / "data" / "crds"
README = CRDS / "README.md"

# ``metadata`` as the API server checks it for every object, loosely: a name, the types of name,
# namespace, labels and annotations, and no field that ObjectMeta does not have.
_ANY: dict = {}
_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "minLength": 1}, "namespace": {"type": "string", "minLength": 1},
        "labels": _STRINGS, "annotations": _STRINGS,
        **{field: _ANY for field in (
            "generateName", "selfLink", "uid", "resourceVersion", "generation", "creationTimestamp",
            "deletionTimestamp", "deletionGracePeriodSeconds", "ownerReferences", "finalizers", "managedFields")},
    },
    "additionalProperties": False,
}
# Keywords of a CRD schema that JSON Schema does not know or that are not checked here.
_DROPPED = ("description", "default", "nullable", "format", "example", "externalDocs")


class CustomResourceError(ValueError):
    """A custom resource that the API server (with these operators' CRDs installed) would refuse."""


@dataclass(frozen=True)
class Target:
    """A row of the README's tables: which operator release a vendored CRD file comes from."""

    file: str
    group: str
    kind: str
    operator: str
    version: str
    repository: str
    tag: str
    commit: str
    path: str
    rendered: bool


@dataclass(frozen=True)
class Definition:
    group: str
    kind: str
    file: str
    versions: dict  # version name -> its entry in spec.versions (served, schema …)

    def served(self) -> list[str]:
        return [name for name, entry in self.versions.items() if entry.get("served")]


def _rows(text: str, heading: str) -> list[list[str]]:
    """The body rows of the table in the section ``heading``, each cell without its backticks."""
    section = text.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = [line.strip() for line in section.splitlines() if line.startswith("|")]
    return [[c.strip().strip("`") for c in line.strip("|").split("|")] for line in lines[2:]]


@functools.cache
def targets() -> dict[str, Target]:
    """The README's vendored files by name, each with its operator's release."""
    text = README.read_text(encoding="utf-8")
    releases = {operator: (version, repository, tag, commit)
                for operator, version, repository, tag, commit in _rows(text, "## Targeted versions")}
    found = {}
    for file, kind, operator, path, rendered in _rows(text, "## Vendored definitions"):
        group, _, name = kind.rpartition("/")
        found[file] = Target(file, group, name, operator, *releases[operator], path, rendered == "yes")
    return found


def load_definitions(directory: Path = CRDS) -> dict[tuple[str, str], Definition]:
    """Every CRD of the ``*.yaml`` files of ``directory``, by (group, kind)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    found: dict[tuple[str, str], Definition] = {}
    for path in sorted(directory.glob("*.yaml")):
        for document in yaml.load_all(path.read_text(encoding="utf-8"), Loader=loader):
            if not document:
                continue
            assert document["kind"] == "CustomResourceDefinition", f"{path.name}: not a CRD"
            spec = document["spec"]
            key = (spec["group"], spec["names"]["kind"])
            assert key not in found, f"{path.name}: {key} is defined twice"
            found[key] = Definition(*key, path.name, {v["name"]: v for v in spec["versions"]})
    return found


@functools.cache
def definitions() -> dict[tuple[str, str], Definition]:
    return load_definitions()


def split_api_version(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


def is_custom_resource(obj: dict, known: dict | None = None) -> bool:
    """Whether ``obj`` is of a kind that CRDs define, not one built into Kubernetes: of a group of
    a vendored CRD, or of any group with a dot outside ``*.k8s.io`` (so that a custom resource of
    an operator nobody vendored is an error here, not skipped)."""
    group, _ = split_api_version(obj.get("apiVersion", ""))
    known = definitions() if known is None else known
    return any(group == g for g, _ in known) or ("." in group and not group.endswith(".k8s.io"))


def strict_schema(schema: dict, *, root: bool = False, closed: bool = True) -> dict:
    """A CRD's structural schema as a JSON Schema (draft 4, OpenAPI 3.0's base) that rejects
    unknown fields as the API server's pruning and strict field validation do. ``closed`` is off
    inside ``allOf``/``anyOf``/``oneOf``/``not``, whose branches only add value validations."""
    out = {k: v for k, v in schema.items() if not k.startswith("x-kubernetes-") and k not in _DROPPED}
    preserve = schema.get("x-kubernetes-preserve-unknown-fields") is True
    if isinstance(out.get("pattern"), str):
        out["pattern"] = python_pattern(out["pattern"])
    if schema.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if schema.get("nullable") and "type" in out:
        out["type"] = [*([out["type"]] if isinstance(out["type"], str) else out["type"]), "null"]
    properties = {name: strict_schema(sub) for name, sub in (schema.get("properties") or {}).items()}
    if schema.get("x-kubernetes-embedded-resource"):
        properties = {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                      **properties, "metadata": {**METADATA, "required": []}}
    if root:
        properties["metadata"] = METADATA
    if properties:
        out["properties"] = properties
    if isinstance(schema.get("items"), dict):
        out["items"] = strict_schema(schema["items"])
    if isinstance(schema.get("additionalProperties"), dict):
        out["additionalProperties"] = strict_schema(schema["additionalProperties"])
    for junction in ("allOf", "anyOf", "oneOf"):
        if junction in schema:
            out[junction] = [strict_schema(branch, closed=False) for branch in schema[junction]]
    if isinstance(schema.get("not"), dict):
        out["not"] = strict_schema(schema["not"], closed=False)
    is_object = "properties" in schema or schema.get("type") == "object"
    if closed and is_object and not preserve and "additionalProperties" not in schema:
        out["additionalProperties"] = False
    return out


def python_pattern(pattern: str) -> str:
    """A CRD's regular expression (Go's RE2 syntax) for Python's ``re``: RE2 takes flags such as
    ``(?i)`` anywhere (``^(?i)(abort|warn)?$``), Python only at the start."""
    flags = "".join(sorted(set("".join(re.findall(r"\(\?([imsU]+)\)", pattern))) - {"U"}))
    if not flags or pattern.startswith("(?"):
        return pattern
    return f"(?{flags})" + re.sub(r"\(\?[imsU]+\)", "", pattern)


@functools.cache
def _validator(group: str, kind: str, version: str, directory: Path = CRDS) -> jsonschema.Draft4Validator:
    definition = (definitions() if directory == CRDS else load_definitions(directory))[(group, kind)]
    schema = strict_schema(definition.versions[version]["schema"]["openAPIV3Schema"], root=True)
    schema.setdefault("required", [])
    schema["required"] = sorted({*schema["required"], "apiVersion", "kind", "metadata"})
    jsonschema.Draft4Validator.check_schema(schema)
    return jsonschema.Draft4Validator(schema)


def _release(definition: Definition) -> str:
    """"Strimzi 1.2.0" for a vendored CRD file the README names, else the file."""
    target = targets().get(definition.file)
    return f"{target.operator} {target.version}" if target else f"the CRD in {definition.file}"


def validate_custom_resource(obj: dict, directory: Path = CRDS) -> None:
    """Raise CustomResourceError with every reason the API server would refuse ``obj``, whose
    kind must be one of the vendored CRDs' (those of ``directory``)."""
    known = definitions() if directory == CRDS else load_definitions(directory)
    api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
    name = (obj.get("metadata") or {}).get("name", "<no name>")
    group, version = split_api_version(api_version)
    definition = known.get((group, kind))
    if definition is None:
        groups = sorted({f"{g}/{k}" for g, k in known})
        raise CustomResourceError(f"{api_version} {kind} {name}: no CRD defines kind {kind} of group "
                                  f"{group or '(core)'} in {directory} (defined: {', '.join(groups)})")
    if version not in definition.served():
        state = "no longer serves" if version not in definition.versions else "does not serve (served: false)"
        raise CustomResourceError(f"{kind} {name}: {_release(definition)} {state} {api_version}; "
                                  f"served: {', '.join(f'{group}/{v}' for v in definition.served())}")
    errors = sorted(_validator(group, kind, version, directory).iter_errors(obj), key=lambda e: list(e.absolute_path))
    if errors:
        reasons = [f"  {'.'.join(str(p) for p in e.absolute_path) or '(top level)'}: {_message(e)}" for e in errors]
        raise CustomResourceError(f"{api_version} {kind} {name} does not validate against {_release(definition)}'s "
                                  f"schema ({definition.file}):\n" + "\n".join(reasons))


def _message(error: jsonschema.ValidationError) -> str:
    if error.validator == "additionalProperties" and error.validator_value is False:
        unknown = re.findall(r"'([^']+)'", error.message)
        return f"unknown field(s) {', '.join(unknown)}" if unknown else error.message
    return error.message
