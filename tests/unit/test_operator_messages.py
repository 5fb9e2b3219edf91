"""Messages that tell the operator what to do: who holds the sessions that block a swap, and what a
failed connection means."""

import datetime

import pytest
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _pg

UTC = datetime.timezone.utc


def test_the_sessions_that_block_a_swap_are_named():
    sessions = [
        {
            "pid": 4242,
            "user": "grafana",
            "application_name": "Grafana",
            "client_addr": "10.0.0.7",
            "state": "idle",
            "since": datetime.datetime(2026, 11, 27, 1, 58, tzinfo=UTC),
        },
        # What a login without pg_read_all_stats sees of another role's session.
        {"pid": 4243, "user": "Ops Team", "application_name": "", "client_addr": None, "state": None, "since": None},
    ]
    assert _pg.describe_sessions(sessions) == (
        'pid 4242 (user grafana, application "Grafana", from 10.0.0.7, idle since 2026-11-27 01:58:00 UTC); '
        'pid 4243 (user "Ops Team", state hidden)'
    )
    many = [dict(sessions[1], pid=p) for p in range(21)]
    assert _pg.describe_sessions(many).endswith('pid 19 (user "Ops Team", state hidden) and 1 more')


class FakeCursor:
    def __init__(self, rows):
        self._rows = rows

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def execute(self, query, args=None):
        self.query, self.args = query, args

    def fetchall(self):
        return self._rows


class FakeConn:
    def __init__(self, rows):
        self.rows = rows

    def cursor(self):
        return FakeCursor(self.rows)


def test_a_database_in_use_is_a_conflict_that_says_who():
    since = datetime.datetime(2026, 11, 27, 2, 0, 3, tzinfo=UTC)
    conn = FakeConn([(311, "iot_writer", "ingest", "10.0.0.9", "active", since)])
    err = _pg._in_use(conn, "iot", "sessions on iot did not end; cannot rename it")
    assert err.kind == "conflict"
    assert str(err) == (
        'sessions on iot did not end; cannot rename it. On it: pid 311 (user iot_writer, application "ingest", '
        "from 10.0.0.9, active since 2026-11-27 02:00:03 UTC). End them (SELECT pg_terminate_backend(<pid>)) or "
        "stop their clients, then run it again"
    )
    assert "no session any more" in str(_pg._in_use(FakeConn([]), "iot", "x"))


@pytest.mark.parametrize(
    "text, kind",
    [
        ('FATAL:  password authentication failed for user "tsdb_backup"', "config"),
        ('FATAL:  permission denied for database "iot"\nDETAIL:  User does not have CONNECT privilege.', "config"),
        ('FATAL:  database "iot" does not exist', "not_found"),
        ("connection to server at 127.0.0.1, port 5432 failed: Connection refused", "service"),
    ],
)
def test_connection_errors_by_kind(text, kind):
    assert _pg.connect_error_kind(Exception(text)) == kind


def test_a_connection_without_connect_names_the_grant():
    params = _pg.ConnectionParams(login_user="tsdb_backup")
    message = _pg.explain_connect_error(
        Exception('FATAL:  permission denied for database "Plant A"'), params, "Plant A"
    )
    assert message == (
        'login tsdb_backup may not connect to database "Plant A" on 127.0.0.1:5432: as a superuser or the '
        'database\'s owner, run GRANT CONNECT ON DATABASE "Plant A" TO tsdb_backup;'
    )
