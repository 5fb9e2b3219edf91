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

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _replica


def open_replicas(config, primary, logger):
    """The replica Targets of the run (without the primary), or [] without replicas. A replica
    that cannot be opened is a Target with its error (its copies fail with it)."""
    if not config.get("replicas") or primary is None or not hasattr(primary, "list_remote"):
        return []
    targets = _replica.open_targets(primary, config["replicas"], progress=primary.progress)[1:]
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
