#!/usr/bin/python
# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: backup_info
short_description: Catalog of backup sets, local and in Azure Blob Storage
author:
  - INSA platform team (@insa)
version_added: 0.1.0
description:
  - Lists the backup sets of a host under O(backup_dir) (local) and in Azure (one listing of
    C(<prefix>/<host>/), with blob metadata - no blob content is read unless asked), merged by database
    and backup id, oldest first.
  - Marks the local sets not yet uploaded completely (RV(not_uploaded)) - what
    M(insa.timescaledb_backup.blob_upload) with O(insa.timescaledb_backup.blob_upload#module:catch_up=true)
    would upload.
  - Selects one set - by O(backup_id), the latest, or the latest at or before O(as_of) - and returns its manifest.
  - Reports whether the container is protected against deletes (RV(protection)) as far as the data plane can
    tell - blob soft delete from the account's service properties, an immutability policy and a legal hold from the
    container's properties - and C(unknown) for the rest (versioning, container soft delete) and for what the
    credentials may not read (a container SAS reads neither). M(insa.timescaledb_backup.container_protection)
    manages and reports all of it through Resource Manager.
  - Reports each set's signature status (C(signature) of each set in RV(backups)) - with a trust store, a remote manifest the signing
    policy refuses is not returned (its C(manifest_error) says why) and never selected; without one the status says
    C(unsigned, no trust store).
  - Read-only; never reports a change.
extends_documentation_fragment: [insa.timescaledb_backup.azure, insa.timescaledb_backup.signing.TRUST,
  insa.timescaledb_backup.attributes, insa.timescaledb_backup.attributes.info_module]
options:
  backup_dir:
    description: Local directory of backup sets. Without it, only Azure is listed.
    type: path
  database:
    description: Only this database.
    type: str
  host_label:
    description: Host part of the blob names to list. Defaults to this host's FQDN.
    type: str
  remote:
    description: List Azure too. With V(false), no Azure option is needed.
    type: bool
    default: true
  read_manifests:
    description: Read the manifest blob of every complete remote set (one request each). The selected set's manifest is always read.
    type: bool
    default: false
  backup_id:
    description: Select this set, or V(latest) (the default).
    type: str
  as_of:
    description: Select the latest set taken at or before this time (ISO 8601, without a zone UTC; or a backup id).
    type: str
notes:
  - Sets whose manifest blob is in the Archive tier are listed from their blob metadata; their manifest
    cannot be read until rehydrated.
seealso:
  - module: insa.timescaledb_backup.blob_upload
  - module: insa.timescaledb_backup.blob_download
  - module: insa.timescaledb_backup.container_protection
"""

EXAMPLES = r"""
- name: What is on this host and in Azure, and what is not uploaded yet
  insa.timescaledb_backup.backup_info:
    backup_dir: /var/backups/tsdb
    auth_mode: entra
    account_name: insabackups
    container: tsdb-backups
  register: catalog

- name: Alert when backups are waiting for upload
  ansible.builtin.debug:
    msg: "Not in Azure yet: {{ catalog.not_uploaded | map(attribute='backup_id') | list }}"
  when: catalog.not_uploaded | length > 0

- name: The set a restore as of an incident would take
  insa.timescaledb_backup.backup_info:
    database: iot
    host_label: db01.example.com
    as_of: "2026-11-20T06:00:00Z"
    auth_mode: account_key
    account_name: insabackups
    account_key: "{{ vault_storage_key }}"
    container: tsdb-backups
  register: pick

- name: Local sets only
  insa.timescaledb_backup.backup_info:
    backup_dir: /var/backups/tsdb
    remote: false
"""

RETURN = r"""
backups:
  description:
    - Every set, oldest first - backup_id, database, host, local (manifest_path, usable, verified, error; or null),
      remote (complete, blobs with tier and sha256, bytes, url, archived, manifest if read; or null),
      uploaded (the manifest is in Azure), complete (usable somewhere), signature (C(status), C(key_id),
      C(signer_host) of the remote manifest when read, else of the local one; null when neither was read).
  returned: always
  type: list
  elements: dict
not_uploaded:
  description:
    - Local usable sets that are not complete in Azure, oldest first, with C(verified) - whether their last
      verification passed (catch-up uploads only those).
  returned: always
  type: list
  elements: dict
  sample: [{"backup_id": "20261126T020000Z", "database": "iot", "verified": true}]
uploaded_backup_ids:
  description:
    - The local sets Azure holds a proven copy of - the remote manifest is the local one (same C(manifest_sha256),
      signature included) and the signing policy does not refuse it - what
      M(insa.timescaledb_backup.prune) may remove with O(insa.timescaledb_backup.prune#module:upload_required=true).
      A manifest blob alone under this host's prefix proves nothing. Empty without O(backup_dir) or with O(remote=false).
  returned: always
  type: list
  elements: str
  sample: ["20261126T020000Z"]
selected:
  description: The selected set (same keys as in RV(backups)) with its C(manifest), or null when none matches.
  returned: always
  type: dict
protection:
  description:
    - The container's protection as the data plane sees it, or null with O(remote=false). C(protected) is V(yes)
      when an immutability policy or blob soft delete stops a delete, V(no) when the data plane shows neither,
      V(unknown) when it cannot tell. Each of C(blob_soft_delete) (with C(days)), C(immutability) (with
      C(version_level), C(legal_hold)), C(versioning) and C(container_soft_delete) has a C(state) -
      V(enabled), V(disabled) or V(unknown) - and, when unknown, a C(reason).
  returned: always
  type: dict
  sample:
    protected: "yes"
    blob_soft_delete: {state: enabled, days: 30}
    immutability: {state: enabled, version_level: true, legal_hold: false}
    versioning: {state: unknown, reason: "not visible from the data plane; container_protection reads it through Resource Manager"}
    container_soft_delete: {state: unknown, reason: "not visible from the data plane; container_protection reads it through Resource Manager"}
encryption:
  description:
    - What each age recipient's identity reads, over the sets whose manifest was read (local ones, and remote ones
      with O(read_manifests=true)) - before an identity is retired, the sets it alone decrypts are re-taken or kept
      readable (docs/SECURITY.md). C(recipients) - C(recipient), C(id), C(sets), C(databases), C(oldest) and
      C(newest) backup id, newest last; C(in_clear) - sets not encrypted; C(unread) - sets whose manifest was not read.
  returned: always
  type: dict
  sample:
    recipients:
      - {recipient: "age1...", id: "5f0c1d2e3a4b5c6d", sets: 30, databases: [iot], oldest: "20261101T020000Z", newest: "20261130T020000Z"}
    in_clear: 2
    unread: 0
counts:
  description: Number of sets local, remote (complete), not uploaded.
  returned: always
  type: dict
  sample: {"local": 7, "remote": 30, "not_uploaded": 1}
"""

import socket

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import (
    _azure,
    _encryption,
    _lifecycle,
    _module_glue,
    _signing,
    _verify,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf


def add_signatures(backups, local, policy):
    """Each set's signature status: of its remote manifest when it was read (refused ones
    included), else of the local manifest, checked against the host it claims; else None."""
    mine = {(e["database"], e["backup_id"]): e["manifest"] for e in local if e["manifest"]}
    for b in backups:
        found = (b["remote"] or {}).get("signature")
        manifest = mine.get((b["database"], b["backup_id"]))
        if found is None and manifest is not None:
            found = policy.status(manifest, manifest.get("host"))
        b["signature"] = found


def manifests_read(backups, local):
    """Each set's manifest as read: the local one, else the remote one (None when neither was)."""
    mine = {(e["database"], e["backup_id"]): e["manifest"] for e in local if e["manifest"]}
    for b in backups:
        yield mine.get((b["database"], b["backup_id"])) or (b["remote"] or {}).get("manifest")


