#!/usr/bin/python
# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: prune
short_description: Rotate local backup sets by age and count, never losing the last good copy
author:
  - INSA platform team (@insa)
version_added: 0.1.0
description:
  - Removes local backup sets of one database that no rule keeps. A set is kept when it is among the newest O(keep_last),
    or younger than O(keep_days) days.
  - Never removes the newest verified set (see M(insa.timescaledb_backup.verify)), a set whose manifest cannot be read
    (reported for a human), or - when O(upload_required=true) - a set not yet uploaded to Azure unless O(force=true).
  - A set goes whole - manifest first, then archive, roles file, legacy checksum and verification record.
  - Removes nothing while a restore, verification, upload or download reads the folder (they hold its C(.readers.lock) lock);
    the sets due are kept and reported in RV(busy), and the next prune removes them.
extends_documentation_fragment: [insa.timescaledb_backup.attributes, insa.timescaledb_backup.attributes.check_mode,
  insa.timescaledb_backup.attributes.idempotent]
attributes:
  check_mode:
    details: Lists exactly what would be removed; removes nothing.
  diff_mode:
    support: full
    details: Before and after lists of backup ids.
options:
  backup_dir:
    description: Directory of backup sets.
    type: path
    required: true
  database:
    description: Database whose sets are rotated.
    type: str
    required: true
  keep_days:
    description: Keep sets younger than this many days.
    type: int
  keep_last:
    description: Keep the newest this many sets.
    type: int
  upload_required:
    description:
      - Keep every set that is not in O(uploaded_backup_ids). Turn off only on hosts that do not upload to Azure.
    type: bool
    default: true
  uploaded_backup_ids:
    description: Backup ids already in Azure, for example from M(insa.timescaledb_backup.backup_info). Required when O(upload_required=true).
    type: list
    elements: str
  force:
    description: Remove sets that are not yet uploaded, too.
    type: bool
    default: false
seealso:
  - module: insa.timescaledb_backup.backup_info
"""

EXAMPLES = r"""
- name: Keep a week locally; everything older is in Azure
  insa.timescaledb_backup.prune:
    backup_dir: /var/backups/tsdb
    database: iot
    keep_days: 7
    keep_last: 3
    uploaded_backup_ids: "{{ catalog.uploaded_backup_ids }}"
"""

RETURN = r"""
deleted:
  description: Sets removed (or that would be, in check mode) with the reason.
  returned: always
  type: list
  elements: dict
kept:
  description: Sets kept, each with the rule that kept it.
  returned: always
  type: list
  elements: dict
removed_paths:
  description: Files and directories removed.
  returned: always
  type: list
  elements: str
busy:
  description:
    - Why nothing was removed although sets were due - a restore, verification, upload or download was reading the folder
      (it holds the folder's C(.readers.lock) lock). The sets due are in RV(kept); the next prune removes them.
  returned: when the folder was being read
  type: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _module_glue, _prune


def main():
    module = AnsibleModule(
        argument_spec=dict(
            backup_dir=dict(type="path", required=True),
            database=dict(type="str", required=True),
            keep_days=dict(type="int"),
            keep_last=dict(type="int"),
            upload_required=dict(type="bool", default=True),
            uploaded_backup_ids=dict(type="list", elements="str"),
            force=dict(type="bool", default=False),
        ),
        required_one_of=[("keep_days", "keep_last")],
        supports_check_mode=True,
    )
    p = module.params
    _module_glue.run_module(module, None, mf.validate_database_name, p["database"])
    uploaded = None
    if p["upload_required"]:
        if p["uploaded_backup_ids"] is None:
            module.fail_json(
                msg="upload_required is true but uploaded_backup_ids was not given: pass the ids from "
                "insa.timescaledb_backup.backup_info, or set upload_required: false on hosts that do not upload"
            )
        uploaded = set(p["uploaded_backup_ids"])
    before = [e["backup_id"] for e in mf.list_local(p["backup_dir"], p["database"])]
    result = _module_glue.run_module(
        module,
        None,
        _prune.prune,
        p["backup_dir"],
        p["database"],
        uploaded_ids=uploaded,
        dry_run=module.check_mode,
        **_module_glue.options(p, "keep_days", "keep_last", "force"),
    )
    if result.get("busy"):
        module.warn(result["busy"])
    gone = {d["backup_id"] for d in result["deleted"]}
    after = [b for b in before if b not in gone]
    module.exit_json(
        changed=bool(gone),
        diff={
            "before": "\n".join(before) + "\n",
            "after": "\n".join(after) + "\n",
            "before_header": "%s/%s" % (p["backup_dir"], p["database"]),
            "after_header": "%s/%s" % (p["backup_dir"], p["database"]),
        },
        **result,
    )


if __name__ == "__main__":
    main()
