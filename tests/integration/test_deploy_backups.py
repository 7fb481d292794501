"""Backups in the rendered overlays: every database a service or the gateway reads archives its WAL
and has a nightly base backup through the Barman Cloud plugin, with the overlay's retention; the web
client's session store is left out on purpose; the runbook documents restoring them.

(Every custom resource is validated against the vendored CRDs by test_deploy_crds.py.)
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import require_tool
from tests.support.crds import validate_custom_resource

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = "barman-cloud.cloudnative-pg.io"
RETENTION = {"production": "30d", "staging": "7d"}
KEY_RETENTION = {"production": "7d", "staging": "3d"}  # the key store's: shorter (issue 25)
NOT_BACKED_UP = {"web-db"}  # sessions only: see deploy/k8s/base/backups.yaml


@pytest.fixture(scope="module", params=sorted(RETENTION))
def rendered(request) -> tuple[str, list[dict]]:
    kubectl = require_tool("kubectl", "kubectl with its built-in kustomize")
    done = subprocess.run([kubectl, "kustomize", str(ROOT / "deploy" / "k8s" / "overlays" / request.param)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return request.param, [d for d in yaml.safe_load_all(done.stdout) if d]


def of_kind(objects, kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def databases_read(objects) -> dict[str, set[str]]:
    """Cluster name -> the workloads whose containers read its `<cluster>-app` secret."""
    read: dict[str, set[str]] = {}
    for workload in objects:
        if workload["kind"] not in {"Deployment", "CronJob", "Job", "StatefulSet"}:
            continue
        text = yaml.safe_dump(workload)
        for secret in re.findall(r"name: ([a-z0-9-]+)-app\b", text):
            read.setdefault(secret, set()).add(workload["metadata"]["name"])
    return read


def test_every_database_read_by_a_service_or_the_gateway_archives_its_wal(rendered):
    overlay, objects = rendered
    clusters = of_kind(objects, "Cluster")
    stores = of_kind(objects, "ObjectStore")
    read = databases_read(objects)
    assert {"projects-db", "volunteers-db", "feedback-db", "gateway-db", "web-db"} <= set(read) <= set(clusters)
    for name, cluster in clusters.items():
        plugins = cluster["spec"].get("plugins", [])
        if name in NOT_BACKED_UP:
            assert not plugins and "backup" not in cluster["spec"], f"{overlay}: {name} is not to be backed up"
            continue
        assert "backup" not in cluster["spec"], f"{overlay}: {name} uses the deprecated in-tree barmanObjectStore"
        [plugin] = plugins
        assert plugin["name"] == PLUGIN and plugin["isWALArchiver"] is True, (overlay, name, plugin)
        assert plugin["parameters"]["barmanObjectName"] in stores, (overlay, name)
        assert plugin["parameters"]["serverName"] == name, (overlay, name)
    servers = [c["spec"]["plugins"][0]["parameters"]["serverName"] for c in clusters.values() if c["spec"].get("plugins")]
    assert len(servers) == len(set(servers)), "two clusters would archive into the same folder"


def test_every_archived_database_has_a_nightly_plugin_backup(rendered):
    overlay, objects = rendered
    archived = {name for name, c in of_kind(objects, "Cluster").items() if c["spec"].get("plugins")}
    scheduled = of_kind(objects, "ScheduledBackup")
    assert {b["spec"]["cluster"]["name"] for b in scheduled.values()} == archived
    assert archived == {"projects-db", "volunteers-db", "feedback-db", "gateway-db", "keys-db"}
    times = set()
    for name, backup in scheduled.items():
        spec = backup["spec"]
        assert spec["method"] == "plugin" and spec["pluginConfiguration"]["name"] == PLUGIN, (overlay, name)
        assert spec["immediate"] is True and spec.get("suspend") is not True, (overlay, name)
        fields = spec["schedule"].split()
        assert len(fields) == 6, f"{name}: CloudNativePG schedules have six fields (seconds first)"
        assert fields[3:] == ["*", "*", "*"], f"{name}: once a day"
        times.add(tuple(fields[:3]))
        validate_custom_resource(backup)
    assert len(times) == len(scheduled), "the nightly backups are staggered"


def test_the_object_stores_keep_the_overlays_retention_and_their_own_paths(rendered):
    """The event stores' backups (``cocreate-backups``) keep the overlay's retention; the key store's
    (``cocreate-key-backups``, its own folder) a shorter one, so that an erased person's keys leave
    every backup soon (issue 25)."""
    overlay, objects = rendered
    stores = of_kind(objects, "ObjectStore")
    assert set(stores) == {"cocreate-backups", "cocreate-key-backups"}
    assert stores["cocreate-backups"]["spec"]["retentionPolicy"] == RETENTION[overlay]
    assert stores["cocreate-key-backups"]["spec"]["retentionPolicy"] == KEY_RETENTION[overlay]
    assert int(KEY_RETENTION[overlay].rstrip("d")) < int(RETENTION[overlay].rstrip("d"))
    paths = set()
    for name, store in stores.items():
        validate_custom_resource(store)
        configuration = store["spec"]["configuration"]
        assert configuration["destinationPath"].rstrip("/").endswith(f"/{overlay}"), name
        paths.add(configuration["destinationPath"].rstrip("/"))
        assert "serverName" not in configuration, "the plugin's serverName parameter names each cluster's folder"
        credentials = configuration["s3Credentials"]
        secret = credentials["accessKeyId"]["name"]
        assert credentials["secretAccessKey"]["name"] == secret
        assert secret not in of_kind(objects, "Secret"), "object-store credentials are never committed"
    assert len(paths) == 2 and not any(a != b and b.startswith(a + "/") for a in paths for b in paths), paths
    keys = of_kind(objects, "Cluster")["keys-db"]["spec"]["plugins"][0]["parameters"]
    assert keys["barmanObjectName"] == "cocreate-key-backups"
    assert all(c["spec"]["plugins"][0]["parameters"]["barmanObjectName"] == "cocreate-backups"
               for name, c in of_kind(objects, "Cluster").items() if c["spec"].get("plugins") and name != "keys-db")


def test_the_runbook_documents_backup_and_restore():
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    section = text.split("\n## Backups and restore\n", 1)[1].split("\n## ", 1)[0]
    for needed in ("kubectl cnpg backup", "--method plugin", f"--plugin-name {PLUGIN}", "kind: Backup",
                   "/spec/bootstrap", "recovery:", "targetTime", "externalClusters", "serverName",
                   "recover-tail", "exit code 4", "consumer_offsets", "rebuild", "ranking", "certificate",
                   "gateway-db", "web-db", "cocreate-backup-s3", "CocreateBackupTooOld"):
        assert needed in section, f"docs/operations.md, Backups and restore: {needed!r}"


def runbook_restore_patch() -> list[dict]:
    """The overlay patch of the runbook's step "Restore into a new cluster of the same name"."""
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    after = text.split("**restore patch**", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", after, re.S).group(1)
    return yaml.safe_load("\n".join(line[3:] if line.startswith("   ") else line for line in block.splitlines()))


@pytest.mark.parametrize("overlay", sorted(RETENTION))
def test_the_runbooks_restore_patch_renders_a_valid_recovery_cluster(overlay, tmp_path):
    kubectl = require_tool("kubectl", "kubectl with its built-in kustomize")
    [patch] = runbook_restore_patch()
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(ROOT / "deploy" / "k8s" / "overlays" / overlay, tmp_path)],  # not absolute
        "patches": [patch]}), encoding="utf-8")
    done = subprocess.run([kubectl, "kustomize", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    objects = [d for d in yaml.safe_load_all(done.stdout) if d]
    cluster = of_kind(objects, "Cluster")["projects-db"]
    validate_custom_resource(cluster)
    spec = cluster["spec"]
    assert list(spec["bootstrap"]) == ["recovery"], "one bootstrap method (the webhook refuses two)"
    recovery = spec["bootstrap"]["recovery"]
    [source] = [c for c in spec["externalClusters"] if c["name"] == recovery["source"]]
    assert source["plugin"]["name"] == PLUGIN
    assert source["plugin"]["parameters"] == {"barmanObjectName": "cocreate-backups", "serverName": "projects-db"}
    assert recovery["recoveryTarget"]["targetTime"]
    [plugin] = spec["plugins"]
    assert plugin["isWALArchiver"] is True and plugin["parameters"]["serverName"] not in {"projects-db", ""}
