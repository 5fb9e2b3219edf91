"""The archive staged in Azurite while it is written (_azure.FollowingUpload): the upload of the
set then commits those blocks without reading the file again, the blob holds exactly the file's
bytes, nothing is visible before the commit, and blocks of other content are never committed."""

import hashlib
import os
import threading
import time

import azure_helpers as h
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _follow
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf

BID = "20261201T020000Z"


def grow(bset, growing, data, step=300_000):
    """Writes the set's archive into its partial file in steps, as _dump does, then renames it."""
    partial = bset.archive + mf.PARTIAL_SUFFIX
    with open(partial, "wb") as f:
        for i in range(0, len(data), step):
            f.write(data[i : i + step])
            f.flush()
            growing.grew(min(len(data), i + step))
            time.sleep(0.005)
    growing.close(True)
    os.rename(partial, bset.archive)


def follow(store, bset, growing):
    name = store.archive_blob_name(h.HOST, bset)
    return store.following_upload(name, growing, 3 * h.MIB, concurrency=2).start()


def downloaded(service, container, name):
    return service.get_blob_client(container, name).download_blob().readall()


def test_blocks_staged_during_the_write_are_committed_without_reading_the_file(
    azure_env, service, container, tmp_path, monkeypatch
):
    store = h.store_for(azure_env, container)
    store.ensure_container(create=True)
    bset = h.make_backup_set(str(tmp_path), "iot", BID, size=2 * h.MIB + 5)
    with open(bset.archive, "rb") as f:
        data = f.read()
    os.unlink(bset.archive)
    growing = _follow.GrowingFile(bset.archive + mf.PARTIAL_SUFFIX)
    follower = follow(store, bset, growing)
    writer = threading.Thread(target=grow, args=(bset, growing, data))
    writer.start()
    writer.join()
    follower.join(60)
    assert follower.error is None, follower.error
    assert follower.read_whole(hashlib.sha256(data).hexdigest(), len(data))
    assert h.blob_names(service, container) == [], "staged blocks are visible before the commit"

    stage_file = type(store)._stage_file

    def no_archive_read(self, blob, path, *args):
        assert path != bset.archive, "the archive was read again although its blocks were staged"
        return stage_file(self, blob, path, *args)  # the globals file is sent as before

    monkeypatch.setattr(type(store), "_stage_file", no_archive_read, raising=True)
    staged = {follower.blob_name: follower.result}
    res = store.upload_backup_set(bset.manifest, host=h.HOST, stage=True, staged=staged)
    archive = res["blobs"][0]
    assert archive["name"] == follower.blob_name and archive["status"] == "uploaded"
    assert archive.get("staged_during_dump") is True
    assert downloaded(service, container, follower.blob_name) == data  # the real bytes, read back
    assert not any(n.endswith(mf.MANIFEST_SUFFIX) for n in h.blob_names(service, container))


def test_blocks_of_other_content_are_not_committed(azure_env, service, container, tmp_path):
    """A staging that read other bytes than the manifest's (here: a file changed after the
    write) is ignored: the file is sent, and the blob is the manifest's archive."""
    store = h.store_for(azure_env, container)
    store.ensure_container(create=True)
    bset = h.make_backup_set(str(tmp_path), "iot", BID, size=1 * h.MIB)
    with open(bset.archive, "rb") as f:
        data = f.read()
    os.unlink(bset.archive)
    growing = _follow.GrowingFile(bset.archive + mf.PARTIAL_SUFFIX)
    follower = follow(store, bset, growing)
    other = bytes(reversed(data))
    grow(bset, growing, other)
    follower.join(60)
    assert follower.error is None and follower.result["sha256"] == hashlib.sha256(other).hexdigest()
    with open(bset.archive, "wb") as f:  # the manifest's content is what ends up in the file
        f.write(data)
    res = store.upload_backup_set(bset.manifest, host=h.HOST, stage=True, staged={follower.blob_name: follower.result})
    assert "staged_during_dump" not in res["blobs"][0]
    assert downloaded(service, container, follower.blob_name) == data


def test_a_cancelled_write_leaves_no_blob(azure_env, service, container, tmp_path):
    store = h.store_for(azure_env, container)
    store.ensure_container(create=True)
    bset = h.make_backup_set(str(tmp_path), "iot", BID, size=1 * h.MIB)
    growing = _follow.GrowingFile(bset.archive + mf.PARTIAL_SUFFIX)
    follower = follow(store, bset, growing)
    with open(bset.archive + mf.PARTIAL_SUFFIX, "wb") as f:
        f.write(os.urandom(512 * 1024))
    growing.grew(512 * 1024)
    follower.cancel()
    follower.join(60)
    assert isinstance(follower.error, _follow.Abandoned)
    assert h.blob_names(service, container) == []
