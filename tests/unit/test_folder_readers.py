"""A set is never removed under a reader's feet: restore, verify, upload and download hold the
folder's readers lock shared; prune takes it exclusively and otherwise removes nothing."""

import os
import threading

import pytest
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import (
    _azure_transfers,
    _lock,
    _prune,
    _restore,
    _verify,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf


def make_sets(backup_dir, database, ids):
    sets = []
    for backup_id in ids:
        bset = mf.BackupSet(str(backup_dir), database, backup_id)
        os.makedirs(bset.folder, mode=0o700, exist_ok=True)
        with open(bset.archive, "wb") as f:
            f.write(b"archive " + backup_id.encode())
        mf.write_manifest(
            bset.manifest,
            {
                "format": mf.MANIFEST_FORMAT,
                "format_version": mf.MANIFEST_VERSION,
                "backup_id": backup_id,
                "database": database,
                "host": "db1",
                "dump": {"format": "custom"},
                "archive": {"file": os.path.basename(bset.archive)},
                "tables": {},
            },
        )
        sets.append(bset)
    return sets


@pytest.fixture
def folder(tmp_path):
    backup_dir = tmp_path / "b"
    backup_dir.mkdir(mode=0o700)
    sets = make_sets(backup_dir, "iot", ["20261101T020000Z", "20261102T020000Z", "20261103T020000Z"])
    return str(backup_dir), sets


def prune(backup_dir):
    return _prune.prune(backup_dir, "iot", keep_last=1, keep_days=0, force=True)


def test_prune_removes_nothing_while_a_reader_holds_the_folder(folder):
    backup_dir, sets = folder
    with _lock.reading_folder(sets[0].folder):
        result = prune(backup_dir)
        assert result["deleted"] == [] and result["removed_paths"] == []
        assert "is being read" in result["busy"] and "2 set(s) due for removal" in result["busy"]
        assert {k["backup_id"] for k in result["kept"]} == {s.backup_id for s in sets}
        assert all(os.path.exists(s.archive) and os.path.exists(s.manifest) for s in sets)
    result = prune(backup_dir)
    assert [d["backup_id"] for d in result["deleted"]] == [sets[0].backup_id, sets[1].backup_id]
    assert "busy" not in result
    assert not os.path.exists(sets[0].archive) and os.path.exists(sets[2].archive)


def test_readers_share_and_wait_only_for_a_prune(folder):
    _backup_dir, sets = folder
    with _lock.reading_folder(sets[0].folder), _lock.reading_folder(sets[0].folder):
        pass  # two readers at once
    pruning = _lock.FolderReaders(sets[0].folder)
    assert pruning.try_acquire()
    entered = threading.Event()

    def reader():
        with _lock.reading_folder(sets[0].folder):
            entered.set()

    thread = threading.Thread(target=reader)
    thread.start()
    assert not entered.wait(0.3), "a reader went in while a prune held the folder"
    pruning.release()
    assert entered.wait(5)
    thread.join()


def test_a_folder_that_does_not_exist_needs_no_lock(tmp_path):
    with _lock.reading_folder(str(tmp_path / "none")):
        assert not os.path.exists(str(tmp_path / "none"))


def held(folder):
    probe = _lock.FolderReaders(folder)
    if probe.try_acquire():
        probe.release()
        return False
    return True


def test_verify_holds_the_folder_while_it_reads(folder, monkeypatch):
    backup_dir, sets = folder
    seen = []
    monkeypatch.setattr(_verify, "_verify_set", lambda *a: seen.append(held(sets[0].folder)) or {"ok": True})
    _verify.verify(None, backup_dir, "iot", sets[0].backup_id)
    assert seen == [True] and not held(sets[0].folder)


def test_upload_holds_the_folder_while_it_sends(folder, monkeypatch):
    _backup_dir, sets = folder
    seen = []
    monkeypatch.setattr(_azure_transfers.Transfers, "_upload_set", lambda self, *a: seen.append(held(sets[0].folder)))
    transfers = object.__new__(_azure_transfers.Transfers)
    transfers.upload_backup_set(sets[0].manifest, host="db1")
    assert seen == [True] and not held(sets[0].folder)


def test_restore_holds_the_folder_while_it_restores(folder, monkeypatch):
    _backup_dir, sets = folder
    seen = []

    def check_target(*_args):
        seen.append(held(sets[0].folder))
        raise _restore.RestoreError("stop here", kind="conflict")

    monkeypatch.setattr(_restore, "_check_target", check_target)
    # The journal of a killed swap is read first (tests/integration/engine/test_restore_faults.py).
    monkeypatch.setattr(_restore._restore_swap, "recover_killed", lambda params, target: seen.append(target) or [])
    monkeypatch.setattr(_restore, "check_trusted", lambda *a: None)
    params = type("P", (), {"user": "tsdb_backup"})()
    manifest = mf.read_manifest(sets[0].manifest)
    with pytest.raises(_restore.RestoreError, match="stop here"):
        _restore.restore_backup(params, sets[0], manifest, "iot")
    assert seen == ["iot", True] and not held(sets[0].folder)


def test_a_read_only_folder_is_read_without_the_lock(folder, monkeypatch):
    """A folder on a read-only mount (a snapshot, DR media) cannot take the lock file, and nothing
    can prune there either: the reader goes on (before the readers lock, these restores worked)."""
    import errno

    _backup_dir, sets = folder

    def read_only(self):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(_lock.FolderReaders, "acquire_shared", read_only)
    with _lock.reading_folder(sets[0].folder):
        pass
