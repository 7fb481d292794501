"""The custom resources of the overlays against the CRD schemas of the operator releases the
platform targets (vendored in tests/data/crds, named in its README): every one validates, with
unknown fields, wrong types and unserved API versions rejected as the API server would.
"""

from __future__ import annotations

import copy
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import require_tool
from tests.support.crds import (CRDS, CustomResourceError, definitions, is_custom_resource, load_definitions,
                                split_api_version, targets, validate_custom_resource)

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy" / "k8s" / "base"
OVERLAYS = ("staging", "production")


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request) -> tuple[str, list[dict]]:
    kubectl = require_tool("kubectl", "kubectl with its built-in kustomize")
    done = subprocess.run([kubectl, "kustomize", str(ROOT / "deploy" / "k8s" / "overlays" / request.param)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return request.param, [d for d in yaml.safe_load_all(done.stdout) if d]


def custom_resources(objects) -> list[dict]:
    return [o for o in objects if is_custom_resource(o)]


def test_every_custom_resource_validates(rendered):
    overlay, objects = rendered
    found = custom_resources(objects)
    assert len(found) >= 6 + 5 + 3, [o["kind"] for o in found]
    errors = []
    for obj in found:
        try:
            validate_custom_resource(obj)
        except CustomResourceError as error:
            errors.append(str(error))
    assert not errors, f"{overlay}:\n" + "\n".join(errors)


def test_the_overlays_render_the_targeted_kinds(rendered):
    """Exactly the kinds the README marks as in the overlays: a new kind needs its CRD vendored."""
    overlay, objects = rendered
    kinds = {(split_api_version(o["apiVersion"])[0], o["kind"]) for o in custom_resources(objects)}
    marked = {(t.group, t.kind) for t in targets().values() if t.rendered}
    assert kinds == marked, (f"{overlay} renders {sorted(kinds - marked)} not marked `yes` and does not render "
                             f"{sorted(marked - kinds)} marked `yes` in tests/data/crds/README.md")


def test_the_vendored_files_are_the_ones_the_readme_names():
    files = {p.name for p in CRDS.glob("*.yaml")}
    assert files == set(targets()), "tests/data/crds/README.md names every vendored file, and only those"
    known = definitions()
    assert {(t.group, t.kind) for t in targets().values()} == set(known)
    for target in targets().values():
        definition = known[(target.group, target.kind)]
        assert definition.file == target.file, target
        assert definition.served(), f"{target.file}: no version is served"
        for version in definition.served():
            assert definition.versions[version]["schema"]["openAPIV3Schema"]["properties"], (target.file, version)
        assert re.fullmatch(r"[0-9a-f]{40}", target.commit) and target.version in target.tag, target
        assert target.path.endswith(".yaml") and "/" in target.repository, target
    operators = {t.operator for t in targets().values()}
    assert operators == {"Strimzi", "CloudNativePG", "Barman Cloud plugin", "Prometheus Operator"}


def test_the_docs_name_the_targeted_versions():
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    section = text.split("\n## On Kubernetes\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"^- \*\*Operator versions targeted\*\*(.*?)(?=^- |\Z)", section, re.M | re.S)
    assert match, "docs/operations.md, On Kubernetes: the bullet **Operator versions targeted**"
    bullet = " ".join(match.group(1).split())
    for target in targets().values():
        assert f"{target.operator} {target.version}" in bullet, f"{target.operator} {target.version}"
    assert "tests/data/crds" in bullet


# -- the validator is strict (and not blind) ------------------------------------------------------

def base(file: str, kind: str) -> dict:
    """The first object of ``kind`` in a base manifest (no kubectl needed)."""
    found = [d for d in yaml.safe_load_all((BASE / file).read_text(encoding="utf-8")) if d and d["kind"] == kind]
    assert found, f"no {kind} in {file}"
    return copy.deepcopy(found[0])


TOPIC = ("kafka-topics.yaml", "KafkaTopic")
CLUSTER = ("postgres.yaml", "Cluster")
SERVICE_MONITOR = ("monitoring/monitors.yaml", "ServiceMonitor")
POD_MONITOR = ("monitoring/monitors.yaml", "PodMonitor")
RULE = ("monitoring/prometheusrule.yaml", "PrometheusRule")


def test_the_base_resources_validate():
    for source in (TOPIC, CLUSTER, SERVICE_MONITOR, POD_MONITOR, RULE):
        validate_custom_resource(base(*source))


def _set(obj: dict, path: str, value) -> dict:
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    target = obj
    for part in parents:
        target = target[part]
    target[last] = value
    return obj


def _rename(obj: dict, path: str, new: str) -> dict:
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    target = obj
    for part in parents:
        target = target[part]
    target[new] = target.pop(last)
    return obj


@pytest.mark.parametrize("source, path, misspelt", [
    (TOPIC, "spec.partitions", "partition"),
    (TOPIC, "spec", "sepc"),
    (CLUSTER, "spec.storage.size", "sise"),
    (CLUSTER, "spec.bootstrap.initdb.database", "databse"),
    (CLUSTER, "spec.resources.requests", "request"),
    (SERVICE_MONITOR, "spec.endpoints.0.port", "portt"),
    (POD_MONITOR, "spec.podMetricsEndpoints.0.path", "paht"),
    (RULE, "spec.groups.0.rules.0.labels", "label"),
    (TOPIC, "metadata.labels", "label"),
])
def test_a_misspelt_field_is_rejected(source, path, misspelt):
    obj = _rename(base(*source), path, misspelt)
    with pytest.raises(CustomResourceError, match=rf"unknown field\(s\) {misspelt}\b"):
        validate_custom_resource(obj)


@pytest.mark.parametrize("source, path, value", [
    (TOPIC, "spec.partitions", "6"),
    (TOPIC, "spec.partitions", 0),  # minimum: 1
    (TOPIC, "spec.config", ["retention.ms=1"]),
    (CLUSTER, "spec.instances", "3"),
    (CLUSTER, "spec.resources.limits.memory", ["1Gi"]),  # int-or-string, not a list
    (CLUSTER, "spec.postgresql.parameters.max_connections", 200),  # a map of strings
    (SERVICE_MONITOR, "spec.endpoints", {"port": "http"}),
    (RULE, "spec.groups.0.rules.0.for", "ten minutes"),  # a duration pattern
    (TOPIC, "metadata.name", 7),
])
def test_a_wrong_type_or_value_is_rejected(source, path, value):
    obj = _set(base(*source), path, value)
    with pytest.raises(CustomResourceError, match=rf"\n  {re.escape(path)}: "):
        validate_custom_resource(obj)


def test_what_the_schemas_allow_is_accepted():
    """Not a validator that refuses everything: int-or-string both ways, free-form maps."""
    cluster = base(*CLUSTER)
    for memory in ("2Gi", 2147483648):
        validate_custom_resource(_set(cluster, "spec.resources.limits.memory", memory))
    topic = base(*TOPIC)
    topic["spec"]["config"].update({"segment.bytes": 1073741824, "any.key": ["the", "operator's", "business"]})
    validate_custom_resource(topic)  # spec.config: x-kubernetes-preserve-unknown-fields
    del topic["spec"]["topicName"]  # optional: defaults to metadata.name
    validate_custom_resource(topic)


def test_a_missing_required_field_is_rejected():
    topic = base(*TOPIC)
    del topic["spec"]  # required in kafka.strimzi.io/v1
    with pytest.raises(CustomResourceError, match="'spec' is a required property"):
        validate_custom_resource(topic)
    rule = base(*RULE)
    del rule["spec"]["groups"][0]["rules"][0]["expr"]
    with pytest.raises(CustomResourceError, match="'expr' is a required property"):
        validate_custom_resource(rule)
    nameless = base(*TOPIC)
    del nameless["metadata"]["name"]
    with pytest.raises(CustomResourceError, match="'name' is a required property"):
        validate_custom_resource(nameless)


def test_an_api_version_the_operator_does_not_serve_is_rejected(tmp_path):
    topic = _set(base(*TOPIC), "apiVersion", "kafka.strimzi.io/v1beta2")
    [strimzi] = [t for t in targets().values() if t.kind == "KafkaTopic"]
    with pytest.raises(CustomResourceError, match=rf"Strimzi {re.escape(strimzi.version)} no longer serves "
                                                  r"kafka.strimzi.io/v1beta2; served: kafka.strimzi.io/v1"):
        validate_custom_resource(topic)
    # A version still listed in a CRD but with `served: false` is refused too.
    crd = yaml.safe_load((CRDS / strimzi.file).read_text(encoding="utf-8"))
    old = copy.deepcopy(crd["spec"]["versions"][0])
    old.update(name="v1beta2", served=False, storage=False)
    crd["spec"]["versions"].append(old)
    (tmp_path / strimzi.file).write_text(yaml.safe_dump(crd), encoding="utf-8")
    assert set(load_definitions(tmp_path)) == {("kafka.strimzi.io", "KafkaTopic")}
    with pytest.raises(CustomResourceError, match=r"does not serve \(served: false\) kafka.strimzi.io/v1beta2"):
        validate_custom_resource(topic, tmp_path)
    validate_custom_resource(_set(topic, "apiVersion", "kafka.strimzi.io/v1"), tmp_path)


@pytest.mark.parametrize("api_version, kind", [
    ("kafka.strimzi.io/v1", "KafkaTopics"),
    ("kafka.strimzi.io/v1", "Kafka"),  # the cluster is the platform's prerequisite, not in the manifests
    ("cert-manager.io/v1", "Certificate"),  # an operator nobody vendored
    ("monitoring.coreos.com/v1", "Probe"),
])
def test_a_kind_without_a_vendored_crd_is_rejected(api_version, kind):
    obj = {"apiVersion": api_version, "kind": kind, "metadata": {"name": "x"}, "spec": {}}
    assert is_custom_resource(obj)
    with pytest.raises(CustomResourceError, match=f"no CRD defines kind {kind} of group"):
        validate_custom_resource(obj)


def test_built_in_kinds_are_left_to_kubernetes_validate():
    for api_version in ("v1", "apps/v1", "batch/v1", "networking.k8s.io/v1", "policy/v1", "autoscaling/v2"):
        assert not is_custom_resource({"apiVersion": api_version, "kind": "Anything"}), api_version
