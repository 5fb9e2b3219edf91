"""Messages that tell the operator what to do: who holds the sessions that block a swap, what a
failed connection means, and which compression a pg_dump of PostgreSQL 14/15 writes."""

import datetime

import pytest
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _dump, _pg

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


@pytest.mark.parametrize(
    "requested, version, level, expected",
    [
        ("zstd", "17.2", None, ("zstd", None)),
        ("zstd", "16.0", 19, ("zstd", 19)),
        ("lz4", "16.4", None, ("lz4", None)),
        ("zstd", "15.8", 19, ("gzip", None)),
        ("lz4", "14.13-1.pgdg120+1)", None, ("gzip", None)),
        ("gzip", "14.13", 9, ("gzip", 9)),
        ("none", "14.13", None, ("none", None)),
        ("zstd", "unknown", None, ("zstd", None)),  # pg_dump itself says so if it cannot
    ],
)
def test_the_compression_a_pg_dump_can_write(requested, version, level, expected):
    compression, got_level, warning = _dump.effective_compression(requested, version, level)
    assert (compression, got_level) == expected
    assert (warning is not None) == (expected[0] != requested)


def test_the_fallback_warning_names_the_inventory_setting():
    _compression, _level, warning = _dump.effective_compression("zstd", "15.8")
    assert warning == (
        "pg_dump 15.8 cannot write zstd archives (pg_dump 16 or newer can): this backup is compressed with gzip "
        "instead. Set tsdb_backup_compression: gzip in the inventory to choose it, or install the client tools "
        "of PostgreSQL 16 or newer on this host"
    )
    # The manifest records what was written.
    assert _dump.compression_arg("gzip", None) == "gzip:6"


def test_a_dump_by_pg_dump_15_records_gzip_in_its_manifest(tmp_path, monkeypatch):
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir(mode=0o700)
    seen = {}

    def write_files(job, folder):
        seen["compression"], seen["level"] = job.compression, job.level
        with open(job.bset.archive, "wb") as f:
            f.write(b"archive")
        facts = {"tables": {}, "hypertables": {}, "hypertable_references": []}
        return {"sha256": "0" * 64, "size": 7, "files": None, "facts": facts}, b"-- globals\n"

    monkeypatch.setattr(_dump, "_write_files", write_files)
    facts = {
        "postgresql_version": "15.8",
        "server_version_num": 150008,
        "timescaledb_version": "2.17.2",
        "extensions": [],
        "database_size_bytes": 1024,
        "pg_dump": "/usr/lib/postgresql/15/bin/pg_dump",
        "pg_dump_version": "15.8",
        "pg_dumpall": "/usr/lib/postgresql/15/bin/pg_dumpall",
    }
    params = _pg.ConnectionParams(login_user="tsdb_backup")
    done = _dump.dump(params, "iot", str(backup_dir), compression="zstd", compression_level=19, facts=facts)
    assert (seen["compression"], seen["level"]) == ("gzip", None)
    assert done["manifest"]["dump"]["compression"] == "gzip:6"
    assert len(done["warnings"]) == 1 and "tsdb_backup_compression: gzip" in done["warnings"][0]
