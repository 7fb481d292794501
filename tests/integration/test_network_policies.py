"""The NetworkPolicies of each overlay allow exactly the connections the system needs, pod by pod.

Each overlay is rendered with ``kubectl kustomize``; its pods are listed (every Deployment's, Job's
and CronJob's pod, each CloudNativePG cluster's primary, replica and jobs, the Strimzi Kafka nodes
and entity operator, a stray pod of the namespace) with their peers elsewhere (the operators in
their namespaces, Prometheus, ingress-nginx, DNS, another namespace's pod, and the API server,
object storage and the identity provider outside the cluster: ``tests/support/netpol.py``). For
every ordered pair of them with at least one end in the namespace, and every port that the table
or the policies name (and a few more), the policies are evaluated as Kubernetes does; the open
connections must be exactly those of :func:`table` — nothing more, nothing less. The assumptions
about the cluster (operators' namespaces, Strimzi's own policies off, the API server and object
storage at addresses outside the pod network) are in docs/operations.md, "Network policies".
"""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import require_tool
from tests.support import netpol
from tests.support.netpol import Endpoint, NetworkPolicies, of_kind

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ("staging", "production")

# Each app: the pods it may have (a Deployment's, Job's or CronJob's name; those the overlay does
# not render are skipped) and its database cluster.
APPS = {
    "projects": (("projects", "projects-relay", "projects-migrate", "projects-close-due-rounds"), "projects-db"),
    "volunteers": (("volunteers", "volunteers-relay", "volunteers-consumer", "volunteers-cases", "volunteers-migrate"),
                   "volunteers-db"),
    "feedback": (("feedback", "feedback-relay", "feedback-consumer", "feedback-migrate", "feedback-sweep-overdue"),
                 "feedback-db"),
    "gateway": (("gateway", "gateway-feed"), "gateway-db"),
    "web": (("web",), "web-db"),
}
SERVICES = ("projects", "volunteers", "feedback")
APIS = (*SERVICES, "gateway")
# The key store (COCREATE_KEYSTORE_URL): one database for every pod of the services and the gateway,
# and for no other pod of the platform.
KEYSTORE = "keys-db"
KEYSTORE_CLIENTS = tuple(name for app in APIS for name in APPS[app][0])
# The only processes that open a Kafka client.
KAFKA_CLIENTS = ("projects-relay", "volunteers-relay", "feedback-relay", "volunteers-consumer", "volunteers-cases",
                 "feedback-consumer", "gateway-feed")
