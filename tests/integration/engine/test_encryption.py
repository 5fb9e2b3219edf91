"""Encrypted sets with the real pg_dump 17 and age of the rig's TimescaleDB host (dump, verify,
restore modules): the stored form is age ciphertext that pg_restore cannot read, a set held
only in that form is checked without any key and restored only with its identity, and the
restored database has exactly the source's rows."""

import json
import subprocess

import pytest
import rig

SRC = "/var/backups/it/enc-src"
FETCHED = "/var/backups/it/enc-fetched"  # as blob_download leaves a set without an identity
TARGET = "it_enc_restored"


def keypair():
    identity = subprocess.run(["age-keygen"], capture_output=True, check=True, text=True).stdout
    recipient = subprocess.run(["age-keygen", "-y"], input=identity, capture_output=True, check=True, text=True)
    return identity, recipient.stdout.strip()


@pytest.fixture(scope="module")
def keys():
    return {"ops": keypair(), "other": keypair()}


@pytest.fixture(scope="module")
def encrypted(container, pg, engine_db, keys):
    rig.sh(container, "rm -rf %s %s && mkdir -p -m 0700 %s %s" % (SRC, FETCHED, SRC, FETCHED))
    res = rig.ansible_module(
        "dump", dict(pg, database=engine_db, backup_dir=SRC, encryption_recipients=[keys["ops"][1]])
    )
    assert res.get("failed") is not True, res
    folder = "%s/%s" % (SRC, engine_db)
    manifest = json.loads(rig.sh(container, "cat %s/%s.manifest.json" % (folder, res["backup_id"])))
    yield {"id": res["backup_id"], "folder": folder, "manifest": manifest, "digest": rig.table_digest(engine_db)}
    rig.sh(container, "rm -rf %s %s" % (SRC, FETCHED), check=False)
    rig.drop_database(TARGET)


def test_the_stored_form_is_age_ciphertext_of_the_archive(container, encrypted, keys):
    m, folder, bid = encrypted["manifest"], encrypted["folder"], encrypted["id"]
    assert m["format_version"] == 2
    enc = m["encryption"]
    assert enc["format"] == "age" and enc["recipients"] == [keys["ops"][1]]
    for part, name in (("archive", bid + ".dump.age"), ("globals", bid + ".globals.sql.age")):
        path = "%s/%s" % (folder, name)
        assert enc[part]["file"] == name
        head = rig.sh(container, "head -c 22 %s" % path)
        assert head == "age-encryption.org/v1\n", part
        digest = rig.sh(container, "sha256sum %s | cut -d' ' -f1" % path).strip()
        assert digest == enc[part]["sha256"] and digest != m[part]["sha256"], part
        assert rig.sh(container, "stat -c %%a %s" % path).strip() == "600"
    # Without the identity the stored archive is no pg_dump archive.
    out = rig.sh(container, "pg_restore --list %s/%s.dump.age 2>&1 || echo refused" % (folder, bid))
    assert "refused" in out and "input file does not appear to be a valid archive" in out, out


def test_a_set_held_only_encrypted_is_checked_without_a_key(container, pg, encrypted, engine_db):
    bid = encrypted["id"]
    dest = "%s/%s" % (FETCHED, engine_db)
    rig.sh(
        container,
        "mkdir -p -m 0700 %s && cp %s/%s.manifest.json %s/%s.dump.age %s/%s.globals.sql.age %s/"
        % (dest, encrypted["folder"], bid, encrypted["folder"], bid, encrypted["folder"], bid, dest),
    )
    res = rig.ansible_module("verify", dict(pg, backup_dir=FETCHED, database=engine_db, level="checksum"))
    assert res.get("failed") is not True and res["ok"], res
    checks = {c["check"]: c["ok"] for c in res["checks"]}
    assert checks["encrypted archive sha256"] and checks["encrypted globals sha256"], checks
    res = rig.ansible_module("verify", dict(pg, backup_dir=FETCHED, database=engine_db, level="archive"))
    assert res.get("failed") is True and "needs its identity" in res["msg"], res
    assert rig.sh(container, "ls %s" % dest).split() == sorted(
        [bid + ".dump.age", bid + ".globals.sql.age", bid + ".manifest.json", bid + ".verify.json"]
    )


def test_restore_needs_the_identity_of_a_recipient(container, pg, encrypted, engine_db, keys):
    args = dict(pg, confirm=True, backup_dir=FETCHED, database=engine_db, backup_id=encrypted["id"], target=TARGET)
    res = rig.ansible_module("restore", args)
    assert res.get("failed") is True and "needs its identity" in res["msg"], res
    res = rig.ansible_module("restore", dict(args, identity=keys["other"][0]))
    assert res.get("failed") is True and "give the identity of one of those" in res["msg"], res
    assert keys["other"][0].split()[-1] not in json.dumps(res)
    assert TARGET not in rig.databases()

    res = rig.ansible_module("restore", dict(args, identity=keys["ops"][0]))
    assert res.get("failed") is not True, res
    assert res["decrypted"] == [
        "%s/%s/%s.dump" % (FETCHED, engine_db, encrypted["id"]),
        "%s/%s/%s.globals.sql" % (FETCHED, engine_db, encrypted["id"]),
    ]
    assert keys["ops"][0].split()[-1] not in json.dumps(res)
    assert rig.table_digest(TARGET) == encrypted["digest"]
    files = rig.sh(container, "ls %s/%s" % (FETCHED, engine_db)).split()
    assert not [f for f in files if f.endswith(".age")], files


def test_encryption_refuses_a_directory_format_dump(pg, engine_db, keys):
    res = rig.ansible_module(
        "dump",
        dict(
            pg, database=engine_db, backup_dir=SRC, format="directory", jobs=2, encryption_recipients=[keys["ops"][1]]
        ),
    )
    assert res.get("failed") is True and "one-file archives" in res["msg"], res


def test_a_private_key_given_as_recipient_is_refused(pg, engine_db, keys):
    secret = keys["ops"][0].strip().splitlines()[-1]
    res = rig.ansible_module("dump", dict(pg, database=engine_db, backup_dir=SRC, encryption_recipients=[secret]))
    assert res.get("failed") is True and "never an AGE-SECRET-KEY" in res["msg"], res
    assert secret not in json.dumps(res)  # not even in the invocation
