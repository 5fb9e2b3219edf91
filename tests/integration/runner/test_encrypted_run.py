"""The nightly run with encryption on (tsdb-backup.service under the container's systemd, a
private Azurite): what reaches Azure is age ciphertext of exactly the verified archive, staged
while pg_dump wrote it; the host keeps its plaintext set (and no encrypted copy once it is
uploaded); nothing on the host can decrypt; and the blobs, downloaded on a rebuilt host,
restore the source's rows only with the operators' identity."""

import hashlib
import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "azure"))
import rig  # noqa: E402
from azure.storage.blob import BlobServiceClient  # noqa: E402
from azure_helpers import PrivateAzurite  # noqa: E402
from test_scheduled_run import journal, start_run, wait_finished  # noqa: E402

DB = "it_enc_runner"
TARGET = "it_enc_runner_restored"
DROPIN = "/etc/systemd/system/tsdb-backup.service.d/it-encrypted.conf"
OVERRIDE = "/etc/tsdb-backup/it-encrypted.env"
FETCHED = "/var/backups/it/enc-runner-fetched"
CONTAINER = "it-encrypted"
VENV_PYTHON = "/opt/tsdb-backup/venv/bin/python"


def keypair():
    identity = subprocess.run(["age-keygen"], capture_output=True, check=True, text=True).stdout
    recipient = subprocess.run(["age-keygen", "-y"], input=identity, capture_output=True, check=True, text=True)
    return identity, recipient.stdout.strip()


def identities_on_host(c):
    """Files of the agent's places (settings, state, backups, code) holding an age identity."""
    return rig.sh(
        c,
        "grep -rlE 'AGE-SECRET-KEY-1[0-9A-Z]{58}' /etc /var/lib /var/backups /opt /root /home /srv 2>/dev/null || true",
    ).split()


