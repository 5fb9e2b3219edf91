"""Signed manifests against the rig's Azurite, through the modules: a forged newer set planted
under another host's prefix (signed with a key trusted for a different host) and a manifest
edited and re-sealed are refused by blob_download before any archive byte is written, and
backup_info reports each set's signature and proves uploads only by the very manifest."""

import json
import os

import azure_helpers as h
import pytest
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _signing as sg

pytestmark = pytest.mark.rig

OLDER, NEWER = "20261125T020000Z", "20261126T020000Z"


@pytest.fixture
def keys(tmp_path):
    """Two hosts' keys and the trust store that lists each for its own host."""
    db01, _created = sg.create_key_file(str(tmp_path / "db01.pem"), mode=0o600)
    db02, _created = sg.create_key_file(str(tmp_path / "db02.pem"), mode=0o600)
    trust = tmp_path / "trusted-signers.json"
    trust.write_text(json.dumps({"_comment": "test", "db01": [db01.public_text], "db02": [db02.public_text]}))
    return {"db01": db01, "db02": db02, "trust": str(trust)}


def signed_set(backup_dir, backup_id, host, key):
    """A backup set of ``host`` whose manifest is signed with ``key`` (then sealed)."""
    bset = h.make_backup_set(backup_dir, "iot", backup_id, host=host)
    manifest = h.mf.read_manifest(bset.manifest)
    h.mf.write_manifest(bset.manifest, manifest, sg.Policy(signer=key))
    return bset


def test_a_forged_newer_set_under_another_hosts_prefix_is_refused_before_any_archive_byte(
    azure_env, service, container, cs_args, keys, tmp_path
):
    store = h.store_for(azure_env, container)
    genuine = signed_set(str(tmp_path / "db02"), OLDER, "db02", keys["db02"])
    store.upload_backup_set(genuine.manifest, host="db02")
    # db01 is compromised: with its own key it plants a newer "latest" under db02's prefix.
    forged = signed_set(str(tmp_path / "db01"), NEWER, "db02", keys["db01"])
    store.upload_backup_set(forged.manifest, host="db02")

    dest = str(tmp_path / "restore")
    args = dict(cs_args, dest=dest, database="iot", host_label="db02", trusted_signers_file=keys["trust"])
    res = h.run_module("blob_download", args)
    assert res.get("failed") is True and res["error_kind"] == "integrity", res
    assert "backup %s of iot under host db02" % NEWER in res["msg"]
    assert "signed by key %s, which is trusted for db01 only" % keys["db01"].key_id in res["msg"]
    # Nothing of the forged set was written: no archive, no partial file, no manifest.
    assert not os.path.exists(os.path.join(dest, "iot")) or os.listdir(os.path.join(dest, "iot")) == []

    # The genuine set by its id downloads, trusted.
    res = h.run_module("blob_download", dict(args, backup_id=OLDER))
    assert res.get("failed") is not True, res
    assert res["signature"] == {"status": "trusted", "key_id": keys["db02"].key_id, "signer_host": "db02"}

    # The catalog shows the forged set as refused and never selects it as latest.
    info = h.run_module(
        "backup_info", dict(cs_args, host_label="db02", read_manifests=True, trusted_signers_file=keys["trust"])
    )
    assert info.get("failed") is not True, info
    by_id = {b["backup_id"]: b for b in info["backups"]}
    assert by_id[NEWER]["signature"]["status"] == "other-host"
    assert "trusted for db01" in by_id[NEWER]["remote"]["manifest_error"]
    assert by_id[OLDER]["signature"]["status"] == "trusted"
    assert info["selected"]["backup_id"] == OLDER


def test_an_edited_and_resealed_manifest_is_refused(azure_env, service, container, cs_args, keys, tmp_path):
    store = h.store_for(azure_env, container)
    bset = signed_set(str(tmp_path / "src"), OLDER, "db01", keys["db01"])
    uploaded = store.upload_backup_set(bset.manifest, host="db01")
    # Someone with write access replaces the manifest blob: one table's rows changed, re-sealed.
    edited = json.loads(open(bset.manifest).read())
    edited["tables"]["public.metrics"]["rows"] = 1
    blob = service.get_blob_client(container, uploaded["manifest_url"].split("/%s/" % container, 1)[1])
    blob.upload_blob(h.mf.dumps(edited), overwrite=True)

    dest = str(tmp_path / "restore")
    args = dict(cs_args, dest=dest, database="iot", host_label="db01", trusted_signers_file=keys["trust"])
    res = h.run_module("blob_download", args)
    assert res.get("failed") is True and res["error_kind"] == "integrity", res
    assert "does not verify" in res["msg"] and keys["db01"].key_id in res["msg"]
    assert not os.path.exists(os.path.join(dest, "iot", OLDER + ".dump"))
    # Not even allow_unsigned lets it through.
    res = h.run_module("blob_download", dict(args, allow_unsigned=True))
    assert res.get("failed") is True and "does not verify" in res["msg"]


def test_unsigned_sets_need_allow_unsigned_and_without_a_trust_store_it_says_so(
    azure_env, service, container, cs_args, keys, tmp_path
):
    store = h.store_for(azure_env, container)
    old = h.make_backup_set(str(tmp_path / "src"), "iot", OLDER, host="db01")  # made before signing
    store.upload_backup_set(old.manifest, host="db01")
    args = dict(cs_args, dest=str(tmp_path / "restore"), database="iot", host_label="db01")
    res = h.run_module("blob_download", dict(args, trusted_signers_file=keys["trust"]))
    assert res.get("failed") is True and "is unsigned" in res["msg"] and "allow_unsigned" in res["msg"], res
    res = h.run_module("blob_download", dict(args, trusted_signers_file=keys["trust"], allow_unsigned=True))
    assert res.get("failed") is not True and res["signature"]["status"] == "unsigned", res
    info = h.run_module("backup_info", dict(cs_args, host_label="db01", read_manifests=True))
    assert [b["signature"]["status"] for b in info["backups"]] == ["unsigned, no trust store"]


def test_uploads_are_proven_by_the_very_manifest(azure_env, service, container, cs_args, keys, tmp_path):
    """backup_info's uploaded_backup_ids (what prune deletes by): a manifest blob planted under this
    host's name for a local set proves nothing; the set's own upload does."""
    store = h.store_for(azure_env, container)
    backup_dir = str(tmp_path / "backups")
    mine = signed_set(backup_dir, NEWER, "db01", keys["db01"])
    planted = signed_set(str(tmp_path / "elsewhere"), NEWER, "db01", keys["db02"])
    store.upload_backup_set(planted.manifest, host="db01")
    args = dict(cs_args, backup_dir=backup_dir, host_label="db01", trusted_signers_file=keys["trust"])
    info = h.run_module("backup_info", args)
    assert info.get("failed") is not True and info["uploaded_backup_ids"] == [], info
    service.get_container_client(container).delete_blobs(*h.blob_names(service, container, "timescaledb/db01/"))
    store.upload_backup_set(mine.manifest, host="db01")
    info = h.run_module("backup_info", args)
    assert info["uploaded_backup_ids"] == [NEWER]
