"""Replica targets against two Azurite instances as two accounts: the shared one is the primary,
a private one on its own port and folder is the replica. Sets are copied after they are proven
in the primary (data, then the manifest), byte for byte; a replica that is down fails its own
copies and catches up oldest first once back; a set damaged or forged in the primary is not
copied; a download falls back to the replica when the primary's blob is missing or damaged."""

import datetime
import hashlib
import os

import azure_helpers as h
import pytest
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _replica

DB = "iot"
PREFIX = "it-replica"


def day_id(days_ago, hour=2):
    when = datetime.datetime.now(datetime.timezone.utc).replace(hour=hour, minute=0, second=0, microsecond=0)
    return (when - datetime.timedelta(days=days_ago)).strftime("%Y%m%dT%H%M%SZ")


@pytest.fixture
def replica_azurite(tmp_path):
    azurite = h.PrivateAzurite(str(tmp_path / "replica-azurite")).start()
    yield azurite
    azurite.stop()


def replica_config(azurite, container="dr-backups"):
    return azurite.replica(container, timeout=5, access_tier="Cool")


def contents(service_or_store, names):
    """name -> sha256 of each blob's content, read back from the service."""
    client = service_or_store.container_client
    return {n: hashlib.sha256(client.get_blob_client(n).download_blob().readall()).hexdigest() for n in names}


def primary_with_sets(azure_env, container, backup_dir, ids):
    store = h.store_for(azure_env, container, prefix=PREFIX)
    for backup_id in ids:
        h.make_backup_set(str(backup_dir), DB, backup_id)
    up = store.catch_up(str(backup_dir), database=DB, host=h.HOST)
    assert not up["failures"] and len(up["uploaded"]) == len(ids), up
    return store


def test_sets_are_copied_byte_for_byte_and_a_second_run_copies_nothing(azure_env, container, tmp_path, replica_azurite):
    ids = [day_id(2), day_id(1), day_id(0)]
    primary = primary_with_sets(azure_env, container, tmp_path / "b", ids)
    _p, dr = _replica.open_targets(primary, [replica_config(replica_azurite)])
    dr.store.ensure_container()

    result = _replica.replicate_sets(primary, dr, h.HOST, DB)
    assert result["error"] is None and result["failures"] == [] and result["copied"] == ids, result
    assert result["pending"] == 0
    names = sorted(primary._listing(PREFIX + "/"))
    assert sorted(dr.store._listing(PREFIX + "/")) == names
    assert contents(dr.store, names) == contents(primary, names)
    # Data blobs in the replica's tier, the manifest last (a visible manifest means a complete set).
    listing = dr.store._listing(PREFIX + "/")
    assert {i["tier"] for n, i in listing.items() if n.endswith(".dump")} == {"Cool"}
    for backup_id in ids:
        dump, manifest = [listing[n] for n in sorted(listing) if backup_id in n and n.endswith((".dump", ".json"))]
        assert dump["last_modified"] <= manifest["last_modified"]
    # The replica's catalog reads the sets as the primary's reads them.
    there = dr.store.with_manifests(dr.store.list_remote(h.HOST, DB))
    assert [e["backup_id"] for e in there if e["manifest"]] == ids

    again = _replica.replicate_sets(primary, dr, h.HOST, DB)
    assert again["copied"] == [] and again["pending"] == 0 and again["bytes"] == 0, again
    assert {n: i["etag"] for n, i in dr.store._listing(PREFIX + "/").items()} == {
        n: i["etag"] for n, i in listing.items()
    }


def test_a_replica_down_fails_alone_then_catches_up_oldest_first(azure_env, container, tmp_path, replica_azurite):
    ids = [day_id(3), day_id(2)]
    primary = primary_with_sets(azure_env, container, tmp_path / "b", ids)
    _p, dr = _replica.open_targets(primary, [replica_config(replica_azurite)])
    dr.store.ensure_container()
    replica_azurite.stop()

    down = _replica.replicate_sets(primary, dr, h.HOST, DB)
    assert down["copied"] == [] and down["error"] and "cannot reach" in down["error"], down
    assert down["pending"] is None
    # The primary is untouched and still takes new sets.
    h.make_backup_set(str(tmp_path / "b"), DB, day_id(1))
    assert primary.catch_up(str(tmp_path / "b"), database=DB, host=h.HOST)["uploaded"] == [day_id(1)]

    replica_azurite.start()
    _p, dr = _replica.open_targets(primary, [replica_config(replica_azurite)])  # the next run's targets
    back = _replica.replicate_sets(primary, dr, h.HOST, DB)
    assert back["error"] is None and back["copied"] == ids + [day_id(1)], back
    manifests = {
        n: i["last_modified"] for n, i in dr.store._listing(PREFIX + "/").items() if n.endswith(".manifest.json")
    }
    assert [n for n, _t in sorted(manifests.items(), key=lambda kv: kv[1])] == sorted(manifests)


