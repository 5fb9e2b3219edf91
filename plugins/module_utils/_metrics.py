# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Prometheus metrics of the backup runs, for node_exporter's textfile collector.

Private to the collection. No Ansible imports: the scheduled runner uses this.

After every run the runner calls ``write_run_metrics``; it writes, atomically (temp file in
the same folder, fsync, rename, mode 0644):

``<textfile_dir>/tsdb_backup_<run_type>.prom``
    What the last run of that type did, per database. Labels ``run_type``, ``host``,
    ``database``: every run type writes the same metric names, so the files never hold the
    same series twice (node_exporter refuses duplicates).
``<textfile_dir>/tsdb_backup_status.prom``
    What the latest run that looked saw, per database, whatever its type: backups not yet
    uploaded, the oldest chunk not yet archived and the retention horizon. Labels ``host``,
    ``database`` (and ``hypertable``). One file, so a backup run's backlog and a later upload
    run's empty backlog never contradict each other.

The metrics are a pure function of ``<state_dir>/metrics-state.json`` (written atomically, under
a lock), which keeps, per run type, host and database, the last results and the time of the
last success: ``tsdb_backup_last_success_timestamp_seconds`` survives failed runs and restarts.
A database a run did not mention keeps its last values (and ages), so a backup that silently
stops covering a database still raises "backup missing"; ``forget=[...]`` removes one for good.

docs/OBSERVABILITY.md lists the metrics, their labels and the alert rules built on them.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import errno
import json
import os
import time
import traceback

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _errors, _lock
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf

try:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import GaugeMetricFamily

    HAS_PROMETHEUS_CLIENT = True
    PROMETHEUS_CLIENT_IMPORT_ERROR = None
except ImportError:
    HAS_PROMETHEUS_CLIENT = False
    PROMETHEUS_CLIENT_IMPORT_ERROR = traceback.format_exc()

RUN_TYPES = ("backup", "upload", "prune", "drill", "retention", "history")
STATE_FILE = "metrics-state.json"
STATE_LOCK = "metrics-state.lock"
STATE_FORMAT = "insa.timescaledb_backup/metrics-state"
STATE_VERSION = 1
STATUS_FILE = "tsdb_backup_status.prom"
FILE_MODE = 0o644

RUN_LABELS = ("run_type", "host", "database")
HOST_LABELS = ("run_type", "host")
DATABASE_LABELS = ("host", "database")
HYPERTABLE_LABELS = ("host", "database", "hypertable")

# Per run type, host and database; (metric name, help, state key, value type).
RUN_METRICS = (
    (
        "tsdb_backup_last_run_success",
        "1 if the last run of this type succeeded for the database, 0 if it failed.",
        "success",
        bool,
    ),
    (
        "tsdb_backup_last_run_timestamp_seconds",
        "Unix time the last run of this type finished for the database.",
        "last_run_timestamp",
        float,
    ),
    (
        "tsdb_backup_last_success_timestamp_seconds",
        "Unix time a run of this type last succeeded for the database (0: never). Survives failed runs.",
        "last_success_timestamp",
        float,
    ),
    (
        "tsdb_backup_duration_seconds",
        "Wall-clock time the last run of this type took for the database.",
        "duration_seconds",
        float,
    ),
    (
        "tsdb_backup_archive_size_bytes",
        "Size of the archive the last run wrote for the database.",
        "archive_size_bytes",
        float,
    ),
    (
        "tsdb_backup_upload_bytes",
        "Bytes the last run uploaded to Azure Blob Storage for the database.",
        "upload_bytes",
        float,
    ),
    (
        "tsdb_backup_upload_duration_seconds",
        "Time the last run spent uploading to Azure Blob Storage for the database.",
        "upload_duration_seconds",
        float,
    ),
    (
        "tsdb_backup_verify_success",
        "1 if the last run's verification of the new backup passed, 0 if it failed.",
        "verify_ok",
        bool,
    ),
    (
        "tsdb_backup_drill_success",
        "1 if the last restore drill of the database succeeded, 0 if it failed.",
        "drill_ok",
        bool,
    ),
    (
        "tsdb_backup_chunks_held_back",
        "Chunk ranges past the retention horizon that the last retention run held back (any reason).",
        "chunks_held_back",
        int,
    ),
)

# Per host and run type.
HOST_METRICS = (
    (
        "tsdb_backup_host_last_run_success",
        "1 if the last run of this type on the host succeeded as a whole (every database, no run error), else 0.",
        "success",
        bool,
    ),
    (
        "tsdb_backup_host_last_run_timestamp_seconds",
        "Unix time the last run of this type on the host finished.",
        "last_run_timestamp",
        float,
    ),
)

