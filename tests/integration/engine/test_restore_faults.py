"""The swap of a beside restore, failing at each step on the rig's PostgreSQL: the live database
must keep (or get back) its name, its datallowconn and its rows, a client must be able to connect
again, and nothing of the restore may be left. The swap runs in this process against the rig's
server (as the restore module runs it); the fault is injected at the step (an error, Ctrl-C, a
real SIGTERM to this process). docs/RELIABILITY.md lists these rows."""

import json
import os
import signal
import subprocess
import sys

import pytest
import rig

sys.path.insert(0, os.path.join(rig.REPO, "collections"))
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import (  # noqa: E402
    _pg,
    _restore_extras,
    _restore_swap,
    _signals,
)

LIVE = "it_swapfault"
BID = "20261127T020000Z"
COPY = LIVE + "__restore_" + BID
ASIDE = LIVE + "__pre_restore_" + BID
COPY_COMMENT = "readings of the pumps, 'quoted' and \"double\""


@pytest.fixture
def params(env):
    return _pg.ConnectionParams(
        login_host="127.0.0.1", port=int(env["PGPORT"]), login_user=env["PGUSER"], login_password=env["PGPASSWORD"]
    )


@pytest.fixture
def live():
    for name in (LIVE, COPY, ASIDE):
        rig.drop_database(name)
    for name, value in ((LIVE, "'live ' || g"), (COPY, "'restored'")):
        rig.query("postgres", "CREATE DATABASE %s" % _pg.quote_ident(name))
        rig.query(
            name,
            "CREATE TABLE readings (id int PRIMARY KEY, v text); "
            "INSERT INTO readings SELECT g, %s FROM generate_series(1, 500) g" % value,
        )
    # The restored copy's own comment (restored from the backup): the swap's journal must give it back.
    rig.query("postgres", "COMMENT ON DATABASE %s IS %%s" % _pg.quote_ident(COPY), (COPY_COMMENT,))
    digest = rig.table_digest(LIVE)
    yield digest
    for name in (LIVE, COPY, ASIDE):
        rig.drop_database(name)


def allowconn():
    return dict(
        rig.query("postgres", "SELECT datname, datallowconn FROM pg_database WHERE datname LIKE %s", (LIVE + "%",))
    )


def fail(monkeypatch, function, when, error, before=False):
    """Makes _pg.<function> raise ``error`` right after doing its work for real (``before``: instead)."""
    real = getattr(_pg, function)

    def wrapped(conn, *args):
        if args[: len(when)] == when and before:
            raise error
        if args[: len(when)] == when:
            if error == "sigterm":
                real(conn, *args)
                os.kill(os.getpid(), signal.SIGTERM)  # a real signal, delivered here
                return None
            real(conn, *args)
            raise error
        return real(conn, *args)

    monkeypatch.setattr(_pg, function, wrapped)


@pytest.mark.parametrize(
    "function,when,error",
    [
        ("close_database", (LIVE,), KeyboardInterrupt()),  # Ctrl-C just after the live database was closed
        ("close_database", (LIVE,), _pg.PgError("sessions on it did not end", kind="conflict")),
        ("rename_database", (LIVE, ASIDE), "sigterm"),  # SIGTERM once the live database is aside
        ("rename_database", (COPY, LIVE), None),  # the copy's rename fails (the name taken)
    ],
    ids=["ctrl-c-after-close", "terminate-failed", "sigterm-after-move", "rename-copy-failed"],
)
def test_a_failed_swap_gives_the_live_database_back(monkeypatch, params, live, function, when, error):
    grafana = rig.connect(LIVE)  # a client on the live database, as in production
    if error is None:
        # The copy's rename fails for real: another session takes the name first.
        real = _pg.rename_database

        def taken(conn, old, new):
            if (old, new) == (COPY, LIVE):
                rig.query("postgres", "CREATE DATABASE %s" % LIVE)
                try:
                    real(conn, old, new)
                finally:
                    rig.drop_database(LIVE)
            return real(conn, old, new)

        monkeypatch.setattr(_pg, "rename_database", taken)
    else:
        fail(monkeypatch, function, when, error)
    conn = _pg.connect(params)
    try:
        with pytest.raises(BaseException) as info:
            with _signals.terminate_raises():
                _restore_swap.Swap(params, COPY, LIVE, ASIDE, True).run(conn)
    finally:
        conn.close()
        grafana.close()
    report = info.value if isinstance(info.value, Exception) else info.value.__cause__
    assert isinstance(report, _restore_extras.RestoreError), info.value
    assert "%s is back as it was" % LIVE in str(report), str(report)
    # The real state: the live database under its name, open, with its rows; nothing else left.
    assert allowconn() == {LIVE: True}
    assert rig.table_digest(LIVE) == live
    assert rig.query(LIVE, "SELECT count(*) FROM readings WHERE v LIKE 'live %'")[0][0] == 500


