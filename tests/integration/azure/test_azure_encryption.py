"""Encrypted sets through blob_upload, backup_info, blob_download and verify against Azurite: the
blobs are the stored form (age ciphertext) under the usual names, the host's encrypted copy goes
once the set is in Azure and a re-upload sends nothing, a download without an identity keeps the
encrypted form and verifies it without a key, and ciphertext swapped in the container - even a
valid encryption to the same recipient - is refused before anything reads it."""

import hashlib
import json
import os
import subprocess

import azure_helpers as h
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _encryption, _verify
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf

BID = "20261201T020000Z"


def keypair():
    identity = subprocess.run(["age-keygen"], capture_output=True, check=True, text=True).stdout
    recipient = subprocess.run(["age-keygen", "-y"], input=identity, capture_output=True, check=True, text=True)
    return identity, recipient.stdout.strip()


def encrypted_set(backup_dir, recipient, backup_id=BID):
    """A set as the dump writes it with encryption on: plaintext, stored form, manifest v2."""
    bset = h.make_backup_set(backup_dir, "iot", backup_id, size=300 * 1024, verified=False)
    manifest = mf.read_manifest(bset.manifest)
    del manifest["manifest_sha256"]
    manifest["format_version"] = mf.MANIFEST_VERSION_ENCRYPTED
    manifest["encryption"] = _encryption.encrypt_set(bset, manifest["archive"], manifest["globals"], [recipient])
    os.unlink(bset.manifest)
    mf.write_manifest(bset.manifest, manifest)
    return bset, mf.read_manifest(bset.manifest)


def test_an_encrypted_set_goes_up_and_comes_back_encrypted(azure_env, service, container, cs_args, tmp_path):
    identity, recipient = keypair()
    backup_dir = str(tmp_path / "backups")
    bset, manifest = encrypted_set(backup_dir, recipient)
    plain_archive = open(bset.archive, "rb").read()
    args = dict(cs_args, manifest_path=bset.manifest)

    checked = h.run_module("blob_upload", args, check=True)
    assert checked["changed"] is True and os.path.exists(bset.archive + ".age"), checked
    done = h.run_module("blob_upload", args)
    assert done.get("failed") is not True, done
    client = service.get_container_client(container)
    names = sorted(b.name for b in client.list_blobs())
    archive_name = next(n for n in names if n.endswith(BID + ".dump"))
    stored = client.get_blob_client(archive_name).download_blob().readall()
    assert stored.startswith(b"age-encryption.org/v1\n") and plain_archive[:1024] not in stored
    assert hashlib.sha256(stored).hexdigest() == manifest["encryption"]["archive"]["sha256"]
    meta = client.get_blob_client(archive_name).get_blob_properties().metadata
    assert meta["encryption"] == "age" and meta["sha256"] == manifest["encryption"]["archive"]["sha256"]
    # The encrypted copy is gone from the host, the plaintext set stays.
    assert not os.path.exists(bset.archive + ".age") and not os.path.exists(bset.globals_sql + ".age")
    assert open(bset.archive, "rb").read() == plain_archive
    again = h.run_module("blob_upload", args)
    assert again["changed"] is False and {b["status"] for b in again["blobs"]} == {"skipped"}, again

    info = h.run_module("backup_info", dict(cs_args, backup_dir=backup_dir, host_label=h.HOST))
    row = info["encryption"]["recipients"]
    assert [(r["recipient"], r["sets"], r["databases"]) for r in row] == [(recipient, 1, ["iot"])], info["encryption"]
    assert info["encryption"]["in_clear"] == 0

    dest = str(tmp_path / "restore")
    got = h.run_module("blob_download", dict(cs_args, dest=dest, database="iot", host_label=h.HOST))
    assert got.get("failed") is not True and got["encrypted"] is True and got["decrypted"] == [], got
    fetched = mf.BackupSet(dest, "iot", BID)
    assert sorted(os.listdir(fetched.folder)) == sorted(
        [BID + ".dump.age", BID + ".globals.sql.age", BID + ".manifest.json"]
    )
    verified = h.run_module("verify", dict(backup_dir=dest, database="iot", level="checksum"))
    assert verified.get("failed") is not True and verified["ok"], verified
    assert {"encrypted archive sha256", "encrypted globals sha256"} <= {c["check"] for c in verified["checks"]}

    # With the identity the download decrypts: the plaintext checked against the manifest.
    dest2 = str(tmp_path / "restore2")
    got = h.run_module("blob_download", dict(cs_args, dest=dest2, database="iot", host_label=h.HOST, identity=identity))
    assert got.get("failed") is not True and len(got["decrypted"]) == 2, got
    assert open(mf.BackupSet(dest2, "iot", BID).archive, "rb").read() == plain_archive
    assert identity.split()[-1] not in json.dumps(got)


def test_ciphertext_swapped_in_the_container_is_refused(azure_env, service, container, cs_args, tmp_path):
    identity, recipient = keypair()
    bset, manifest = encrypted_set(str(tmp_path / "backups"), recipient)
    h.run_module("blob_upload", dict(cs_args, manifest_path=bset.manifest))
    client = service.get_container_client(container)
    archive_name = next(b.name for b in client.list_blobs() if b.name.endswith(BID + ".dump"))
    # Anyone holding the container's key and the public recipient can encrypt other rows to it.
    forged_plain = tmp_path / "forged"
    forged_plain.write_bytes(b"PGDMP forged rows")
    forged = subprocess.run(
        ["age", "-r", recipient], input=forged_plain.read_bytes(), capture_output=True, check=True
    ).stdout
    meta = client.get_blob_client(archive_name).get_blob_properties().metadata
    client.get_blob_client(archive_name).upload_blob(forged, overwrite=True, metadata=meta)
    dest = str(tmp_path / "restore")
    got = h.run_module("blob_download", dict(cs_args, dest=dest, database="iot", host_label=h.HOST, identity=identity))
    h.assert_clean_failure(got, "downloaded with sha256", "not kept")
    folder = mf.BackupSet(dest, "iot", BID).folder
    assert not os.path.isdir(folder) or [n for n in os.listdir(folder) if not n.startswith(".")] == []


def test_a_set_taken_in_clear_is_encrypted_before_the_catch_up_sends_it(azure_env, service, container, tmp_path):
    # Encryption turned on while a set taken in clear waited for Azure: it never leaves in clear.
    identity, recipient = keypair()
    backup_dir = str(tmp_path / "backups")
    bset = h.make_backup_set(backup_dir, "iot", BID)
    plain = open(bset.archive, "rb").read()
    up = h.store_for(azure_env, container).catch_up(backup_dir, database="iot", host=h.HOST, encrypt_to=[recipient])
    assert up["uploaded"] == [BID] and up["failures"] == [], up
    manifest = mf.read_manifest(bset.manifest)
    assert manifest["format_version"] == 2 and manifest["encryption"]["recipients"] == [recipient]
    assert _verify.is_verified(bset, manifest), "the plaintext did not change: its verification still counts"
    client = service.get_container_client(container)
    blobs = {b.name.rsplit("/", 1)[-1]: b.name for b in client.list_blobs()}
    stored = client.get_blob_client(blobs[BID + ".dump"]).download_blob().readall()
    assert stored.startswith(b"age-encryption.org/v1\n")
    assert hashlib.sha256(stored).hexdigest() == manifest["encryption"]["archive"]["sha256"]
    assert (
        client.get_blob_client(blobs[BID + ".manifest.json"]).download_blob().readall()
        == open(bset.manifest, "rb").read()
    )
    assert open(bset.archive, "rb").read() == plain and not os.path.exists(bset.archive + ".age")
