#!/usr/bin/python
# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: coverage
short_description: Which days of history are safe in each Azure target, per database, and every gap with its reason
author:
  - INSA platform team (@insa)
version_added: 0.2.0
description:
  - For each day (UTC) of a window, each database of a host and each target - the primary (the Azure options) and
    every replica of O(replicas) - says whether the day is in that target and proven, and how - a backup set taken
    that day is complete there (its manifest blob exists), its manifest read and accepted by the signing policy
    (the trust store), or in the Archive tier (covered; rehydrate before a restore); or the day lies in the
    target's history archive (V(ok (history archive)), see O(history)). Otherwise the day is only on the host,
    incomplete, refused or missing in that target - a gap, named by day, database and target, with its reason.
  - Per target, reads one listing of C(<prefix>/<host>/) (or of each database's folder) and the manifest blob of each
    complete set in the window (one small read each); safety backups taken by restores do not cover a day. A target
    that cannot be listed is reported, each of its days a gap with the reason; the other targets are still read.
  - Each row says which targets cover the day (C(covered_in)), C(only_in) when exactly one does, and C(local_only)
    when only the host has it. The report counts, per target, the sets and history objects of the window in the
    Archive tier and what rehydrating them takes.
  - Optionally writes the report as JSON (O(json_path)) and as a self-contained HTML page (O(html_path)) an auditor
    can open. C(playbooks/report.yml) runs it on every host and fetches both to the control node.
extends_documentation_fragment: [insa.timescaledb_backup.azure, insa.timescaledb_backup.azure.REPLICAS,
  insa.timescaledb_backup.signing.TRUST, insa.timescaledb_backup.attributes, insa.timescaledb_backup.attributes.no_diff,
  insa.timescaledb_backup.attributes.idempotent]
attributes:
  check_mode:
    support: full
    details: The report is computed; no file is written; C(changed) says whether one would be.
options:
  backup_dir:
    description: Local directory of backup sets, to tell the sets only on the host from missing ones.
    type: path
  host_label:
    description: Host part of the blob names. Defaults to this host's FQDN.
    type: str
  databases:
    description:
      - The databases that must be covered; only their folders are listed. Default - every database the host has a
        set of, locally or anywhere in its Azure folder of any target (a database whose sets stopped long ago shows as
        missing).
      - With neither, the module fails - an empty report proves nothing.
    type: list
    elements: str
  days:
    description: Length of the window in days, ending with O(until).
    type: int
    default: 30
  until:
    description:
      - Last day of the window (C(YYYY-MM-DD), UTC). Default - today; today without a set in a target yet is
        V(pending (today)), not a gap.
    type: str
  history:
    description:
      - Count the history archive (C(<prefix>/history/<host>/<database>/<schema.table>/), docs/HISTORY.md) of each
        target. Of each range the newest version with a manifest counts; it is verified when its manifest is that
        host's, database's and hypertable's and its signature is accepted, and its object is listed with the
        manifest's sha256. A manifest in the Archive tier is not read; its range counts when its metadata is the
        place's and its object is listed with the sha256 that metadata records.
      - A day without a set is covered by history in a target when, for every hypertable of the database with an
        archived range there, the day ends within the span from its first range's start to its last range's
        end, and no stretch of the day in that span lies outside a verified range. A hole names the hypertable, the stretch and why.
      - Only the layout with host counts; history of the layout without host (earlier releases) counts once migrated.
      - The report lists, per target and hypertable, the ranges archived and verified, the first and last moment and
        every hole.
    type: bool
    default: true
  json_path:
    description: Write the report as JSON to this file (mode 0640, atomically).
    type: path
  html_path:
    description: Write the report as an HTML page to this file (mode 0640, atomically).
    type: path
  title:
    description: Title of the HTML page.
    type: str
    default: TimescaleDB backup coverage
seealso:
  - module: insa.timescaledb_backup.backup_info
  - module: insa.timescaledb_backup.chunk_archive
"""

EXAMPLES = r"""
- name: Is every day of the last 90 days in Azure?
  insa.timescaledb_backup.coverage:
    backup_dir: /var/backups/tsdb
    days: 90
    auth_mode: entra
    account_name: insabackups
    container: tsdb-backups
  register: cover

- name: Fail when a day is not covered, naming each gap
  ansible.builtin.assert:
    that: cover.gaps | length == 0
    fail_msg: "{{ cover.lines | join('\n') }}"

- name: Both copies, the primary and the replica in the other region, over two years of history
  insa.timescaledb_backup.coverage:
    databases: [iot]
    days: 730
    html_path: /var/lib/tsdb-backup/coverage.html
    json_path: /var/lib/tsdb-backup/coverage.json
    auth_mode: account_key
    account_name: insabackups
    account_key: "{{ vault_storage_key }}"
    container: tsdb-backups
    replicas:
      - name: dr-northeurope
        auth_mode: entra
        account_name: insabackupsdr
        container: tsdb-backups
  register: cover

- name: Days that have no second copy
  ansible.builtin.debug:
    msg: "{{ cover.report.databases.iot | selectattr('only_in') | map(attribute='day') | list }}"
"""

RETURN = r"""
report:
  description:
    - C(targets) (their names, the primary first), C(days) (the window's dates), C(databases), C(gaps), C(summary),
      C(errors) (target -> why it could not be listed), C(notes), C(archive_tier) and C(history).
    - C(databases) - per database, one row per day - C(day); C(targets) (per target C(status), C(reason),
      C(backup_ids)); the day's best C(status) and its C(reason) over the targets; C(backup_ids); C(covered_in),
      C(only_in) (the one target that covers it, or null) and C(local_only).
    - A status is the best set's - V(ok) (every blob its accepted manifest lists is there), V(ok (archive tier)),
      V(in archive tier, manifest not checked), V(local only), V(incomplete in azure), V(refused) - or
      V(ok (history archive)), V(missing), V(target unreadable); today without a set is V(pending (today)).
    - C(archive_tier) - per target C(sets), C(set_bytes), C(history_objects), C(history_bytes) in the Archive tier
      and C(rehydrate), what rehydrating them takes (null when nothing is there).
    - C(history) - per target, database and hypertable C(ranges), C(verified), C(unchecked) (counted from metadata,
      their manifest in the Archive tier), C(first), C(last) and C(holes) (C(start), C(end), C(reason)).
  returned: always
  type: dict
gaps:
  description: Every database-day not covered in a target (nor pending today), oldest first, targets in their order.
  returned: always
  type: list
  elements: dict
  sample: [{"day": "2026-11-28", "database": "iot", "target": "dr-northeurope",
            "reason": "no backup set taken on this day"}]
summary:
  description:
    - C(days), C(databases), C(targets), C(covered) (database-days covered, summed over the targets), C(gaps),
      C(covered_nowhere) (database-days no target covers, today pending aside), C(from), C(to), and C(per_target) -
      per target C(covered), C(by_history), C(only_here), C(gaps) and C(error) when it could not be listed.
  returned: always
  type: dict
  sample: {"days": 30, "databases": 1, "targets": 1, "covered": 29, "gaps": 1, "covered_nowhere": 1,
           "from": "2026-11-02", "to": "2026-12-01",
           "per_target": {"primary": {"covered": 29, "by_history": 0, "only_here": 29, "gaps": 1}}}
lines:
  description:
    - The report as text - the total per target; what is in the Archive tier; notes; then one line per gap -
      day, database, target, reason - or a line saying there is none.
  returned: always
  type: list
  elements: str
"""

import datetime
import json
import socket

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import (
    _azure,
    _coverage,
    _coverage_collect,
    _module_glue,
    _replica,
    _signing,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf


def write(module, path, data):
    """Writes one output file unless it already holds exactly that; True when it (would have) changed."""
    if path is None:
        return False
    try:
        with open(path, "rb") as f:
            if f.read() == data:
                return False
    except OSError:
        pass
    if not module.check_mode:
        mf.atomic_write_bytes(path, data, mode=0o640)
    return True


def report(module, targets):
    p = module.params
    try:
        until = datetime.date.fromisoformat(p["until"]) if p["until"] else None
    except ValueError:
        module.fail_json(msg="until must be a date as YYYY-MM-DD, not %r" % p["until"])
    if p["days"] < 1:
        module.fail_json(msg="days must be at least 1, not %d" % p["days"])
    for database in p["databases"] or []:
        mf.validate_database_name(database)
    days = _coverage.window(p["days"], until)
    host = p["host_label"] or socket.getfqdn()
    catalogs, hist, databases, errors = _coverage_collect.collect(
        targets, p["backup_dir"], host, p["databases"], days, with_history=p["history"]
    )
    if not databases:
        module.fail_json(
            msg="no database to report on: %s has no backup set, locally or under its Azure folder of any target. "
            "Name the databases that must be covered (databases)" % host,
            errors=errors,
        )
    rep = _coverage.coverage(catalogs, databases, days, history=hist)
    changed = write(module, p["json_path"], (json.dumps(rep, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    changed = write(module, p["html_path"], _coverage.render_html(rep, p["title"]).encode("utf-8")) or changed
    return {
        "changed": changed,
        "report": rep,
        "gaps": rep["gaps"],
        "summary": rep["summary"],
        "lines": _coverage.table(rep),
    }


def main():
    argument_spec = _azure.azure_common_argument_spec()
    argument_spec.update(
        backup_dir=dict(type="path"),
        host_label=dict(type="str"),
        databases=dict(type="list", elements="str"),
        days=dict(type="int", default=30),
        until=dict(type="str"),
        history=dict(type="bool", default=True),
        json_path=dict(type="path"),
        html_path=dict(type="path"),
        title=dict(type="str", default="TimescaleDB backup coverage"),
    )
    argument_spec.update(_replica.replicas_argument_spec())
    argument_spec.update(_signing.signing_argument_spec(sign=False))
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    _module_glue.require_azure_storage(module)
    redact = _azure.redactor_for(module.params)
    store = _module_glue.open_store(module, redact, check_container=True)
    targets = _module_glue.run_module(module, store.redact, _replica.open_targets, store, module.params["replicas"])
    module.exit_json(**_module_glue.run_module(module, store.redact, report, module, targets))


if __name__ == "__main__":
    main()
