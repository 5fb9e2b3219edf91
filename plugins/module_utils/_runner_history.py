# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The scheduled runner's history commands (history-archive, history-retention, history-migrate):
each step and the result the metrics expect. _runner.run_history runs them.

Private to the collection. No Ansible imports: the runner runs without Ansible.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import json
import os

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _dump
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._runner_config import ConfigError


def history_result(config, database, history_result, kind):
    """The history module's result, as the metrics expect it."""
    r = {"database": database, "success": not history_result.get("failures") and not history_result.get("stopped")}
    if history_result.get("stopped") or history_result.get("failures"):
        r["error"] = history_result.get("stopped") or "; ".join(
            "%s: %s" % (f.get("slice") or f.get("hypertable") or "?", f.get("error"))
            for f in history_result["failures"]
        )
        # Stopped: Azure could not be reached. Otherwise the kind of the first failed range.
        failures = history_result.get("failures") or [{}]
        r["error_kind"] = "service" if history_result.get("stopped") else failures[0].get("error_kind", "service")
    oldest = history_result.get("oldest_unarchived")
    if kind == "archive":
        r["oldest_unarchived_chunk_age_seconds"] = (
            round((mf.utcnow() - _parse_iso(oldest)).total_seconds()) if oldest else 0
        )
        r["archived_slices"] = len(history_result.get("archived", []))
    else:
        r["chunks_held_back"] = len(history_result.get("held_back", []))
        r["dropped_slices"] = len(history_result.get("dropped", []))
    return r


def _parse_iso(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _archive(config, database, store, logger):
    h = config["history"]
    res = _history().archive_history(
        config["pg"],
        database,
        store,
        hypertables=[p["hypertable"] for p in h["retention"]] or None,
        grace=datetime.timedelta(hours=h["grace_hours"]),
        state_file=os.path.join(config["state_dir"], "history-%s.json" % mf.database_segment(database)),
        host_label=config["host_label"],
        legacy_owner=h["legacy_owner"],
        max_clock_skew=h.get("max_clock_skew", 300),
        encryption_recipients=config.get("encryption_recipients"),
        # Encrypted, the object's plaintext is spooled in the 0700 backup directory, never in /tmp.
        work_dir=config["backup_dir"] if config.get("encryption_recipients") else None,
    )
    logger.info(
        "history archive %s: %d range(s) archived, %s sent, oldest unarchived %s",
        database,
        len(res.get("archived", [])),
        _dump.human(res.get("bytes", 0)),
        res.get("oldest_unarchived"),
    )
    return res


def _retention(config, database, store, logger):
    h = config["history"]
    if not h["retention"]:
        raise ConfigError("TSDB_HISTORY_RETENTION is empty: give <hypertable>=<days> for each table")
    res = _history().enforce_retention(
        config["pg"],
        database,
        store,
        h["retention"],
        audit_log=os.path.join(config["state_dir"], "history-audit.log"),
        host_label=config["host_label"],
        legacy_owner=h["legacy_owner"],
        max_clock_skew=h.get("max_clock_skew", 300),
    )
    for held in res.get("held_back", []):
        logger.warning("history retention %s: held back %s", database, json.dumps(held, default=str))
    logger.info(
        "history retention %s: %d range(s) dropped, %d held back",
        database,
        len(res.get("dropped", [])),
        len(res.get("held_back", [])),
    )
    return res


def _migrate(config, database, store, logger):
    """history-migrate: the layout without host into this host's folder (server-side copies)."""
    res = _history().migrate_legacy(
        database, store, host_label=config["host_label"], legacy_owner=config["history"]["legacy_owner"]
    )
    for key in ("conflicts", "refused", "failures"):
        for item in res[key]:
            logger.warning("history migrate %s: %s %s", database, key, json.dumps(item, default=str))
    logger.info(
        "history migrate %s: %d version(s) migrated (%s copied by Azure), %d already, %d failed attempt(s) left; %s",
        database,
        len(res["migrated"]),
        _dump.human(res["bytes_copied"]),
        res["already"],
        res["attempts_left"],
        "complete: the legacy objects may be deleted" if res["complete"] else "not complete: keep the legacy objects",
    )
    problems = res["conflicts"] + res["refused"] + res["failures"]
    if problems:
        res["failures"] = [
            dict(p, hypertable=p.get("table_folder"), error=p.get("error") or p.get("reason"), error_kind="conflict")
            if "reason" in p
            else p
            for p in problems
        ]
    return res


HISTORY_STEPS = {"archive": _archive, "retention": _retention, "migrate": _migrate}


def _history():
    from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _history

    return _history
