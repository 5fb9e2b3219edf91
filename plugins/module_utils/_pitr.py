# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The state of a cluster's physical backups and WAL archive (pgBackRest), as facts and as
Prometheus metrics for node_exporter's textfile collector (``tsdb_backup_pitr.prom``, beside
the logical backups' files; docs/OBSERVABILITY.md lists them and the alert rules).

Facts come from two places: ``pgbackrest info`` (what the repository holds: backups, the
archived WAL range) and ``pg_stat_archiver`` with the current WAL file (what PostgreSQL has
handed to archive_command, and how far behind it is). The timers' own results (the last
backup of each kind, the last ``check``) are kept in a small state file, so a failed run
shows as failed until one succeeds.

Private to the collection. No Ansible imports: the scheduled runner uses this.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import json
import os
import re
import time

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _lock
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf

METRICS_FILE = "tsdb_backup_pitr.prom"
STATE_FILE = "pitr-state.json"
STATE_FORMAT = "insa.timescaledb_backup/pitr-state"
BACKUP_TYPES = ("full", "diff", "incr")
JOBS = BACKUP_TYPES + ("drill",)
LABELS = ("host", "stanza")
JOB_LABELS = ("host", "stanza", "job")
# A WAL file name: timeline, then the segment as two 8-digit hex numbers (16 MiB segments: 256
# per "log"); history, backup and partial files carry more after it.
_WAL_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})")

STATUS_METRICS = (
    ("tsdb_backup_pitr_up", "1 if the last status collection reached pgBackRest and PostgreSQL.", "up"),
    ("tsdb_backup_pitr_status_timestamp_seconds", "When the status was last collected.", "collected_at"),
    (
        "tsdb_backup_pitr_stanza_status_code",
        "pgBackRest's stanza status (0 ok, 1 missing, 2 no backup, ...).",
        "status_code",
    ),
    ("tsdb_backup_pitr_backups", "Valid backups in the repository.", "backups"),
    ("tsdb_backup_pitr_last_full_timestamp_seconds", "When the newest full backup ended.", "last_full"),
    ("tsdb_backup_pitr_last_diff_timestamp_seconds", "When the newest differential backup ended.", "last_diff"),
    ("tsdb_backup_pitr_last_backup_timestamp_seconds", "When the newest backup of any type ended.", "last_backup"),
    ("tsdb_backup_pitr_last_backup_size_bytes", "Database size the newest backup covers.", "last_backup_size"),
    ("tsdb_backup_pitr_last_backup_repo_bytes", "Bytes the newest backup added to the repository.", "last_backup_repo"),
    ("tsdb_backup_pitr_last_backup_duration_seconds", "How long the newest backup took.", "last_backup_duration"),
    ("tsdb_backup_pitr_archived_total", "WAL files PostgreSQL archived since its statistics reset.", "archived_count"),
    (
        "tsdb_backup_pitr_archive_failed_total",
        "Failed archive_command calls since the statistics reset.",
        "failed_count",
    ),
    ("tsdb_backup_pitr_last_archived_timestamp_seconds", "When the last WAL file was archived.", "last_archived_at"),
    (
        "tsdb_backup_pitr_last_archived_age_seconds",
        "Age of the last archived WAL file at collection.",
        "last_archived_age",
    ),
    ("tsdb_backup_pitr_last_failed_timestamp_seconds", "When archive_command last failed.", "last_failed_at"),
    (
        "tsdb_backup_pitr_archive_lag_segments",
        "Complete WAL segments not yet archived (0: all handed over).",
        "lag_segments",
    ),
    ("tsdb_backup_pitr_check_success", "1 if the last pgbackrest check passed.", "check_success"),
    ("tsdb_backup_pitr_check_timestamp_seconds", "When pgbackrest check last ran.", "check_at"),
)
JOB_METRICS = (
    (
        "tsdb_backup_pitr_last_run_success",
        "1 if the last run of this job (full, diff, incr, drill) succeeded.",
        "success",
    ),
    ("tsdb_backup_pitr_last_run_timestamp_seconds", "When the last run of this job ended.", "ended_at"),
    ("tsdb_backup_pitr_last_success_timestamp_seconds", "When a run of this job last succeeded.", "last_success"),
    (
        "tsdb_backup_pitr_last_run_duration_seconds",
        "How long the last successful run of this job took (for the drill: this host's physical RTO).",
        "duration",
    ),
)


