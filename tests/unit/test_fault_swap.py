"""The swap of a beside restore on every failure path: the live database keeps (or gets back)
its name and its datallowconn, and the error says what happened and where each database is.
The cluster is a model (name -> datallowconn) behind the _pg functions the swap calls; the
rig's test (tests/integration/engine/test_restore_faults.py) does the same on PostgreSQL."""

import json
import signal

import pytest
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import (
    _pg,
    _restore_extras,
    _restore_swap,
    _signals,
)


class Cluster:
    def __init__(self, databases, fail_at=None, error=None):
        self.db = dict(databases)
        self.oid = {name: 16384 + i for i, name in enumerate(self.db)}
        self.fail_at, self.error = fail_at, error
        self.calls = []
        self.connections = 0
        self.comments = {}

    def _maybe_fail(self, call):
        self.calls.append(call)
        if self.fail_at and call == self.fail_at:
            self.fail_at = None
            raise self.error

    def install(self, monkeypatch):
        cluster = self

        class Conn:
            def close(self):
                pass

        def connect(params, dbname=None, autocommit=True):
            cluster.connections += 1
            return Conn()

        def close_database(conn, name):
            original = cluster.db[name]
            cluster.db[name] = False
            try:
                cluster._maybe_fail(("terminate", name))
            except BaseException:
                cluster.db[name] = original is not False
                raise
            return original

        def rename(conn, old, new):
            cluster._maybe_fail(("rename", old, new))
            assert new not in cluster.db
            cluster.db[new] = cluster.db.pop(old)
            cluster.oid[new] = cluster.oid.pop(old)

        def set_allow(conn, name, allow):
            cluster._maybe_fail(("allow", name, allow))
            cluster.db[name] = allow

        monkeypatch.setattr(_pg, "connect", connect)
        monkeypatch.setattr(_pg, "allows_connections", lambda conn, name: cluster.db.get(name))
        monkeypatch.setattr(_pg, "close_database", close_database)
        monkeypatch.setattr(_pg, "rename_database", rename)
        monkeypatch.setattr(_pg, "set_allow_connections", set_allow)
        monkeypatch.setattr(_pg, "open_database", lambda conn, name: set_allow(conn, name, True))

        def drop(conn, name):
            cluster.db.pop(name, None)
            cluster.oid.pop(name, None)

        def scalar(conn, query, args):
            if query.startswith("SELECT oid"):
                return cluster.oid.get(args[0])
            return next((n for n, o in cluster.oid.items() if o == args[0]), None)

        def comment(conn, name, text):
            cluster._maybe_fail(("comment", name))
            cluster.comments[cluster.oid[name]] = text

        monkeypatch.setattr(_pg, "drop_database", drop)
        monkeypatch.setattr(_pg, "scalar", scalar)
        monkeypatch.setattr(_pg, "comment_database", comment)
        monkeypatch.setattr(
            _pg, "rows", lambda conn, query, args=None: [(4242, "2026-11-27 02:00:00+00", "the copy's own comment")]
        )
        return Conn()


LIVE, COPY, ASIDE = "iot", "iot__restore_20261127T020000Z", "iot__pre_restore_20261127T020000Z"


def swap(monkeypatch, cluster):
    conn = cluster.install(monkeypatch)
    _restore_swap.Swap(None, COPY, LIVE, ASIDE, True).run(conn)


def test_a_swap_that_works_moves_the_live_database_aside_open(monkeypatch):
    cluster = Cluster({LIVE: True, COPY: True})
    swap(monkeypatch, cluster)
    assert cluster.db == {LIVE: True, ASIDE: True}


@pytest.mark.parametrize(
    "fail_at",
    [("terminate", LIVE), ("rename", LIVE, ASIDE), ("rename", COPY, LIVE), ("terminate", COPY)],
    ids=["terminate", "rename-live", "rename-copy", "close-copy"],
)
@pytest.mark.parametrize(
    "error",
    [_pg.PgError("sessions on iot did not end", kind="conflict"), KeyboardInterrupt(), _signals.Terminated(15)],
    ids=["error", "ctrl-c", "sigterm"],
)
def test_a_failed_swap_gives_the_live_database_back(monkeypatch, fail_at, error):
    cluster = Cluster({LIVE: True, COPY: True}, fail_at=fail_at, error=error)
    with pytest.raises(BaseException) as info:
        swap(monkeypatch, cluster)
    # The live database: its name, open; the restored copy removed.
    assert cluster.db == {LIVE: True}
    report = info.value if isinstance(error, Exception) else info.value.__cause__
    assert info.type is (_restore_extras.RestoreError if isinstance(error, Exception) else type(error))
    text = str(report)
    assert "failed while" in text and "iot is back as it was" in text and "was removed" in text
    assert cluster.connections == 1  # put back over a connection of its own


def test_the_live_database_gets_its_own_datallowconn_back(monkeypatch):
    """A live database that refused connections before refuses them after a failed swap."""
    cluster = Cluster({LIVE: False, COPY: True}, fail_at=("rename", COPY, LIVE), error=_pg.PgError("boom"))
    with pytest.raises(_restore_extras.RestoreError, match="connections refused, as before"):
        swap(monkeypatch, cluster)
    assert cluster.db == {LIVE: False}


def test_when_putting_back_fails_the_message_says_what_to_run(monkeypatch):
    cluster = Cluster({LIVE: True, COPY: True}, fail_at=("rename", COPY, LIVE), error=_pg.PgError("boom"))
    conn = cluster.install(monkeypatch)
    monkeypatch.setattr(_pg, "connect", lambda *a, **k: (never for never in ()).throw(_pg.PgError("server gone")))
    with pytest.raises(_restore_extras.RestoreError) as info:
        _restore_swap.Swap(None, COPY, LIVE, ASIDE, True).run(conn)
    text = str(info.value)
    assert "putting things back failed too" in text and "server gone" in text
    assert 'ALTER DATABASE "%s" RENAME TO iot' % ASIDE in text and "ALLOW_CONNECTIONS true" in text


