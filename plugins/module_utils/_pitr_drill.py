# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The physical restore drill: the newest pgBackRest backup and every archived WAL segment after
it restored into a scratch data directory, started on a scratch port (no TCP, a socket in the
scratch directory, archiving off so that nothing reaches the stanza), recovered to the end of the
archive, compared with the live cluster (its databases, and each database's user tables) and
thrown away. What it measures is the RTO of this host, every week: how long a physical restore
of this cluster takes now.

Runs as the cluster's owner (the unit tsdb-pitr-drill.service). Private to the collection. No
Ansible imports.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import shutil
import time

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import (
    _dump,
    _errors,
    _pg,
    _pg_cluster,
    _pitr,
    _pitr_restore,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _pgbackrest as pgbr

SCRATCH_CONF = """# The physical drill's throw-away cluster (insa.timescaledb_backup): no TCP, no archiving
# (those settings are on the server's command line too, above postgresql.auto.conf).
hba_file = '{data}/drill_hba.conf'
ident_file = '{data}/drill_ident.conf'
shared_preload_libraries = 'timescaledb'
timescaledb.telemetry_level = off
shared_buffers = 128MB
"""


def scratch_settings(scratch, port):
    """What the scratch server must never differ in: no TCP, its socket in the scratch directory,
    no archiving, and no hot standby (it accepts connections only once recovered and promoted,
    and needs no max_connections and worker settings as high as the live cluster's)."""
    return {
        "port": int(port),
        "listen_addresses": "",
        "unix_socket_directories": scratch,
        "archive_mode": "off",
        "hot_standby": "off",
    }


TABLES_SQL = (
    "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND n.nspname NOT IN %s "
    "AND n.nspname NOT LIKE 'pg\\_%%'"
)
SYSTEM = (
    "information_schema",
    "_timescaledb_catalog",
    "_timescaledb_internal",
    "_timescaledb_config",
    "_timescaledb_cache",
    "_timescaledb_functions",
    "_timescaledb_debug",
    "timescaledb_information",
    "timescaledb_experimental",
)


class DrillError(_errors.OperatorError):
    """The drill could not run or found the restored cluster wrong."""


def databases_and_tables(params):
    conn = _pg.connect(params)
    try:
        names = [r[0] for r in _pg.rows(conn, "SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1")]
    finally:
        conn.close()
    found = {}
    for name in names:
        conn = _pg.connect(params, name)
        try:
            found[name] = int(_pg.scalar(conn, TABLES_SQL, (SYSTEM,)))
        finally:
            conn.close()
    return found


def run(stanza, scratch, port, version, live_params, owner_params, recovery_timeout=3600, log=None):
    """One drill; returns its result (or raises DrillError). ``scratch``: a directory the drill
    owns (removed at the start and the end); ``owner_params``: how to reach the scratch server."""
    log = log or (lambda msg: None)
    started = time.monotonic()
    info = pgbr.info(stanza)
    backup = _pitr_restore.choose_backup(info, None)
    need = int((backup.get("info") or {}).get("size") or 0)
    parent = os.path.dirname(scratch.rstrip("/"))
    free = _dump.free_bytes(parent)
    if need and free < need * 1.1:
        raise DrillError(
            "the drill needs about %d MiB in %s for a copy of the cluster and %d MiB are free"
            % (need * 1.1 // 2**20, parent, free // 2**20),
            kind="conflict",
        )
    shutil.rmtree(scratch, ignore_errors=True)
    os.mkdir(scratch, 0o700)
    result = {"backup_label": backup["label"], "backup_ended": _pitr.isoformat(backup["timestamp"]["stop"])}
    try:
        t0 = time.monotonic()
        options = ["--pg1-path=%s" % scratch, "--set=%s" % backup["label"], "--archive-mode=off"]
        # Tablespaces into the scratch directory too, never onto the live cluster's paths.
        options.append("--tablespace-map-all=%s" % os.path.join(scratch, "tablespaces"))
        pgbr.run(stanza, "restore", options, timeout=24 * 3600)
        result["restore_seconds"] = round(time.monotonic() - t0, 2)
        with open(os.path.join(scratch, "postgresql.conf"), "w") as f:
            f.write(SCRATCH_CONF.format(data=scratch))
        with open(os.path.join(scratch, "drill_hba.conf"), "w") as f:
            f.write("local all all peer\n")
        open(os.path.join(scratch, "drill_ident.conf"), "w").close()
        t0 = time.monotonic()
        try:
            _pg_cluster.scratch_server(
                "start", scratch, version, timeout=recovery_timeout, settings=scratch_settings(scratch, port)
            )
            _wait_promoted(owner_params, recovery_timeout)
            result["recovery_seconds"] = round(time.monotonic() - t0, 2)
            restored = databases_and_tables(owner_params)
        finally:
            # Also after a start that timed out: never remove the directory under a running server.
            if os.path.exists(os.path.join(scratch, "postmaster.pid")):
                _pg_cluster.scratch_server("stop", scratch, version)
        live = databases_and_tables(live_params)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    missing = sorted(set(live) - set(restored))
    fewer = sorted(d for d in live if d in restored and restored[d] < live[d])
    result.update(databases=len(restored), total_seconds=round(time.monotonic() - started, 2))
    if missing or fewer:
        raise DrillError(
            "the restored cluster lacks databases %s and tables in %s (live: %s, restored: %s)"
            % (", ".join(missing) or "-", ", ".join(fewer) or "-", live, restored),
            kind="integrity",
        )
    log(
        "physical drill: backup %s and the archived WAL restored and recovered in %.1f s, %d databases as live"
        % (backup["label"], result["total_seconds"], len(restored))
    )
    return result


def _wait_promoted(params, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = _pg.connect(params)
        except _pg.PgError:
            time.sleep(1)
            continue
        try:
            if not _pg.scalar(conn, "SELECT pg_is_in_recovery()"):
                return
        finally:
            conn.close()
        time.sleep(1)
    raise DrillError("the scratch cluster did not finish recovery within %d s" % timeout, kind="service")
