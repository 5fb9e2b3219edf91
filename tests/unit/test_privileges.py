"""A refused privilege says which login lacks what on which object, and the statement that
gives it for the job that was refused (dump, restore test, restore, retention, history)."""

import psycopg2
import pytest
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _errors, _pg, _privileges

# What pg_dump 17 writes when TimescaleDB's job history table is not readable by the login.
PG_DUMP_STDERR = """pg_dump: error: query failed: ERROR:  permission denied for table job_errors
pg_dump: detail: Query was: LOCK TABLE _timescaledb_internal.job_errors IN ACCESS SHARE MODE
"""
PG_RESTORE_STDERR = """pg_restore: while PROCESSING TOC:
pg_restore: from TOC entry 232; 1259 17201 TABLE devices grafana
pg_restore: error: could not execute query: ERROR:  must be able to SET ROLE "grafana"
Command was: ALTER TABLE public.devices OWNER TO grafana;
"""


def test_the_backup_names_the_login_the_object_and_the_grant():
    refused = _privileges.denial_in_text(PG_DUMP_STDERR)
    assert refused == (
        "permission denied for table job_errors; LOCK TABLE _timescaledb_internal.job_errors IN ACCESS SHARE MODE"
    )
    assert _privileges.advice("dump", "tsdb_backup", refused, database="iot") == (
        "the backup of iot was refused: login tsdb_backup lacks read access to every table (PostgreSQL: "
        "permission denied for table job_errors; LOCK TABLE _timescaledb_internal.job_errors IN ACCESS SHARE "
        "MODE). As a superuser, run: GRANT pg_read_all_data TO tsdb_backup; then run it again (pg_dump reads "
        "every table, TimescaleDB's catalog and chunks included, and TimescaleDB's job history table is not "
        "readable by PUBLIC; pg_read_all_data (PostgreSQL 14 or newer) covers them all)."
    )


def test_a_restore_asks_for_createdb_and_the_owners_role():
    message = _privileges.advice("restore", "Backup User", "permission denied to create database", database="iot")
    assert message == (
        'the restore of iot was refused: login "Backup User" lacks CREATEDB (PostgreSQL: permission denied to '
        'create database). As a superuser, run: ALTER ROLE "Backup User" CREATEDB; then run it again.'
    )
    generic = _privileges.advice(
        "verify-restore", "tsdb_backup", "permission denied for function timescaledb_pre_restore", owner="iot_owner"
    )
    assert "the restore test of the database was refused" in generic
    assert "run: ALTER ROLE tsdb_backup CREATEDB; GRANT iot_owner TO tsdb_backup; then run it again" in generic
    owned = _privileges.advice("restore", "tsdb_backup", "permission denied for schema x", owner="tsdb_backup")
    assert "run: ALTER ROLE tsdb_backup CREATEDB; then run it again" in owned
    role = _privileges.advice("restore", "tsdb_backup", _privileges.denial_in_text(PG_RESTORE_STDERR))
    assert 'lacks membership in role grafana (PostgreSQL: must be able to SET ROLE "grafana"; ALTER TABLE ' in role
    assert "run: GRANT grafana TO tsdb_backup; then run it again." in role


def test_retention_and_the_history_archive():
    retention = _privileges.advice(
        "retention", "tsdb_backup", 'must be owner of hypertable "esp_telemetry"', hypertable="public.esp_telemetry"
    )
    assert retention.startswith(
        "chunk retention on public.esp_telemetry was refused: login tsdb_backup lacks ownership of "
        'public.esp_telemetry (PostgreSQL: must be owner of hypertable "esp_telemetry"). As a superuser, run: '
        "ALTER TABLE public.esp_telemetry OWNER TO tsdb_backup; then run it again (drop_chunks() drops the chunks "
        "of a hypertable only for its owner: run retention as that owner"
    )
    archive = _privileges.advice(
        "history-archive", "tsdb_backup", "permission denied for table esp_telemetry", hypertable='public."Plant A"'
    )
    assert 'lacks SELECT on public."Plant A"' in archive
    assert 'run: GRANT SELECT ON public."Plant A" TO tsdb_backup; then run it again' in archive
    restore = _privileges.advice("history-restore", "tsdb_backup", "permission denied for table t", table="public.t")
    assert "run: GRANT SELECT, INSERT ON public.t TO tsdb_backup; then run it again" in restore


@pytest.mark.parametrize(
    "refused, statement",
    [
        (
            'query would be affected by row-level security policy for table "orders"',
            "ALTER ROLE tsdb_backup BYPASSRLS;",
        ),
        ("permission denied to terminate process", "GRANT pg_signal_backend TO tsdb_backup;"),
        ('permission denied for database "Plant A"', 'GRANT CONNECT ON DATABASE "Plant A" TO tsdb_backup;'),
        ("permission denied for database iot", "GRANT CONNECT ON DATABASE iot TO tsdb_backup;"),
        ('must be member of role "iot owner"', 'GRANT "iot owner" TO tsdb_backup;'),
    ],
)
def test_refusals_that_say_exactly_what_is_missing(refused, statement):
    assert "As a superuser, run: %s then run it again." % statement in _privileges.advice(
        "dump", "tsdb_backup", refused
    )


def test_what_counts_as_a_refusal():
    assert _privileges.denial(psycopg2.errors.InsufficientPrivilege("permission denied for table x\n")) == (
        "permission denied for table x"
    )
    assert _privileges.denial(_pg.ToolError("pg_dump exited with status 1", stderr=PG_DUMP_STDERR)).startswith(
        "permission denied for table job_errors; LOCK TABLE"
    )
    assert _privileges.denial(psycopg2.errors.UndefinedTable("relation t does not exist")) is None
    assert _privileges.denial(_pg.ToolError("pg_restore exited", stderr="ERROR:  out of memory")) is None
    assert _privileges.denial(ValueError("permission denied for table x")) is None  # not PostgreSQL's
    assert _privileges.denial_in_text(None) is None


def test_advising_turns_refusals_into_config_errors_and_lets_the_rest_through():
    with pytest.raises(_privileges.PrivilegeError) as refused:
        with _privileges.advising("dump", "tsdb_backup", database="iot"):
            raise psycopg2.errors.InsufficientPrivilege("permission denied for table devices")
    assert refused.value.kind == _errors.kind_of(refused.value) == "config"
    assert str(refused.value).startswith("the backup of iot was refused: login tsdb_backup lacks read access")
    assert isinstance(refused.value.__cause__, psycopg2.errors.InsufficientPrivilege)
    with pytest.raises(psycopg2.errors.UndefinedTable):
        with _privileges.advising("dump", "tsdb_backup"):
            raise psycopg2.errors.UndefinedTable("relation t does not exist")
    # A refusal already explained by an inner job (a safety backup within a restore) stays as it is.
    inner = _privileges.PrivilegeError("the backup of iot was refused: ...")
    with pytest.raises(_privileges.PrivilegeError) as kept:
        with _privileges.advising("restore", "tsdb_backup"):
            raise inner
    assert kept.value is inner
    with pytest.raises(ValueError, match="unknown job"):
        with _privileges.advising("vacuum", "tsdb_backup"):
            pass


def test_the_login_of_a_job():
    class Params:
        user = "tsdb_backup"

    class Conn:
        class info:  # noqa: N801 - psycopg2's connection.info
            user = "runner"

    assert _privileges.login_for(Params()) == "tsdb_backup"
    assert _privileges.login_for(None, Conn()) == "runner"