def test_a_failure_after_the_last_rename_finishes_the_swap(monkeypatch):
    cluster = Cluster({LIVE: True, COPY: True}, fail_at=("allow", LIVE, True), error=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt) as info:
        swap(monkeypatch, cluster)
    assert cluster.db == {LIVE: True, ASIDE: True}
    assert "the restore itself went through" in str(info.value.__cause__)


def test_sigterm_raises_inside_the_block_and_the_old_handler_comes_back():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(_signals.Terminated) as info:
        with _signals.terminate_raises():
            signal.raise_signal(signal.SIGTERM)
    assert info.value.signum == signal.SIGTERM and _signals.exit_status(info.value) == 143
    assert "SIGTERM" in str(info.value) and signal.getsignal(signal.SIGTERM) == before


def test_a_live_database_that_cannot_get_its_name_back_is_at_least_open_again(monkeypatch):
    """The name was taken in between (a real PostgreSQL would say: already exists)."""
    cluster = Cluster({LIVE: True, COPY: True}, fail_at=("rename", COPY, LIVE), error=_pg.PgError("boom"))
    conn = cluster.install(monkeypatch)
    real_rename = _pg.rename_database

    def rename(conn, old, new):
        if (old, new) == (ASIDE, LIVE):
            raise _pg.PgError('database "iot" already exists')
        real_rename(conn, old, new)

    monkeypatch.setattr(_pg, "rename_database", rename)
    with pytest.raises(_restore_extras.RestoreError) as info:
        _restore_swap.Swap(None, COPY, LIVE, ASIDE, True).run(conn)
    assert cluster.db == {ASIDE: True, COPY: False}  # the copy stays closed, to be dropped
    assert "The live database is now named" in str(info.value) and "already exists" in str(info.value)


@pytest.mark.parametrize("rename", [(LIVE, ASIDE), (COPY, LIVE)], ids=["live-aside", "copy-in"])
def test_an_interrupt_just_after_a_rename_took_effect_is_seen_in_the_catalog(monkeypatch, rename):
    cluster = Cluster({LIVE: True, COPY: True})
    conn = cluster.install(monkeypatch)
    real_rename = _pg.rename_database

    def rename_then_interrupt(conn, old, new):
        real_rename(conn, old, new)
        if (old, new) == rename:
            raise _signals.Terminated(15)  # after the rename, before the swap noted it

    monkeypatch.setattr(_pg, "rename_database", rename_then_interrupt)
    with pytest.raises(_signals.Terminated) as info:
        _restore_swap.Swap(None, COPY, LIVE, ASIDE, True).run(conn)
    if rename == (LIVE, ASIDE):
        assert cluster.db == {LIVE: True} and "iot is back as it was" in str(info.value.__cause__)
    else:
        assert cluster.db == {LIVE: True, ASIDE: True}
        assert "the restore itself went through" in str(info.value.__cause__)


def journal(**changes):
    record = {
        "target": "iot",
        "staging": "iot__restore_20261127T020000Z",
        "replaced": "iot__pre_restore_20261127T020000Z",
        "exists": True,
        "original": True,
        "live_oid": 16384,
        "copy_oid": 16385,
        "backend_pid": 4242,
        "backend_start": "2026-11-27 02:00:00+00",
    }
    record.update(changes)
    return _restore_swap.JOURNAL_MARK + json.dumps(record)


@pytest.mark.parametrize(
    "comment,oid,target",
    [
        (journal(), 16384, "iot"),  # a comment copied onto another database than the copy
        (journal(), 16385, "billing"),  # another database's swap
        (journal(staging="billing"), 16385, "iot"),  # names a swap into iot never uses
        (journal(replaced="iot_live"), 16385, "iot"),
        (journal(exists="yes"), 16385, "iot"),
        (journal(backend_pid="4242"), 16385, "iot"),
        (_restore_swap.JOURNAL_MARK + "{not json", 16385, "iot"),
    ],
)
def test_only_a_journal_that_holds_together_is_acted_on(comment, oid, target):
    assert _restore_swap.read_journal(comment, oid, target) is None


def test_the_journal_of_the_copy_is_read():
    assert _restore_swap.read_journal(journal(), 16385, "iot")["replaced"] == "iot__pre_restore_20261127T020000Z"


def test_the_swap_writes_its_journal_before_any_change_and_removes_it_at_the_end(monkeypatch):
    cluster = Cluster({LIVE: True, COPY: True})
    conn = cluster.install(monkeypatch)
    written = []
    store = _pg.comment_database
    monkeypatch.setattr(
        _pg, "comment_database", lambda conn, name, text: written.append(text) or store(conn, name, text)
    )
    copy_oid = cluster.oid[COPY]
    _restore_swap.Swap(None, COPY, LIVE, ASIDE, True).run(conn)
    assert cluster.calls[0] == ("comment", COPY)  # before the first change
    record = _restore_swap.read_journal(written[0], copy_oid, LIVE)
    assert record["live_oid"] == 16384 and record["original"] is True and record["replaced"] == ASIDE
    assert record["comment"] == "the copy's own comment"
    # The copy, now iot, keeps no journal: its own comment is back.
    assert written[-1] == "the copy's own comment" and cluster.comments[copy_oid] == "the copy's own comment"