# The latest observation per host and database, whatever the run type.
STATUS_METRICS = (
    (
        "tsdb_backup_pending_uploads",
        "Local backup sets of the database not yet uploaded to Azure Blob Storage, as last seen by any run.",
        "pending_uploads",
        int,
    ),
    (
        "tsdb_backup_unuploaded_sets",
        "Local backup sets of the database Azure does not hold, with the ones that cannot be sent (unverified, "
        "unreadable), as last seen by any run. Prune keeps every one of them.",
        "unuploaded_sets",
        int,
    ),
    (
        "tsdb_backup_oldest_unuploaded_age_seconds",
        "Age of the oldest local backup set Azure does not hold (0: none), as last seen by any run.",
        "oldest_unuploaded_age_seconds",
        float,
    ),
)
HYPERTABLE_METRICS = (
    (
        "tsdb_backup_oldest_unarchived_chunk_age_seconds",
        "Age of the oldest chunk not yet archived to Azure (0: all archived), as last seen by any run.",
        "oldest_unarchived_chunk_age_seconds",
        float,
    ),
    (
        "tsdb_backup_retention_horizon_seconds",
        "Age at which the retention policy drops a chunk (drop_after), as last seen by any run.",
        "retention_horizon_seconds",
        float,
    ),
)

# Per host, database and target (primary or a replica), the latest observation whatever the run type.
TARGET_LABELS = ("host", "database", "target")
TARGET_METRICS = (
    (
        "tsdb_backup_target_copy_success",
        "1 if the last run copied every set of the database the primary holds to this replica, 0 if not.",
        "copy_success",
        bool,
    ),
    (
        "tsdb_backup_target_pending_sets",
        "Backup sets of the database the primary holds and this replica lacks, after the last run's copies.",
        "pending_sets",
        int,
    ),
    (
        "tsdb_backup_target_last_copy_success_timestamp_seconds",
        "Unix time the database's sets were last all copied to this replica (0: never). Survives failed runs.",
        "last_copy_success_timestamp",
        float,
    ),
    (
        "tsdb_backup_target_history_copy_success",
        "1 if the last history archive run copied every verified history object of the host to this replica.",
        "history_copy_success",
        bool,
    ),
    (
        "tsdb_backup_target_pending_history_objects",
        "Verified history objects of the host the primary holds and this replica lacks, after the last copies.",
        "pending_history_objects",
        int,
    ),
    (
        "tsdb_backup_coverage_gaps",
        "Days of the coverage window (TSDB_BACKUP_COVERAGE_DAYS), from the first one any target covers, for which "
        "this target holds neither a verified set of the database nor a verified history archive (today excepted).",
        "uncovered_days",
        int,
    ),
)
TARGET_KEYS = frozenset(m[2] for m in TARGET_METRICS)

HYPERTABLE_KEYS = frozenset(["hypertable"] + [m[2] for m in HYPERTABLE_METRICS])


class MetricsError(_errors.OperatorError):
    """Metrics cannot be written; the message says why."""


def metric_names():
    """Every metric name this module can write."""
    return [m[0] for m in RUN_METRICS + HOST_METRICS + STATUS_METRICS + HYPERTABLE_METRICS + TARGET_METRICS]


def require_prometheus_client():
    if not HAS_PROMETHEUS_CLIENT:
        raise MetricsError(
            "the Python library prometheus_client is required to write metrics; install "
            "prometheus-client==0.26.0 (requirements/runtime.txt; the backup_agent role installs it "
            "into the runner's venv). Import error:\n%s" % PROMETHEUS_CLIENT_IMPORT_ERROR,
            kind="config",
        )


def _epoch(now):
    if now is None:
        return time.time()
    if isinstance(now, datetime.datetime):
        if now.tzinfo is None:
            raise ValueError("now: a naive datetime is ambiguous; give a timezone-aware one or a Unix time")
        return now.timestamp()
    if isinstance(now, (int, float)) and not isinstance(now, bool):
        return float(now)
    raise ValueError("now: expected a Unix time or a datetime, got %r" % (now,))


def _value(key, value, kind, where):
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError("%s: %s must be true or false, got %r" % (where, key, value))
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("%s: %s must be a number, got %r" % (where, key, value))
    if value < 0:
        raise ValueError("%s: %s must not be negative, got %r" % (where, key, value))
    return int(value) if kind is int else float(value)


_KINDS = dict((m[2], m[3]) for m in RUN_METRICS + STATUS_METRICS + HYPERTABLE_METRICS)
_TARGET_KINDS = dict((m[2], m[3]) for m in TARGET_METRICS)


