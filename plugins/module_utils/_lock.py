# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One flock-based file lock for the engine: backup folders, the runner, the metrics state.

flock rather than a PID file: the kernel releases it when the holder dies, so a killed run
never leaves a stale lock behind. Free of Ansible imports (the scheduled runner uses it).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import fcntl
import os


class FileLock:
    """An exclusive lock on ``path`` (created 0600).

    ``try_acquire()`` returns False when another process holds it; ``acquire()`` waits.
    With ``write_pid`` the holder's PID is written into the file, for an operator who looks.
    """

    def __init__(self, path, write_pid=False):
        self.path = path
        self.write_pid = write_pid
        self.fd = None

    def _lock(self, flags):
        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(self.fd, flags)
        except OSError as e:
            os.close(self.fd)
            self.fd = None
            if e.errno in (errno.EAGAIN, errno.EACCES):
                return False
            raise
        if self.write_pid:
            os.ftruncate(self.fd, 0)
            os.write(self.fd, ("%d\n" % os.getpid()).encode())
        return True

    def try_acquire(self):
        return self._lock(fcntl.LOCK_EX | fcntl.LOCK_NB)

    def acquire(self):
        return self._lock(fcntl.LOCK_EX)

    def release(self):
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
