# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A file read by others while it is written: the archive pg_dump streams reaches the
verification and the upload during the dump, instead of being read again after it.

Followers read the file itself (from the page cache), never the stream: a slow follower (an
upload over a thin link) falls behind without ever holding up pg_dump, whose snapshot keeps the
server's old rows alive for as long as it runs. What a follower proves is tied to the bytes it
read (each computes its own sha256), so its verdict only counts for the archive the manifest
describes when the digests match.

Private to the collection. No Ansible imports: the scheduled runner uses this too.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os
import threading


class Abandoned(Exception):
    """The writer failed or the follower was cancelled: what was read is no archive."""


class GrowingFile:
    """The writer's side: ``grew(size)`` after each flushed write, ``close(ok)`` at the end."""

    def __init__(self, path):
        self.path = path
        self._cond = threading.Condition()
        self._size = 0
        self._done = False
        self._ok = False
        self._cancelled = False

    def grew(self, size):
        with self._cond:
            self._size = size
            self._cond.notify_all()

    def close(self, ok):
        """The end of writing; the first call counts (a failure after close(True) is the
        owner's to report: followers have read a complete stream by then)."""
        with self._cond:
            if not self._done:
                self._done, self._ok = True, bool(ok)
            self._cond.notify_all()

    def rename(self, dest):
        """Renames the file (the writer's partial into place) for followers that have not opened
        it yet too: they open it under the same lock, by its current name."""
        with self._cond:
            os.rename(self.path, dest)
            self.path = dest

    def cancel(self):
        """Ends every follower's reading (Abandoned) at its next block."""
        with self._cond:
            self._cancelled = True
            self._cond.notify_all()

    def _wait(self, offset, block_size):
        """Bytes readable from offset (up to block_size) once a full block is there or the file is
        complete; 0 at the end of a complete file."""
        with self._cond:
            while not (self._done or self._cancelled) and self._size - offset < block_size:
                self._cond.wait()
            if self._cancelled or (self._done and not self._ok):
                raise Abandoned("%s was not completed" % self.path)
            return min(block_size, self._size - offset)

    def blocks(self, block_size):
        """The file's content in blocks of block_size (the last one shorter), as it is written;
        ends with the complete file. Raises Abandoned when the writer fails or on cancel()."""
        offset = 0
        with self._cond:  # the writer creates the file before its first grew()
            while not (self._size or self._done or self._cancelled):
                self._cond.wait()
            if self._cancelled or (self._done and not self._ok):
                raise Abandoned("%s was not completed" % self.path)  # and may be gone already
            f = open(self.path, "rb")  # noqa: SIM115 - closed by the with below
        with f:
            while True:
                n = self._wait(offset, block_size)
                if n <= 0:
                    return
                data = f.read(n)
                if len(data) != n:
                    raise Abandoned("%s is shorter than its writer reported" % self.path)
                offset += n
                yield data


class Follower:
    """One reader of a GrowingFile in a thread of its own. ``work(blocks)`` consumes the
    iterator of (hashed) blocks and returns what the follower found; after join(): ``result``,
    ``error`` (its exception, or None), ``sha256`` and ``size`` of what it read."""

    name = "follower"

    def __init__(self, growing, block_size):
        self.growing = growing
        self.block_size = block_size
        self.result = self.error = None
        self.sha256 = None
        self.size = 0
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def _hashed(self):
        digest = hashlib.sha256()
        for block in self.growing.blocks(self.block_size):
            digest.update(block)
            self.size += len(block)
            yield block
        self.sha256 = digest.hexdigest()

    def _run(self):
        try:
            self.result = self.work(self._hashed())
        except Exception as e:  # noqa: BLE001 - the owner decides what a failed follower means
            self.error = e

    def work(self, blocks):  # pragma: no cover - subclasses
        raise NotImplementedError

    def cancel(self):
        """Stops the reading (and with it the work) at the next block."""
        self.growing.cancel()

    def join(self, timeout=None):
        self._thread.join(timeout)
        return self

    def read_whole(self, sha256, size):
        """True when this follower read to the end, without error and with a result, exactly the
        archive of that sha256 and size: only then does its result speak for that archive."""
        return self.error is None and bool(self.result) and self.sha256 == sha256 and self.size == size
