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
import re
import time

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import (
    _dump,
    _errors,
    _pg,
    _pg_cluster,
    _pitr,
    _signals,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _pgbackrest as pgbr

ASIDE_MARK = ".before-restore-"
# What psql says while a server starts or recovers (everything else is not worth waiting for).
_NOT_READY = re.compile(
    r"starting up|not yet accepting|No such file or directory|Connection refused|shutting down|"
    r"consistent recovery state has not been yet reached|in recovery mode",
    re.I,
)
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
                else "the repository holds none (status: %s)" % _pitr.status_text(stanza_info),
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
        port=5432,
    ):
        self.stanza, self.cluster, self.data = stanza, cluster, data_directory.rstrip("/")
        self.target, self.owner, self.process_max = target, owner, process_max
        self.params = params
        self.recovery_timeout = recovery_timeout
        self.port, self.version = int(port), int(cluster.partition("/")[0])
        self.log = log or (lambda msg: None)
        self.result = {"stanza": stanza, "cluster": cluster, "data_directory": self.data, "timings": {}}

    def _timed(self, name, started):
        self.result["timings"][name] = round(time.monotonic() - started, 2)

    def plan(self):
        """Checks what can be checked before anything stops: the target, the data directory, the
        stanza, a backup for the target, the room for it beside the previous data directory."""
        if self.target is not None and self.target > time.time() + 1:
            raise _errors.ConfigError(
                "target %s is in the future: give a time that has passed, or latest" % _pitr.isoformat(self.target)
            )
        if not os.path.isdir(self.data):
            raise _errors.ConfigError(
                "data directory %s does not exist: is cluster %s installed here?" % (self.data, self.cluster)
            )
        tablespaces = (
            os.listdir(os.path.join(self.data, "pg_tblspc")) if os.path.isdir(self.data + "/pg_tblspc") else []
        )
        if tablespaces:
            raise _errors.ConfigError(
                "cluster %s has tablespaces (%s): physical_restore moves only the data directory aside, so it does "
                "not restore a cluster with tablespaces; restore with pgbackrest by hand (docs/RESTORE.md)"
                % (self.cluster, ", ".join(sorted(tablespaces)))
            )
        info = pgbr.info(self.stanza, as_user=self.owner)
        backup = choose_backup(info, self.target)
        need = int(((backup.get("info") or {}).get("size") or 0) * 1.1)
        free = _dump.free_bytes(os.path.dirname(self.data))
        if need > free:
            raise _errors.ConflictError(
                "restoring needs about %d MiB beside the data directory %s (kept until you remove it) and %d MiB are "
                "free on its file system; nothing was changed" % (need // 2**20, self.data, free // 2**20)
            )
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
        # A stop (systemctl, a lost session) during the restore puts the previous cluster back.
        with _signals.terminate_raises():
            aside = self._stop_and_move_aside()
            try:
                self._restore_into_empty(backup, aside)
            except BaseException as e:  # noqa: BLE001 - every failure, an interrupt too, puts the cluster back
                self._put_back(aside, e)
        self._timed("total", started)
        return self.result

    def _stop_and_move_aside(self):
        """Stops the cluster and renames its data directory; on any failure before the rename is
        done the cluster is started again and nothing else has changed."""
        try:
            self._archive_current_wal()
            self.log("stopping cluster %s" % self.cluster)
            _pg_cluster.cluster_control(self.cluster, "stop")
            self._require_stopped("stop it and run again")
            aside = self.data + ASIDE_MARK + stamp()
            os.rename(self.data, aside)
        except BaseException as e:  # noqa: BLE001 - an interrupt too: the cluster runs again
            started = ""
            if self._postmaster_pid() is None:
                try:
                    _pg_cluster.cluster_control(self.cluster, "start")
                    started = ", the cluster is started again"
                except _errors.OperatorError:
                    started = ", and starting the cluster again failed: %s" % _pg_cluster.cluster_log_tail(self.cluster)
            raise PhysicalRestoreError(
                "physical restore of stanza %s stopped before anything was restored: %s; nothing was changed%s"
                % (self.stanza, _reason(e), started),
                kind=e.kind
                if isinstance(e, _errors.OperatorError)
                else "config"
                if isinstance(e, OSError)
                else "service",
            ) from None
        self.result["previous_data_directory"] = aside
        self.log("data directory moved aside to %s" % aside)
        return aside

    def _archive_current_wal(self):
        """Before a restore to the end of the archive over a running cluster: its current WAL
        segment is archived first (pgbackrest check switches and waits), or nothing is lost that
        could be kept."""
        if self.target is not None or self._postmaster_pid() is None:
            return
        try:
            pgbr.run(self.stanza, "check", as_user=self.owner, timeout=600)
            self.result["archived_before_stop"] = True
        except pgbr.PgBackRestError as e:
            self.result["archived_before_stop"] = False
            self.log("pgbackrest check before the restore failed (the newest WAL may not be in the archive): %s" % e)

    def _restore_into_empty(self, backup, aside):
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
        try:
            _pg_cluster.cluster_control(self.cluster, "start", timeout=self.recovery_timeout)
        except _pg.ToolError:
            # pg_ctl gives up waiting after 60 s (without systemd) while the recovery goes on.
            if self._postmaster_pid() is None:
                raise
        self.result.update(self._wait_promoted())
        self._timed("recovery", t0)

    def _postmaster_pid(self):
        """The PID of the postmaster running on the data directory, or None."""
        try:
            with open(os.path.join(self.data, "postmaster.pid")) as f:
                pid = int(f.readline().strip())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def _require_stopped(self, what):
        pid = self._postmaster_pid()
        if pid is not None:
            raise PhysicalRestoreError(
                "cluster %s still runs (postmaster %d) after it was stopped: %s" % (self.cluster, pid, what),
                kind="conflict",
            )

    def _local(self, sql):
        return _pg_cluster.local_query(sql, self.owner, self.port, self.version)

    def _wait_promoted(self):
        """Waits, over the local socket as the owner (not the restored cluster's logins), until
        the server has left recovery; fails at once when it stopped (a FATAL in its log)."""
        deadline = time.monotonic() + self.recovery_timeout
        while time.monotonic() < deadline:
            if self._postmaster_pid() is None:
                raise PhysicalRestoreError(
                    "the restored cluster stopped during recovery: %s" % _pg_cluster.cluster_log_tail(self.cluster),
                    kind="service",
                )
            try:
                if self._local("SELECT pg_is_in_recovery()") == "f":
                    return {
                        "timeline": int(self._local("SELECT timeline_id FROM pg_control_checkpoint()")),
                        "system_identifier": self._local("SELECT system_identifier FROM pg_control_system()"),
                    }
            except _pg.ToolError as e:
                if not _NOT_READY.search(str(e)):
                    raise PhysicalRestoreError(
                        "the restored cluster runs but cannot be queried as %s over its socket: %s" % (self.owner, e),
                        kind="config",
                    ) from None
            time.sleep(1)
        raise PhysicalRestoreError(
            "the restored cluster did not finish recovery within %d s" % self.recovery_timeout, kind="service"
        )

    def _put_back(self, aside, error):
        """Puts the previous data directory back after a failed attempt; raises the explanation,
        which says where each directory is now."""
        failed = self.data + FAILED_MARK + stamp()
        try:
            _pg_cluster.cluster_control(self.cluster, "stop")
        except _errors.OperatorError:
            pass  # checked below: the directories are never swapped under a running server
        attempt_at, previous_at = (self.data if os.path.isdir(self.data) else None), aside
        try:
            self._require_stopped("the directories were left as they are")
            if attempt_at:
                os.rename(self.data, failed)
                attempt_at = failed
            os.rename(aside, self.data)
            previous_at = self.data
            _pg_cluster.cluster_control(self.cluster, "start")
        except (_errors.OperatorError, OSError) as e:
            problem = "putting the previous cluster back failed (%s)" % e
        else:
            problem = None
        if previous_at == self.data and self._postmaster_pid() is not None:
            state = "the previous data directory is back in place (%s) and the cluster is started" % self.data
        elif previous_at == self.data:
            state = "the previous data directory is back in place (%s) but the cluster did not start: %s" % (
                self.data,
                _pg_cluster.cluster_log_tail(self.cluster),
            )
        else:
            state = "the previous data directory is %s" % previous_at
        if problem:
            state = problem + "; " + state
        if attempt_at:
            state += "; the failed attempt is %s" % attempt_at
        raise PhysicalRestoreError(
            "physical restore of stanza %s failed: %s. %s" % (self.stanza, _reason(error), state),
            kind=error.kind if isinstance(error, _errors.OperatorError) else "service",
        ) from None


def _reason(error):
    if isinstance(error, _signals.Terminated):
        return "it was interrupted (%s)" % error
    return str(error) or type(error).__name__


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
                try:
                    restored = int(_pg.scalar(conn, _pg.sql.SQL("SELECT count(*) FROM {}").format(ident)))
                except Exception as e:  # noqa: BLE001 - a table that cannot be counted is a finding, not a failure
                    findings.append("%s: counting %s failed: %s" % (database, table, str(e).strip()))
                    continue
                entry["tables"][table] = {"logical": logical, "restored": restored}
                if logical is not None and restored < logical:
                    findings.append(
                        "%s: %s has %d rows, logical set %s had %d"
                        % (database, table, restored, entry["backup_id"], logical)
                    )
        finally:
            conn.close()
    return report, findings