def metric_names():
    return [m[0] for m in STATUS_METRICS + JOB_METRICS]


def parse_time(value):
    """Epoch seconds of an ISO 8601 time (a trailing Z or offset; without, UTC) or of a number."""
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip().replace("Z", "+00:00")
    try:
        moment = datetime.datetime.fromisoformat(text.replace(" ", "T", 1))
    except ValueError:
        raise ValueError("%r is not an ISO 8601 time (2026-12-02T05:00:00Z)" % (value,)) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


def isoformat(epoch):
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def segment_number(wal_name):
    """The absolute segment number of a WAL file name (None for anything else)."""
    found = _WAL_RE.match(wal_name or "")
    if not found:
        return None
    return int(found.group(2), 16) * 0x100 + int(found.group(3), 16)


def status_text(stanza_info):
    """The stanza's status with what each repository said (pgBackRest's own words)."""
    status = stanza_info.get("status") or {}
    repos = [
        (r.get("status") or {}).get("message")
        for r in stanza_info.get("repo") or []
        if (r.get("status") or {}).get("code") not in (None, 0)
    ]
    return "; ".join([str(status.get("message") or "status %s" % status.get("code"))] + [m for m in repos if m])


def valid_backups(stanza_info):
    """The stanza's backups that completed, oldest first."""
    found = [b for b in stanza_info.get("backup") or [] if isinstance(b, dict) and not b.get("error")]
    return sorted(found, key=lambda b: (b.get("timestamp") or {}).get("stop") or 0)


def backup_facts(stanza_info):
    """What the repository holds, from ``pgbackrest info``."""
    status = stanza_info.get("status") or {}
    backups = valid_backups(stanza_info)
    facts = {"status_code": status.get("code"), "status_message": status.get("message"), "backups": len(backups)}
    for kind in BACKUP_TYPES:
        of_kind = [b for b in backups if b.get("type") == kind]
        if of_kind:
            facts["last_%s" % kind] = of_kind[-1]["timestamp"]["stop"]
    if backups:
        newest = backups[-1]
        stamps, sizes = newest.get("timestamp") or {}, newest.get("info") or {}
        facts.update(
            last_backup=stamps.get("stop"),
            last_backup_label=newest.get("label"),
            last_backup_type=newest.get("type"),
            last_backup_size=sizes.get("size"),
            last_backup_repo=(sizes.get("repository") or {}).get("delta"),
            last_backup_duration=(stamps["stop"] - stamps["start"]) if stamps.get("start") else None,
            oldest_backup=(backups[0].get("timestamp") or {}).get("start"),
        )
    archives = stanza_info.get("archive") or []
    if archives:
        facts["archive_max_wal"] = archives[-1].get("max")
        facts["archive_min_wal"] = archives[0].get("min")
    return facts


ARCHIVER_SQL = (
    "SELECT archived_count, last_archived_wal, extract(epoch FROM last_archived_time), failed_count, "
    "last_failed_wal, extract(epoch FROM last_failed_time), "
    "CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_walfile_name(pg_current_wal_lsn()) END, "
    "extract(epoch FROM now()), current_setting('archive_mode'), current_setting('archive_command'), "
    "(SELECT system_identifier FROM pg_control_system())::text "
    "FROM pg_stat_archiver"
)


