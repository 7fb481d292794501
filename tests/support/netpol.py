"""Who may connect to whom, evaluated offline from NetworkPolicies as Kubernetes defines them
(networking.k8s.io/v1), and the pods of a rendered overlay with the labels their operators give them.

The semantics followed:

- A policy applies to the pods of its namespace its ``podSelector`` selects (``{}``: all of them),
  for the directions of its ``policyTypes``; without ``policyTypes`` the API server sets
  ``[Ingress]``, plus ``Egress`` when the policy has at least one egress rule.
- A pod to which no policy of a direction applies is not isolated in that direction: everything
  passes. An isolated pod sends (accepts) only what some rule of those policies allows, and a
  connection needs both: the source's egress and the destination's ingress.
- A rule without peers (``from``/``to`` absent or empty) matches every peer, inside the cluster or
  not; without ``ports``, every port and protocol.
- A peer with ``podSelector`` only: pods of the policy's namespace; ``namespaceSelector`` only:
  every pod of the selected namespaces; both in one peer: pods matching both (not either);
  ``ipBlock``: addresses in ``cidr`` and in none of ``except``. Whether an ``ipBlock`` matches pod
  addresses depends on the network plugin; it is counted here as matching a pod whose address is
  in the block (as Calico does), and any pod whose address is unknown — the generous reading.
- A port entry: ``protocol`` defaults to TCP; no ``port``: every port of that protocol; a number
  with ``endPort``: the range; a name: the container port of that name on the destination pod (for
  ingress rules the selected pod, for egress rules the peer), which never matches an address
  outside the cluster; a destination whose port names are unknown counts as having it.
- An address outside the cluster (namespace ``None``) is subject to no policy; namespaces are
  known by their ``kubernetes.io/metadata.name`` label (plus any given in ``namespace_labels``).
- Not modelled: traffic from the pod's own node (kubelet probes), which network plugins let pass,
  and a pod connecting to itself (loopback).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Mapping

PROTOCOLS = ("TCP", "UDP", "SCTP")


@dataclass(frozen=True)
class Endpoint:
    """A pod (its namespace, labels, named container ports and address) or, with namespace
    ``None``, an address outside the cluster."""

    namespace: str | None
    labels: Mapping[str, str] = field(default_factory=dict)
    ports: Mapping[str, tuple[str, int]] | None = None  # name -> (protocol, number); None: unknown
    address: str | None = None
    namespace_labels: Mapping[str, str] = field(default_factory=dict)

    def __iter__(self):  # ``namespace, labels = endpoint``, as for the plain pairs also accepted
        return iter((self.namespace, self.labels))


def as_endpoint(endpoint) -> Endpoint:
    """An :class:`Endpoint`, or a pair ``(namespace, labels)`` (ports and address unknown)."""
    if isinstance(endpoint, Endpoint):
        return endpoint
    namespace, labels = endpoint
    return Endpoint(namespace, dict(labels), ports={} if namespace is None else None)


def of_kind(objects, kind):
    return [o for o in objects if o.get("kind") == kind]


def selects(selector: dict | None, labels: Mapping[str, str]) -> bool:
    """Whether a label selector (``None`` or ``{}``: everything) selects these labels."""
    selector = selector or {}
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        if not {"In": key in labels and labels[key] in values, "NotIn": labels.get(key) not in values,
                "Exists": key in labels, "DoesNotExist": key not in labels}[operator]:
            return False
    return True


def in_block(block: dict, address: str | None) -> bool:
    if address is None:
        return True  # an address range may hold any pod whose address is unknown
    ip = ipaddress.ip_address(address)
    cidr = ipaddress.ip_network(block["cidr"], strict=False)
    if ip.version != cidr.version or ip not in cidr:
        return False
    return not any(ip.version == ipaddress.ip_network(e, strict=False).version
                   and ip in ipaddress.ip_network(e, strict=False) for e in block.get("except") or [])


def peer_matches(peer: dict, policy_namespace: str, endpoint) -> bool:
    endpoint = as_endpoint(endpoint)
    if "ipBlock" in peer:
        return in_block(peer["ipBlock"], endpoint.address)
    if endpoint.namespace is None:
        return False  # pod and namespace selectors select pods only
    if "namespaceSelector" in peer:
        namespace_labels = {"kubernetes.io/metadata.name": endpoint.namespace, **endpoint.namespace_labels}
        if not selects(peer["namespaceSelector"], namespace_labels):
            return False
    elif endpoint.namespace != policy_namespace:
        return False
    return selects(peer.get("podSelector"), endpoint.labels)


def port_matches(ports, port: int, protocol: str = "TCP", named: Mapping[str, tuple[str, int]] | None = None) -> bool:
    """Whether a rule's ``ports`` allow ``port``/``protocol`` on a destination whose named container
    ports are ``named`` (``None``: unknown, so any name counts as matching)."""
    if not ports:
        return True
    for entry in ports:
        if entry.get("protocol", "TCP") != protocol:
            continue
        number = entry.get("port")
        if number is None:
            return True
        if isinstance(number, str):
            if named is None or named.get(number) == (protocol, port):
                return True
        elif number == port or number <= port <= entry.get("endPort", number):
            return True
    return False


def policy_types(spec: dict) -> list[str]:
    return spec.get("policyTypes") or ["Ingress", *(["Egress"] if spec.get("egress") else [])]


class NetworkPolicies:
    """The NetworkPolicies of a list of rendered objects, for many questions (the policies that
    apply to each pod are looked up once)."""

    def __init__(self, objects):
        self.policies = of_kind(objects, "NetworkPolicy")
        self._applying: dict = {}

    def applying(self, direction: str, subject) -> list[dict]:
        """The policies of ``direction`` (Ingress or Egress) that apply to the pod ``subject``."""
        subject = as_endpoint(subject)
        if subject.namespace is None:
            return []
        key = (direction, subject.namespace, tuple(sorted(subject.labels.items())))
        if key not in self._applying:
            self._applying[key] = [
                p for p in self.policies
                if p["metadata"].get("namespace") == subject.namespace and direction in policy_types(p["spec"])
                and selects(p["spec"].get("podSelector"), subject.labels)]
        return self._applying[key]

    def isolated(self, direction: str, subject) -> bool:
        return bool(self.applying(direction, subject))

    def admitted(self, direction: str, subject, peer, port: int, protocol: str = "TCP") -> bool:
        """Whether the policies of ``subject`` let it send to (Egress) or accept from (Ingress)
        ``peer`` on ``port``/``protocol`` — the port being the destination's."""
        subject, peer = as_endpoint(subject), as_endpoint(peer)
        applying = self.applying(direction, subject)
        if not applying:
            return True
        key, side = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
        destination = subject if direction == "Ingress" else peer
        return any((not rule.get(side) or any(peer_matches(p, subject.namespace, peer) for p in rule[side]))
                   and port_matches(rule.get("ports"), port, protocol, destination.ports)
                   for policy in applying for rule in policy["spec"].get(key) or [])

    def can_connect(self, source, destination, port: int, protocol: str = "TCP") -> bool:
        return (self.admitted("Egress", source, destination, port, protocol)
                and self.admitted("Ingress", destination, source, port, protocol))


