"""Releasing: the image built from a pinned base and hashed dependencies, an overlay pinned to the
pushed image's digest, and `kubectl apply -k` that works twice in a row and across an upgrade.

A release is rendered here as operators make one (docs/operations.md, "Build the image" and
"Deploy an overlay"): a copy of deploy/k8s, ``bin/pin-image <overlay> sha256:…``, ``kubectl
kustomize``. Release N+1 differs from release N by the image digest, the base's tag and a config
value. Every object the two have in common must change no field the API server refuses to change
("field is immutable": a Job's template, a workload's selector, a Service's clusterIP or type, an
immutable ConfigMap's data, a PVC's spec), and there is no Job at all: the schema migrations run
in the pods themselves (docs/operations.md, "Schema migrations"). The check itself is shown to
catch the migration Jobs of the earlier design and the other immutable fields.
"""

from __future__ import annotations

import copy
import importlib.machinery
import importlib.util
import inspect
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("staging", "production")
IMAGE = "ghcr.io/haicang/cocreate"
RELEASE_N = "sha256:" + "1f" * 32
RELEASE_N1 = "sha256:" + "2e" * 32
OPERATIONS = ROOT / "docs" / "operations.md"


def render(overlay_dir: Path) -> str:
    kubectl = require_tool("kubectl", "kubectl with its built-in kustomize")
    done = subprocess.run([kubectl, "kustomize", str(overlay_dir)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def objects_of(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def release(workdir: Path, digest: str, *, next_release: bool = False, extra_base: str | None = None) -> Path:
    """A copy of deploy/k8s made into a release: both overlays pinned to ``digest`` with the
    documented command. The next release also moves the base's tag and changes a config value;
    ``extra_base`` adds a manifest to the base (the earlier design's migration Job)."""
    k8s = workdir / "deploy" / "k8s"
    shutil.copytree(K8S, k8s)
    if next_release:
        config = k8s / "base" / "platform-config.yaml"
        text = config.read_text(encoding="utf-8")
        assert "COCREATE_LOG_LEVEL: INFO" in text
        config.write_text(text.replace("COCREATE_LOG_LEVEL: INFO", "COCREATE_LOG_LEVEL: DEBUG"), encoding="utf-8")
        kustomization = k8s / "base" / "kustomization.yaml"
        text = kustomization.read_text(encoding="utf-8")
        assert re.search(r'newTag: "?[^"\n]+"?', text)
        kustomization.write_text(re.sub(r'newTag: "?[^"\n]+"?', 'newTag: "99.0.0"', text), encoding="utf-8")
    if extra_base is not None:
        (k8s / "base" / "extra.yaml").write_text(extra_base, encoding="utf-8")
        kustomization = k8s / "base" / "kustomization.yaml"
        text = kustomization.read_text(encoding="utf-8")
        kustomization.write_text(text.replace("resources:\n", "resources:\n  - extra.yaml\n", 1), encoding="utf-8")
    for overlay in OVERLAYS:
        done = subprocess.run([sys.executable, str(ROOT / "bin" / "pin-image"), str(k8s / "overlays" / overlay), digest],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    return k8s


@pytest.fixture(scope="module")
def releases(tmp_path_factory) -> dict[str, tuple[list[dict], list[dict]]]:
    """overlay -> (release N's objects, release N+1's objects)."""
    n = release(tmp_path_factory.mktemp("release-n"), RELEASE_N)
    n1 = release(tmp_path_factory.mktemp("release-n1"), RELEASE_N1, next_release=True)
    return {overlay: (objects_of(render(n / "overlays" / overlay)), objects_of(render(n1 / "overlays" / overlay)))
            for overlay in OVERLAYS}


def pod_specs(objects):
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield obj["metadata"]["name"], obj["spec"]["template"]["spec"]
        elif obj["kind"] == "CronJob":
            yield obj["metadata"]["name"], obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]


# -- what the API server refuses to change ---------------------------------------------------------

def identity(obj: dict) -> tuple[str, str, str, str]:
    group = obj["apiVersion"].rpartition("/")[0]
    return group, obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


IMMUTABLE_SPEC_FIELDS = {
    "Job": ("selector", "template"),
    "Deployment": ("selector",),
    "ReplicaSet": ("selector",),
    "DaemonSet": ("selector",),
    "StatefulSet": ("selector", "serviceName", "volumeClaimTemplates", "podManagementPolicy"),
    "Service": ("clusterIP", "clusterIPs", "type"),
}


def immutable_changes(before: list[dict], after: list[dict]) -> list[str]:
    """What `kubectl apply` of ``after`` over what ``before`` created would be refused for
    ("field is immutable"), object by object (objects only in one of them are created or left)."""
    previous = {identity(o): o for o in before}
    problems = []
    for obj in after:
        old = previous.get(identity(obj))
        if old is None:
            continue
        where = f"{obj['kind']} {obj['metadata']['name']}"
        spec, old_spec = obj.get("spec") or {}, old.get("spec") or {}
        for field in IMMUTABLE_SPEC_FIELDS.get(obj["kind"], ()):
            if spec.get(field) != old_spec.get(field):
                problems.append(f"{where}: spec.{field} is immutable")
        if obj["kind"] == "PersistentVolumeClaim":
            unchanged = {k: v for k, v in spec.items() if k != "resources"}
            if unchanged != {k: v for k, v in old_spec.items() if k != "resources"}:
                problems.append(f"{where}: spec is immutable (but for resources)")
        if obj["kind"] in ("ConfigMap", "Secret") and old.get("immutable"):
            if not obj.get("immutable") or any(obj.get(k) != old.get(k) for k in ("data", "binaryData", "stringData")):
                problems.append(f"{where}: immutable: true, its data cannot change")
        if obj["kind"] in ("RoleBinding", "ClusterRoleBinding") and obj.get("roleRef") != old.get("roleRef"):
            problems.append(f"{where}: roleRef is immutable")
    return problems


def test_a_release_runs_the_image_by_its_digest(releases):
    """After the release step every container of either overlay runs the pushed image by digest."""
    for overlay, (objects, next_objects) in releases.items():
        for digest, rendered in ((RELEASE_N, objects), (RELEASE_N1, next_objects)):
            images = {(name, c["name"]): c["image"] for name, pod in pod_specs(rendered)
                      for c in pod.get("initContainers", []) + pod["containers"]}
            assert len(images) >= 16, overlay
            for where, image in images.items():
                assert re.fullmatch(r"[a-z0-9./-]+@sha256:[0-9a-f]{64}", image), (overlay, where, image)
                assert image == f"{IMAGE}@{digest}", (overlay, where, image)


def test_the_committed_overlays_render_and_the_release_step_pins_only_digests(tmp_path):
    """Unreleased, the overlays name the base's version tag (rendered by every other test); the
    release step refuses anything but a digest."""
    for overlay in OVERLAYS:
        images = {c["image"] for _, pod in pod_specs(objects_of(render(K8S / "overlays" / overlay)))
                  for c in pod.get("initContainers", []) + pod["containers"]}
        assert len(images) == 1 and images.pop().startswith(f"{IMAGE}:"), overlay
    shutil.copytree(K8S / "overlays" / "staging", tmp_path / "staging")
    for wrong in ("0.1.0", "latest", "sha256:1234", f"{IMAGE}@{RELEASE_N}"):
        done = subprocess.run([sys.executable, str(ROOT / "bin" / "pin-image"), str(tmp_path / "staging"), wrong],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode != 0 and "not a digest" in done.stderr, wrong


def test_pinning_again_replaces_the_digest(tmp_path):
    k8s = release(tmp_path, RELEASE_N)
    kustomization = k8s / "overlays" / "production" / "kustomization.yaml"
    before = kustomization.read_text(encoding="utf-8")
    subprocess.run([sys.executable, str(ROOT / "bin" / "pin-image"), str(kustomization.parent), RELEASE_N1],
                   check=True, capture_output=True, timeout=60)
    after = kustomization.read_text(encoding="utf-8")
    assert after == before.replace(RELEASE_N, RELEASE_N1) and after.count("images:") == 1
    assert after.startswith((K8S / "overlays" / "production" / "kustomization.yaml").read_text(encoding="utf-8")
                            .rstrip("\n")), "the overlay's own lines and comments are kept"


def test_applying_twice_in_a_row_sends_the_same_objects(releases, tmp_path):
    """The same release rendered twice is the same text (no generated names change), and holds no
    Job: applying it again changes nothing."""
    k8s = release(tmp_path, RELEASE_N)
    for overlay, (objects, _) in releases.items():
        again = render(k8s / "overlays" / overlay)
        assert again == render(k8s / "overlays" / overlay)
        assert objects_of(again) == objects
        assert immutable_changes(objects, objects_of(again)) == []


def test_an_upgrade_changes_no_immutable_field(releases):
    """Release N+1 over release N: the new image and config reach the pods, no immutable field moves."""
    for overlay, (objects, next_objects) in releases.items():
        assert [o for o in objects + next_objects if o["kind"] == "Job"] == [], (
            f"{overlay}: a Job's template is immutable; `kubectl apply -k` of the next release would fail")
        # The releases do differ where it matters (the check below is not comparing equal things).
        assert objects != next_objects
        levels = {o["data"]["COCREATE_LOG_LEVEL"] for o in next_objects
                  if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "cocreate-platform"}
        assert levels == {"DEBUG"}, overlay
        assert immutable_changes(objects, next_objects) == [], overlay


OLD_MIGRATION_JOB = """\
apiVersion: batch/v1
kind: Job
metadata:
  name: projects-migrate
  annotations:
    argocd.argoproj.io/hook: PreSync
spec:
  ttlSecondsAfterFinished: 3600
  template:
    spec:
      restartPolicy: OnFailure
      containers:
      - name: migrate
        image: ghcr.io/haicang/cocreate
        command: [python, -m, services.projects, migrate]
"""


def test_the_check_catches_the_earlier_migration_jobs(tmp_path):
    """With the earlier design's migration Job in the base, the next release changes the Job's
    template (its image): `kubectl apply -k` would fail while the Job exists, and the check says so."""
    n = release(tmp_path / "n", RELEASE_N, extra_base=OLD_MIGRATION_JOB)
    n1 = release(tmp_path / "n1", RELEASE_N1, next_release=True, extra_base=OLD_MIGRATION_JOB)
    for overlay in OVERLAYS:
        problems = immutable_changes(objects_of(render(n / "overlays" / overlay)),
                                     objects_of(render(n1 / "overlays" / overlay)))
        assert problems == ["Job projects-migrate: spec.template is immutable"], (overlay, problems)


def test_the_check_catches_the_other_immutable_fields(releases):
    objects, _ = releases["production"]

    def changed(kind, name, change):
        after = copy.deepcopy(objects)
        [obj] = [o for o in after if o["kind"] == kind and o["metadata"]["name"] == name]
        change(obj)
        return immutable_changes(objects, after)

    assert changed("Deployment", "projects", lambda d: d["spec"]["selector"]["matchLabels"].update(tier="x")) == [
        "Deployment projects: spec.selector is immutable"]
    assert changed("Service", "gateway", lambda s: s["spec"].update(type="NodePort")) == [
        "Service gateway: spec.type is immutable"]
    assert changed("Service", "gateway", lambda s: s["spec"].update(clusterIP="None")) == [
        "Service gateway: spec.clusterIP is immutable"]
    assert changed("Deployment", "projects", lambda d: d["spec"]["template"]["spec"].update(
        terminationGracePeriodSeconds=99)) == []  # a pod template may change: a rollout
    frozen = copy.deepcopy(objects)
    [config] = [o for o in frozen if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "cocreate-platform"]
    config["immutable"] = True
    thawed = copy.deepcopy(frozen)
    [config] = [o for o in thawed if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "cocreate-platform"]
    config["data"]["COCREATE_LOG_LEVEL"] = "DEBUG"
    assert immutable_changes(frozen, thawed) == ["ConfigMap cocreate-platform: immutable: true, its data cannot change"]
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data", "namespace": "x"},
             "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}
    bigger = copy.deepcopy(claim)
    bigger["spec"]["resources"]["requests"]["storage"] = "2Gi"
    assert immutable_changes([claim], [bigger]) == []
    bigger["spec"]["storageClassName"] = "fast"
    assert immutable_changes([claim], [bigger]) == ["PersistentVolumeClaim data: spec is immutable (but for resources)"]


# -- the schema migrations without a Job ----------------------------------------------------------

def test_every_process_that_needs_the_schema_migrates_it_at_start(releases):
    """No Job runs the migrations: the API pods' init container runs `migrate`, and every other
    process of a service (relay, consumer, the CronJob's command) and the gateway's feed worker
    runs the same idempotent, lock-serialised migration in its own start-up, before it reads or
    writes anything. So no pod can use a schema that is not there yet."""
    from gateway import __main__ as gateway_main
    from services.kernel import service

    assert inspect.signature(service.bootstrap).parameters["create_schema"].default is True
    for entry in (service.relay_main, service.consumer_main, service.run_job, service.migrate_main):
        source = inspect.getsource(entry)
        assert re.search(r"\bbootstrap\(definition, settings\b", source), entry.__name__
        assert "create_schema=False" not in source, entry.__name__
    feed = inspect.getsource(gateway_main.feed_main)
    assert feed.index("store.create_schema()") < feed.index("feed_consumer(")

    objects, _ = releases["production"]
    for name, pod in pod_specs(objects):
        command = pod["containers"][0]["command"]
        init = [c["command"] for c in pod.get("initContainers", [])]
        if command[0] == "gunicorn" and not command[-1].startswith("web."):
            # The APIs: the init container migrates before the first worker starts.
            assert len(init) == 1 and ("migrate" in init[0] or "create_schema()" in init[0][-1]), name
        elif command[:2] == ["python", "-m"]:
            assert command[2] in ("services.projects", "services.volunteers", "services.feedback", "gateway"), name
            assert command[3] in ("relay", "consumer", "feed", "sweep-overdue", "close-due-rounds"), name


# -- the image: pinned base, hashed dependencies --------------------------------------------------

def test_the_base_image_comes_by_a_digest_the_release_step_passes():
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    instructions = [line for line in text.replace("\\\n", " ").splitlines() if line and not line.startswith("#")]
    first_from = next(i for i, line in enumerate(instructions) if line.startswith("FROM "))
    # Declared before the first FROM, without a default digest.
    assert "ARG PYTHON_DIGEST" in instructions[:first_from]
    assert not any(re.match(r"ARG PYTHON_DIGEST=", line) for line in instructions)
    bases = [line.split()[1] for line in instructions if line.startswith("FROM ")]
    assert len(bases) == 2
    for base in bases:
        # Stops the build when the digest is not given (BuildKit: "PYTHON_DIGEST: is not allowed to be unset").
        assert re.fullmatch(r"python:3\.11[\w.-]*-slim[\w.-]*@\$\{PYTHON_DIGEST:\?[^}]*\}", base), base
    # The dependencies: only the hashed files of the lock; the project itself from the source.
    installs = [line for line in instructions if "pip install" in line]
    assert any("pip install --require-hashes --no-deps -r deploy/requirements.lock" in line for line in installs)
    assert any(re.search(r"pip install --no-deps \.(\s|$)", line) and "--require-hashes" not in line for line in installs)


def operations_bullet(title: str) -> str:
    text = OPERATIONS.read_text(encoding="utf-8")
    match = re.search(rf"^- \*\*{re.escape(title)}\*\*(.*?)(?=^- \*\*|^#)", text, re.M | re.S)
    assert match, f"docs/operations.md has no bullet {title!r}"
    return " ".join(match.group(1).split())


def test_the_release_step_is_documented():
    build = operations_bullet("Build the image")
    assert "imagetools inspect python:3.11-slim-bookworm" in build  # how to get the base's digest
    assert "--build-arg PYTHON_DIGEST=sha256:" in build
    assert "bin/lock" in build and "--require-hashes" in build
    deploy = operations_bullet("Deploy an overlay")
    assert "bin/pin-image deploy/k8s/overlays/production sha256:" in deploy  # the command tested above
    assert "kubectl apply -k deploy/k8s/overlays/production" in deploy
    migrations = operations_bullet("Schema migrations")
    assert "init container" in migrations and "Job" in migrations


# -- bin/lock --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lock_tool():
    loader = importlib.machinery.SourceFileLoader("bin_lock", str(ROOT / "bin" / "lock"))
    spec = importlib.util.spec_from_loader("bin_lock", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


@pytest.mark.parametrize(("filename", "fits"), [
    ("gevent-26.9.0-cp311-cp311-manylinux_2_28_x86_64.whl", True),
    ("gevent-26.9.0-cp311-cp311-manylinux_2_28_aarch64.whl", True),
    ("gevent-26.9.0-cp311-cp311-musllinux_1_2_x86_64.whl", False),
    ("gevent-26.9.0-cp311-cp311-manylinux_2_28_ppc64le.whl", False),
    ("gevent-26.9.0-cp312-cp312-manylinux_2_28_x86_64.whl", False),
    ("gevent-26.9.0-cp311-cp311-win_amd64.whl", False),
    ("cryptography-50.0.2-cp39-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", True),
    ("cryptography-50.0.2-cp314-abi3-manylinux_2_34_x86_64.whl", False),
    ("cryptography-50.0.2-cp39-abi3-macosx_10_9_universal2.whl", False),
    ("flask-3.1.3-py3-none-any.whl", True),
    ("six-1.17.0-py2.py3-none-any.whl", True),
    ("tomli-2.0.1-py312-none-any.whl", False),
])
def test_the_lock_hashes_the_files_the_image_may_install(lock_tool, filename, fits):
    assert lock_tool.wheel_fits(filename) is fits


def test_the_lock_tells_versions_from_file_names(lock_tool):
    assert lock_tool.file_version("zope_interface-8.7-cp311-cp311-manylinux_2_17_x86_64.whl", "zope.interface") == "8.7"
    assert lock_tool.file_version("zope_interface-8.7.tar.gz", "zope.interface") == "8.7"
    assert lock_tool.file_version("charset-normalizer-3.5.3.tar.gz", "charset-normalizer") == "3.5.3"
    assert lock_tool.file_version("psycopg_binary-3.3.9-cp311-cp311-manylinux_2_28_x86_64.whl", "psycopg") is None
    assert lock_tool.file_version("psycopg-3.3.9.tar.gz", "psycopg") == "3.3.9"