def test_a_live_database_that_refused_connections_keeps_refusing(monkeypatch, params, live):
    rig.query("postgres", "ALTER DATABASE %s WITH ALLOW_CONNECTIONS false" % LIVE)
    fail(monkeypatch, "rename_database", (COPY, LIVE), _pg.PgError("boom"), before=True)
    conn = _pg.connect(params)
    try:
        with pytest.raises(_restore_extras.RestoreError, match="refused, as before"):
            _restore_swap.Swap(params, COPY, LIVE, ASIDE, True).run(conn)
    finally:
        conn.close()
    assert allowconn() == {LIVE: False}
    rig.query("postgres", "ALTER DATABASE %s WITH ALLOW_CONNECTIONS true" % LIVE)
    assert rig.table_digest(LIVE) == live


def test_the_swap_that_works_is_unchanged(params, live):
    conn = _pg.connect(params)
    try:
        _restore_swap.Swap(params, COPY, LIVE, ASIDE, True).run(conn)
    finally:
        conn.close()
    assert allowconn() == {LIVE: True, ASIDE: True}
    assert rig.query(LIVE, "SELECT count(*) FROM readings WHERE v = 'restored'")[0][0] == 500
    assert rig.table_digest(ASIDE) == live
    assert journals() == [] and comment_of(LIVE) == COPY_COMMENT


def comment_of(name):
    query = "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s"
    return rig.query("postgres", query, (name,))[0][0]


def journals():
    return rig.query(
        "postgres",
        "SELECT d.datname::text FROM pg_database d JOIN pg_shdescription c ON c.objoid = d.oid "
        "WHERE starts_with(c.description, %s)",
        (_restore_swap.JOURNAL_MARK,),
    )


# The swap in a process of its own that kills itself (SIGKILL: no handler, no cleanup) right after
# the step ``sys.argv[2:]`` took effect on the server, as kill -9 or the OOM killer would.
KILLED_SWAP = """
import os, signal, sys
sys.path.insert(0, sys.argv[1])
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _pg, _restore_swap
function, when = sys.argv[2], tuple(sys.argv[3:])
real = getattr(_pg, function)
def killed(conn, *args):
    out = real(conn, *args)
    if args[: len(when)] == when:
        os.kill(os.getpid(), signal.SIGKILL)
    return out
setattr(_pg, function, killed)
params = _pg.ConnectionParams(login_host="127.0.0.1", port=int(os.environ["PGPORT"]),
                              login_user=os.environ["PGUSER"], login_password=os.environ["PGPASSWORD"])
conn = _pg.connect(params)
_restore_swap.Swap(params, %r, %r, %r, True).run(conn)
""" % (COPY, LIVE, ASIDE)


