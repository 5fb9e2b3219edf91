"""The engine's one file lock: exclusive between holders, released on release or death."""

import os
import stat
import subprocess
import sys

import pytest
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _dump, _lock, _runner


def test_second_holder_is_refused_until_release(tmp_path):
    path = str(tmp_path / "x.lock")
    first, second = _lock.FileLock(path), _lock.FileLock(path)
    assert first.try_acquire()
    # flock belongs to the open file description, so a second open in this process conflicts too.
    assert not second.try_acquire()
    assert second.fd is None
    first.release()
    assert second.try_acquire()
    second.release()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_runner_lock_records_pid_and_dies_with_its_holder(tmp_path):
    lock = _runner.run_lock(str(tmp_path))
    assert lock.try_acquire()
    with open(lock.path) as f:
        assert f.read().strip() == str(os.getpid())
    lock.release()
    # A holder killed mid-run must not leave the lock taken.
    code = "; ".join(
        [
            "import fcntl, os, signal",
            "fd = os.open(%r, os.O_RDWR)" % lock.path,
            "fcntl.flock(fd, fcntl.LOCK_EX)",
            "os.kill(os.getpid(), signal.SIGKILL)",
        ]
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == -9
    assert lock.try_acquire()
    lock.release()


def test_folder_lock_explains_who_holds_it(tmp_path):
    with _dump.FolderLock(str(tmp_path)):
        with pytest.raises(_dump.BackupError, match="another backup or prune of .* is running"):
            with _dump.FolderLock(str(tmp_path)):
                pass
    with _dump.FolderLock(str(tmp_path)):
        pass
