"""Second copies through the product's own paths, with two Azurite instances as two accounts (the
rig's as the primary, a private one as the replica "dr"): the nightly unit and backup.yml fill
both targets byte for byte; with the replica down the night still succeeds, says so and its
metrics show it; once back the next night catches up; and when the primary loses a blob,
restore.yml reads the set from the replica and the restored rows are the source's."""

import hashlib
import json
import os
import re
import sys
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "azure"))
import rig  # noqa: E402
from azure.storage.blob import BlobServiceClient  # noqa: E402
from azure_helpers import PrivateAzurite  # noqa: E402
from test_scheduled_run import journal, start_run, wait_finished  # noqa: E402

DB = "it_replica_run"
TARGET = "it_replica_run_restored"
DROPIN = "/etc/systemd/system/tsdb-backup.service.d/it-replica.conf"
OVERRIDE = "/etc/tsdb-backup/it-replica.env"
CONTAINER = "it-replica-primary"
METRICS = "/var/lib/tsdb-backup/it-replica-metrics"
STATUS = METRICS + "/tsdb_backup_status.prom"


def contents(service, container, prefix):
    client = service.get_container_client(container)
    return {
        b.name: hashlib.sha256(client.get_blob_client(b.name).download_blob().readall()).hexdigest()
        for b in client.list_blobs(name_starts_with=prefix + "/")
    }


def target_metric(c, name, target):
    text = rig.sh(c, "cat %s" % STATUS, check=False)
    pattern = r'^%s\{[^}]*database="%s"[^}]*target="%s"[^}]*\} (\S+)$' % (name, DB, target)
    found = re.findall(pattern, text, re.M)
    return float(found[0]) if found else None


def night(c):
    since = rig.sh(c, "date -u '+%Y-%m-%d %H:%M:%S'").strip()
    start_run(c)
    state = wait_finished(c)
    return state, journal(c, since)