# What Prometheus scrapes on each pod: the monitors' `http` (APIs, web client) and `health` (workers).
SCRAPED = {**{api: 8000 for api in APIS}, "web": 8080, **{worker: 9100 for worker in KAFKA_CLIENTS}}
KAFKA_NODES = ("kafka-broker", "kafka-controller")
UDP = "UDP"
# Ports checked beyond those the table and the policies name: neighbours of those, common services,
# and other protocols on the named numbers.
MORE_PORTS = [("TCP", p) for p in (22, 53, 80, 443, 2379, 3000, 5433, 6443, 8001, 8081, 8443, 9093, 9100, 9187,
                                   9404, 10250)] + [(UDP, 443), (UDP, 5432), (UDP, 9092), ("SCTP", 5432)]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request) -> tuple[str, list[dict]]:
    kubectl = require_tool("kubectl", "kubectl with its built-in kustomize")
    done = subprocess.run([kubectl, "kustomize", str(ROOT / "deploy" / "k8s" / "overlays" / request.param)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return request.param, [d for d in yaml.safe_load_all(done.stdout) if d]


def table(objects, pods: dict[str, Endpoint]) -> list[tuple[list[str], list[str], list, str]]:
    """The connections the system needs: rows of (from, to, ports, why); a port is a TCP number or
    (protocol, number). "Outside" is any address outside the namespace: a NetworkPolicy cannot name
    the identity provider, the API server or object storage, so those rules open their port to
    every address, which the pods of the namespace refuse by their own policies."""
    namespace = objects[0]["metadata"]["namespace"]
    here = [name for name, pod in pods.items() if pod.namespace == namespace]
    outside = [name for name, pod in pods.items() if pod.namespace != namespace]
    clusters = [c["metadata"]["name"] for c in of_kind(objects, "Cluster")]

    def instances(cluster):
        return [n for n in (f"{cluster}-primary", f"{cluster}-replica") if n in pods]

    def of_cluster(cluster):  # its instances and CloudNativePG's jobs
        return [n for n in pods if pods[n].labels.get("cnpg.io/cluster") == cluster]

    def present(names):
        return [n for n in names if n in pods]

    brokers = ["kafka-broker"]
    rows = [
        (["ingress-nginx"], ["gateway"], [8000], "the Ingress's /api"),
        (["ingress-nginx"], ["web"], [8080], "the Ingress's /"),
        (["web"], ["gateway"], [8000], "the web client is a client of the gateway"),
        (["gateway"], list(SERVICES), [8000], "the gateway calls the services"),
        *[(present(app_pods), instances(database), [5432], f"{app}'s pods use its database")
          for app, (app_pods, database) in APPS.items()],
        (present(KEYSTORE_CLIENTS), instances(KEYSTORE), [5432],
         "every process of the services and the gateway seals and opens personal fields with the key store"),
        (present(KAFKA_CLIENTS), brokers, [9092], "relays publish, consumers and the feed worker consume"),
        ([*APIS, "web"], outside, [443], "the identity provider (keys, the web client's sign-in)"),
        *[(["prometheus"], [name], [port], "metrics (ServiceMonitor, PodMonitor)") for name, port in SCRAPED.items()
          if name in pods],
        (here, ["dns"], [(UDP, 53), 53], "names"),
        # CloudNativePG
        (["cnpg-operator"], [i for c in clusters for i in instances(c)], [8000, 5432], "the operator manages them"),
        *[(of_cluster(c), instances(c), [5432], "replication, pg_rewind, the join job's base backup")
          for c in clusters],
        *[(instances(c), instances(c), [8000], "the instance managers' isolation check") for c in clusters],
        ([n for c in clusters for n in of_cluster(c)], outside, [443, 6443],
         "the API server; WAL and base backups to object storage"),
        (["prometheus"], [i for c in clusters for i in instances(c)], [9187], "PostgreSQL's exporter"),
        # Strimzi
        (list(KAFKA_NODES), list(KAFKA_NODES), [9090, 9091], "control plane and replication"),
        (["strimzi-operator"], list(KAFKA_NODES), [9090, 9091, 8443], "the cluster operator rolls and checks them"),
        (["entity-operator"], list(KAFKA_NODES), [9091], "the topic operator creates the KafkaTopics"),
        (["entity-operator"], outside, [443, 6443], "the topic operator watches KafkaTopics"),
        (["prometheus"], list(KAFKA_NODES), [9404], "Kafka's metrics"),
        (["prometheus"], ["entity-operator"], [8080], "the topic operator's metrics"),
    ]
    for sources, destinations, _, why in rows:
        assert sources and destinations, why
    return rows


def connection(port) -> tuple[str, int]:
    return port if isinstance(port, tuple) else ("TCP", port)


def needed(objects, pods) -> set[tuple[str, str, str, int]]:
    return {(source, destination, *connection(port))
            for sources, destinations, ports, _ in table(objects, pods)
            for source in sources for destination in destinations for port in ports
            if source != destination}


def checked_ports(objects, pods) -> set[tuple[str, int]]:
    """Every port of the table, every number the policies name and every named port resolved on
    the pods, plus MORE_PORTS."""
    ports = {connection(p) for *_, row_ports, _ in table(objects, pods) for p in row_ports} | set(MORE_PORTS)
    for policy in of_kind(objects, "NetworkPolicy"):
        for rule in [*policy["spec"].get("ingress", []), *policy["spec"].get("egress", [])]:
            for entry in rule.get("ports") or []:
                if isinstance(entry.get("port"), int):
                    for number in range(entry["port"], entry.get("endPort", entry["port"]) + 1):
                        ports.add((entry.get("protocol", "TCP"), number))
    for pod in pods.values():
        ports |= set((pod.ports or {}).values())
    return ports


def allowed(objects, pods) -> set[tuple[str, str, str, int]]:
    """What the policies let through, among the pods and ports checked: pairs with at least one end
    in the namespace (the others are not this overlay's business), a pod never with itself."""
    namespace = objects[0]["metadata"]["namespace"]
    policies = NetworkPolicies(objects)
    ports = checked_ports(objects, pods)
    return {(source, destination, protocol, port)
            for source, a in pods.items() for destination, b in pods.items()
            if source != destination and namespace in (a.namespace, b.namespace)
            for protocol, port in ports if policies.can_connect(a, b, port, protocol)}


def difference(objects, pods) -> tuple[list, list]:
    """(open but not needed, needed but closed), sorted."""
    open_, wanted = allowed(objects, pods), needed(objects, pods)
    return sorted(open_ - wanted), sorted(wanted - open_)


def describe(rows) -> str:
    return "\n".join(f"  {source} -> {destination} {port}/{protocol}" for source, destination, protocol, port in rows)


def test_the_policies_allow_exactly_the_needed_connections(rendered):
    _, objects = rendered
    pods = netpol.pods(objects)
    more, less = difference(objects, pods)
    assert not more and not less, (f"open but not in the table ({len(more)}):\n{describe(more)}\n"
                                   f"in the table but blocked ({len(less)}):\n{describe(less)}")


def test_the_table_knows_every_pod_of_the_overlay(rendered):
    """A new Deployment, Job or CronJob must find its place in the table (else it would be checked
    only as "nothing allowed" and its needs would go unstated)."""
    _, objects = rendered
    workloads = {o["metadata"]["name"] for o in objects if o["kind"] in ("Deployment", "StatefulSet", "Job", "CronJob")}
    known = {name for app_pods, _ in APPS.values() for name in app_pods}
    assert workloads <= known, f"pods missing from the table: {sorted(workloads - known)}"
    assert {"projects", "volunteers", "feedback", "gateway", "gateway-feed", "web"} <= workloads
    assert {c["metadata"]["name"] for c in of_kind(objects, "Cluster")} == {db for _, db in APPS.values()} | {KEYSTORE}
    assert {"volunteers-cases", "gateway-feed", "feedback-sweep-overdue", "projects-close-due-rounds"} <= workloads


def test_every_pod_of_the_namespace_is_isolated_both_ways(rendered):
    """Each pod that lives in the namespace — the platform's, CloudNativePG's, Strimzi's, a stray
    one — is selected by policies of both directions, so only what they allow passes."""
    _, objects = rendered
    namespace = objects[0]["metadata"]["namespace"]
    policies = NetworkPolicies(objects)
    for name, pod in netpol.pods(objects).items():
        if pod.namespace == namespace:
            assert policies.isolated("Ingress", pod) and policies.isolated("Egress", pod), name


def test_neither_the_apis_nor_the_web_client_reach_kafka(rendered):
    """Their own egress refuses it, whatever Kafka's side would accept (e.g. Strimzi's generated
    policy, which opens the listeners to every pod)."""
    _, objects = rendered
    pods, policies = netpol.pods(objects), NetworkPolicies(objects)
    for name in (*APIS, "web"):
        for node in KAFKA_NODES:
            for port in (9090, 9091, 9092, 8443, 9404):
                assert not policies.admitted("Egress", pods[name], pods[node], port), (name, node, port)


def test_the_key_store_is_reached_by_the_services_and_the_gateway_only(rendered):
    """The key store's own ingress refuses the web client, Kafka and every other pod of the namespace
    (whatever their egress would allow), and their egress refuses it too."""
    _, objects = rendered
    pods, policies = netpol.pods(objects), NetworkPolicies(objects)
    keys = [name for name in pods if name in (f"{KEYSTORE}-primary", f"{KEYSTORE}-replica")]
    assert keys
    outsiders = ["web", *KAFKA_NODES, "entity-operator", "stray", "elsewhere",
                 *(f"{db}-primary" for _, db in APPS.values())]
    for name in outsiders:
        for instance in keys:
            for port in (5432, 8000):
                assert not policies.admitted("Ingress", pods[instance], pods[name], port), (name, instance, port)
                if pods[name].namespace == pods[instance].namespace:  # another namespace's egress is not ours
                    assert not policies.admitted("Egress", pods[name], pods[instance], port), (name, instance, port)
    for name in KEYSTORE_CLIENTS:
        if name in pods:
            assert all(policies.can_connect(pods[name], pods[instance], 5432) for instance in keys), name
            assert not any(policies.can_connect(pods[name], pods[instance], 8000) for instance in keys), name


def without(objects, name):
    return [o for o in objects if not (o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == name)]


def policy(objects, name) -> dict:
    [found] = [o for o in of_kind(objects, "NetworkPolicy") if o["metadata"]["name"] == name]
    return found


def test_the_check_fails_when_a_policy_goes_or_widens(rendered):
    _, objects = rendered
    pods = netpol.pods(objects)
    namespace = objects[0]["metadata"]["namespace"]
    # A policy removed: its connections are missing.
    more, less = difference(without(objects, "kafka-clients-egress"), pods)
    assert not more and ("gateway-feed", "kafka-broker", "TCP", 9092) in less
    more, less = difference(without(objects, "keystore-clients-egress"), pods)
    assert not more and {("gateway-feed", f"{KEYSTORE}-primary", "TCP", 5432),
                         ("volunteers-cases", f"{KEYSTORE}-primary", "TCP", 5432)} <= set(less)
    assert ("volunteers-cases", "volunteers-db-primary", "TCP", 5432) not in less  # its own database: another policy
    more, less = difference(without(objects, "databases-operator-and-metrics"), pods)
    assert not more and ("cnpg-operator", "web-db-primary", "TCP", 8000) in less
    assert ("prometheus", "projects-db-primary", "TCP", 9187) in less
    # Without default-deny-all, whatever no policy selects is open: the stray pod, to begin with.
    more, _ = difference(without(objects, "default-deny-all"), pods)
    assert ("elsewhere", "stray", "TCP", 22) in more
    # A policy widened: the APIs reach Kafka again (as before issue 20), or the Prometheus rule
    # opens every port.
    widened = copy.deepcopy(objects)
    platform = {"matchLabels": {"app.kubernetes.io/part-of": "cocreate"}}
    policy(widened, "kafka-clients-egress")["spec"]["podSelector"] = platform
    policy(widened, "kafka-listener-ingress")["spec"]["ingress"][0]["from"][0]["podSelector"] = platform
    more, less = difference(widened, pods)
    assert not less and {("projects", "kafka-broker", "TCP", 9092), ("web", "kafka-broker", "TCP", 9092)} <= set(more)
    widened = copy.deepcopy(objects)
    del policy(widened, "prometheus-scrapes-metrics")["spec"]["ingress"][0]["ports"]
    more, _ = difference(widened, pods)
    assert ("prometheus", "gateway", "TCP", 5432) in more
    # The key store opened to the whole platform: the web client and the other databases' pods too.
    widened = copy.deepcopy(objects)
    policy(widened, "keystore-clients-egress")["spec"]["podSelector"] = platform
    policy(widened, f"{KEYSTORE}-ingress")["spec"]["ingress"][0]["from"][0]["podSelector"] = platform
    more, less = difference(widened, pods)
    assert not less and ("web", f"{KEYSTORE}-primary", "TCP", 5432) in more
    # Strimzi's own policy for the cluster's brokers, as its cluster operator generates it when
    # STRIMZI_NETWORK_POLICY_GENERATION is left on and the listener has no networkPolicyPeers
    # (KafkaCluster.generateNetworkPolicy): the listener and the metrics open to every pod.
    kafka = netpol.kafka_cluster_name(objects)
    kafka_pods = {"strimzi.io/cluster": kafka, "strimzi.io/name": f"{kafka}-kafka", "strimzi.io/kind": "Kafka"}
    generated = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                 "metadata": {"name": f"{kafka}-network-policy-kafka", "namespace": namespace},
                 "spec": {"podSelector": {"matchLabels": kafka_pods}, "ingress": [
                     {"ports": [{"port": 9090, "protocol": "TCP"}], "from": [
                         {"podSelector": {"matchLabels": kafka_pods}},
                         {"podSelector": {"matchLabels": {"strimzi.io/kind": "cluster-operator"}},
                          "namespaceSelector": {}}]},
                     {"ports": [{"port": 9092, "protocol": "TCP"}]},
                     {"ports": [{"port": 9404, "protocol": "TCP"}]}]}}
    more, less = difference([*objects, generated], pods)
    assert not less and {("elsewhere", "kafka-broker", "TCP", 9092), ("elsewhere", "kafka-controller", "TCP", 9404),
                         ("prometheus", "kafka-broker", "TCP", 9092)} <= set(more)
    for source in (*APIS, "web", "stray"):  # their own egress still refuses it
        assert (source, "kafka-broker", "TCP", 9092) not in more


# -- the evaluator itself, on small cases --------------------------------------------------------------

def np(name, spec, namespace="ns"):
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


A = Endpoint("ns", {"app": "a"}, {"web": ("TCP", 8080)}, "10.244.0.2")
B = Endpoint("ns", {"app": "b"}, {"web": ("TCP", 9000), "dns": ("UDP", 53)}, "10.244.0.3")
C = Endpoint("other", {"app": "a"}, {}, "10.244.1.2", {"team": "x"})
OUT = Endpoint(None, {}, {}, "203.0.113.9")


def test_policy_types_default_as_the_api_server_sets_them():
    # No policyTypes and no egress rules: Ingress only, even with `egress: []`.
    assert NetworkPolicies([np("p", {"podSelector": {}, "egress": []})]).isolated("Egress", A) is False
    assert NetworkPolicies([np("p", {"podSelector": {}})]).isolated("Ingress", A)
    only_egress_rule = NetworkPolicies([np("p", {"podSelector": {}, "egress": [{"ports": [{"port": 443}]}]})])
    assert only_egress_rule.isolated("Egress", A) and only_egress_rule.isolated("Ingress", A)
    assert only_egress_rule.can_connect(A, OUT, 443) and not only_egress_rule.can_connect(A, OUT, 80)
    # Explicit policyTypes win: Egress only leaves ingress open.
    egress_only = NetworkPolicies([np("p", {"podSelector": {}, "policyTypes": ["Egress"]})])
    assert not egress_only.isolated("Ingress", A) and egress_only.can_connect(OUT, A, 8080)
    # A policy of another namespace does not apply.
    assert not NetworkPolicies([np("p", {"podSelector": {}}, "other")]).isolated("Ingress", A)


def test_peers_combine_selectors_as_kubernetes_does():
    both = {"namespaceSelector": {"matchLabels": {"team": "x"}}, "podSelector": {"matchLabels": {"app": "a"}}}
    either = [{"namespaceSelector": {"matchLabels": {"team": "x"}}}, {"podSelector": {"matchLabels": {"app": "b"}}}]
    one_peer = NetworkPolicies([np("p", {"podSelector": {"matchLabels": {"app": "b"}}, "ingress": [{"from": [both]}]})])
    two_peers = NetworkPolicies([np("p", {"podSelector": {"matchLabels": {"app": "b"}},
                                          "ingress": [{"from": either}]})])
    assert one_peer.can_connect(C, B, 1) and not one_peer.can_connect(A, B, 1)  # A is in ns, not in team x
    assert two_peers.can_connect(C, B, 1) and not two_peers.can_connect(A, B, 1)
    assert two_peers.can_connect(Endpoint("ns", {"app": "b"}), B, 1)  # podSelector alone: the policy's namespace
    assert not two_peers.can_connect(Endpoint("third", {"app": "b"}), B, 1)
    assert not one_peer.can_connect(OUT, B, 1)  # selectors select pods, never outside addresses
    everyone = NetworkPolicies([np("p", {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}}]}]})])
    assert everyone.can_connect(C, A, 1) and not everyone.can_connect(OUT, A, 1)
    no_peers = NetworkPolicies([np("p", {"podSelector": {}, "ingress": [{}]})])
    assert no_peers.can_connect(OUT, A, 1)
    expressions = {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["a"]},
                                        {"key": "tier", "operator": "DoesNotExist"}]}
    assert netpol.selects(expressions, {"app": "b"}) and netpol.selects(expressions, {})
    assert not netpol.selects(expressions, {"app": "a"}) and not netpol.selects(expressions, {"tier": "x"})