def admitted(objects, direction: str, subject, peer, port: int, protocol: str = "TCP") -> bool:
    return NetworkPolicies(objects).admitted(direction, subject, peer, port, protocol)


def can_connect(objects, source, destination, port: int, protocol: str = "TCP") -> bool:
    return NetworkPolicies(objects).can_connect(source, destination, port, protocol)


# -- the pods of a rendered overlay ------------------------------------------------------------------

# Where the cluster runs what the platform relies on (docs/operations.md, "Network policies").
CNPG_NAMESPACE = "cnpg-system"  # CloudNativePG's operator (its default), and the Barman Cloud plugin
STRIMZI_NAMESPACE = "strimzi"  # Strimzi's cluster operator
MONITORING_NAMESPACE = "monitoring"  # Prometheus
INGRESS_NAMESPACE = "ingress-nginx"
DNS_NAMESPACE = "kube-system"
# Addresses outside the cluster's pod network (documentation ranges, RFC 5737).
API_SERVER, OBJECT_STORAGE, IDENTITY_PROVIDER = "192.0.2.10", "198.51.100.20", "203.0.113.30"


def pod_template(obj: dict) -> dict:
    spec = obj["spec"]
    if obj["kind"] == "CronJob":
        return spec["jobTemplate"]["spec"]["template"]
    return spec["template"]


