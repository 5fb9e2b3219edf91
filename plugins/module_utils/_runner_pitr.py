# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the physical-backup units (role pitr) run on each database host, as the cluster's
owner (postgres): ``status`` (every minute: what the repository and the archiver say, into
tsdb_backup_pitr.prom), ``backup --type full|diff|incr`` (``pgbackrest check``, then the backup,
then the status), ``check`` and ``drill`` (the physical restore drill, _pitr_drill).

Configuration from the environment (the units' EnvironmentFile, written by the role):

    TSDB_PITR_STANZA         the pgBackRest stanza (required)
    TSDB_BACKUP_HOST_LABEL   host label of the metrics (default: FQDN)
    TSDB_PITR_STATE_DIR      where the last runs are remembered (0700, postgres)
    TSDB_PITR_METRICS_DIR    where tsdb_backup_pitr.prom is written ("" = nowhere)
    TSDB_PITR_PG_VERSION     the cluster's major version (the drill's pg_ctl; default 17)
    TSDB_PITR_DRILL_PORT     the drill's scratch server port (its socket only; default 5499)
    PGHOST PGPORT PGUSER     libpq settings of the status query (the socket, peer auth)

Exit status: 0 done; 1 failed; 2 bad configuration; 75 another pgBackRest command holds the
stanza's lock (the next timer tick tries again).

Private to the collection. No Ansible imports.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import logging
import os
import socket
import sys
import time

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _errors, _pg, _pitr, _pitr_drill, _signals
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _pgbackrest as pgbr

LOG = logging.getLogger("tsdb-pitr")
# A backup of a large cluster takes hours; a check waits for one WAL segment (archive-timeout).
BACKUP_TIMEOUT = 24 * 3600
CHECK_TIMEOUT = 600


def load_config(environ):
    stanza = environ.get("TSDB_PITR_STANZA", "")
    pgbr.check_stanza(stanza)
    return {
        "stanza": stanza,
        "host": environ.get("TSDB_BACKUP_HOST_LABEL") or socket.getfqdn(),
        "state_dir": environ.get("TSDB_PITR_STATE_DIR") or "/var/lib/tsdb-backup-pitr",
        "metrics_dir": environ.get("TSDB_PITR_METRICS_DIR", ""),
        "pg_version": int(environ.get("TSDB_PITR_PG_VERSION") or 17),
        "drill_port": int(environ.get("TSDB_PITR_DRILL_PORT") or 5499),
        "params": _pg.ConnectionParams(
            login_host=environ.get("PGHOST") or "/var/run/postgresql",
            port=int(environ.get("PGPORT") or 5432),
            login_user=environ.get("PGUSER") or "postgres",
        ),
    }


def collect_status(config):
    """The repository's and the archiver's facts; ``up`` says whether both answered."""
    facts, up = {"collected_at": time.time()}, 1
    try:
        stanza_info = pgbr.info(config["stanza"])
        facts.update(_pitr.backup_facts(stanza_info))
        # info exits 0 when it cannot read the repository: its status says so.
        if facts.get("status_code") not in (pgbr.STATUS_OK, pgbr.STATUS_NO_BACKUP):
            LOG.error("pgbackrest info, stanza %s: %s", config["stanza"], _pitr.status_text(stanza_info))
            up = 0
    except _errors.OperatorError as e:
        LOG.error("pgbackrest info: %s", e)
        up = 0
    try:
        conn = _pg.connect(config["params"])
        try:
            with conn.cursor() as cur:
                cur.execute(_pitr.ARCHIVER_SQL)
                facts.update(_pitr.archiver_facts(cur.fetchone()))
        finally:
            conn.close()
    except _errors.OperatorError as e:
        LOG.error("pg_stat_archiver: %s", e)
        up = 0
    facts["up"] = up
    return facts


def _save(config, change):
    state = _pitr.update_state(config["state_dir"], change)
    _pitr.write_metrics(config["metrics_dir"], state, config["host"], config["stanza"])
    return state


def run_status(config):
    facts = collect_status(config)

    def change(state):
        state["status"] = facts

    _save(config, change)
    if facts.get("lag_segments"):
        LOG.warning("%d complete WAL segment(s) wait for the archive", facts["lag_segments"])
    return facts["up"] == 1


def run_check(config):
    error = None
    try:
        pgbr.run(config["stanza"], "check", timeout=CHECK_TIMEOUT)
    except pgbr.PgBackRestError as e:
        error = e
    _save(config, lambda state: _pitr.record_check(state, error is None, error=str(error) if error else None))
    if error is not None:
        raise error
    LOG.info("pgbackrest check: WAL is archived and the repository is reachable")


def run_backup(config, kind):
    started = time.time()
    error = None
    try:
        run_check(config)
        pgbr.run(config["stanza"], "backup", ["--type=%s" % kind], timeout=BACKUP_TIMEOUT)
    except pgbr.PgBackRestError as e:
        error = e
    duration = time.time() - started
    _save(
        config,
        lambda s: _pitr.record_job(s, kind, error is None, error=str(error) if error else None, duration=duration),
    )
    run_status(config)
    if error is not None:
        raise error
    LOG.info("%s backup of stanza %s done in %.0f s", kind, config["stanza"], time.time() - started)


def run_drill(config):
    """The physical restore drill into <state_dir>/drill on the drill port; its time is recorded."""
    scratch = os.path.join(config["state_dir"], "drill")
    owner = _pg.ConnectionParams(login_host=scratch, port=config["drill_port"], login_user=config["params"].user)
    started = time.time()
    error, result = None, None
    try:
        # systemctl stop or the unit's timeout: the scratch server is stopped and its copy removed.
        with _signals.terminate_raises():
            result = _pitr_drill.run(
                config["stanza"],
                scratch,
                config["drill_port"],
                config["pg_version"],
                config["params"],
                owner,
                log=LOG.info,
            )
    except BaseException as e:  # noqa: BLE001 - recorded as a failed drill, then raised again
        error = e
    duration = time.time() - started
    _save(
        config,
        lambda s: _pitr.record_job(s, "drill", error is None, error=str(error) if error else None, duration=duration),
    )
    if error is not None:
        raise error
    return result


def main(argv=None, environ=None):
    environ = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(prog="tsdb-pitr", description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("command", choices=["status", "check", "backup", "drill"])
    parser.add_argument("--type", choices=_pitr.BACKUP_TYPES, default="diff", help="backup: full, diff or incr")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    try:
        config = load_config(environ)
    except _errors.ConfigError as e:
        LOG.error("bad configuration: %s", e)
        return _errors.EXIT_CONFIG
    try:
        if args.command == "status":
            return _errors.EXIT_OK if run_status(config) else _errors.EXIT_FAILED
        if args.command == "check":
            run_check(config)
        elif args.command == "drill":
            run_drill(config)
        else:
            run_backup(config, args.type)
    except (_errors.OperatorError, OSError) as e:
        LOG.error("%s", e)
        if getattr(e, "code", None) == 50:  # pgBackRest's lock: another command runs
            return _errors.EXIT_LOCKED
        return _errors.EXIT_CONFIG if getattr(e, "kind", None) == "config" else _errors.EXIT_FAILED
    except _signals.Terminated as e:
        LOG.error("%s %s; what it was writing was removed", args.command, e)
        return _signals.exit_status(e)
    except Exception as e:  # noqa: BLE001 - recorded (the drill), said in the journal, never a silent traceback
        LOG.exception("%s failed: %s", args.command, e)
        return _errors.EXIT_FAILED
    return _errors.EXIT_OK
