"""The engine's one file lock: exclusive between holders, released on release or death."""

import datetime
import os
import re
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


def test_runner_lock_records_its_holder_and_dies_with_it(tmp_path):
    lock = _runner.run_lock(str(tmp_path), job="backup", unit="tsdb-backup.service")
    assert lock.try_acquire()
    record = lock.holder_record()
    assert record["pid"] == os.getpid() and record["job"] == "backup" and record["unit"] == "tsdb-backup.service"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record["started_at"])
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


# A second process that takes the runner's lock as the history-archive timer would, then waits.
HOLDER = """
import sys
sys.path.insert(0, sys.argv[2])
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _runner
lock = _runner.take_run_lock(sys.argv[1], "history-archive", "tsdb-history-archive.service")
print("held", flush=True)
sys.stdin.read()
"""


def test_a_second_run_says_who_holds_the_lock(tmp_path):
    collections = os.path.join(os.path.dirname(__file__), "..", "..", "collections")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path), collections],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(_runner.RunLocked) as refused:
            _runner.take_run_lock(str(tmp_path), "backup")
        message = str(refused.value)
        assert re.search(
            r"runner\.lock is held by tsdb-history-archive\.service \(PID %d, running since "
            r"\d\d:\d\d:\d\d UTC, job history-archive\)" % holder.pid,
            message,
        ), message
        assert refused.value.kind == "conflict"
    finally:
        holder.communicate("")
    # The holder has ended: the lock is free again and the new holder's record replaces the old one.
    lock = _runner.take_run_lock(str(tmp_path), "drill")
    assert lock.holder_record()["job"] == "drill" and lock.holder_record()["pid"] == os.getpid()
    lock.release()


def test_how_a_holder_is_described():
    now = datetime.datetime(2026, 11, 27, 2, 30, tzinfo=datetime.timezone.utc)
    me = os.getpid()
    record = {"pid": me, "started_at": "2026-11-27T02:00:03Z", "job": "history-archive", "unit": "x.service"}
    assert _lock.describe_holder(record, now=now) == (
        "held by x.service (PID %d, running since 02:00:03 UTC, job history-archive)" % me
    )
    yesterday = dict(record, started_at="2026-11-26T23:59:59Z", unit=None, job=None)
    assert _lock.describe_holder(yesterday, now=now) == (
        "held by another process (PID %d, running since 2026-11-26 23:59:59 UTC)" % me
    )
    assert _lock.describe_holder(None) == "held by a process that has not said who it is"
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    assert "has not written its record yet (the last one was PID" in _lock.describe_holder(
        {"pid": int(gone.stdout)}, now=now
    )


def test_holder_records_of_older_releases_and_torn_reads(tmp_path):
    lock = _lock.FileLock(str(tmp_path / "runner.lock"))
    assert lock.holder_record() is None  # no file
    (tmp_path / "runner.lock").write_text("%d\n" % os.getpid())
    assert lock.holder_record() == {"pid": os.getpid()}
    # A shorter record over a longer one, read before the file was cut: the tail is ignored.
    (tmp_path / "runner.lock").write_text('{"pid": 7}\n"started_at": "2026-11-27T02:00:03Z"}\n')
    assert lock.holder_record() == {"pid": 7}
    (tmp_path / "runner.lock").write_text("")
    assert lock.holder_record() is None


def test_the_unit_comes_from_the_cgroup(tmp_path):
    assert _lock.unit_of_cgroup("0::/system.slice/tsdb-history-archive.service\n") == "tsdb-history-archive.service"
    assert _lock.unit_of_cgroup("0::/user.slice/user-1000.slice/session-4.scope\n") == "session-4.scope"
    v1 = "12:pids:/system.slice/tsdb-backup.service\n1:name=systemd:/system.slice/tsdb-backup.service\n"
    assert _lock.unit_of_cgroup(v1) == "tsdb-backup.service"
    assert _lock.unit_of_cgroup("0::/\n") is None
    assert _lock.systemd_unit(str(tmp_path / "missing")) is None
    fields = _runner.holder_fields("backup", "tsdb-backup.service", environ={"INVOCATION_ID": "abc"})
    assert fields == {"job": "backup", "unit": "tsdb-backup.service", "invocation_id": "abc"}


def test_the_runner_refuses_to_start_beside_a_holder_and_says_who(tmp_path, capsys):
    held = _runner.take_run_lock(str(tmp_path), "history-archive", "tsdb-history-archive.service")
    try:
        environ = {
            "TSDB_BACKUP_DATABASES": "iot",
            "TSDB_BACKUP_STATE_DIR": str(tmp_path),
            "TSDB_BACKUP_UPLOAD": "false",
            "TSDB_BACKUP_LOCK_WAIT_MINUTES": "0",  # waiting: tests/unit/test_fault_lock.py
        }
        assert _runner.main(["run"], environ=environ) == _runner.EXIT_LOCKED == 75
    finally:
        held.release()
    logged = capsys.readouterr().err
    assert "is held by tsdb-history-archive.service (PID %d, running since" % os.getpid() in logged, logged
    assert "job history-archive); try again when it has finished; not starting a second one" in logged
