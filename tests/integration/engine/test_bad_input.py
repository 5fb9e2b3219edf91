"""Bad input: a clear message that says what to do, and nothing changed."""

import pytest
import rig
from conftest import files


def dump(pg, db, backup_dir, **kw):
    args = dict(pg, database=db, backup_dir=backup_dir)
    args.update(kw)
    return rig.ansible_module("dump", args)


@pytest.mark.parametrize(
    "override, expected",
    [
        ({"login_password": "wrong-password"}, "authentication failed"),
        ({"database": "no_such_db"}, "database 'no_such_db' does not exist"),
        ({"port": 1}, "cannot reach PostgreSQL at 127.0.0.1:1"),
        # Any name PostgreSQL accepts is a name, never a path: this one is looked up, not followed.
        ({"database": "../etc"}, "database '../etc' does not exist"),
        ({"database": "x" * 64}, "invalid database name"),
    ],
    ids=["wrong-password", "unknown-database", "unreachable", "path-in-name", "too-long"],
)
def test_connection_problems(container, pg, engine_db, backup_dir, override, expected):
    args = dict(pg, database=engine_db, backup_dir=backup_dir)
    args.update(override)
    res = rig.ansible_module("dump", args)
    assert res["failed"] is True
    assert expected in res["msg"]
    assert "Traceback (most recent call last)" not in str(res), "a traceback reached the operator"
    assert pg["login_password"] not in res["msg"]
    assert files(container, backup_dir) == {}


def test_missing_directory(container, pg, engine_db):
    res = dump(pg, engine_db, "/var/backups/it/does-not-exist")
    assert res["failed"] is True and "does not exist: create it with mode 0700" in res["msg"]
    assert rig.sh(container, "test -e /var/backups/it/does-not-exist && echo yes || echo no").strip() == "no"


def test_directory_with_mode_0755(container, pg, engine_db, backup_dir):
    rig.sh(container, "chmod 0755 %s" % backup_dir)
    res = dump(pg, engine_db, backup_dir)
    assert res["failed"] is True and "mode 0755" in res["msg"] and "chmod 0700" in res["msg"]
    assert files(container, backup_dir) == {}


def test_too_little_space(container, pg, engine_db):
    tiny = "/mnt/it-tiny"
    rig.sh(container, "mkdir -p %s && mount -t tmpfs -o size=1m,mode=0700 tmpfs %s" % (tiny, tiny))
    try:
        res = dump(pg, engine_db, tiny)
        assert res["failed"] is True and "not enough space" in res["msg"], res
        assert files(container, tiny) == {}
    finally:
        rig.sh(container, "umount %s && rmdir %s" % (tiny, tiny))


def test_pg_dump_older_than_the_server(container, pg, engine_db, backup_dir):
    fake = "/opt/it-old-bin"
    rig.sh(container, "mkdir -p %s" % fake)
    for tool in ("pg_dump", "pg_dumpall"):
        rig.write_file(container, "%s/%s" % (fake, tool), "#!/bin/sh\necho '%s (PostgreSQL) 15.8'\n" % tool, "0755")
    try:
        res = dump(pg, engine_db, backup_dir, pg_bin_dir=fake)
        assert res["failed"] is True
        assert "Install postgresql-client-17" in res["msg"] and "15" in res["msg"]
        assert files(container, backup_dir) == {}
    finally:
        rig.sh(container, "rm -rf %s" % fake)


def test_backup_id_with_path(pg, backup_dir):
    for module, extra in (("verify", {}), ("restore", {"confirm": True})):
        args = dict(pg, backup_dir=backup_dir, database="it_engine", backup_id="../../etc/passwd")
        args.update(extra)
        res = rig.ansible_module(module, args)
        assert res["failed"] is True and "invalid backup id" in res["msg"]
