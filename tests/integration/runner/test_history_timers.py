"""history_guard's units on the rig's TimescaleDB host, run by systemd: the archive service
puts every closed chunk range in Azurite, the retention service then drops exactly the ranges
older than the retention (all covered by verified archives), and a second archive run sends
nothing. Settings come through a drop-in, so the shared demo database is not touched."""

import os
import sys
import uuid

import pytest
from azure.storage.blob import BlobServiceClient

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import rig  # noqa: E402

DB = "it_history_guard"
OVERRIDE = "/etc/tsdb-backup/it-history.env"
DROPINS = ["/etc/systemd/system/tsdb-history-%s.service.d/it.conf" % j for j in ("archive", "retention")]


def run_unit(c, unit):
    rig.sh(c, "systemctl reset-failed %s; systemctl start %s" % (unit, unit), check=False)
    state = rig.sh(c, "systemctl show -p Result --value %s" % unit).strip()
    return state, rig.unit_journal(c, unit, lines=30)


@pytest.mark.usefixtures("agent")
def test_archive_then_gated_retention_under_systemd(env):
    c = env["TSDB_CONTAINER"]
    if rig.sh(c, "test -e /etc/systemd/system/tsdb-history-archive.service && echo y || echo n").strip() != "y":
        pytest.fail("setup.yml did not install history_guard (inventories/local sets history_guard_retention)")
    rig.drop_database(DB)
    rig.seed(DB, devices=2, days=36, interval=1800)
    # A container of this run's own: the history of an earlier rig container (another signing
    # key, under the same host label) would be refused as unknown-key, as for a rebuilt host.
    container = "it-history-guard-%s" % uuid.uuid4().hex[:8]
    rig.write_file(
        c,
        OVERRIDE,
        "TSDB_HISTORY_DATABASE=%s\nAZURE_STORAGE_CONTAINER=%s\n"
        "TSDB_BACKUP_AZURE_CREATE_CONTAINER=true\n" % (DB, container),
        mode="0640",
    )
    for d in DROPINS:
        rig.sh(c, "mkdir -p %s" % os.path.dirname(d))
        rig.write_file(c, d, "[Service]\nEnvironmentFile=%s\n" % OVERRIDE)
    rig.sh(c, "chgrp tsdb-backup %s && systemctl daemon-reload" % OVERRIDE)
    try:
        old = rig.query(
            DB,
            "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = "
            "'esp_telemetry' AND range_end < now() - interval '30 days'",
        )[0][0]
        assert old >= 5
        total_before = rig.query(DB, "SELECT count(*) FROM esp_telemetry")[0][0]

        result, log = run_unit(c, "tsdb-history-archive.service")
        assert result == "success", log
        # The timer's history is its host's: <prefix>/history/<TSDB_BACKUP_HOST_LABEL>/<database>/...
        label = rig.sh(c, '. /etc/tsdb-backup/agent.env && printf %s "$TSDB_BACKUP_HOST_LABEL"').strip()
        assert label
        svc = BlobServiceClient.from_connection_string(env["AZURE_STORAGE_CONNECTION_STRING"])
        names = [
            b.name
            for b in svc.get_container_client(container).list_blobs(
                name_starts_with="backups/history/%s/%s/public.esp_telemetry/" % (label, DB)
            )
        ]
        assert names
        assert len([n for n in names if n.endswith(".manifest.json")]) == len(
            [n for n in names if n.endswith(".parquet")]
        )

        result, log = run_unit(c, "tsdb-history-retention.service")
        assert result == "success", log
        left_old = rig.query(
            DB,
            "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = "
            "'esp_telemetry' AND range_end < now() - interval '30 days'",
        )[0][0]
        assert left_old == 0, log
        assert "held back" in log and "0 held back" in log
        assert rig.query(DB, "SELECT count(*) FROM esp_telemetry")[0][0] < total_before
        # diagnostic_results keeps 90 days: nothing of its 36 days may go.
        assert rig.query(DB, "SELECT min(time) < now() - interval '35 days' FROM diagnostic_results")[0][0]

        result, log = run_unit(c, "tsdb-history-archive.service")
        assert result == "success" and "0 range(s) archived, 0 B sent" in log, log
    finally:
        rig.sh(
            c,
            "rm -rf %s %s && systemctl daemon-reload" % (OVERRIDE, " ".join(os.path.dirname(d) for d in DROPINS)),
            check=False,
        )
        rig.drop_database(DB)
        BlobServiceClient.from_connection_string(env["AZURE_STORAGE_CONNECTION_STRING"]).delete_container(container)
