#!/usr/bin/python
# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: agent_run
short_description: Run a job of the backup agent now - the nightly backup or the restore drill, with metrics and notifications
author:
  - INSA platform team (@insa)
version_added: 0.1.0
description:
  - Runs, for each database, exactly what the agent's timer runs - the same function of the collection with the same
    checks - and then writes the same metrics files and sends the same notifications. A backup taken by hand after a
    failed night therefore clears the "backup missing" alert like a scheduled one.
  - O(job=backup) (C(tsdb-backup.service)) - each database is dumped with a snapshot-consistent manifest (M(insa.timescaledb_backup.dump)), verified at
    O(verify_level) (M(insa.timescaledb_backup.verify)), uploaded to Azure with every verified local set not there yet
    (M(insa.timescaledb_backup.blob_upload)), and rotated (M(insa.timescaledb_backup.prune)). One database failing does
    not stop the others.
  - O(job=drill) (C(tsdb-backup-drill.service)) - the newest local set of each database (never a safety backup) is
    restored into a scratch database and compared with its manifest (M(insa.timescaledb_backup.verify) at level
    C(restore)); the scratch database is dropped. A drill that cannot run counts as a failed drill.
  - Takes the agent's run lock (C(<state_dir>/runner.lock)), so a playbook run and the timer never run at once.
  - Unset O(metrics_dir), O(notify_config) and O(state_dir) are read from the agent's settings file O(agent_settings)
    that the C(insa.timescaledb_backup.backup_agent) role writes, so both paths report to the same places. A missing
    settings file is a warning - the run then writes no metrics and sends no notification.
  - With O(signing_key_file) every manifest is signed (the timer reads C(TSDB_BACKUP_SIGNING_KEY_FILE)); with a trust
    store a local set is pruned only when Azure holds a proven copy of it - a remote manifest equal to the local one.
  - Refuses to run as a user who does not own O(state_dir) - the lock and metrics state it would create there would
    lock the timer out.
extends_documentation_fragment: [insa.timescaledb_backup.postgres, insa.timescaledb_backup.azure, insa.timescaledb_backup.azure.REPLICAS,
  insa.timescaledb_backup.signing, insa.timescaledb_backup.signing.TRUST, insa.timescaledb_backup.encryption,
  insa.timescaledb_backup.attributes, insa.timescaledb_backup.attributes.no_diff]
attributes:
  check_mode:
    support: partial
    details: For O(job=backup), runs the pre-flight checks of each dump (connection, versions, tools, space); changes nothing.
  idempotent:
    support: none
    details: Every backup run takes a new backup.
options:
  job:
    description: Which of the agent's jobs to run.
    type: str
    choices: [backup, drill]
    default: backup
  databases:
    description: Databases to back up (or drill), in this order.
    type: list
    elements: str
    required: true
  backup_dir:
    description: Directory of backup sets (mode 0700, owned by the user the module runs as).
    type: path
    default: /var/backups/tsdb
  host_label:
    description: The host's name in blob names and metrics. Defaults to the host's FQDN.
    type: str
  compression:
    description: Compression of the dump.
    type: str
    choices: [zstd, lz4, gzip, none]
    default: zstd
  dump_jobs:
    description:
      - pg_dump workers. V(1) writes one custom-format file; more than one writes the directory
        format, one file per table, dumped in parallel in the same snapshot.
      - V(0) is one worker per core of the database host (at most 8).
    type: int
    default: 1
  verify_level:
    description: How deeply each new set is verified before upload.
    type: str
    choices: [checksum, archive, restore]
    default: archive
  keep_days:
    description: Keep local sets younger than this many days.
    type: int
    default: 7
  keep_last:
    description: Keep the newest this many local sets.
    type: int
    default: 3
  upload:
    description:
      - Upload to Azure. Without it, sets are only kept locally and rotated by O(keep_days) and O(keep_last).
      - When the Azure settings are wrong, every database is still dumped and verified, and fails at its upload step.
    type: bool
    default: true
  state_dir:
    description: The agent's state directory (run lock, metrics state). Default from O(agent_settings), else C(/var/lib/tsdb-backup).
    type: path
  metrics_dir:
    description: Directory for the node_exporter textfile metrics. Default from O(agent_settings); none when unset there.
    type: path
  notify_config:
    description: Notification settings file (JSON) of the agent. Default from O(agent_settings); none when unset there.
    type: path
  agent_settings:
    description: The agent's settings file, read for the defaults above. A missing file gives no defaults.
    type: path
    default: /etc/tsdb-backup/agent.env
  jobs:
    description: Parallel C(pg_restore) workers of the drill's restore (O(job=drill)).
    type: int
    default: 1
  lock_wait_minutes:
    description:
      - With O(job=backup), how long to wait for the agent's run lock when another run (a long history archive run)
        holds it, before failing with who holds it. V(0) fails at once. The timer's backup waits
        C(TSDB_BACKUP_LOCK_WAIT_MINUTES).
    type: int
    default: 0
  fail_on_error:
    description: Fail the task when any database failed. V(false) returns every result and lets the play decide.
    type: bool
    default: true
  coverage_days:
    description:
      - Days back the run checks, per database and target, that a verified set or history archive covers each day;
        the count of days not covered is the metric C(tsdb_backup_coverage_gaps) (alert
        C(TsdbBackupDayUncovered)). V(0) skips the check. The timer reads C(TSDB_BACKUP_COVERAGE_DAYS).
    type: int
    default: 30