def _check_result(result, index):
    where = "results[%d]" % index
    if not isinstance(result, dict):
        raise ValueError("%s: expected a dict, got %r" % (where, result))
    database = result.get("database")
    if not isinstance(database, str) or not database:
        raise ValueError("%s: database must be a non-empty string" % where)
    where = "results[%d] (%s)" % (index, database)
    if not isinstance(result.get("success"), bool):
        raise ValueError("%s: success must be true or false" % where)
    # Other keys (backup_id, uploaded, pruned, ... of the runner's per-database results) are
    # not metrics: ignored, so the runner can pass its results as they are.
    clean = {"database": database, "success": result["success"]}
    for key, value in result.items():
        if key not in _KINDS or key in ("success", "last_run_timestamp", "last_success_timestamp") or value is None:
            continue
        clean[key] = _value(key, value, _KINDS[key], where)
    tables = result.get("hypertables")
    if tables is not None:
        if not isinstance(tables, (list, tuple)):
            raise ValueError("%s: hypertables must be a list of dicts" % where)
        clean["hypertables"] = {}
        for t in tables:
            if not isinstance(t, dict) or not isinstance(t.get("hypertable"), str) or not t["hypertable"]:
                raise ValueError("%s: every hypertables item needs a hypertable name" % where)
            clean["hypertables"][t["hypertable"]] = dict(
                (k, _value(k, v, _KINDS[k], where))
                for k, v in t.items()
                if k in HYPERTABLE_KEYS and k != "hypertable" and v is not None
            )
    targets = result.get("targets")
    if targets is not None:
        if not isinstance(targets, dict) or not all(isinstance(k, str) and k for k in targets):
            raise ValueError("%s: targets must be a dict of target name -> values" % where)
        clean["targets"] = dict(
            (
                name,
                dict(
                    (k, _value(k, v, _TARGET_KINDS[k], where))
                    for k, v in values.items()
                    if k in _TARGET_KINDS and v is not None
                ),
            )
            for name, values in targets.items()
        )
    return clean


def _update_targets(seen, targets, epoch):
    """Merges a result's targets into the status of its database: a copy that succeeded sets the
    last success time, one that failed keeps the previous one."""
    for name, values in targets.items():
        entry = seen.setdefault("targets", {}).setdefault(name, {})
        entry.update(values)
        if values.get("copy_success"):
            entry["last_copy_success_timestamp"] = epoch
        elif "copy_success" in values:
            entry.setdefault("last_copy_success_timestamp", 0.0)


def atomic_write(path, data, mode=FILE_MODE):
    """Writes ``data`` (bytes) to ``path`` through a hidden temp file in the same folder (never
    ``*.prom``, so node_exporter never reads it half-written), chmod, fsync, rename."""
    mf.atomic_write_bytes(path, data, mode, suffix=".tmp")


def _empty_state():
    return {"format": STATE_FORMAT, "version": STATE_VERSION, "runs": {}, "hosts": {}, "status": {}}


def load_state(state_dir):
    """The state, or an empty one when there is none. A damaged state file is kept aside as
    ``metrics-state.json.damaged`` and replaced: last-success times restart from 0, which
    errs towards alerting."""
    path = os.path.join(state_dir, STATE_FILE)
    try:
        with open(path, "rb") as f:
            state = json.loads(f.read().decode("utf-8"))
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ValueError("not a metrics state file")
        if state.get("version") != STATE_VERSION:
            raise ValueError("metrics state version %r is not %d" % (state.get("version"), STATE_VERSION))
        for key in ("runs", "hosts", "status"):
            if not isinstance(state.get(key), dict):
                raise ValueError("metrics state without %s" % key)
        return state, None
    except OSError as e:
        if e.errno == errno.ENOENT:
            return _empty_state(), None
        raise MetricsError("cannot read %s: %s" % (path, e), kind="service") from None
    except ValueError as e:
        os.replace(path, path + ".damaged")
        return _empty_state(), "%s was damaged (%s); kept as %s.damaged, starting afresh" % (path, e, path)


def _update(state, run_type, host, results, epoch, run_error, forget):
    runs = state["runs"].setdefault(run_type, {}).setdefault(host, {})
    status = state["status"].setdefault(host, {})
    for database in forget:
        for per_host in state["runs"].values():
            per_host.get(host, {}).pop(database, None)
        status.pop(database, None)
    for r in results:
        previous = runs.get(r["database"], {})
        entry = dict((k, v) for k, v in r.items() if k in _KINDS and k not in _STATUS_KEYS)
        entry["success"] = r["success"]
        entry["last_run_timestamp"] = epoch
        entry["last_success_timestamp"] = epoch if r["success"] else previous.get("last_success_timestamp", 0.0)
        runs[r["database"]] = entry
        seen = status.setdefault(r["database"], {})
        for key in _STATUS_KEYS:
            if key in r:
                seen[key] = r[key]
        if "hypertables" in r:
            seen["hypertables"] = r["hypertables"]
        if "targets" in r:
            _update_targets(seen, r["targets"], epoch)
    state["hosts"].setdefault(run_type, {})[host] = {
        "success": run_error is None and all(r["success"] for r in results),
        "last_run_timestamp": epoch,
    }