def archiver_facts(row):
    """What PostgreSQL handed to archive_command (one row of ARCHIVER_SQL)."""
    archived, last_wal, last_at, failed, failed_wal, failed_at, current_wal, now, mode, command, system_id = row
    facts = {
        "archived_count": archived,
        "last_archived_wal": last_wal,
        "last_archived_at": float(last_at) if last_at is not None else None,
        "failed_count": failed,
        "last_failed_wal": failed_wal,
        "last_failed_at": float(failed_at) if failed_at is not None else None,
        "current_wal": current_wal,
        "archive_mode": mode,
        "archive_command": command,
        "system_identifier": system_id,
    }
    if facts["last_archived_at"] is not None:
        facts["last_archived_age"] = max(0.0, float(now) - facts["last_archived_at"])
    current, last = segment_number(current_wal), segment_number(last_wal)
    # The current segment is still being written: only the ones before it are due. After a
    # history or backup file the count is unknown (until the next segment is archived).
    if current is not None and (last is not None or last_wal is None):
        facts["lag_segments"] = max(0, current - (last + 1 if last is not None else 0))
    return facts


def load_state(state_dir):
    path = os.path.join(state_dir, STATE_FILE)
    try:
        with open(path) as f:
            state = json.load(f)
        if isinstance(state, dict) and state.get("format") == STATE_FORMAT:
            return state
    except (OSError, ValueError):
        pass
    return {"format": STATE_FORMAT, "jobs": {}, "check": None, "status": None}


def update_state(state_dir, change):
    """Applies ``change(state)`` under the state lock and writes the state atomically."""
    if not os.path.isdir(state_dir):
        os.makedirs(state_dir, 0o700)
    with _lock.FileLock(os.path.join(state_dir, STATE_FILE + ".lock")):
        state = load_state(state_dir)
        change(state)
        mf.atomic_write_bytes(
            os.path.join(state_dir, STATE_FILE), (json.dumps(state, indent=1, sort_keys=True) + "\n").encode(), 0o600
        )
    return state


def record_job(state, job, success, now=None, error=None, duration=None):
    now = time.time() if now is None else now
    entry = state["jobs"].setdefault(job, {})
    entry.update(success=bool(success), ended_at=now, error=error)
    if success:
        entry["last_success"] = now
        if duration is not None:
            entry["duration"] = round(duration, 2)


def record_check(state, success, now=None, error=None):
    state["check"] = {"success": bool(success), "at": time.time() if now is None else now, "error": error}


def status_values(state):
    """The values of the status metrics: the last collected facts and the last check."""
    values = dict(state.get("status") or {})
    check = state.get("check") or {}
    if check:
        values["check_success"] = 1 if check.get("success") else 0
        values["check_at"] = check.get("at")
    return values


def render(state, host, stanza):
    """The text of tsdb_backup_pitr.prom (Prometheus exposition format)."""
    labels = {"host": host, "stanza": stanza}
    lines = []
    values = status_values(state)
    for name, doc, key in STATUS_METRICS:
        if values.get(key) is not None:
            lines += _family(name, doc, [(labels, values[key])])
    for name, doc, key in JOB_METRICS:
        rows = [
            (dict(labels, job=job), entry.get(key))
            for job, entry in sorted(state.get("jobs", {}).items())
            if entry.get(key) is not None
        ]
        if rows:
            lines += _family(name, doc, rows)
    return ("\n".join(lines) + "\n").encode("utf-8") if lines else b""


def _family(name, doc, rows):
    out = ["# HELP %s %s" % (name, doc), "# TYPE %s gauge" % name]
    for labels, value in rows:
        if isinstance(value, bool):
            value = int(value)
        rendered = ",".join('%s="%s"' % (k, _escape(v)) for k, v in sorted(labels.items()))
        out.append("%s{%s} %s" % (name, rendered, repr(float(value))))
    return out


def _escape(value):
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def write_metrics(metrics_dir, state, host, stanza):
    """Writes tsdb_backup_pitr.prom atomically (never half-read by node_exporter)."""
    if not metrics_dir:
        return None
    path = os.path.join(metrics_dir, METRICS_FILE)
    mf.atomic_write_bytes(path, render(state, host, stanza), 0o644, suffix=".tmp")
    return path