def test_both_targets_filled_replica_down_then_caught_up_and_restore_falls_back(agent, env, tmp_path):
    c = agent
    rig.drop_database(DB)
    rig.drop_database(TARGET)
    rig.seed(DB, devices=3, days=3, interval=600)
    source = rig.table_digest(DB)
    dr = PrivateAzurite(str(tmp_path / "dr-azurite")).start()
    prefix = "it-rep-" + uuid.uuid4().hex[:6]
    replica = dr.replica("dr-backups", timeout=5)
    settings = [
        "TSDB_BACKUP_DATABASES=%s" % DB,
        "AZURE_STORAGE_CONTAINER=%s" % CONTAINER,
        "TSDB_BACKUP_AZURE_PREFIX=%s" % prefix,
        "TSDB_BACKUP_AZURE_CREATE_CONTAINER=true",
        "TSDB_BACKUP_REPLICAS='%s'" % json.dumps([replica]),
        "TSDB_BACKUP_METRICS_DIR=%s" % METRICS,
    ]
    rig.write_file(c, OVERRIDE, "\n".join(settings) + "\n", mode="0600")
    rig.sh(
        c,
        "chown tsdb-backup: %s && mkdir -p %s && install -d -o tsdb-backup -m 0755 %s"
        % (OVERRIDE, os.path.dirname(DROPIN), METRICS),
    )
    rig.write_file(c, DROPIN, "[Service]\nEnvironmentFile=%s\n" % OVERRIDE)
    rig.sh(c, "systemctl daemon-reload")
    primary = BlobServiceClient.from_connection_string(env["AZURE_STORAGE_CONNECTION_STRING"])
    replica_service = BlobServiceClient.from_connection_string(replica["connection_string"])
    site = {
        "tsdb_backup_databases": [DB],
        "tsdb_azure_container": CONTAINER,
        "tsdb_azure_prefix": prefix,
        "tsdb_azure_create_container": True,
        "tsdb_azure_replicas": [replica],
    }
    try:
        # 1. The nightly unit: the set in both targets, the same bytes under the same names.
        state, log = night(c)
        assert state == "inactive", log
        assert re.search(r"replica dr: set: 1 copied, 0 still missing there", log), log
        both = contents(primary, CONTAINER, prefix)
        assert len([n for n in both if n.endswith(".manifest.json")]) == 1, both
        assert contents(replica_service, "dr-backups", prefix) == both
        assert target_metric(c, "tsdb_backup_target_copy_success", "dr") == 1
        # Coverage, per target: nothing uncovered (today is no gap; the days before the first backup neither).
        assert target_metric(c, "tsdb_backup_coverage_gaps", "primary") == 0
        assert target_metric(c, "tsdb_backup_coverage_gaps", "dr") == 0

        # 2. backup.yml, the same pipeline: both targets again.
        rc, out = rig.playbook("backup.yml", site)
        assert rc == 0, out[-3000:]
        both = contents(primary, CONTAINER, prefix)
        assert len([n for n in both if n.endswith(".manifest.json")]) == 2
        assert contents(replica_service, "dr-backups", prefix) == both

        # 3. The replica is down for a night: the backup succeeds, the failure is said and measured.
        dr.stop()
        state, log = night(c)
        assert state == "inactive", log
        assert "replica dr: copies stopped" in log and "cannot reach" in log, log
        assert re.search(r"%s: ok, backup \S+ .*; replica dr: FAILED" % DB, log), log
        assert target_metric(c, "tsdb_backup_target_copy_success", "dr") == 0
        assert replica["connection_string"] not in log and env["AZURE_STORAGE_KEY"] not in log
        assert len([n for n in contents(primary, CONTAINER, prefix) if n.endswith(".manifest.json")]) == 3

        # 4. Back the next night: the missed set is copied (with that night's), nothing else.
        dr.start()
        state, log = night(c)
        assert state == "inactive", log
        assert re.search(r"replica dr: set: 2 copied, 0 still missing there", log), log
        both = contents(primary, CONTAINER, prefix)
        assert contents(replica_service, "dr-backups", prefix) == both
        assert target_metric(c, "tsdb_backup_target_copy_success", "dr") == 1
        assert target_metric(c, "tsdb_backup_target_pending_sets", "dr") == 0

        # 5. The host is lost, and the primary loses the newest set's archive: restore.yml reads it
        # from the replica.
        newest = sorted(n for n in both if n.endswith(".dump"))[-1]
        primary.get_container_client(CONTAINER).delete_blob(newest)
        rig.sh(c, "rm -rf /var/backups/tsdb/%s" % DB)
        extra = dict(
            site,
            restore_host="tsdb-local",
            restore_database=TARGET,
            restore_source_database=DB,
            restore_confirm=True,
        )
        rc, out = rig.playbook("restore.yml", dict(extra, restore_fallback=False))
        assert rc != 0 and TARGET not in rig.databases(), out[-2000:]
        rc, out = rig.playbook("restore.yml", extra)
        assert rc == 0, out[-3000:]
        assert "Source: Azure target dr (" in out and "after primary could not provide it" in out, out[-3000:]
        assert rig.table_digest(TARGET) == source
        assert replica["connection_string"] not in out

        # 6. report.yml over both targets: today is covered in each (older sets of today in the primary).
        rc, out = rig.playbook("report.yml", dict(site, tsdb_report_days=1, tsdb_report_dir=str(tmp_path / "r")))
        assert rc == 0, out[-3000:]
        report = json.loads((tmp_path / "r" / "tsdb-local" / "coverage.json").read_text())
        assert report["targets"] == ["primary", "dr"]
        (today,) = report["databases"][DB]
        assert today["covered_in"] == ["primary", "dr"], today
        assert replica["connection_string"] not in out
    finally:
        dr.stop()
        rig.sh(
            c,
            "rm -rf %s %s %s /var/backups/tsdb/%s && systemctl daemon-reload && systemctl reset-failed"
            % (DROPIN, OVERRIDE, METRICS, DB),
            check=False,
        )
        rig.drop_database(DB)
        rig.drop_database(TARGET)
        client = primary.get_container_client(CONTAINER)
        if client.exists():
            client.delete_container()