_STATUS_KEYS = frozenset(m[2] for m in STATUS_METRICS + HYPERTABLE_METRICS)


class _Collector:
    def __init__(self, families):
        self.families = families

    def collect(self):
        return iter(self.families)


def _family(spec, labelnames, rows):
    name, doc, key, _kind = spec
    family = GaugeMetricFamily(name, doc, labels=labelnames)
    for labels, entry in rows:
        value = entry.get(key)
        if value is not None:
            family.add_metric(list(labels), float(value))
    return family if family.samples else None


def _render(families):
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector([f for f in families if f is not None]))
    return generate_latest(registry)


def render_run(state, run_type):
    """The exposition text (bytes) of ``tsdb_backup_<run_type>.prom``."""
    rows = []
    for host, databases in sorted(state["runs"].get(run_type, {}).items()):
        for database, entry in sorted(databases.items()):
            rows.append(((run_type, host, database), entry))
    host_rows = [((run_type, host), entry) for host, entry in sorted(state["hosts"].get(run_type, {}).items())]
    return _render(
        [_family(spec, RUN_LABELS, rows) for spec in RUN_METRICS]
        + [_family(spec, HOST_LABELS, host_rows) for spec in HOST_METRICS]
    )


def render_status(state):
    """The exposition text (bytes) of ``tsdb_backup_status.prom``."""
    rows, table_rows, target_rows = [], [], []
    for host, databases in sorted(state["status"].items()):
        for database, seen in sorted(databases.items()):
            rows.append(((host, database), seen))
            target_rows.extend(((host, database, t), v) for t, v in sorted(seen.get("targets", {}).items()))
            # The per-database values carry an empty hypertable label, which Prometheus drops.
            table_rows.append(((host, database, ""), seen))
            for table, values in sorted(seen.get("hypertables", {}).items()):
                table_rows.append(((host, database, table), values))
    return _render(
        [_family(spec, DATABASE_LABELS, rows) for spec in STATUS_METRICS]
        + [_family(spec, HYPERTABLE_LABELS, table_rows) for spec in HYPERTABLE_METRICS]
        + [_family(spec, TARGET_LABELS, target_rows) for spec in TARGET_METRICS]
    )


def run_file(textfile_dir, run_type):
    return os.path.join(textfile_dir, "tsdb_backup_%s.prom" % run_type)


def write_run_metrics(
    textfile_dir, state_dir, host, run_type, results, now=None, run_error=None, forget=(), logger=None
):
    """Records one run and rewrites its metrics files. ``results``: one dict per database
    (``database`` and ``success`` required; see docs/OBSERVABILITY.md for the optional keys,
    among them ``retention_horizon_seconds`` and ``hypertables``). ``run_error``: the run
    failed as a whole (e.g. before reaching any database). Returns the paths written."""
    require_prometheus_client()
    if run_type not in RUN_TYPES:
        raise ValueError("run_type %r: expected one of %s" % (run_type, ", ".join(RUN_TYPES)))
    if not isinstance(host, str) or not host:
        raise ValueError("host must be a non-empty string")
    if isinstance(results, dict) or not isinstance(results, (list, tuple)):
        raise ValueError("results must be a list of dicts, one per database")
    clean = [_check_result(r, i) for i, r in enumerate(results)]
    databases = [r["database"] for r in clean]
    if len(set(databases)) != len(databases):
        raise ValueError("results name a database more than once: %s" % ", ".join(databases))
    epoch = _epoch(now)
    for folder, mode in ((textfile_dir, 0o755), (state_dir, 0o700)):
        if not os.path.isdir(folder):
            os.makedirs(folder, mode)
    with _lock.FileLock(os.path.join(state_dir, STATE_LOCK)):
        state, warning = load_state(state_dir)
        if warning and logger is not None:
            logger.warning(warning)
        _update(state, run_type, host, clean, epoch, run_error, set(forget or ()))
        path = run_file(textfile_dir, run_type)
        status_path = os.path.join(textfile_dir, STATUS_FILE)
        state_path = os.path.join(state_dir, STATE_FILE)
        # State first: if writing a .prom file fails, the next run renders it from the state.
        atomic_write(state_path, (json.dumps(state, indent=1, sort_keys=True) + "\n").encode("utf-8"), 0o600)
        atomic_write(path, render_run(state, run_type))
        atomic_write(status_path, render_status(state))
    return {"path": path, "status_path": status_path, "state_path": state_path, "databases": len(clean)}