notes:
  - Run it on the database host with the interpreter of the agent's virtual environment
    (C(ansible_python_interpreter=/opt/tsdb-backup/venv/bin/python)) as the backup user.
seealso:
  - module: insa.timescaledb_backup.dump
  - module: insa.timescaledb_backup.verify
  - module: insa.timescaledb_backup.blob_upload
  - module: insa.timescaledb_backup.prune
"""

EXAMPLES = r"""
- name: Back up now what the timer backs up at night
  insa.timescaledb_backup.agent_run:
    databases: [iot]
    host_label: "{{ inventory_hostname }}"
    auth_mode: entra
    account_name: insabackups
    container: tsdb-backups
  become: true
  become_user: tsdb-backup
  vars:
    ansible_python_interpreter: /opt/tsdb-backup/venv/bin/python

- name: The weekly restore drill, now
  insa.timescaledb_backup.agent_run:
    job: drill
    databases: [iot]
    upload: false
  become: true
  become_user: tsdb-backup
  vars:
    ansible_python_interpreter: /opt/tsdb-backup/venv/bin/python
"""

RETURN = r"""
results:
  description:
    - One entry per database, as the timer reports them - database, success, backup_id, duration_seconds, and for a
      failure error (the step and why) and error_kind. A backup adds archive_size_bytes, verify_ok, uploaded (backup
      ids sent, oldest first), upload_bytes, pending_uploads and pruned; a drill adds drill_ok.
  returned: always
  type: list
  elements: dict
summary:
  description: One line per database, as the timer logs it.
  returned: always
  type: str
  sample: "iot: ok, backup 20261127T020000Z (37.2 MiB), 21.4 s"
metrics_dir:
  description: Where the metrics were written (null when none).
  returned: always
  type: str
preflight:
  description: In check mode with O(job=backup), the pre-flight facts of each database (versions, tools, space).
  returned: check mode
  type: dict
"""

import os
import socket

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import (
    _azure,
    _dump,
    _encryption,
    _log,
    _metrics,
    _module_glue,
    _notify,
    _replica,
    _runner,
    _signing,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._pg import postgres_common_argument_spec

# The runner imports its reporters when it needs them; naming them here puts them into the
# module's payload, so that a module run writes metrics and notifies like the timer.
REPORTERS = (_log, _metrics, _notify)

AGENT_DEFAULTS = {
    "state_dir": ("TSDB_BACKUP_STATE_DIR", "/var/lib/tsdb-backup"),
    "metrics_dir": ("TSDB_BACKUP_METRICS_DIR", None),
    "notify_config": ("TSDB_BACKUP_NOTIFY_CONFIG", None),
}


def build_config(module):
    """The runner's configuration from the options (and the agent's settings file for unset
    paths), checked by the same function as the timer's."""
    p = module.params
    agent = _runner.read_env_file(p["agent_settings"])
    if not agent:
        module.warn("%s is missing or empty: no metrics or notifications unless given here" % p["agent_settings"])
    paths = {k: p[k] or agent.get(var) or default for k, (var, default) in AGENT_DEFAULTS.items()}
    azure = {k: p[k] for k in _azure.azure_common_argument_spec() if p.get(k) is not None}
    config = {
        "databases": p["databases"],
        "backup_dir": p["backup_dir"],
        "host_label": p["host_label"] or socket.getfqdn(),
        "compression": p["compression"],
        "dump_jobs": p["dump_jobs"],
        "verify_level": p["verify_level"],
        "keep_days": p["keep_days"],
        "keep_last": p["keep_last"],
        "upload": p["upload"],
        "log_format": "text",
        "drill_jobs": p["jobs"],
        "lock_wait_minutes": p["lock_wait_minutes"],
        "azure": azure,
        "pg": _module_glue.connection_params(module),
        "signing": {k: p[k] for k in _signing.signing_argument_spec()},
        "encryption_recipients": p["encryption_recipients"],
        "replicas": p["replicas"],
        "coverage_days": p["coverage_days"],
        "signing_policy": _module_glue.signing_policy(module),
    }
    config.update(paths)
    return _runner.check_config(config)