def test_ip_blocks_honour_their_exceptions():
    block = {"ipBlock": {"cidr": "203.0.113.0/24", "except": ["203.0.113.8/29"]}}
    policies = NetworkPolicies([np("p", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [block]}]})])
    assert policies.can_connect(A, Endpoint(None, {}, {}, "203.0.113.20"), 443)
    assert not policies.can_connect(A, OUT, 443)  # 203.0.113.9 is excepted
    assert not policies.can_connect(A, Endpoint(None, {}, {}, "198.51.100.1"), 443)
    assert not policies.can_connect(A, B, 443)  # B's address is outside the block
    assert policies.can_connect(A, Endpoint("ns", {"app": "b"}), 443)  # an unknown address: counted as inside
    assert netpol.in_block({"cidr": "0.0.0.0/0"}, "10.244.0.3")
    assert not netpol.in_block({"cidr": "0.0.0.0/0"}, "2001:db8::1")  # IPv4 blocks hold no IPv6 address


def test_ports_protocols_ranges_and_names():
    ingress = [{"ports": [{"port": "web"}, {"port": 5000, "endPort": 5010}, {"protocol": "UDP", "port": "dns"}]}]
    policies = NetworkPolicies([np("p", {"podSelector": {}, "ingress": ingress})])
    assert policies.can_connect(OUT, A, 8080) and not policies.can_connect(OUT, A, 9000)  # `web` is A's 8080
    assert policies.can_connect(OUT, B, 9000) and not policies.can_connect(OUT, B, 8080)  # and B's 9000
    assert policies.can_connect(OUT, B, 53, "UDP") and not policies.can_connect(OUT, B, 53)
    assert policies.can_connect(OUT, A, 5005) and not policies.can_connect(OUT, A, 5011)
    assert not policies.can_connect(OUT, A, 5005, "UDP")
    # An egress rule's named port is the destination's; an outside address has none.
    egress = NetworkPolicies([np("p", {"podSelector": {}, "policyTypes": ["Egress"],
                                       "egress": [{"ports": [{"port": "web"}]}]})])
    assert egress.can_connect(A, B, 9000) and not egress.can_connect(A, B, 8080)
    assert not egress.can_connect(A, OUT, 8080)
    # Every port of a protocol.
    tcp = NetworkPolicies([np("p", {"podSelector": {}, "ingress": [{"ports": [{"protocol": "TCP"}]}]})])
    assert tcp.can_connect(OUT, A, 1) and not tcp.can_connect(OUT, A, 1, "UDP")


def test_both_ends_must_agree():
    sends = np("sends", {"podSelector": {"matchLabels": {"app": "a"}}, "policyTypes": ["Egress"],
                         "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "b"}}}]}]})
    accepts = np("accepts", {"podSelector": {"matchLabels": {"app": "b"}},
                             "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "a"}}}]}]})
    deny = np("deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})
    assert NetworkPolicies([deny, sends, accepts]).can_connect(A, B, 1)
    assert not NetworkPolicies([deny, sends]).can_connect(A, B, 1)
    assert not NetworkPolicies([deny, accepts]).can_connect(A, B, 1)
    assert not NetworkPolicies([deny, sends, accepts]).can_connect(B, A, 1)
    # The plain (namespace, labels) pairs are still accepted.
    assert netpol.can_connect([deny, sends, accepts], ("ns", {"app": "a"}), ("ns", {"app": "b"}), 1)
