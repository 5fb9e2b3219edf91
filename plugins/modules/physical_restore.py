#!/usr/bin/python
# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: physical_restore
short_description: Restore a whole cluster from pgBackRest, to a point in time or to the newest archived WAL
author:
  - INSA platform team (@insa)
version_added: 0.1.0
description:
  - Refuses to run without O(confirm=true).
  - Restores the cluster O(cluster) of this host from pgBackRest's stanza O(stanza) - the newest backup that ended at or
    before O(target), then the archived WAL up to O(target) (C(recovery_target_time), then promote), or up to the end of
    the archive with O(target=latest) - and waits until it has left recovery and accepts writes.
  - Nothing is deleted. The cluster's data directory is moved aside to C(<data>.before-restore-<UTC time>) (a rename on
    the same file system) and stays there until the operator removes it. When the restore or the recovery fails, the
    attempt is moved to C(<data>.failed-restore-<UTC time>) and the previous data directory is put back and started.
  - Compares the restored cluster with the logical manifests given in O(compare_with) (tables and their rows) and reports
    what differs - a table missing, fewer rows than the logical set had - as RV(findings); the restore itself stands.
  - The connection options are those of the restored cluster (its roles and passwords are the backup's) - the waits and
    the comparison log in with them once the cluster accepts connections.
  - Runs as root (it stops and starts the cluster); pgBackRest runs as the data directory's owner. The repository's
    settings and credentials are pgBackRest's own (C(/etc/pgbackrest), written by the role P(insa.timescaledb_backup.pitr#role)).
extends_documentation_fragment: [insa.timescaledb_backup.postgres, insa.timescaledb_backup.attributes,
  insa.timescaledb_backup.attributes.no_diff]
attributes:
  check_mode:
    support: full
    details: Checks the stanza and chooses the backup; nothing is stopped, moved or restored.
  idempotent:
    support: none
    details: Each run restores again.
options:
  confirm:
    description: Must be V(true). A physical restore replaces the whole cluster; nothing happens without it.
    type: bool
    default: false
  stanza:
    description: pgBackRest stanza to restore from.
    type: str
    required: true
  target:
    description:
      - V(latest) (the end of the archived WAL) or a time (ISO 8601; without a zone, UTC). Transactions committed at or
        before it are restored, none after.
    type: str
    default: latest
  cluster:
    description: Debian cluster (C(<version>/<name>)) to replace, started and stopped with C(pg_ctlcluster).
    type: str
    default: 17/main
  data_directory:
    description: Its data directory; defaults to C(/var/lib/postgresql/<version>/<name>).
    type: path
  owner:
    description: The cluster's owner, who runs pgBackRest.
    type: str
    default: postgres
  process_max:
    description: pgBackRest's parallel processes for the restore; V(0) = one per core (at most 8).
    type: int
    default: 0
  recovery_timeout:
    description: Seconds to wait for the recovery to end.
    type: int
    default: 3600
  compare_with:
    description:
      - Logical manifests (the C(manifest) of M(insa.timescaledb_backup.backup_info)'s RV(insa.timescaledb_backup.backup_info#module:selected)),
        one per database, to compare the restored cluster with.
    type: list
    elements: dict
    default: []
notes:
  - The rebuilt host must hold pgBackRest's configuration for the stanza first - run C(setup.yml) with the role
    P(insa.timescaledb_backup.pitr#role) enabled, then this (C(restore.yml -e restore_method=physical)).
  - The restored cluster keeps archiving into the same stanza on a new timeline, so the old host must stay off.
seealso:
  - module: insa.timescaledb_backup.restore
    description: A logical restore of one database, also into another major version.
"""

EXAMPLES = r"""
- name: Restore the cluster to 05:00 UTC
  insa.timescaledb_backup.physical_restore:
    confirm: true
    stanza: tsdb
    target: "2026-12-02T05:00:00Z"
  become: true

- name: Restore to the newest archived WAL, after a host was lost
  insa.timescaledb_backup.physical_restore:
    confirm: true
    stanza: tsdb
    target: latest
  become: true
"""

RETURN = r"""
backup_label:
  description: The pgBackRest backup the restore started from.
  returned: always
  type: str
  sample: 20261202-050000F
backup_ended:
  description: When that backup ended (UTC).
  returned: always
  type: str
target:
  description: The target restored to (UTC), or C(latest).
  returned: always
  type: str
previous_data_directory:
  description: Where the previous data directory is now (kept; remove it once the restore is confirmed).
  returned: changed
  type: str
timeline:
  description: The restored cluster's timeline after promotion.
  returned: changed
  type: int
timings:
  description: Seconds of the restore (pgBackRest), the recovery (start to accepting writes) and the total.
  returned: changed
  type: dict
comparison:
  description: Per database of O(compare_with) - the logical set's id and, per table, its rows there (C(logical)) and here (C(restored)).
  returned: changed
  type: dict
findings:
  description: Differences from the logical sets worth a look; empty when every table is there with at least its rows.
  returned: changed
  type: list
  elements: str
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _module_glue, _pitr_restore
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._pg import postgres_common_argument_spec


def _process_max(value):
    return value if value > 0 else max(1, min(8, os.cpu_count() or 1))


def main():
    argument_spec = postgres_common_argument_spec()
    argument_spec.update(
        confirm=dict(type="bool", default=False),
        stanza=dict(type="str", required=True),
        target=dict(type="str", default="latest"),
        cluster=dict(type="str", default="17/main"),
        data_directory=dict(type="path"),
        owner=dict(type="str", default="postgres"),
        process_max=dict(type="int", default=0),
        recovery_timeout=dict(type="int", default=3600),
        compare_with=dict(type="list", elements="dict", default=[]),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    p = module.params
    if not p["confirm"]:
        module.fail_json(
            msg="a physical restore replaces the whole cluster %s; nothing was done. Set confirm: true to go ahead "
            "(its data directory is moved aside, never deleted)." % p["cluster"]
        )
    _module_glue.require_psycopg2(module)
    version, _sep, name = p["cluster"].partition("/")
    if not version.isdigit() or not name or "/" in name:
        module.fail_json(msg="cluster %r: give <version>/<name>, as pg_lsclusters shows it (17/main)" % p["cluster"])
    target = _module_glue.run_module(module, None, _pitr_restore.target_epoch, p["target"])
    params = _module_glue.connection_params(module)
    job = _pitr_restore.Restore(
        p["stanza"],
        p["cluster"],
        p["data_directory"] or "/var/lib/postgresql/%s/%s" % (version, name),
        target,
        owner=p["owner"],
        process_max=_process_max(p["process_max"]),
        params=params,
        recovery_timeout=p["recovery_timeout"],
        log=module.log,
        port=params.port,
    )
    if module.check_mode:
        _module_glue.run_module(module, None, job.plan)
        module.exit_json(changed=True, **job.result)
    result = _module_glue.run_module(module, None, job.run)
    comparison, findings = _module_glue.run_module(module, None, _pitr_restore.compare, params, p["compare_with"])
    module.exit_json(changed=True, comparison=comparison, findings=findings, **result)


if __name__ == "__main__":
    main()
