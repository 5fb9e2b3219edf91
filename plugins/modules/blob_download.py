#!/usr/bin/python
# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: blob_download
short_description: Download a backup set from Azure Blob Storage, verified
author:
  - INSA platform team (@insa)
version_added: 0.1.0
description:
  - Finds a complete backup set (one whose manifest blob exists) of O(database) from O(host_label) by
    O(backup_id), the latest, or the latest at or before O(before), and writes it into
    O(dest)/<database>/ in the local layout, ready for M(insa.timescaledb_backup.verify) and
    M(insa.timescaledb_backup.restore).
  - Every file streams into a temporary file in the target directory, is fsynced, checked against the
    sha256 in the manifest and only then renamed into place; the manifest is written last. A failed or
    interrupted download leaves nothing that looks like a backup.
  - A set whose blobs are in the Archive tier cannot be read. Without O(rehydrate) the module fails and says
    so; with O(rehydrate=true) it starts the rehydration of the archived blobs and returns
    RV(rehydration=pending) - run it again once Azure has finished (hours with O(rehydrate_priority=Standard)).
  - Never overwrites a local file. If the same set is already there (same manifest), nothing is done.
  - With a trust store (O(trusted_signers_file), O(trusted_signers)) the manifest is read and its signature checked
    against the keys trusted for O(host_label) before any archive byte is downloaded; a set the policy refuses (forged,
    planted under this host's prefix with another host's key, unsigned without O(allow_unsigned=true)) is never
    downloaded.
  - An encrypted set (RV(encrypted)) arrives in its encrypted form (C(<file>.age)), each file checked against the
    manifest's sha256 of what is stored. With O(identity) it is decrypted at once (each plaintext checked against the
    manifest, the encrypted form removed); without, it stays encrypted - M(insa.timescaledb_backup.verify) checks it at
    level C(checksum), and M(insa.timescaledb_backup.restore) decrypts it with its own O(identity).
extends_documentation_fragment: [insa.timescaledb_backup.azure, insa.timescaledb_backup.azure.REPLICAS, insa.timescaledb_backup.signing.TRUST,
  insa.timescaledb_backup.signing.ALLOW_UNSIGNED, insa.timescaledb_backup.encryption.IDENTITY,
  insa.timescaledb_backup.attributes, insa.timescaledb_backup.attributes.check_mode, insa.timescaledb_backup.attributes.no_diff,
  insa.timescaledb_backup.attributes.idempotent]
attributes:
  check_mode:
    details: Selects the set and reports what would be downloaded or rehydrated; writes nothing, changes no tier.
  idempotent:
    details: A set already present locally with the same manifest is left alone (C(changed=false)).
options:
  dest:
    description: Backup directory to write into (the set lands in C(<dest>/<database>/)). Created if missing.
    type: path
    required: true
  database:
    description: Database whose backup to fetch.
    type: str
    required: true
  host_label:
    description: Host part of the blob names (the host the backup was taken on). Defaults to this host's FQDN.
    type: str
  backup_id:
    description:
      - Id of the set to fetch, or V(latest) (the default when O(before) is not given either).
    type: str
  before:
    description:
      - Fetch the latest set taken at or before this time. ISO 8601 (V(2026-11-27T02:00:00Z); without a zone, UTC)
        or a backup id.
    type: str
  rehydrate:
    description: When the set is in the Archive tier, start its rehydration instead of failing.
    type: bool
    default: false
  rehydrate_priority:
    description: Rehydration priority; V(High) is faster and costs more.
    type: str
    choices: [Standard, High]
    default: Standard
  rehydrate_tier:
    description: Tier the rehydrated blobs move to. V(Hot) has no early deletion period.
    type: str
    choices: [Hot, Cool, Cold]
    default: Hot
  read_from:
    description:
      - The target to read first - V(primary) (the Azure options above), the name of one of O(replicas), or
        V(secondary) for the first replica.
      - With O(fallback), a set that is missing, damaged (another sha256), refused (signature), in the Archive tier
        (without O(rehydrate)) or unreachable there is read from the next target; the result says where it came from.
    type: str
    default: primary
  fallback:
    description: Read from the other targets when O(read_from) cannot provide a sound set.
    type: bool
    default: true
notes:
  - Tested against Azurite, which rehydrates at once; Azure takes hours.
seealso:
  - module: insa.timescaledb_backup.blob_upload
  - module: insa.timescaledb_backup.backup_info
  - module: insa.timescaledb_backup.restore
"""

EXAMPLES = r"""
- name: Fetch the latest backup of iot taken on db01
  insa.timescaledb_backup.blob_download:
    dest: /var/restore
    database: iot
    host_label: db01.example.com
    auth_mode: entra
    account_name: insabackups
    container: tsdb-backups
  register: fetched

- name: Fetch the backup as of the night before the incident, rehydrating it if needed
  insa.timescaledb_backup.blob_download:
    dest: /var/restore
    database: iot
    host_label: db01.example.com
    before: "2026-11-20T06:00:00Z"
    rehydrate: true
    rehydrate_priority: High
    auth_mode: account_key
    account_name: insabackups
    account_key: "{{ vault_storage_key }}"
    container: tsdb-backups
  register: fetched

