"""restore with a trust store, on the rig's TimescaleDB: a set signed by another host's key, a
manifest edited and re-sealed and an unsigned set are refused before anything is restored -
no safety backup, no scratch database, the target unchanged - and a trusted set restores, its
safety backup signed. The modules run with the agent's venv (cryptography)."""

import json
import uuid

import pytest
import rig

pytestmark = pytest.mark.rig

VENV_PYTHON = "/opt/tsdb-backup/venv/bin/python"
TARGET = "it_sig_target"
# Re-seals a manifest after editing it, keeping its signature: what a forger with write access does.
RESEAL = """
import json, sys
sys.path.insert(0, "/opt/tsdb-backup/collections")
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf
path = sys.argv[1]
m = json.load(open(path))
m["tables"][sorted(m["tables"])[0]]["rows"] = 1
mf.atomic_write_bytes(path, mf.dumps(m))
"""


def venv_module(module, args, check=False):
    """rig.ansible_module with the agent's venv interpreter."""
    return rig.ansible_module(module, args, check=check, python=VENV_PYTHON)


@pytest.fixture(scope="module")
def keys(agent_host):
    """Keys of two hosts, made on the database host by the signing_key module, and the trust store."""
    folder = "/var/backups/it/keys-%s" % uuid.uuid4().hex[:8]
    rig.sh(agent_host, "mkdir -p -m 0700 %s" % folder)
    made = {}
    for host in ("it-db01", "it-db02"):
        res = venv_module("signing_key", {"path": "%s/%s.pem" % (folder, host)})
        assert res.get("failed") is not True and res["created"] is True, res
        made[host] = dict(res, path="%s/%s.pem" % (folder, host))
    trust = {h: [made[h]["public_key"]] for h in made}
    rig.write_file(agent_host, folder + "/trusted-signers.json", json.dumps(trust))
    made["trust"] = folder + "/trusted-signers.json"
    yield made
    rig.sh(agent_host, "rm -rf %s" % folder)


@pytest.fixture
def target(engine_db):
    """The database restores would replace, with content to compare: a copy of the engine database."""
    rig.drop_database(TARGET)
    rig.copy_database(engine_db, TARGET)
    yield TARGET
    for name in rig.databases():
        if name.startswith(TARGET):
            rig.drop_database(name)


def dump(pg, engine_db, backup_dir, key=None, label="it-db01"):
    args = dict(pg, database=engine_db, backup_dir=backup_dir, host_label=label)
    if key:
        args["signing_key_file"] = key["path"]
    res = venv_module("dump", args)
    assert res.get("failed") is not True, res
    return res["backup_id"]


def restore_args(pg, engine_db, backup_dir, backup_id, keys, **kw):
    args = dict(
        pg,
        confirm=True,
        backup_dir=backup_dir,
        database=engine_db,
        backup_id=backup_id,
        target=TARGET,
        trusted_signers_file=keys["trust"],
        signing_key_file=keys["it-db01"]["path"],
        host_label="it-db01",
    )
    args.update(kw)
    return args


def assert_untouched(container, backup_dir, before_dbs, before_digest, before_sets):
    assert rig.databases() == before_dbs, "a database was created, renamed or dropped"
    assert rig.table_digest(TARGET) == before_digest
    assert rig.sh(container, "ls -R %s" % backup_dir) == before_sets, "a safety backup was taken"


def test_a_set_signed_with_another_hosts_key_is_refused_and_the_database_unchanged(
    container, pg, engine_db, backup_dir, keys, target
):
    # A set claiming it-db01, signed with it-db02's key (it-db02 compromised, or its key leaked).
    backup_id = dump(pg, engine_db, backup_dir, key=keys["it-db02"])
    before = (rig.databases(), rig.table_digest(TARGET), rig.sh(container, "ls -R %s" % backup_dir))
    res = venv_module("restore", restore_args(pg, engine_db, backup_dir, backup_id, keys))
    assert res.get("failed") is True, res
    assert "trusted for it-db02" in res["msg"] and keys["it-db02"]["key_id"] in res["msg"], res["msg"]
    assert_untouched(container, backup_dir, *before)


def test_an_edited_and_resealed_manifest_is_refused(container, pg, engine_db, backup_dir, keys, target):
    backup_id = dump(pg, engine_db, backup_dir, key=keys["it-db01"])
    manifest = "%s/%s/%s.manifest.json" % (backup_dir, engine_db, backup_id)
    rig.sh(container, "%s -c '%s' %s" % (VENV_PYTHON, RESEAL.replace("'", "'\\''"), manifest))
    before = (rig.databases(), rig.table_digest(TARGET), rig.sh(container, "ls -R %s" % backup_dir))
    res = venv_module("restore", restore_args(pg, engine_db, backup_dir, backup_id, keys, allow_unsigned=True))
    assert res.get("failed") is True and "does not verify" in res["msg"], res
    assert_untouched(container, backup_dir, *before)


def test_unsigned_needs_allow_unsigned_and_a_trusted_set_restores_with_a_signed_safety_backup(
    container, pg, engine_db, backup_dir, keys, target
):
    unsigned = dump(pg, engine_db, backup_dir)
    before = (rig.databases(), rig.table_digest(TARGET), rig.sh(container, "ls -R %s" % backup_dir))
    res = venv_module("restore", restore_args(pg, engine_db, backup_dir, unsigned, keys))
    assert res.get("failed") is True and "is unsigned" in res["msg"] and "allow_unsigned" in res["msg"], res
    assert_untouched(container, backup_dir, *before)
    res = venv_module("restore", restore_args(pg, engine_db, backup_dir, unsigned, keys, allow_unsigned=True))
    assert res.get("failed") is not True and res["signature"]["status"] == "unsigned", res

    signed = dump(pg, engine_db, backup_dir, key=keys["it-db01"])
    res = venv_module("restore", restore_args(pg, engine_db, backup_dir, signed, keys))
    assert res.get("failed") is not True, res
    assert res["signature"] == {"status": "trusted", "key_id": keys["it-db01"]["key_id"], "signer_host": "it-db01"}
    safety = res["safety_backup"]["manifest_path"]
    signature = json.loads(rig.sh(container, "cat %s" % safety))["signature"]
    assert signature["key_id"] == keys["it-db01"]["key_id"]
