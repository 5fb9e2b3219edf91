"""backup.yml end to end on the rig: setup.yml, then a run where one database is broken.
The good one is dumped, verified and in Azurite; the summary names the broken one; rc != 0."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import rig  # noqa: E402


def test_one_broken_database_does_not_stop_the_others():
    from azure.storage.blob import BlobServiceClient

    env = rig.load_env()
    good = "it_playbook"
    rig.drop_database(good)
    rig.seed(good, devices=2, days=3, interval=600)
    try:
        rc, out = rig.playbook("setup.yml", {})
        assert rc == 0, out
        rc, out = rig.playbook("backup.yml", {"tsdb_backup_databases": [good, "it_no_such_db"]})
        assert rc != 0, "a failed database must fail the run"
        table = out[out.index("HOST ") :]
        good_line = next(ln for ln in table.splitlines() if good in ln)
        bad_line = next(ln for ln in table.splitlines() if "it_no_such_db" in ln)
        # HOST DATABASE ID SIZE UNIT SECONDS VERIFIED UPLOADED, no ERROR: verified, one set uploaded.
        assert good_line.split()[-2:] == ["archive", "1"], good_line
        assert "does not exist" in bad_line
        assert "Backups failed on: tsdb-local" in out

        backup_id = good_line.split()[2]
        listing = rig.sh(env["TSDB_CONTAINER"], "stat -c '%%U %%a %%n' /var/backups/tsdb/%s/%s.*" % (good, backup_id))
        assert all(line.startswith("tsdb-backup 600 ") for line in listing.splitlines()), listing
        svc = BlobServiceClient.from_connection_string(env["AZURE_STORAGE_CONNECTION_STRING"])
        names = [
            b.name
            for b in svc.get_container_client(env["AZURE_STORAGE_CONTAINER"]).list_blobs(
                name_starts_with="backups/tsdb-local/%s/" % good
            )
        ]
        assert sorted(n.rsplit("/", 1)[1] for n in names if backup_id in n) == [
            backup_id + ".dump",
            backup_id + ".globals.sql",
            backup_id + ".manifest.json",
        ]
    finally:
        rig.drop_database(good)