- name: Fetch from the replica in the other region first, falling back to the primary
  insa.timescaledb_backup.blob_download:
    dest: /var/restore
    database: iot
    host_label: db01.example.com
    auth_mode: entra
    account_name: insabackups
    container: tsdb-backups
    replicas:
      - name: dr-northeurope
        auth_mode: entra
        account_name: insabackupsdr
        container: tsdb-backups
    read_from: secondary
  register: fetched

- name: Say when rehydration is still running
  ansible.builtin.debug:
    msg: "{{ fetched.msg }}"
  when: fetched.rehydration == 'pending'
"""

RETURN = r"""
target:
  description: The target the set was read from (V(primary) or a replica's name).
  returned: success
  type: str
  sample: dr-westeurope
fallbacks:
  description: The targets tried before O(read_from)'s set was found sound elsewhere, each with the reason.
  returned: success
  type: list
  elements: dict
  sample: [{"target": "primary", "error": "https://.../x.dump downloaded with sha256 ab12... but its manifest says 9f3c...; not kept"}]
signature:
  description: The set's signature status (C(status), C(key_id), C(signer_host)); see M(insa.timescaledb_backup.verify).
  returned: when the manifest was read
  type: dict
  sample: {"status": "trusted", "key_id": "3f2a9c0d11e4b5a6", "signer_host": "db01"}
backup_id:
  description: The selected set.
  returned: success
  type: str
  sample: 20261127T020000Z
url:
  description: URL of the archive blob (without any SAS token).
  returned: success
  type: str
manifest_path:
  description: Local manifest of the set.
  returned: when the set could be read
  type: str
archive_path:
  description: Local archive (file or directory); for an encrypted set not decrypted, its C(.age) beside this path.
  returned: when the set could be read
  type: str
encrypted:
  description: Whether the set is encrypted (its manifest has C(encryption)).
  returned: when the set could be read
  type: bool
decrypted:
  description: The files decrypted with O(identity) (empty without one, or when the set is in clear).
  returned: success
  type: list
  elements: str
files:
  description: Files written, the manifest last.
  returned: success
  type: list
  elements: str
bytes:
  description: Size of the set in Azure (downloaded, or that would be).
  returned: success
  type: int
duration:
  description: Seconds the download took.
  returned: when downloaded
  type: float
throughput_mib_s:
  description: MiB per second of the download.
  returned: when downloaded
  type: float
rehydration:
  description: V(pending) when rehydration was started or is still running; null otherwise.
  returned: success
  type: str
archived_blobs:
  description: URLs of the set's blobs in the Archive tier.
  returned: when the set is archived
  type: list
  elements: str
msg:
  description: What to do next, when rehydration is pending.
  returned: when rehydration is pending
  type: str
"""

import socket

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import (
    _azure,
    _encryption,
    _module_glue,
    _replica,
    _replica_read,
    _signing,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf


def main():
    argument_spec = _azure.azure_common_argument_spec()
    argument_spec.update(
        dest=dict(type="path", required=True),
        database=dict(type="str", required=True),
        host_label=dict(type="str"),
        backup_id=dict(type="str"),
        before=dict(type="str"),
        rehydrate=dict(type="bool", default=False),
        rehydrate_priority=dict(type="str", choices=["Standard", "High"], default="Standard"),
        rehydrate_tier=dict(type="str", choices=["Hot", "Cool", "Cold"], default="Hot"),
        read_from=dict(type="str", default="primary"),
        fallback=dict(type="bool", default=True),
    )
    argument_spec.update(_replica.replicas_argument_spec())
    argument_spec.update(_signing.signing_argument_spec(sign=False, allow_unsigned=True))
    argument_spec.update(_encryption.identity_argument_spec())
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        mutually_exclusive=[("backup_id", "before")],
    )
    _module_glue.require_azure_storage(module)
    p = module.params
    store = _module_glue.open_store(module, progress=True)
    targets = _module_glue.run_module(module, store.redact, _replica.open_targets, store, p["replicas"], store.progress)
    order = _module_glue.run_module(
        module, store.redact, _replica_read.read_order, targets, p["read_from"], p["fallback"]
    )
    options = _module_glue.options(p, "backup_id", "before", "rehydrate", "rehydrate_priority", "rehydrate_tier")
    result = _module_glue.run_module(
        module,
        store.redact,
        _replica_read.download_set,
        order,
        p["dest"],
        p["database"],
        p["host_label"] or socket.getfqdn(),
        check_mode=module.check_mode,
        **options,
    )
    for failed in result["fallbacks"]:
        module.warn(
            "target %s could not provide the set (%s); read from the next target" % (failed["target"], failed["error"])
        )
    result["decrypted"] = []
    if p["identity"] and result.get("encrypted") and not module.check_mode and result.get("rehydration") is None:
        manifest = _module_glue.run_module(module, None, mf.read_manifest, result["manifest_path"])
        bset = mf.BackupSet.from_manifest(p["dest"], manifest)
        result["decrypted"] = _module_glue.run_module(
            module, None, _encryption.open_set, bset, manifest, p["identity"], "the download's decryption"
        )
        result["changed"] = result["changed"] or bool(result["decrypted"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