@pytest.mark.parametrize(
    "function,when,finished",
    [
        ("close_database", (LIVE,), False),  # the live database closed to connections
        ("rename_database", (LIVE, ASIDE), False),  # the live database aside: its name is free
        ("rename_database", (COPY, LIVE), True),  # the copy has the name, both closed
    ],
    ids=["killed-after-close", "killed-after-move", "killed-after-copy-renamed"],
)
def test_a_swap_killed_outright_is_put_back_by_the_next_restore(env, params, live, function, when, finished):
    child = subprocess.run(
        [sys.executable, "-c", KILLED_SWAP, os.path.join(rig.REPO, "collections"), function, *when],
        env=dict(os.environ, **env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert journals() and not any(allowconn().values())  # the damage is real: no client gets in
    messages = _restore_swap.recover_killed(params, LIVE)
    assert len(messages) == 1 and "was killed during its swap" in messages[0], messages
    if finished:
        assert "the restore itself went through" in messages[0]
        assert allowconn() == {LIVE: True, ASIDE: True}
        assert rig.query(LIVE, "SELECT count(*) FROM readings WHERE v = 'restored'")[0][0] == 500
        assert rig.table_digest(ASIDE) == live
        assert comment_of(LIVE) == COPY_COMMENT
    else:
        assert "%s is back as it was" % LIVE in messages[0]
        assert allowconn() == {LIVE: True}
        assert rig.table_digest(LIVE) == live
    assert journals() == []
    assert _restore_swap.recover_killed(params, LIVE) == []  # nothing left to do


def test_a_swap_whose_session_still_runs_is_left_alone(params, live):
    conn = _pg.connect(params)
    try:
        swap = _restore_swap.Swap(params, COPY, LIVE, ASIDE, True)
        swap.oids = (_restore_swap._oid(conn, LIVE), _restore_swap._oid(conn, COPY))
        swap.original = True
        swap._write_journal(conn)  # this session is the swap's, and it is alive
        with pytest.raises(_restore_extras.RestoreError, match="may be swapping right now"):
            _restore_swap.recover_killed(params, LIVE)
        assert allowconn() == {LIVE: True, COPY: True}
    finally:
        conn.close()


@pytest.mark.parametrize("named", ["as-its-journal-says", "under-another-name"])
def test_a_planted_journal_never_closes_or_moves_the_live_database(params, live, named):
    """A role that may create a database may comment on it: a journal planted there, aimed at the
    live database (original: refuse connections), must not close, rename or drop anything else."""
    planted = LIVE + "__restore_planted"
    rig.drop_database(planted)
    rig.query("postgres", "CREATE DATABASE %s" % _pg.quote_ident(planted))
    try:
        live_oid = rig.query("postgres", "SELECT oid FROM pg_database WHERE datname = %s", (LIVE,))[0][0]
        planted_oid = rig.query("postgres", "SELECT oid FROM pg_database WHERE datname = %s", (planted,))[0][0]
        record = {
            "target": LIVE,
            "staging": planted if named == "as-its-journal-says" else COPY,
            "replaced": ASIDE,
            "exists": True,
            "original": False,
            "live_oid": live_oid,
            "copy_oid": planted_oid,
            "backend_pid": 1,
            "backend_start": "2026-01-01 00:00:00+00",
            "comment": None,
        }
        text = _restore_swap.JOURNAL_MARK + json.dumps(record)
        rig.query("postgres", "COMMENT ON DATABASE %s IS %%s" % _pg.quote_ident(planted), (text,))
        _restore_swap.recover_killed(params, LIVE)
        assert allowconn()[LIVE] is True and rig.table_digest(LIVE) == live
        assert allowconn()[COPY] is True  # another restore's copy is never dropped on a journal's word
    finally:
        rig.drop_database(planted)


def test_sigterm_just_after_the_copy_took_the_name_finishes_the_swap(monkeypatch, params, live):
    fail(monkeypatch, "rename_database", (COPY, LIVE), "sigterm")
    conn = _pg.connect(params)
    try:
        with pytest.raises(_signals.Terminated) as info:
            with _signals.terminate_raises():
                _restore_swap.Swap(params, COPY, LIVE, ASIDE, True).run(conn)
    finally:
        conn.close()
    assert "the restore itself went through" in str(info.value.__cause__)
    assert allowconn() == {LIVE: True, ASIDE: True}
    assert rig.query(LIVE, "SELECT count(*) FROM readings WHERE v = 'restored'")[0][0] == 500
    assert rig.table_digest(ASIDE) == live
