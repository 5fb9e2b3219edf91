"""_follow: readers of a file while it is written see every byte once, in order, never before it
is written, and never take a failed or cancelled writer's file for an archive."""

import hashlib
import os
import threading
import time

import pytest
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _follow


class Collect(_follow.Follower):
    name = "collect"

    def work(self, blocks):
        return b"".join(blocks)


def write_in_steps(path, growing, pieces, ok=True, pause=0.002):
    """The writer's side as _dump does it: write, flush, grew(); then close(ok)."""
    with open(path, "wb") as f:
        size = 0
        for piece in pieces:
            f.write(piece)
            f.flush()
            size += len(piece)
            growing.grew(size)
            time.sleep(pause)
    growing.close(ok)


def pieces(total=300_000, step=7_001):
    data = os.urandom(total)
    return data, [data[i : i + step] for i in range(0, total, step)]


def test_a_follower_reads_the_whole_file_as_it_grows(tmp_path):
    path = str(tmp_path / "a.dump.partial")
    data, parts = pieces()
    growing = _follow.GrowingFile(path)
    follower = Collect(growing, 64 * 1024).start()  # started before the file exists
    writer = threading.Thread(target=write_in_steps, args=(path, growing, parts))
    writer.start()
    writer.join()
    follower.join(10)
    assert follower.error is None and follower.result == data
    assert follower.read_whole(hashlib.sha256(data).hexdigest(), len(data))
    assert not follower.read_whole(hashlib.sha256(data[:-1]).hexdigest(), len(data) - 1)


def test_blocks_are_full_until_the_last_one(tmp_path):
    path = str(tmp_path / "b.partial")
    data, parts = pieces(total=100_000, step=999)
    growing = _follow.GrowingFile(path)
    sizes = []

    class Sizes(_follow.Follower):
        def work(self, blocks):
            sizes.extend(len(b) for b in blocks)

    follower = Sizes(growing, 10_000).start()
    write_in_steps(path, growing, parts, pause=0)
    follower.join(10)
    assert sizes == [10_000] * 10 and follower.size == len(data)


@pytest.mark.parametrize("how", ["writer fails", "cancelled"])
def test_a_failed_or_cancelled_writer_is_no_archive(tmp_path, how):
    path = str(tmp_path / "c.partial")
    data, parts = pieces()
    growing = _follow.GrowingFile(path)
    follower = Collect(growing, 64 * 1024).start()
    half = parts[: len(parts) // 2]
    if how == "writer fails":
        write_in_steps(path, growing, half, ok=False)
    else:
        with open(path, "wb") as f:
            f.write(b"".join(half))
        growing.grew(sum(map(len, half)))
        follower.cancel()
    follower.join(10)
    assert isinstance(follower.error, _follow.Abandoned), follower.error
    assert follower.result is None and follower.sha256 is None
    assert not follower.read_whole(hashlib.sha256(data).hexdigest(), len(data))


def test_the_first_close_counts(tmp_path):
    path = str(tmp_path / "d.partial")
    growing = _follow.GrowingFile(path)
    write_in_steps(path, growing, [b"x" * 10])
    growing.close(False)  # a later failure (the globals) does not undo a complete stream
    follower = Collect(growing, 4).start().join(10)
    assert follower.result == b"x" * 10


def test_a_file_shorter_than_reported_is_abandoned(tmp_path):
    path = str(tmp_path / "e.partial")
    growing = _follow.GrowingFile(path)
    with open(path, "wb") as f:
        f.write(b"y" * 10)
    growing.grew(20)  # the writer claims more than is there
    growing.close(True)
    follower = Collect(growing, 64).start().join(10)
    assert isinstance(follower.error, _follow.Abandoned) and "shorter" in str(follower.error)