def container_ports(template: dict) -> dict[str, tuple[str, int]]:
    spec = template["spec"]
    return {p["name"]: (p.get("protocol", "TCP"), p["containerPort"])
            for c in [*spec.get("initContainers", []), *spec.get("containers", [])]
            for p in c.get("ports", []) if p.get("name")}


class _Addresses:
    def __init__(self):
        self.next = 10

    def __call__(self) -> str:
        self.next += 1
        return f"10.244.{self.next // 250}.{self.next % 250 + 1}"


def kafka_cluster_name(objects) -> str:
    """The Strimzi Kafka cluster the topics belong to (their strimzi.io/cluster label)."""
    [name] = {t["metadata"]["labels"]["strimzi.io/cluster"] for t in of_kind(objects, "KafkaTopic")}
    return name


def pods(objects) -> dict[str, Endpoint]:
    """Every pod the platform's namespace holds, and its peers elsewhere, by name:

    - the pod of each Deployment, StatefulSet, Job and CronJob (by the object's name);
    - for each CloudNativePG Cluster ``<c>``: ``<c>-primary``, ``<c>-replica`` (more than one
      instance), the bootstrap job ``<c>-initdb`` and the replica-cloning job ``<c>-join`` (more
      than one instance), with the labels of CloudNativePG's pkg/specs/pods.go and jobs.go;
    - the Strimzi Kafka cluster's nodes ``kafka-broker`` and ``kafka-controller`` (two node pools
      with one role each; labels of Strimzi's KafkaPool and KafkaCluster) and its
      ``entity-operator``;
    - ``stray``: some other pod in the namespace (a debugging shell);
    - in other namespaces: ``cnpg-operator`` and ``barman-cloud-plugin``, ``strimzi-operator``,
      ``prometheus``, ``ingress-nginx``, ``dns``, ``elsewhere`` (any pod of another namespace);
    - outside the cluster: ``api-server``, ``object-storage``, ``identity-provider``.
    """
    namespace = objects[0]["metadata"]["namespace"]
    address = _Addresses()
    found: dict[str, Endpoint] = {}
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet", "Job", "CronJob"):
            template = pod_template(obj)
            found[obj["metadata"]["name"]] = Endpoint(namespace, dict(template["metadata"].get("labels") or {}),
                                                      container_ports(template), address())
    instance_ports = {"postgresql": ("TCP", 5432), "metrics": ("TCP", 9187), "status": ("TCP", 8000)}
    for cluster in of_kind(objects, "Cluster"):
        name = cluster["metadata"]["name"]
        common = {"cnpg.io/cluster": name, "app.kubernetes.io/name": "postgresql",
                  "app.kubernetes.io/instance": name, "app.kubernetes.io/component": "database",
                  "app.kubernetes.io/managed-by": "cloudnative-pg"}
        several = cluster["spec"].get("instances", 1) > 1
        roles = ("primary", "replica") if several else ("primary",)
        for serial, role in enumerate(roles, start=1):
            found[f"{name}-{role}"] = Endpoint(namespace, {
                **common, "cnpg.io/instanceName": f"{name}-{serial}", "cnpg.io/podRole": "instance",
                "cnpg.io/instanceRole": role, "role": role}, instance_ports, address())
        for job in ("initdb", "join") if several else ("initdb",):
            found[f"{name}-{job}"] = Endpoint(namespace, {**common, "cnpg.io/instanceName": f"{name}-1",
                                                          "cnpg.io/jobRole": job}, {}, address())
    kafka = kafka_cluster_name(objects)
    for pool, broker, controller in (("brokers", "true", "false"), ("controllers", "false", "true")):
        ports = {"tcp-kafkaagent": ("TCP", 8443), "tcp-prometheus": ("TCP", 9404)}
        if controller == "true":
            ports["tcp-ctrlplane"] = ("TCP", 9090)
        if broker == "true":
            ports.update({"tcp-replication": ("TCP", 9091), "tcp-clients": ("TCP", 9092)})
        found[f"kafka-{pool[:-1]}"] = Endpoint(namespace, {
            "strimzi.io/cluster": kafka, "strimzi.io/kind": "Kafka", "strimzi.io/name": f"{kafka}-kafka",
            "strimzi.io/component-type": "kafka", "strimzi.io/pool-name": pool,
            "strimzi.io/broker-role": broker, "strimzi.io/controller-role": controller,
            "app.kubernetes.io/name": "kafka", "app.kubernetes.io/instance": kafka,
            "app.kubernetes.io/part-of": f"strimzi-{kafka}", "app.kubernetes.io/managed-by": "strimzi-cluster-operator",
        }, ports, address())
    found["entity-operator"] = Endpoint(namespace, {
        "strimzi.io/cluster": kafka, "strimzi.io/kind": "Kafka", "strimzi.io/name": f"{kafka}-entity-operator",
        "strimzi.io/component-type": "entity-operator", "app.kubernetes.io/name": "entity-operator",
        "app.kubernetes.io/instance": kafka, "app.kubernetes.io/part-of": f"strimzi-{kafka}",
    }, {"healthcheck": ("TCP", 8080)}, address())
    found["stray"] = Endpoint(namespace, {"run": "debug-shell"}, {}, address())
    elsewhere = {
        "cnpg-operator": (CNPG_NAMESPACE, {"app.kubernetes.io/name": "cloudnative-pg"}),
        "barman-cloud-plugin": (CNPG_NAMESPACE, {"app.kubernetes.io/name": "plugin-barman-cloud"}),
        "strimzi-operator": (STRIMZI_NAMESPACE, {"name": "strimzi-cluster-operator",
                                                 "strimzi.io/kind": "cluster-operator"}),
        "prometheus": (MONITORING_NAMESPACE, {"app.kubernetes.io/name": "prometheus"}),
        "ingress-nginx": (INGRESS_NAMESPACE, {"app.kubernetes.io/name": "ingress-nginx",
                                              "app.kubernetes.io/component": "controller"}),
        "dns": (DNS_NAMESPACE, {"k8s-app": "kube-dns"}),
        "elsewhere": ("default", {"app": "curious"}),
    }
    for name, (other, labels) in elsewhere.items():
        found[name] = Endpoint(other, labels, None, address())
    outside = {"api-server": API_SERVER, "object-storage": OBJECT_STORAGE, "identity-provider": IDENTITY_PROVIDER}
    for name, at in outside.items():
        found[name] = Endpoint(None, {}, {}, at)
    return found


def endpoints(objects) -> dict[str, Endpoint]:
    """:func:`pods` with the short names the web client's path checks use: each database cluster's
    name for its primary, ``kafka`` for a broker."""
    found = pods(objects)
    databases = {c["metadata"]["name"]: found[f"{c['metadata']['name']}-primary"] for c in of_kind(objects, "Cluster")}
    return {**found, **databases, "kafka": found["kafka-broker"]}