def select(module, store, backups, local):
    """The set backup_id / as_of selects, with its manifest: local when this host has it, else
    the remote one. A set whose remote manifest is unreadable or refused (signature) is never
    selected: the next one that matches is."""
    p = module.params
    refused = set()
    while True:
        candidates = [
            b
            for b in backups
            if (b["database"], b["backup_id"]) not in refused and not (b["remote"] or {}).get("manifest_error")
        ]
        selected = _azure.select_backup(candidates, backup_id=p["backup_id"], as_of=p["as_of"])
        if selected is None:
            return None
        selected = dict(selected)
        mine = [e for e in local if (e["database"], e["backup_id"]) == (selected["database"], selected["backup_id"])]
        if mine and mine[0]["manifest"]:
            selected["manifest"] = mine[0]["manifest"]
            return selected
        if selected["remote"] is None:
            return selected
        read = store.with_manifests([dict(selected["remote"])])[0]
        if read.get("manifest") is not None:
            selected["manifest"] = read["manifest"]
            return selected
        refused.add((selected["database"], selected["backup_id"]))


def catalog(module, store):
    p = module.params
    if p["database"]:
        mf.validate_database_name(p["database"])
    local = mf.list_local(p["backup_dir"], p["database"]) if p["backup_dir"] else []
    host = p["host_label"] or socket.getfqdn()
    for entry in local:
        bset = mf.BackupSet.from_manifest(p["backup_dir"], entry["manifest"]) if entry["manifest"] else None
        entry["verified"] = bool(bset) and _verify.is_verified(bset, entry["manifest"])
    remote = []
    if store is not None:
        remote = store.list_remote(host, p["database"])
        if p["read_manifests"]:
            store.with_manifests(remote)
    backups = _azure.merge_catalog(local, remote)
    add_signatures(backups, local, store.signing if store is not None else _module_glue.signing_policy(module))
    selected = select(module, store, backups, local)
    not_uploaded = [
        {
            "backup_id": b["backup_id"],
            "database": b["database"],
            "manifest_path": b["local"]["manifest_path"],
            "verified": b["local"]["verified"],
        }
        for b in backups
        if b["local"] and b["local"]["usable"] and not b["uploaded"]
    ]
    proven = (
        store.uploaded_copies(p["backup_dir"], host, p["database"]) if store is not None and p["backup_dir"] else []
    )
    return {
        "changed": False,
        "backups": backups,
        "uploaded_backup_ids": sorted(proven),
        "not_uploaded": not_uploaded if store is not None else [],
        "selected": selected,
        "protection": _lifecycle.data_plane_protection(store) if store is not None else None,
        "encryption": _encryption.recipient_coverage(manifests_read(backups, local)),
        "counts": {
            "local": len(local),
            "remote": len([r for r in remote if r["complete"]]),
            "not_uploaded": len(not_uploaded) if store is not None else None,
        },
    }


def main():
    argument_spec = _azure.azure_common_argument_spec()
    argument_spec.update(
        backup_dir=dict(type="path"),
        database=dict(type="str"),
        host_label=dict(type="str"),
        remote=dict(type="bool", default=True),
        read_manifests=dict(type="bool", default=False),
        backup_id=dict(type="str"),
        as_of=dict(type="str"),
    )
    argument_spec.update(_signing.signing_argument_spec(sign=False))
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        mutually_exclusive=[("backup_id", "as_of")],
    )
    p = module.params
    store = None
    redact = _azure.redactor_for(p)
    if p["remote"]:
        _module_glue.require_azure_storage(module)
        store = _module_glue.open_store(module, redact, check_container=True)
        redact = store.redact
    module.exit_json(**_module_glue.run_module(module, redact, catalog, module, store))


if __name__ == "__main__":
    main()