def check(module, config):
    facts = {}
    for database in config["databases"]:
        facts[database] = _module_glue.run_module(
            module, None, _dump.preflight, config["pg"], database, config["backup_dir"], config["compression"]
        )
        facts[database].pop("extensions", None)
    module.exit_json(changed=True, preflight=facts, results=[], summary="", metrics_dir=config["metrics_dir"])


def main():
    argument_spec = postgres_common_argument_spec()
    argument_spec.update(_azure.azure_common_argument_spec())
    argument_spec.update(
        job=dict(type="str", choices=["backup", "drill"], default="backup"),
        databases=dict(type="list", elements="str", required=True),
        backup_dir=dict(type="path", default="/var/backups/tsdb"),
        host_label=dict(type="str"),
        compression=dict(type="str", choices=["zstd", "lz4", "gzip", "none"], default="zstd"),
        dump_jobs=dict(type="int", default=1),
        verify_level=dict(type="str", choices=["checksum", "archive", "restore"], default="archive"),
        keep_days=dict(type="int", default=7),
        keep_last=dict(type="int", default=3),
        upload=dict(type="bool", default=True),
        state_dir=dict(type="path"),
        metrics_dir=dict(type="path"),
        notify_config=dict(type="path"),
        agent_settings=dict(type="path", default="/etc/tsdb-backup/agent.env"),
        jobs=dict(type="int", default=1),
        lock_wait_minutes=dict(type="int", default=0),
        fail_on_error=dict(type="bool", default=True),
        coverage_days=dict(type="int", default=30),
    )
    argument_spec.update(_replica.replicas_argument_spec())
    argument_spec.update(_signing.signing_argument_spec())
    argument_spec.update(_encryption.recipients_argument_spec())
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    _module_glue.require_psycopg2(module)
    job = module.params["job"]
    if module.params["upload"] and job == "backup":
        _module_glue.require_azure_storage(module)
    config = _module_glue.run_module(module, None, build_config, module)
    if module.check_mode:
        if job == "drill":
            module.exit_json(changed=False, results=[], summary="", metrics_dir=config["metrics_dir"])
        check(module, config)
    results = _module_glue.run_module(module, _azure.redactor_for(module.params), run, module, config, job)
    summary = _runner.summary_lines(results)
    out = dict(changed=job == "backup" and any(r.get("backup_id") for r in results), results=results, summary=summary)
    out["metrics_dir"] = config["metrics_dir"]
    if module.params["fail_on_error"] and not all(r["success"] for r in results):
        module.fail_json(msg="%s failed: %s" % (job, summary), **out)
    module.exit_json(**out)


JOBS = {"backup": _runner.run_backup, "drill": _runner.run_drill}


def run(module, config, job):
    """The timer's run: the same lock, the same function, the same report."""
    logger = _module_glue.module_logger(module)
    state = config["state_dir"]
    if os.path.isdir(state) and os.stat(state).st_uid != os.geteuid():
        raise _runner.ConfigError(
            "%s belongs to uid %d, this run is uid %d: run as the agent's user (become_user: tsdb-backup), "
            "or the lock and metrics state created here would lock the timer out"
            % (state, os.stat(state).st_uid, os.geteuid())
        )
    # The holder record names this run (a playbook) to a timer that finds the lock held.
    wait = config["lock_wait_minutes"] * 60 if job == "backup" else 0
    lock = _runner.take_run_lock(
        state, job, unit="ansible-playbook (%s)" % module._name, wait_seconds=wait, logger=logger
    )
    try:
        results = JOBS[job](config, logger)
        _runner.report(config, job, results, logger)
        for line in _runner.summary_lines(results).splitlines():
            logger.info("summary: %s", line)
    finally:
        lock.release()
    return results


if __name__ == "__main__":
    main()
