"""report.yml on the rig: after one backup.yml, today is covered and the report passes; over three
days the two days without a set are named by day and database and the run fails. Each host's
JSON and HTML report is on the control node, and the JSON says what Azurite really holds."""

import json
import os
import sys
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import rig  # noqa: E402


def test_the_report_names_the_days_without_a_set(tmp_path):
    from azure.storage.blob import BlobServiceClient

    env = rig.load_env()
    db = "it_report"
    rig.drop_database(db)
    rig.sh(env["TSDB_CONTAINER"], "rm -rf /var/backups/tsdb/%s" % db)
    rig.seed(db, devices=2, days=2, interval=600)
    prefix = "it-report-" + uuid.uuid4().hex[:6]
    common = {"tsdb_backup_databases": [db], "tsdb_azure_prefix": prefix, "tsdb_report_dir": str(tmp_path)}
    try:
        rc, out = rig.playbook("setup.yml", {})
        assert rc == 0, out
        rc, out = rig.playbook("backup.yml", common)
        assert rc == 0, out

        rc, out = rig.playbook("report.yml", dict(common, tsdb_report_days=1))
        assert rc == 0, out
        assert "1 of 1 database-days covered" in out
        report = json.loads((tmp_path / "tsdb-local" / "coverage.json").read_text())
        (today,) = report["databases"][db]
        assert today["status"] == "ok", today
        svc = BlobServiceClient.from_connection_string(env["AZURE_STORAGE_CONNECTION_STRING"])
        blobs = [
            b.name
            for b in svc.get_container_client(env["AZURE_STORAGE_CONTAINER"]).list_blobs(name_starts_with=prefix + "/")
        ]
        assert any(today["backup_ids"][0] + ".manifest.json" in n for n in blobs), blobs
        assert (tmp_path / "tsdb-local" / "coverage.html").read_text().startswith("<!DOCTYPE html>")

        rc, out = rig.playbook("report.yml", dict(common, tsdb_report_days=3))
        assert rc != 0, "days without a set must fail the report"
        assert "2 day(s) not covered" in out and "no backup set taken on this day" in out, out
    finally:
        rig.drop_database(db)
