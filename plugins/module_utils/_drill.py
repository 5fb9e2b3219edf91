# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The restore drill (``tsdb-backup drill``, agent_run job drill): the newest local set of each
database restored into a scratch database ``<db>__verify_<backup id>`` of the live cluster and
compared with its manifest (_verify level restore).

A drill restores a full copy beside production, so it must never be what fills the data
directory or leaves a copy behind: the restore checks the free space first (_restore.check_room),
SIGTERM (systemctl stop, a unit's timeout) ends it through the cleanup that drops the scratch
database (_signals), and a drill removes at its start the scratch databases a killed earlier
drill left (``remove_stale_scratch``: only names of exactly that pattern, only when no client
is connected, each one audited and reported in ``stale_scratch_removed``).

Private to the collection. No Ansible imports: the scheduled runner uses this.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import (
    _encryption,
    _errors,
    _lock,
    _pg,
    _restore,
    _signals,
    _verify,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf

PURPOSE = "verify"
_SCRATCH_RE = re.compile(r"^.+__%s_(\d{8}T\d{6}Z)$" % PURPOSE, re.DOTALL)
# Sessions of clients (not TimescaleDB's scheduler or other background workers) on a database.
_CLIENTS = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND backend_type = 'client backend'"


def is_scratch_of(name, database):
    """True when ``name`` is exactly the scratch database a drill of ``database`` creates for some
    backup id (the name _restore.scratch_name builds, also for long names): nothing else matches."""
    m = _SCRATCH_RE.match(name)
    return bool(m) and _restore.scratch_name(database, PURPOSE, m.group(1)) == name


def remove_stale_scratch(params, database, audit=None):
    """Drops the scratch databases of ``database`` an earlier (killed) drill left. Each is closed to new
    connections first; one a client is connected to is opened again and left alone (reported
    in ``in_use``). Returns {"removed": [...], "in_use": [...]}."""
    done = {"removed": [], "in_use": []}
    conn = _pg.connect(params)
    try:
        names = [
            r[0] for r in _pg.rows(conn, "SELECT datname FROM pg_database WHERE datname LIKE %s", ("%__verify_%",))
        ]
        for name in sorted(n for n in names if is_scratch_of(n, database)):
            allow = _pg.allows_connections(conn, name)
            _pg.set_allow_connections(conn, name, False)
            if _pg.scalar(conn, _CLIENTS, (name,)):
                _pg.set_allow_connections(conn, name, allow is not False)
                done["in_use"].append(name)
                continue
            _pg.drop_database(conn, name)  # WITH (FORCE): ends TimescaleDB's scheduler on it
            done["removed"].append(name)
            if audit:
                audit("drop_database", database=name, reason="scratch database of an earlier drill that did not end")
    finally:
        conn.close()
    return done


def run_drill(config, logger, progress=None, audit=None, signing=None):
    """Drills every database of the config; returns the results and writes
    ``<state_dir>/last-drill.json``. ``signing`` (a _signing.Policy) checks each set's manifest
    before it is restored. A SIGTERM or SIGHUP ends the drill running (its scratch
    database dropped) as a failed drill and drills no further database."""
    results = []
    with _signals.terminate_raises():
        try:
            for database in config["databases"]:
                r = {"database": database, "success": False, "error": None}
                results.append(r)
                drill_database(config, database, logger, progress, audit, r, signing)
        except _signals.Terminated as e:
            r.update(
                success=False,
                drill_ok=False,
                error="the drill was %s; its scratch database was removed" % e,
                error_kind="service",
            )
            logger.error("drill %s: %s", r["database"], r["error"])
    record = {"finished_at": mf.isoformat(mf.utcnow()), "results": results}
    mf.atomic_write_bytes(
        os.path.join(config["state_dir"], "last-drill.json"), (json.dumps(record, indent=2) + "\n").encode("utf-8")
    )
    return results


def drill_database(config, database, logger, progress, audit, r, signing=None):
    """One database's drill into the result ``r``. The folder's readers lock is held from choosing
    the set to the end of its restore: no prune removes it in between."""
    with _lock.reading_folder(os.path.join(config["backup_dir"], mf.database_segment(database))):
        _drill_set(config, database, logger, progress, audit, r, signing)


def _drill_set(config, database, logger, progress, audit, r, signing):
    # A set held here only encrypted (downloaded) cannot be restored on this host: it has no identity.
    local = mf.list_local(config["backup_dir"], database)
    entry = mf.select_backup([e for e in local if not _encryption.held_encrypted(config["backup_dir"], e["manifest"])])
    if entry is None:
        r.update(error="no local backup to drill", error_kind="not_found")
        logger.error("drill %s: %s", database, r["error"])
        return
    bid = entry["backup_id"]
    try:
        stale = _remove_stale(config, database, logger, audit, r)
        for name in stale["removed"]:
            logger.warning(
                "drill %s: removed %s, the scratch database of an earlier drill that did not end", database, name
            )
        for name in stale["in_use"]:
            logger.warning(
                "drill %s: %s looks like an earlier drill's scratch database but is in use: left", database, name
            )
        jobs = config.get("drill_jobs") or 1
        ver = _verify.verify(
            config["pg"],
            config["backup_dir"],
            database,
            bid,
            level="restore",
            jobs=jobs,
            progress=progress,
            signing=signing,
        )
    except Exception as e:  # noqa: BLE001 - a drill that cannot run is a failed drill, reported as one
        if not isinstance(e, _errors.OperatorError):
            logger.exception("drill %s could not run", database)  # a bug: its traceback in the journal
        ver = {"ok": False, "failures": [{"message": "the drill could not run: %s" % e}], "error": e}
    r.update(backup_id=bid, drill_ok=ver["ok"], success=ver["ok"], duration_seconds=ver.get("duration_seconds"))
    if not ver["ok"]:
        r["error"] = "; ".join(f["message"] for f in ver["failures"])
        r["error_kind"] = _errors.kind_of(ver["error"]) if "error" in ver else "integrity"
    (logger.info if r["success"] else logger.error)("drill %s: %s", database, r["error"] or "restored and matched")


def _remove_stale(config, database, logger, audit, r):
    """remove_stale_scratch into the result; its failure (a login that may not drop them) is a
    warning: the drill itself can still run."""
    try:
        stale = remove_stale_scratch(config["pg"], database, audit)
    except Exception as e:  # noqa: BLE001 - said, and the drill goes on
        warning = "could not look for or remove scratch databases of earlier drills: %s" % e
        logger.warning("drill %s: %s", database, warning)
        r.setdefault("warnings", []).append(warning)
        return {"removed": [], "in_use": []}
    r["stale_scratch_removed"] = stale["removed"]
    return stale