def test_a_set_damaged_in_the_primary_is_not_copied(azure_env, container, tmp_path, replica_azurite):
    ids = [day_id(2), day_id(1)]
    primary = primary_with_sets(azure_env, container, tmp_path / "b", ids)
    _p, dr = _replica.open_targets(primary, [replica_config(replica_azurite)])
    dr.store.ensure_container()
    # Same size, other bytes, metadata (the sha256 claim) untouched: only reading the content tells.
    entry = primary.list_remote(h.HOST, DB)[0]
    dump = [b for b in entry["blobs"] if b["kind"] == "archive"][0]
    blob = primary.container_client.get_blob_client(dump["name"])
    blob.upload_blob(os.urandom(dump["size"]), overwrite=True, metadata=blob.get_blob_properties().metadata)

    result = _replica.replicate_sets(primary, dr, h.HOST, DB)
    assert result["copied"] == [ids[1]], result
    (failure,) = result["failures"]
    assert failure["backup_id"] == ids[0] and "not copied" in failure["error"], failure
    assert not [n for n in dr.store._listing(PREFIX + "/") if ids[0] in n], "nothing of the damaged set is there"
    assert result["pending"] == 1


def test_a_replica_that_is_the_primary_is_refused(azure_env, container, tmp_path):
    primary = h.store_for(azure_env, container, prefix=PREFIX)
    same = {
        "name": "dr",
        "auth_mode": "connection_string",
        "connection_string": azure_env["AZURE_STORAGE_CONNECTION_STRING"],
        "container": container,
    }
    _p, refused = _replica.open_targets(primary, [same])
    assert refused.store is None and "primary's own container" in refused.error and "not used" in refused.error
    result = _replica.replicate_sets(primary, refused, h.HOST, DB)
    assert result["error"] == refused.error and result["copied"] == []
    with pytest.raises(_replica.ConfigError, match="used twice or is the primary's"):
        _replica.check_replicas([dict(same, container="x"), dict(same, container="y")])


def test_download_falls_back_to_the_replica(azure_env, container, cs_args, tmp_path, replica_azurite):
    ids = [day_id(2), day_id(1)]
    primary = primary_with_sets(azure_env, container, tmp_path / "b", ids)
    replica = replica_config(replica_azurite)
    _p, dr = _replica.open_targets(primary, [replica])
    dr.store.ensure_container()
    assert _replica.replicate_sets(primary, dr, h.HOST, DB)["copied"] == ids
    original = mf.read_manifest(str(tmp_path / "b" / DB / (ids[1] + ".manifest.json")))
    # The newest set's archive is gone from the primary.
    entry = primary.list_remote(h.HOST, DB)[-1]
    archive = [b["name"] for b in entry["blobs"] if b["kind"] == "archive"][0]
    primary.container_client.delete_blob(archive)
    args = dict(cs_args, prefix=PREFIX, dest=str(tmp_path / "restore"), database=DB, host_label=h.HOST)
    args["backup_id"] = ids[1]

    without = h.run_module(
        "blob_download", dict(args, replicas=[replica], fallback=False), secrets=[replica["connection_string"]]
    )
    assert without.get("failed") and ids[1] in without["msg"], without
    result = h.run_module("blob_download", dict(args, replicas=[replica]), secrets=[replica["connection_string"]])
    assert not result.get("failed"), result
    assert result["target"] == "dr" and [f["target"] for f in result["fallbacks"]] == ["primary"], result
    got = mf.read_manifest(result["manifest_path"])
    assert mf.sha256_file(result["archive_path"])[0] == original["archive"]["sha256"] == got["archive"]["sha256"]

    # read_from names the replica first: the primary is not needed at all.
    first = h.run_module(
        "blob_download",
        dict(args, dest=str(tmp_path / "restore2"), replicas=[replica], read_from="secondary", backup_id=ids[0]),
        secrets=[replica["connection_string"]],
    )
    assert first["target"] == "dr" and first["fallbacks"] == [], first
    unknown = h.run_module("blob_download", dict(args, replicas=[replica], read_from="nowhere"))
    assert unknown.get("failed") and "no such target" in unknown["msg"] and "primary, dr" in unknown["msg"], unknown


def test_a_planted_manifest_fails_alone_and_a_lost_copy_is_copied_again(
    azure_env, container, tmp_path, replica_azurite
):
    ids = [day_id(3), day_id(2), day_id(1)]
    primary = primary_with_sets(azure_env, container, tmp_path / "b", ids)
    _p, dr = _replica.open_targets(primary, [replica_config(replica_azurite)])
    assert _replica.replicate_sets(primary, dr, h.HOST, DB)["copied"] == ids
    # Someone with the primary's credential replaces the oldest manifest by one the parser never
    # expected (its archive a string), and the replica loses the newest set's archive.
    oldest = primary.list_remote(h.HOST, DB)[0]
    client = primary.container_client.get_blob_client(oldest["manifest_name"])
    planted = b'{"format": "insa.timescaledb_backup/backup-manifest", "archive": "x"}'
    primary.container_client.delete_blob(oldest["manifest_name"])
    client.upload_blob(planted)
    dr.store.container_client.delete_blob(oldest["manifest_name"])
    newest = dr.store.list_remote(h.HOST, DB)[-1]
    lost = [b["name"] for b in newest["blobs"] if b["kind"] == "archive"][0]
    dr.store.container_client.delete_blob(lost)

    result = _replica.replicate_sets(primary, dr, h.HOST, DB)
    assert result["error"] is None and result["copied"] == [ids[2]], result
    (failure,) = result["failures"]
    assert failure["backup_id"] == ids[0], failure
    assert lost in dr.store._listing(PREFIX + "/")
    assert oldest["manifest_name"] not in dr.store._listing(PREFIX + "/"), "a planted manifest was copied"
