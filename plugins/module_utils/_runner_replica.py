# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The runner's second copies: after a database's upload, every set the primary holds is copied
to each replica that lacks it (_replica.replicate_sets), and after a history archive run every
verified history object; the result of each target goes to the database's result under
``targets`` (metrics, summary). A replica that fails never fails the run: the primary holds the
history, the failure is in the result and its metrics, and the next run catches up.

Private to the collection. No Ansible imports: the runner runs without Ansible.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _coverage, _coverage_collect, _replica


def open_replicas(config, primary, logger):
    """The replica Targets of the run (without the primary), or [] without replicas. A replica
    that cannot be opened is a Target with its error (its copies fail with it)."""
    if not config.get("replicas") or primary is None or not hasattr(primary, "list_remote"):
        return []
    try:
        targets = _replica.open_targets(primary, config["replicas"], progress=primary.progress)[1:]
    except Exception as e:  # noqa: BLE001 - a replica's setting must never cost the primary
        targets = [_replica.Target(r["name"], error="%s" % e) for r in config["replicas"]]
    for t in targets:
        if t.error:
            logger.error("replica %s: cannot be used: %s", t.name, t.error)
    return targets


# The metrics keys of a target's entry in a result (_metrics.TARGET_METRICS), per kind of copy.
_KEYS = {"set": ("copy_success", "pending_sets"), "history object": ("history_copy_success", "pending_history_objects")}


def _record(r, result, logger, label):
    """Adds one target's copy result to the database result ``r`` and logs it."""
    name = result["target"]
    success, pending = _KEYS[label]
    entry = r.setdefault("targets", {}).setdefault(name, {})
    entry.update({success: result["error"] is None and not result["failures"], pending: result["pending"]})
    r.setdefault("replicated", {})[name] = result["copied"]
    for f in result["failures"]:
        message = "replica %s: %s %s not copied: %s" % (name, label, f.get("backup_id") or f.get("name"), f["error"])
        logger.warning(message)
        r.setdefault("warnings", []).append(message)
    if result["error"]:
        message = "replica %s: copies stopped: %s" % (name, result["error"])
        logger.error(message)
        r.setdefault("warnings", []).append(message)
        r.setdefault("replica_errors", {})[name] = result["error"]
    logger.info(
        "replica %s: %s: %d copied, %s still missing there",
        name,
        label,
        len(result["copied"]),
        "?" if result["pending"] is None else result["pending"],
    )


def replicate_database(config, database, primary, replicas, logger, r):
    """Copies the database's sets to every replica; never raises for a replica's failure."""
    for target in replicas:
        try:
            result = _replica.replicate_sets(primary, target, config["host_label"], database)
        except Exception as e:  # noqa: BLE001 - a replica must not cost the primary's result
            result = dict(_replica.new_result(target, database), error="%s" % e, pending=None)
        _record(r, result, logger, "set")


def replicate_history(config, primary, replicas, logger, r):
    """Copies the host's verified history objects to every replica (after an archive run)."""
    for target in replicas:
        try:
            result = _replica.replicate_history(primary, target, config["host_label"])
        except Exception as e:  # noqa: BLE001 - as replicate_database
            result = dict(_replica.new_result(target, "history"), error="%s" % e, pending=None)
        _record(r, result, logger, "history object")


def summary_suffix(r):
    """'; replica dr: 2 copied' per replica of a result (or its failure), for the run's summary."""
    parts = []
    for name, entry in sorted((r.get("targets") or {}).items()):
        if "copy_success" not in entry and "history_copy_success" not in entry:
            continue
        error = (r.get("replica_errors") or {}).get(name)
        if error:
            parts.append("replica %s: FAILED, %s" % (name, error))
        elif not (entry.get("copy_success", True) and entry.get("history_copy_success", True)):
            missing = entry.get("pending_sets", entry.get("pending_history_objects"))
            parts.append("replica %s: some copies failed, %s still missing" % (name, missing))
        else:
            parts.append("replica %s: %d copied" % (name, len((r.get("replicated") or {}).get(name, ()))))
    return "".join("; " + p for p in parts)


def coverage_gaps(config, primary, replicas, results, logger):
    """After a backup run: per database and target (the primary and each replica), the days of
    the last ``coverage_days`` that nothing verified covers there, into each result's ``targets``
    (the metric tsdb_backup_coverage_gaps). Today is no gap yet. A failure is a warning: the
    backups stand, and the metric keeps its last value."""
    days = config.get("coverage_days") or 0
    if days < 1 or primary is None or not hasattr(primary, "list_remote"):
        return
    targets = [_replica.Target(_replica.PRIMARY, primary)] + list(replicas)
    databases = [r["database"] for r in results]
    try:
        window = _coverage.window(days)
        catalogs, history, _databases, _errors = _coverage_collect.collect(
            targets, config["backup_dir"], config["host_label"], databases, window
        )
        report = _coverage.coverage(catalogs, databases, window, history=history)
    except Exception as e:  # noqa: BLE001 - a report that cannot be made must not fail the backups
        logger.warning("coverage: not checked (%s)", primary.redact(e) if hasattr(primary, "redact") else e)
        return
    by_database = {r["database"]: r for r in results}
    for (database, target), gaps in sorted(gaps_since_history_began(report).items()):
        by_database[database].setdefault("targets", {}).setdefault(target, {})["uncovered_days"] = gaps
        if gaps:
            logger.warning("coverage %s: %d day(s) of the last %d not covered in %s", database, gaps, days, target)


def gaps_since_history_began(report):
    """_coverage.uncovered_days, counting for each database only the days from the first one a
    target covers: the days before a host's first backup are no gap to alert on (report.yml
    still lists them)."""
    first = {
        db: next((r["day"] for r in rows if r.get("covered_in")), None) for db, rows in report["databases"].items()
    }
    counts = dict.fromkeys(_coverage.uncovered_days(report), 0)
    for gap in report["gaps"]:
        began = first.get(gap["database"])
        if began is not None and gap["day"] >= began:
            counts[(gap["database"], gap["target"])] += 1
    return counts