def test_an_encrypted_nightly_run_round_trips_only_with_the_identity(agent, env, tmp_path):
    c = agent
    identity, recipient = keypair()
    rig.drop_database(DB)
    rig.seed(DB, devices=6, days=10, interval=120)
    source = rig.table_digest(DB)
    azurite = PrivateAzurite(str(tmp_path / "azurite")).start()
    conn = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=%s;BlobEndpoint=%s;" % (
        env["AZURE_STORAGE_KEY"],
        azurite.endpoint,
    )
    settings = [
        "TSDB_BACKUP_DATABASES=%s" % DB,
        'AZURE_STORAGE_CONNECTION_STRING="%s"' % conn,
        "AZURE_STORAGE_CONTAINER=%s" % CONTAINER,
        "TSDB_BACKUP_AZURE_CREATE_CONTAINER=true",
        "TSDB_BACKUP_VERIFY_LEVEL=archive",
        "TSDB_BACKUP_ENCRYPTION_RECIPIENTS='[\"%s\"]'" % recipient,
    ]
    rig.write_file(c, OVERRIDE, "\n".join(settings) + "\n", mode="0600")
    rig.sh(c, "chown tsdb-backup: %s && mkdir -p %s" % (OVERRIDE, os.path.dirname(DROPIN)))
    rig.write_file(c, DROPIN, "[Service]\nEnvironmentFile=%s\n" % OVERRIDE)
    rig.sh(c, "systemctl daemon-reload")
    since = rig.sh(c, "date -u '+%Y-%m-%d %H:%M:%S'").strip()
    try:
        start_run(c)
        assert wait_finished(c) == "inactive", journal(c, since)
        log = journal(c, since)
        assert re.search(r"verify \S+: archive level ok \(\d+ checks; read while it was written\)", log), log
        assert re.search(r"upload \S+: archive committed from the blocks sent while it was written", log), log

        # The host: its plaintext set, no encrypted copy left, and no identity anywhere.
        folder = "/var/backups/tsdb/%s" % DB
        names = rig.sh(c, "ls %s" % folder).split()
        manifest_name = next(n for n in names if n.endswith(".manifest.json"))
        bid = manifest_name.split(".")[0]
        assert sorted(names) == sorted([bid + s for s in (".dump", ".globals.sql", ".manifest.json", ".verify.json")])
        manifest = json.loads(rig.sh(c, "cat %s/%s" % (folder, manifest_name)))
        assert manifest["encryption"]["recipients"] == [recipient] and manifest["format_version"] == 2
        assert identities_on_host(c) == []

        # Azure: age ciphertext whose digests are the manifest's record of what is stored.
        service = BlobServiceClient.from_connection_string(conn)
        listed = [b.name for b in service.get_container_client(CONTAINER).list_blobs()]
        blobs = {n.rsplit("/", 1)[-1]: service.get_blob_client(CONTAINER, n).download_blob().readall() for n in listed}
        prefix = listed[0].split("/tsdb-local/")[0]  # the agent's TSDB_BACKUP_AZURE_PREFIX
        archive, roles = blobs[bid + ".dump"], blobs[bid + ".globals.sql"]
        for data, part in ((archive, "archive"), (roles, "globals")):
            assert data.startswith(b"age-encryption.org/v1\n"), part
            assert hashlib.sha256(data).hexdigest() == manifest["encryption"][part]["sha256"], part
        assert not archive.startswith(b"PGDMP") and b"CREATE ROLE" not in roles
        assert json.loads(blobs[manifest_name])["manifest_sha256"] == manifest["manifest_sha256"]

        # The host cannot decrypt its own set: age finds no identity that matches.
        rig.sh(c, "rm -rf %s && install -d -m 0700 -o tsdb-backup %s" % (FETCHED, FETCHED))
        subprocess.run(
            [rig.DOCKER, "exec", "-i", c, "bash", "-c", "cat > %s/archive.age" % FETCHED], input=archive, check=True
        )
        tried = rig.sh(c, "age -d %s/archive.age >/dev/null 2>&1 && echo decrypted || echo refused" % FETCHED)
        assert tried.strip() == "refused"

        # A rebuilt host: download (no identity: the encrypted form), restore with the identity.
        download = dict(
            dest=FETCHED,
            database=DB,
            host_label="tsdb-local",
            auth_mode="connection_string",
            prefix=prefix,
            connection_string=conn,
            container=CONTAINER,
        )
        res = rig.ansible_module("blob_download", download, python=VENV_PYTHON)
        assert res.get("failed") is not True, res.get("msg")
        assert res["encrypted"] is True and res["decrypted"] == [], res
        fetched = rig.sh(c, "ls %s/%s" % (FETCHED, DB)).split()
        assert sorted(fetched) == sorted([bid + ".dump.age", bid + ".globals.sql.age", manifest_name]), fetched
        # backup.yml with the same setting (the same pipeline), then the drill of its set: the
        # drill restores a set whose plaintext is here, it needs no identity.
        site = {
            "tsdb_backup_databases": [DB],
            "tsdb_backup_encryption_recipients": [recipient],
            "tsdb_azure_connection_string": conn,
            "tsdb_azure_container": CONTAINER,
            "tsdb_azure_prefix": prefix,
        }
        rc, out = rig.playbook("backup.yml", site)
        assert rc == 0, out[-3000:]
        newest = sorted(n for n in rig.sh(c, "ls %s" % folder).split() if n.endswith(".manifest.json"))[-1]
        assert newest != manifest_name and json.loads(rig.sh(c, "cat %s/%s" % (folder, newest)))["encryption"]
        blob = next(
            n for n in service.get_container_client(CONTAINER).list_blobs() if n.name.endswith(newest[:16] + ".dump")
        )
        assert (
            service.get_blob_client(CONTAINER, blob.name)
            .download_blob()
            .readall()
            .startswith(b"age-encryption.org/v1\n")
        )
        rc, out = rig.playbook("drill.yml", {"tsdb_backup_databases": [DB]})
        assert rc == 0 and "%s: ok" % DB in out, out[-3000:]

        # The host is lost: restore.yml on a host without its sets, with the operators' identity file.
        rig.sh(c, "rm -rf %s" % folder)
        idfile = tmp_path / "ops-identity.txt"
        idfile.write_text(identity)
        idfile.chmod(0o644)
        extra = {
            "restore_host": "tsdb-local",
            "restore_database": TARGET,
            "restore_source_database": DB,
            "restore_confirm": True,
            "restore_identity_file": str(idfile),
            "tsdb_azure_connection_string": conn,
            "tsdb_azure_container": CONTAINER,
            "tsdb_azure_prefix": prefix,
        }
        rc, out = rig.playbook("restore.yml", extra)
        assert rc != 0 and "has mode 0644: chmod 600" in out, out[-2000:]
        assert TARGET not in rig.databases()
        idfile.chmod(0o600)
        rc, out = rig.playbook("restore.yml", extra)
        assert rc == 0, out[-3000:]
        assert "Encryption: decrypted on this host with the identity given (2 files)" in out, out[-2000:]
        assert identity.split()[-1] not in out
        assert rig.table_digest(TARGET) == source
        # The identity passed the restore (a no_log option) and left nothing behind, not even in the journal.
        assert identities_on_host(c) == []
        assert rig.sh(c, "grep -rlF '%s' /var/log /tmp /var/tmp || true" % identity.split()[-1]).split() == []
    finally:
        azurite.stop()
        rig.sh(
            c,
            "rm -rf %s %s %s /var/backups/tsdb/%s && systemctl daemon-reload && systemctl reset-failed"
            % (DROPIN, OVERRIDE, FETCHED, DB),
            check=False,
        )
        rig.drop_database(DB)
        rig.drop_database(TARGET)
