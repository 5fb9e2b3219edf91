# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A physical restore of a whole cluster from pgBackRest, to a point in time or to the end of
the archived WAL, over the host's cluster (a fresh one on a rebuilt host, or the live one).

Nothing is deleted: the cluster's data directory is moved aside (renamed on the same file
system, ``<data>.before-restore-<time>``) and stays until the operator removes it. When the
restore or the recovery fails, the failed attempt is moved aside too
(``<data>.failed-restore-<time>``), the previous data directory is put back and started: the
host is as it was. The steps:

1. choose the backup: the newest whose end is at or before the target (pgBackRest's info);
2. stop the cluster, move its data directory aside, create an empty one (0700, its owner);
3. ``pgbackrest restore`` (as the cluster's owner) with the target and ``promote``;
4. start the cluster and wait until recovery has ended and it accepts writes;
5. compare with the logical manifests given (tables and row counts), report.

Private to the collection. No Ansible imports.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import os
import time

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _errors, _pg, _pitr
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _pgbackrest as pgbr

ASIDE_MARK = ".before-restore-"
FAILED_MARK = ".failed-restore-"


class PhysicalRestoreError(_errors.OperatorError):
    """A physical restore that could not be done; the message says what the host holds now."""


def target_epoch(target):
    """None for ``latest``, else the epoch of the ISO 8601 time (ConfigError if it is none)."""
    if target in (None, "", "latest"):
        return None
    try:
        return _pitr.parse_time(target)
    except ValueError as e:
        raise _errors.ConfigError("target %s; give an ISO 8601 time or latest" % e) from None


def choose_backup(stanza_info, target):
    """The backup a restore to ``target`` (epoch or None) starts from: the newest that ended at
    or before it. NotFoundError naming what the repository holds."""
    backups = _pitr.valid_backups(stanza_info)
    if target is not None:
        backups = [b for b in backups if b["timestamp"]["stop"] <= target]
    if not backups:
        held = _pitr.valid_backups(stanza_info)
        raise _errors.NotFoundError(
            "no backup of stanza %s ends at or before %s: %s"
            % (
                stanza_info.get("name"),
                _pitr.isoformat(target) if target is not None else "now",
                "the oldest ends at %s" % _pitr.isoformat(held[0]["timestamp"]["stop"])
                if held
                else "the repository holds none (status: %s)" % (stanza_info.get("status") or {}).get("message"),
            )
        )
    return backups[-1]


def restore_options(data_directory, backup, target, process_max):
    """pgbackrest restore's options (a list argv): the backup set, the target, promote."""
    options = ["--pg1-path=%s" % data_directory, "--set=%s" % backup["label"], "--process-max=%d" % process_max]
    if target is not None:
        moment = datetime.datetime.fromtimestamp(target, datetime.timezone.utc)
        options += [
            "--type=time",
            "--target=%s" % moment.strftime("%Y-%m-%d %H:%M:%S.%f+00"),
            "--target-action=promote",
        ]
    return options


def stamp(now=None):
    return datetime.datetime.fromtimestamp(time.time() if now is None else now, datetime.timezone.utc).strftime(
        "%Y%m%dT%H%M%SZ"
    )


def _empty_directory_like(path, aside):
    st = os.stat(aside)
    os.mkdir(path, 0o700)
    os.chown(path, st.st_uid, st.st_gid)


class Restore:
    """One physical restore; ``run()`` returns what was done (``result``)."""

    def __init__(
        self,
        stanza,
        cluster,
        data_directory,
        target,
        owner="postgres",
        process_max=2,
        params=None,
        recovery_timeout=3600,
        log=None,
    ):
        self.stanza, self.cluster, self.data = stanza, cluster, data_directory.rstrip("/")
        self.target, self.owner, self.process_max = target, owner, process_max
        self.params = params
        self.recovery_timeout = recovery_timeout
        self.log = log or (lambda msg: None)
        self.result = {"stanza": stanza, "cluster": cluster, "data_directory": self.data, "timings": {}}

    def _timed(self, name, started):
        self.result["timings"][name] = round(time.monotonic() - started, 2)

    def plan(self):
        """Checks what can be checked before anything stops: the stanza, a backup for the target."""
        if not os.path.isdir(self.data):
            raise _errors.ConfigError(
                "data directory %s does not exist: is cluster %s installed here?" % (self.data, self.cluster)
            )
        info = pgbr.info(self.stanza, as_user=self.owner)
        backup = choose_backup(info, self.target)
        self.result.update(
            backup_label=backup["label"],
            backup_type=backup.get("type"),
            backup_ended=_pitr.isoformat(backup["timestamp"]["stop"]),
            target="latest" if self.target is None else _pitr.isoformat(self.target),
        )
        return backup

    def run(self):
        backup = self.plan()
        started = time.monotonic()
        self.log("stopping cluster %s" % self.cluster)
        _pg.cluster_control(self.cluster, "stop")
        aside = self.data + ASIDE_MARK + stamp()
        os.rename(self.data, aside)
        self.result["previous_data_directory"] = aside
        self.log("data directory moved aside to %s" % aside)
        try:
            _empty_directory_like(self.data, aside)
            t0 = time.monotonic()
            pgbr.run(
                self.stanza,
                "restore",
                restore_options(self.data, backup, self.target, self.process_max),
                as_user=self.owner,
                timeout=24 * 3600,
            )
            self._timed("restore", t0)
            t0 = time.monotonic()
            _pg.cluster_control(self.cluster, "start", timeout=self.recovery_timeout)
            self.result.update(self._wait_promoted())
            self._timed("recovery", t0)
        except (_errors.OperatorError, OSError) as e:
            self._put_back(aside, e)
        self._timed("total", started)
        return self.result

    def _wait_promoted(self):
        """Waits until the server accepts connections and has left recovery; its facts."""
        deadline = time.monotonic() + self.recovery_timeout
        last = None
        while time.monotonic() < deadline:
            try:
                conn = _pg.connect(self.params)
            except _pg.PgError as e:
                last = e
                time.sleep(1)
                continue
            try:
                if not _pg.scalar(conn, "SELECT pg_is_in_recovery()"):
                    return {
                        "timeline": _pg.scalar(conn, "SELECT timeline_id FROM pg_control_checkpoint()"),
                        "system_identifier": str(_pg.scalar(conn, "SELECT system_identifier FROM pg_control_system()")),
                    }
            finally:
                conn.close()
            time.sleep(1)
        raise PhysicalRestoreError(
            "the restored cluster did not finish recovery within %d s%s"
            % (self.recovery_timeout, ": %s" % last if last else ""),
            kind="service",
        )

    def _put_back(self, aside, error):
        """Puts the previous data directory back after a failed attempt; raises the explanation."""
        failed = self.data + FAILED_MARK + stamp()
        notes = []
        try:
            _pg.cluster_control(self.cluster, "stop")
        except _errors.OperatorError as e:
            notes.append("stopping the failed attempt: %s" % e)
        try:
            if os.path.isdir(self.data):
                os.rename(self.data, failed)
            os.rename(aside, self.data)
            _pg.cluster_control(self.cluster, "start")
            state = (
                "the previous data directory is back in place and started; the failed attempt is kept as %s" % failed
            )
        except (_errors.OperatorError, OSError) as e:
            state = "putting the previous data directory back failed (%s): it is %s, the attempt %s" % (
                e,
                aside,
                failed,
            )
        raise PhysicalRestoreError(
            "physical restore of stanza %s failed: %s. %s%s"
            % (self.stanza, error, state, "; " + "; ".join(notes) if notes else ""),
            kind=getattr(error, "kind", "service") if isinstance(error, _errors.OperatorError) else "service",
        ) from None


def compare(params, manifests):
    """The restored cluster against logical manifests (one per database): for each table of a
    manifest, its rows there and here. Findings: tables missing here, tables with fewer rows
    than the logical set had (telemetry only grows between retention runs)."""
    report, findings = {}, []
    for manifest in manifests:
        database = manifest.get("database")
        entry = {"backup_id": manifest.get("backup_id"), "tables": {}}
        report[database] = entry
        try:
            conn = _pg.connect(params, database)
        except _pg.PgError as e:
            findings.append("%s: cannot connect (%s)" % (database, e))
            continue
        try:
            for table, facts in sorted((manifest.get("tables") or {}).items()):
                logical = (facts or {}).get("rows")
                try:
                    schema, name = _pg.split_qualified(table)
                except ValueError:
                    findings.append("%s: logical set %s names no table: %r" % (database, entry["backup_id"], table))
                    continue
                if not _pg.scalar(conn, "SELECT to_regclass(%s) IS NOT NULL", (_pg.qualified(schema, name),)):
                    entry["tables"][table] = {"logical": logical, "restored": None}
                    findings.append("%s: table %s of logical set %s is missing" % (database, table, entry["backup_id"]))
                    continue
                ident = _pg.sql.Identifier(schema, name)
                restored = int(_pg.scalar(conn, _pg.sql.SQL("SELECT count(*) FROM {}").format(ident)))
                entry["tables"][table] = {"logical": logical, "restored": restored}
                if logical is not None and restored < logical:
                    findings.append(
                        "%s: %s has %d rows, logical set %s had %d"
                        % (database, table, restored, entry["backup_id"], logical)
                    )
        finally:
            conn.close()
    return report, findings
