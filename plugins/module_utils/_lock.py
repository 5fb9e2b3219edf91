# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One flock-based file lock for the engine: backup folders, the runner, the metrics state.

flock rather than a PID file: the kernel releases it when the holder dies, so a killed run
never leaves a stale lock behind. The runner's lock also holds a record of who holds it (PID,
systemd unit, job, start), which a second run reads to say who is in its way. Free of
Ansible imports (the scheduled runner uses it).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import datetime
import errno
import fcntl
import json
import os

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _errors


class FileLock:
    """An exclusive lock on ``path`` (created 0600).

    ``try_acquire()`` returns False when another process holds it; ``acquire()`` waits.
    With ``holder`` (a dict, or a callable returning one) the holder writes who it is into the
    file once it holds the lock: its PID, the time it started and these fields (a systemd unit,
    a job), so that a second run can say who is in its way (``holder_record``, ``describe``).
    """

    def __init__(self, path, holder=None, mode=0o600):
        self.path = path
        self.holder = holder
        self.mode = mode
        self.fd = None

    def _lock(self, flags):
        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, self.mode)
        try:
            fcntl.flock(self.fd, flags)
        except OSError as e:
            os.close(self.fd)
            self.fd = None
            if e.errno in (errno.EAGAIN, errno.EACCES):
                return False
            raise
        if self.holder is not None:
            self._write_record()
        return True

    def _write_record(self):
        """One write of the whole record at the start of the file, then the file cut to it: the
        lock stays held (same file, same descriptor) and a reader never finds it empty; what it
        may find for a moment after a longer record is the new record with a tail, which
        holder_record ignores."""
        fields = self.holder() if callable(self.holder) else dict(self.holder)
        record = dict(fields, pid=os.getpid(), started_at=_utc_text(datetime.datetime.now(datetime.timezone.utc)))
        data = (json.dumps(record, sort_keys=True) + "\n").encode("utf-8")
        os.pwrite(self.fd, data, 0)
        os.ftruncate(self.fd, len(data))

    def try_acquire(self):
        return self._lock(fcntl.LOCK_EX | fcntl.LOCK_NB)

    def acquire(self):
        return self._lock(fcntl.LOCK_EX)

    def acquire_shared(self):
        """Waits for a shared hold: any number of shared holders, none while an exclusive one."""
        return self._lock(fcntl.LOCK_SH)

    def release(self):
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def holder_record(self):
        """What the holder wrote into the file (a dict with at least 'pid'), or None when there is
        nothing readable. A file of an older release holds the PID alone."""
        try:
            with open(self.path, "rb") as f:
                text = f.read(64 * 1024).decode("utf-8", "replace")
        except OSError:
            return None
        try:
            record, _end = json.JSONDecoder().raw_decode(text.strip())
        except ValueError:
            return None
        if isinstance(record, int) and not isinstance(record, bool):
            record = {"pid": record}
        return record if isinstance(record, dict) and isinstance(record.get("pid"), int) else None

    def describe(self, now=None):
        """'held by tsdb-history-archive.service (PID 1234, running since 02:00:03 UTC, job history-archive)'."""
        return describe_holder(self.holder_record(), now=now)

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


class FolderReaders(FileLock):
    """The readers of a backup folder (``.readers.lock``): a restore, a verification, an upload or a
    download holds it shared while it reads or writes a set there; prune takes it exclusively and,
    when it cannot, removes nothing this time. A set is never deleted under a reader's feet
    (pg_restore of a directory-format set opens its files one by one)."""

    def __init__(self, folder):
        super(FolderReaders, self).__init__(os.path.join(folder, ".readers.lock"))


@contextlib.contextmanager
def reading_folder(folder):
    """Holds ``folder``'s readers lock shared, waiting only while a prune deletes; nothing when the
    folder does not exist (nothing in it can be pruned)."""
    if not os.path.isdir(folder):
        yield
        return
    lock = FolderReaders(folder)
    try:
        lock.acquire_shared()
    except OSError as e:
        if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise _errors.ConfigError("cannot take the readers lock %s (%s)" % (lock.path, e.strerror or e)) from None
        lock.fd = _read_only_shared(lock.path)  # a read-only or foreign folder: what no prune of ours can touch
    try:
        yield
    finally:
        lock.release()


def hold_reading_folder(folder):
    """reading_folder for the rest of this process (a module run: the kernel releases the flock
    when it exits), from choosing a set to the end of what is done with it."""
    held = reading_folder(folder)
    held.__enter__()
    return held


def _read_only_shared(path):
    """A shared flock on an existing lock file opened read-only (flock needs no write access), or
    None when there is none to open."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
    except OSError:
        os.close(fd)
        return None
    return fd


def _utc_text(moment):
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, as another user
        return True
    return True


def describe_holder(record, now=None):
    """What an operator reads about the holder of a lock, from its record (see FileLock)."""
    if not record:
        return "held by a process that has not said who it is"
    if not _alive(record["pid"]):
        return "held by a process that has not written its record yet (the last one was PID %d)" % record["pid"]
    details = ["PID %d" % record["pid"]]
    since = _parse_utc(record.get("started_at"))
    if since is not None:
        now = now or datetime.datetime.now(datetime.timezone.utc)
        fmt = (
            "%H:%M:%S UTC" if since.date() == now.astimezone(datetime.timezone.utc).date() else "%Y-%m-%d %H:%M:%S UTC"
        )
        details.append("running since %s" % since.strftime(fmt))
    if record.get("job"):
        details.append("job %s" % record["job"])
    who = record.get("unit") or "another process"
    return "held by %s (%s)" % (who, ", ".join(details))


def _parse_utc(text):
    try:
        return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    except (TypeError, ValueError):
        return None


def systemd_unit(cgroup_path="/proc/self/cgroup"):
    """The systemd unit this process runs in ('tsdb-backup.service', or a login session's
    'session-4.scope' for a playbook run), or None outside systemd: the last .service or .scope
    of the process's cgroup."""
    try:
        with open(cgroup_path) as f:
            return unit_of_cgroup(f.read())
    except OSError:
        return None


def unit_of_cgroup(text):
    """The unit of a /proc/<pid>/cgroup text (cgroup v2 '0::/system.slice/x.service', or v1 lines)."""
    for line in text.splitlines():
        path = line.split(":", 2)[-1]
        units = [part for part in path.split("/") if part.endswith((".service", ".scope"))]
        if units:
            return units[-1]
    return None
