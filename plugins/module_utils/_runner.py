# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The scheduled runner: what ``tsdb-backup.service`` executes on each database host.

Private to the collection. No Ansible imports: the backup_agent role installs the collection
on the host and a small script imports this module. It calls the same functions as the
modules (dump -> verify -> upload with catch-up -> prune -> metrics), not a second copy.

Configuration comes from the environment (systemd ``EnvironmentFile=`` agent.env and the 0600
credentials.env written by the role), read by _runner_config::

    PGHOST PGPORT PGUSER PGPASSWORD PGPASSFILE PGSSLMODE       libpq settings
    TSDB_BACKUP_DATABASES       comma-separated databases to back up (required)
    TSDB_BACKUP_DIR             backup directory (mode 0700, owned by the runner's user)
    TSDB_BACKUP_STATE_DIR       lock, metrics state
    TSDB_BACKUP_HOST_LABEL      host name in manifests and blob names (default: FQDN)
    TSDB_BACKUP_COMPRESSION     zstd (default) | lz4 | gzip | none
    TSDB_BACKUP_VERIFY_LEVEL    checksum | archive (default) | restore
    TSDB_BACKUP_KEEP_DAYS / TSDB_BACKUP_KEEP_LAST   local rotation (default 7 / 3)
    TSDB_BACKUP_UPLOAD          true (default) | false
    TSDB_BACKUP_AZURE_AUTH_MODE, TSDB_BACKUP_AZURE_PREFIX, AZURE_STORAGE_*   Azure settings
    TSDB_BACKUP_AZURE_MAX_RETRIES, TSDB_BACKUP_AZURE_RETRY_BACKOFF  retries of transient errors
    TSDB_BACKUP_METRICS_DIR     node_exporter textfile directory (optional)
    TSDB_BACKUP_NOTIFY_CONFIG   JSON file for notifications (optional)
    TSDB_BACKUP_LOG_FORMAT      text (default) | json
    TSDB_BACKUP_LOCK_WAIT_MINUTES   minutes a backup waits for the run lock another run holds (default 30)
    TSDB_HISTORY_DATABASE, TSDB_HISTORY_RETENTION, TSDB_HISTORY_GRACE_HOURS   history timers
    TSDB_HISTORY_MAX_CLOCK_SKEW     seconds host and server clocks may differ (default 300)
    TSDB_HISTORY_LEGACY_OWNER   host label owning the history layout without host (history-migrate)
    TSDB_BACKUP_SIGNING_KEY_FILE      this host's Ed25519 key: signs every manifest (docs/SIGNING.md)
    TSDB_BACKUP_TRUSTED_SIGNERS_FILE  the trust store: which keys may sign which host's sets
    TSDB_BACKUP_REQUIRE_SIGNATURES    refuse unsigned manifests (default: true with a trust store)
    TSDB_BACKUP_REPLICAS        replica targets, a JSON list (credentials.env): second copies (_replica)

Exit status: 0 all databases backed up; 1 any failed; 2 bad configuration; 75 another run
holds the lock (runs never overlap).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import json
import logging
import os
import sys
import time

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import (
    _drill,
    _dump,
    _errors,
    _lock,
    _prune,
    _runner_guard,
    _runner_history,
    _runner_replica,
    _signals,
    _signing,
    _verify,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._runner_config import (
    ConfigError,
    check_config,
    load_config,
    read_env_file,
)

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_LOCKED = (
    _errors.EXIT_OK,
    _errors.EXIT_FAILED,
    _errors.EXIT_CONFIG,
    _errors.EXIT_LOCKED,
)


class RunLocked(_errors.ConflictError):
    """Another run of the agent (the timer or a playbook) holds the run lock."""


# The runner's commands as jobs (the names the lock record and the messages use).
JOB_OF_COMMAND = {"run": "backup"}
# The metrics file of each history command (a migration is a one-off: none).
HISTORY_RUN_TYPES = {"archive": "history", "retention": "retention", "migrate": None}


def holder_fields(job=None, unit=None, environ=None):
    """Who a run is, for the lock record: its job, its systemd unit (given, or read from the
    process's cgroup) and systemd's INVOCATION_ID (journalctl _SYSTEMD_INVOCATION_ID=...)."""
    environ = os.environ if environ is None else environ
    fields = {"job": job, "unit": unit or _lock.systemd_unit(), "invocation_id": environ.get("INVOCATION_ID")}
    return {k: v for k, v in fields.items() if v}


def run_lock(state_dir, job=None, unit=None):
    """One run at a time per host: <state_dir>/runner.lock; its holder writes who it is into it
    (PID, systemd unit, job, start time)."""
    return _lock.FileLock(os.path.join(state_dir, "runner.lock"), holder=lambda: holder_fields(job, unit))


def take_run_lock(state_dir, job=None, unit=None, wait_seconds=0, logger=None):
    """The run lock, held, after waiting up to ``wait_seconds`` for another run to finish (a long
    history run at backup time); RunLocked saying who holds it when it is still held."""
    lock = run_lock(state_dir, job, unit)
    held_by = _runner_guard.wait_for_lock(lock, wait_seconds, logger)
    if held_by is not None:
        raise RunLocked(
            "another run of the agent (a timer or a playbook) is in progress: %s; try again when it has "
            "finished" % held_by
        )
    return lock


def _optional(name):
    """Observability modules are optional at import time: a missing one must never stop a backup."""
    try:
        return __import__("ansible_collections.insa.timescaledb_backup.plugins.module_utils." + name, fromlist=["x"])
    except ImportError:
        return None


def get_logger(fmt):
    log_mod = _optional("_log")
    if log_mod is not None:
        return log_mod.get_logger("tsdb-backup", fmt=fmt)
    logger = logging.getLogger("tsdb-backup")
    if not logger.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        logger.addHandler(h)
        logger.setLevel(logging.INFO)
    return logger


def progress_factory(logger):
    """progress(label, total_bytes) for dumps, uploads, downloads and restores: journal lines
    with bytes done, rate and ETA (None when _log is missing)."""
    log_mod = _optional("_log")
    if log_mod is None:
        return None
    return lambda label, total=None: log_mod.Progress(logger, label, total_bytes=total)


def audit_callback(logger):
    log_mod = _optional("_log")

    def audit(action, **fields):
        if log_mod is not None:
            log_mod.audit(logger, action, **fields)
        else:
            logger.warning("AUDIT action=%s %s", action, " ".join("%s=%s" % kv for kv in sorted(fields.items())))

    return audit


def signing_policy(config):
    """The run's _signing.Policy, built once (the key file is read and its mode checked here):
    SigningConfigError, a config error, when the key or the trust store cannot be used."""
    if config.get("signing_policy") is None:
        config["signing_policy"] = _signing.policy_from(config.get("signing") or {})
    return config["signing_policy"]


def open_store(config, logger=None):
    from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _azure

    store = _azure.open_store({k: v for k, v in config["azure"].items() if v is not None})
    if logger is not None:
        store.progress = progress_factory(logger)
    store.signing = signing_policy(config)
    return _azure, store


class _Steps:
    """The step running (named in an error) and the seconds each step took (the result's
    ``timings``: where a night's time went, for the operator and for make bench)."""

    def __init__(self, r):
        self.timings = r["timings"] = {}
        self.name, self._t = None, None

    def start(self, name):
        self.stop()
        self.name, self._t = name, time.monotonic()

    def stop(self):
        if self._t is not None:
            self.timings[self.name] = round(time.monotonic() - self._t, 3)
            self._t = None


def backup_database(config, database, logger, store=None, azure=None):
    """dump -> verify -> upload (catch-up) -> prune for one database. Returns a result dict
    (also for failures: 'error' says which step failed and why)."""
    r = {"database": database, "success": False, "error": None}
    steps = _Steps(r)
    t0 = time.monotonic()
    try:
        new_progress = progress_factory(logger)
        steps.start("dump")
        m, followers = _dump_step(config, database, logger, new_progress, r, store)
        steps.start("verify")
        # The archive travels to Azure while it is verified; its manifest only after (catch-up).
        with _runner_guard.staged_upload(config, store, m, logger, followers, r):
            streamed = _runner_guard.joined(followers, _verify.ArchiveRead)
            _verify_step(config, database, logger, new_progress, m, r, streamed)
        uploaded_ids = upload_error = None
        if config["upload"]:
            steps.start("upload")
            try:
                uploaded_ids = _upload_step(config, database, logger, store, r)
            except _runner_guard.UploadIncomplete as e:  # prune what is safe, then report the upload's failure
                if e.uploaded_ids is None:
                    raise  # Azure could not be listed: nothing is known to be safe to remove
                uploaded_ids, upload_error = e.uploaded_ids, e
        steps.start("prune")
        pr = _prune.prune(
            config["backup_dir"],
            database,
            keep_days=config["keep_days"],
            keep_last=config["keep_last"],
            uploaded_ids=uploaded_ids,
            audit=audit_callback(logger),
        )
        steps.stop()
        r["pruned"] = [d["backup_id"] for d in pr["deleted"]]
        if pr.get("busy"):
            logger.warning("prune %s: %s", database, pr["busy"])
        if upload_error is not None:
            steps.name = "upload"
            raise upload_error
        r["success"] = True
    except Exception as e:  # noqa: BLE001 - every failure is reported per database; the run goes on
        steps.stop()
        message = str(e)
        if azure is not None and isinstance(e, azure.AzureTierError) and hasattr(store, "redact"):
            message = store.redact(e)
        r["error"] = "%s failed: %s" % (steps.name, message)
        r["error_kind"] = _errors.kind_of(e)
        logger.error("%s %s: %s", steps.name, database, message)
    r["duration_seconds"] = round(time.monotonic() - t0, 3)
    return r


def _dump_step(config, database, logger, new_progress, r, store=None):
    """Takes the backup, with progress against the size of the last archive, read by the
    verification and staged in Azure as it is written. Returns its manifest and those followers."""
    previous = [e for e in mf.list_local(config["backup_dir"], database) if e["manifest"]]
    estimate = previous[-1]["manifest"]["archive"]["size_bytes"] if previous else None
    progress = new_progress("dump %s" % database, estimate) if new_progress else None
    jobs = _dump.dump_workers(config.get("dump_jobs", 1))
    logger.info("dump %s: starting (%s)", database, "%d workers, directory format" % jobs if jobs > 1 else "one file")
    dumped = _dump.dump(
        config["pg"],
        database,
        config["backup_dir"],
        compression=config["compression"],
        directory_format=jobs > 1,
        jobs=jobs,
        host_label=config["host_label"],
        progress=progress,
        signing=signing_policy(config),
        followers=_runner_guard.dump_followers(config, store, logger),
        extra_manifest={"taken_by": _runner_guard.TAKEN_BY},
        encryption=config.get("encryption_recipients"),
    )
    if progress is not None:
        progress.finish()
    for warning in dumped.get("warnings") or []:
        logger.warning("dump %s: %s", database, warning)
        r.setdefault("warnings", []).append(warning)
    m = dumped["manifest"]
    r.update(backup_id=m["backup_id"], archive_size_bytes=m["archive"]["size_bytes"])
    logger.info(
        "dump %s: backup %s, %s, %.1f s",
        database,
        m["backup_id"],
        _dump.human(m["archive"]["size_bytes"]),
        m["duration_seconds"],
    )
    return m, dumped["followers"]


def _verify_step(config, database, logger, new_progress, m, r, streamed=None):
    ver = _verify.verify(
        config["pg"],
        config["backup_dir"],
        database,
        m["backup_id"],
        level=config["verify_level"],
        progress=new_progress,
        signing=signing_policy(config),
        streamed=streamed,
    )
    r["verify_ok"] = ver["ok"]
    if ver.get("read_during_dump"):
        r.setdefault("read_during_dump", []).append("verify")
    elif streamed is not None and ver["ok"]:
        logger.warning(
            "verify %s: the read during the dump did not count (%s); the archive was read again",
            m["backup_id"],
            streamed.error or "it read other bytes than the manifest's",
        )
    if not ver["ok"]:
        raise _errors.IntegrityError("; ".join(f["message"] for f in ver["failures"]))
    logger.info(
        "verify %s: %s level ok (%d checks%s)",
        m["backup_id"],
        config["verify_level"],
        len(ver["checks"]),
        "; read while it was written" if ver.get("read_during_dump") else "",
    )


def _upload_step(config, database, logger, store, r):
    """Catch-up of every set Azure lacks. Returns the ids of the local sets Azure holds a proven
    copy of (prune may then delete them locally): _azure_catalog.Catalog.uploaded_copies."""
    t_up = time.monotonic()
    _runner_guard.verify_leftovers(config, database, logger, signing_policy(config))
    # create_container comes with the Azure settings (TSDB_BACKUP_AZURE_CREATE_CONTAINER).
    # With encryption on, a set taken in clear (before it was on) is encrypted before it is sent.
    encrypt = {"encrypt_to": config["encryption_recipients"]} if config.get("encryption_recipients") else {}
    up = store.catch_up(config["backup_dir"], database=database, host=config["host_label"], **encrypt)
    for warning in up.get("warnings") or []:
        logger.warning("upload %s: %s", database, warning)
    r.update(
        upload_bytes=up["bytes"],
        upload_duration_seconds=round(time.monotonic() - t_up, 3),
        uploaded=up["uploaded"],
    )
    logger.info("upload %s: %d set(s) sent, %s", database, len(up["uploaded"]), _dump.human(up["bytes"]))
    pending, unusable = store.pending_uploads(config["backup_dir"], database, config["host_label"])
    r["pending_uploads"] = len(pending)
    _runner_guard.note_unuploaded(r, pending, unusable, up["failures"], logger)
    if not up["failures"]:
        return store.uploaded_copies(config["backup_dir"], config["host_label"], database)
    # The last failure is the one that stopped the catch-up, if one did.
    failed = _runner_guard.UploadIncomplete(
        "; ".join("%s: %s" % (f["backup_id"], f["error"]) for f in up["failures"]),
        kind=up["failures"][-1].get("error_kind") or "service",
    )
    # A set that cannot be uploaded must not stop the pruning of the ones Azure holds.
    try:
        failed.uploaded_ids = store.uploaded_copies(config["backup_dir"], config["host_label"], database)
    except Exception as e:  # noqa: BLE001 - then nothing is pruned; the upload's failure is the one reported
        logger.warning("upload %s: cannot list Azure (%s); nothing is pruned", database, e)
    raise failed


def run_backup(config, logger):
    store = azure = None
    results, replicas = [], []
    if config["upload"]:
        try:
            azure, store = open_store(config, logger)
        except Exception as e:  # noqa: BLE001 - a wrong Azure setting must not cost the local backup
            store = UploadUnavailable(e)
        replicas = _runner_replica.open_replicas(config, store, logger)
    for database in config["databases"]:
        results.append(backup_database(config, database, logger, store, azure))
    # After every database's backup (a slow or down replica never delays a dump): each copies what
    # the primary holds, also when this run's upload failed.
    for r in results:
        _runner_replica.replicate_database(config, r["database"], store, replicas, logger, r)
    _runner_replica.coverage_gaps(config, store, replicas, results, logger)
    return results


class UploadUnavailable:
    """Stands in for the store when Azure cannot even be configured: each database is still
    dumped and verified, and fails at its upload step with the reason."""

    def __init__(self, error):
        self.error = error

    def catch_up(self, *args, **kwargs):
        raise ConfigError("upload configuration: %s" % self.error)


def report(config, run_type, results, logger):
    metrics = _optional("_metrics")
    if config["metrics_dir"] and metrics is not None:
        try:
            metrics.write_run_metrics(
                config["metrics_dir"], config["state_dir"], config["host_label"], run_type, results
            )
        except Exception as e:  # noqa: BLE001 - metrics must not turn a good backup into a failed run
            logger.error("writing metrics failed: %s", e)
    notify = _optional("_notify")
    if config["notify_config"] and notify is not None:
        try:
            with open(config["notify_config"]) as f:
                ncfg = json.load(f)
            ok = all(r["success"] for r in results)
            notify.notify(
                ncfg,
                {
                    "host": config["host_label"],
                    "run_type": run_type,
                    "success": ok,
                    "summary": summary_lines(results),
                    "errors": [r["error"] for r in results if r.get("error")],
                    "when": mf.isoformat(mf.utcnow()),
                },
                logger=logger,
            )
        except Exception as e:  # noqa: BLE001
            logger.error("sending notifications failed: %s", e)


def summary_lines(results):
    lines = []
    for r in results:
        if r["success"] and "archived_slices" in r:
            lines.append("%s: ok, %d chunk range(s) archived" % (r["database"], r["archived_slices"]))
        elif r["success"] and "dropped_slices" in r:
            lines.append(
                "%s: ok, %d chunk range(s) dropped, %d held back"
                % (r["database"], r["dropped_slices"], r.get("chunks_held_back", 0))
            )
        elif r["success"] and "drill_ok" in r:
            lines.append(
                "%s: ok, backup %s restored and matched its manifest, %.1f s"
                % (r["database"], r.get("backup_id", "-"), r.get("duration_seconds") or 0)
            )
        elif r["success"]:
            lines.append(
                "%s: ok, backup %s (%s), %.1f s"
                % (
                    r["database"],
                    r.get("backup_id", "-"),
                    _dump.human(r.get("archive_size_bytes") or 0),
                    r.get("duration_seconds") or 0,
                )
            )
        else:
            lines.append("%s: FAILED, %s" % (r["database"], r["error"]))
        lines[-1] += _runner_replica.summary_suffix(r)
    return "\n".join(lines)


def run_drill(config, logger):
    """The restore drill of every database (see _drill)."""
    return _drill.run_drill(config, logger, progress_factory(logger), audit_callback(logger), signing_policy(config))


def run_history(config, logger, kind):
    """history-archive: every closed chunk range to Azure (Parquet, verified); history-retention:
    drop only ranges a verified archive covers (backup-gated retention); history-migrate: copy
    the layout without host into this host's folder (TSDB_HISTORY_LEGACY_OWNER must name it)."""
    database = config["history"]["database"]
    try:
        _azure_mod, store = open_store(config, logger)
        res = _runner_history.HISTORY_STEPS[kind](config, database, store, logger)
        for w in res.get("warnings", []):
            logger.warning("history %s: %s", database, w)
        result = _runner_history.history_result(config, database, res, kind)
        if kind == "archive":
            # Every verified object of the host, this run's and any a replica still lacks.
            replicas = _runner_replica.open_replicas(config, store, logger)
            _runner_replica.replicate_history(config, store, replicas, logger, result)
    except Exception as e:  # noqa: BLE001 - reported as the run's result
        result = {"database": database, "success": False, "error": "history %s failed: %s" % (kind, e)}
        result["error_kind"] = _errors.kind_of(e)
    if result.get("error"):
        logger.error("history %s %s: %s", kind, database, result["error"])
    return [result]


COMMAND_RUN_TYPES = dict(
    {"run": "backup", "drill": "drill"}, **{"history-" + k: v for k, v in HISTORY_RUN_TYPES.items()}
)


def _run_command(command, config, logger):
    """Runs one command and reports it; a SIGTERM or SIGHUP (systemctl stop, a unit's timeout)
    raises _signals.Terminated inside it, so that every cleanup on the way out runs."""
    with _signals.terminate_raises():
        if command == "run":
            results, run_type = run_backup(config, logger), "backup"
        elif command == "drill":
            results, run_type = run_drill(config, logger), "drill"
        else:
            kind = command.split("-", 1)[1]
            results, run_type = run_history(config, logger, kind), HISTORY_RUN_TYPES[kind]
        if run_type:
            report(config, run_type, results, logger)
    return results, run_type


def main(argv=None, environ=None):
    parser = argparse.ArgumentParser(prog="tsdb-backup", description="TimescaleDB backup agent (scheduled runs)")
    parser.add_argument(
        "command",
        choices=["run", "drill", "history-archive", "history-retention", "history-migrate"],
        help="run: dump, verify, upload, prune; drill: restore test; history-archive / history-retention: "
        "chunk archive to Azure and backup-gated retention; history-migrate: the history layout of earlier "
        "releases into this host's folder",
    )
    parser.add_argument("--database", action="append", help="only this database (repeatable)")
    parser.add_argument("--unit", help="the systemd unit running this (default: read from /proc/self/cgroup)")
    args = parser.parse_args(argv)
    try:
        config = load_config(environ)
    except (ConfigError, ValueError) as e:
        sys.stderr.write("tsdb-backup: configuration error: %s\n" % e)
        return _errors.exit_code(e)
    try:
        signing_policy(config)
    except _signing.SigningConfigError as e:
        sys.stderr.write("tsdb-backup: configuration error: %s\n" % e)
        return _errors.exit_code(e)
    if args.database:
        config["databases"] = args.database
    logger = get_logger(config["log_format"])
    try:
        job = JOB_OF_COMMAND.get(args.command, args.command)
        # The nightly backup waits (bounded) for a history run in its way; the others do not start.
        wait = config.get("lock_wait_minutes", 0) * 60 if args.command == "run" else 0
        lock = take_run_lock(config["state_dir"], job, args.unit, wait_seconds=wait, logger=logger)
    except RunLocked as e:
        logger.error("%s; not starting a second one", e)
        return EXIT_LOCKED
    try:
        results, run_type = _run_command(args.command, config, logger)
    except _signals.Terminated as e:
        # The step that ran cleaned up on the way out (partial files, its child tool): the run
        # is reported as failed for every database, so that the alerts see a stopped night.
        logger.error("%s %s; what it was writing was removed, nothing else changed", args.command, e)
        results = [
            {"database": d, "success": False, "error": "%s: %s" % (args.command, e), "error_kind": "service"}
            for d in config["databases"]
        ]
        if COMMAND_RUN_TYPES.get(args.command):
            report(config, COMMAND_RUN_TYPES[args.command], results, logger)
        return _signals.exit_status(e)
    finally:
        lock.release()
    for line in summary_lines(results).splitlines():
        logger.info("summary: %s", line)
    return EXIT_OK if all(r["success"] for r in results) else EXIT_FAILED


# What the agent_run module, the role's script and the tests use, wherever it lives.
__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILED",
    "EXIT_LOCKED",
    "EXIT_OK",
    "ConfigError",
    "RunLocked",
    "UploadUnavailable",
    "audit_callback",
    "backup_database",
    "check_config",
    "get_logger",
    "load_config",
    "main",
    "open_store",
    "progress_factory",
    "read_env_file",
    "report",
    "run_backup",
    "run_drill",
    "run_history",
    "run_lock",
    "signing_policy",
    "summary_lines",
    "take_run_lock",
]
