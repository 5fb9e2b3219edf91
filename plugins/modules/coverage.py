#!/usr/bin/python
# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: coverage
short_description: Which days of history are safe in Azure, per database, and every gap with its reason
author:
  - INSA platform team (@insa)
version_added: 0.2.0
description:
  - For each day (UTC) of a window and each database of a host, says whether a backup set taken that day is in
    Azure Blob Storage and proven - complete (its manifest blob exists), its manifest read and accepted by the
    signing policy (the trust store) - or in the Archive tier (covered; rehydrate before a restore), only on the
    host, incomplete in Azure, refused, or missing. Every day that is not covered is a gap, with its reason.
  - Reads one listing of C(<prefix>/<host>/) and the manifest blob of each complete set in the window (one small
    read each); safety backups taken by restores do not cover a day.
  - Optionally writes the report as JSON (O(json_path)) and as a self-contained HTML page (O(html_path)) an auditor
    can open. C(playbooks/report.yml) runs it on every host and fetches both to the control node.
  - Covers the logical backup sets of the one Azure target. Hypertable slices of the history archive and a second
    target are not part of this report yet.
extends_documentation_fragment: [insa.timescaledb_backup.azure, insa.timescaledb_backup.signing.TRUST,
  insa.timescaledb_backup.attributes, insa.timescaledb_backup.attributes.no_diff,
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
        set of, locally or anywhere in its Azure folder (a database whose sets stopped long ago shows as missing).
      - With neither, the module fails - an empty report proves nothing.
    type: list
    elements: str
  days:
    description: Length of the window in days, ending with O(until).
    type: int
    default: 30
  until:
    description:
      - Last day of the window (C(YYYY-MM-DD), UTC). Default - today; today without a set in Azure yet is
        V(pending (today)), not a gap.
    type: str
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

- name: Fail when a day is not covered
  ansible.builtin.assert:
    that: cover.gaps | length == 0
    fail_msg: "{{ cover.lines | join('\n') }}"

- name: A page for the auditors
  insa.timescaledb_backup.coverage:
    databases: [iot]
    days: 730
    html_path: /var/lib/tsdb-backup/coverage.html
    json_path: /var/lib/tsdb-backup/coverage.json
    auth_mode: account_key
    account_name: insabackups
    account_key: "{{ vault_storage_key }}"
    container: tsdb-backups
"""

RETURN = r"""
report:
  description:
    - C(target), C(days) (the window's dates), C(databases) (per database, one row per day - C(day), C(status),
      C(reason), C(backup_ids)), C(gaps) and C(summary). A day's status is its best set's - V(ok) (every blob its
      accepted manifest lists is in Azure), V(ok (archive tier)), V(in archive tier, manifest not checked),
      V(local only), V(incomplete in azure), V(refused) - or V(missing); today without a set is V(pending (today)).
  returned: always
  type: dict
gaps:
  description: Every database-day that is not covered (nor pending today), oldest first.
  returned: always
  type: list
  elements: dict
  sample: [{"day": "2026-11-28", "database": "iot", "target": "primary", "reason": "no backup set taken on this day"}]
summary:
  description: C(days), C(databases), C(covered) database-days, C(gaps), C(from), C(to).
  returned: always
  type: dict
  sample: {"days": 30, "databases": 1, "covered": 29, "gaps": 1, "from": "2026-11-02", "to": "2026-12-01"}
lines:
  description: The report as text - a total, then one line per gap.
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
    _module_glue,
    _signing,
    _verify,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf


def in_window(entries, days):
    first, last = days[0], days[-1]
    kept = []
    for e in entries:
        try:
            day = mf.backup_id_time(e["backup_id"]).date()
        except ValueError:
            continue
        if first <= day <= last:
            kept.append(e)
    return kept


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


def report(module, store):
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
    local = mf.list_local(p["backup_dir"]) if p["backup_dir"] else []
    # Only the databases asked are listed (one folder each); without a list, the host's whole
    # folder says which databases it ever backed up - also those whose sets stopped long ago.
    listed = (
        [r for d in p["databases"] for r in store.list_remote(host, d)] if p["databases"] else store.list_remote(host)
    )
    databases = p["databases"] or sorted({e["database"] for e in local + listed})
    if not databases:
        module.fail_json(
            msg="no database to report on: %s has no backup set, locally or under its Azure folder. "
            "Name the databases that must be covered (databases)" % host
        )
    local = in_window([e for e in local if e["database"] in databases], days)
    for entry in local:
        bset = mf.BackupSet.from_manifest(p["backup_dir"], entry["manifest"]) if entry["manifest"] else None
        entry["verified"] = bool(bset) and _verify.is_verified(bset, entry["manifest"])
    remote = store.with_manifests(in_window(listed, days))
    rep = _coverage.coverage(_azure.merge_catalog(local, remote), databases, days)
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
        json_path=dict(type="path"),
        html_path=dict(type="path"),
        title=dict(type="str", default="TimescaleDB backup coverage"),
    )
    argument_spec.update(_signing.signing_argument_spec(sign=False))
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    _module_glue.require_azure_storage(module)
    redact = _azure.redactor_for(module.params)
    store = _module_glue.open_store(module, redact, check_container=True)
    module.exit_json(**_module_glue.run_module(module, store.redact, report, module, store))


if __name__ == "__main__":
    main()
