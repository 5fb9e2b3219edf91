#!/usr/bin/python
# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: blob_upload
short_description: Upload backup sets to Azure Blob Storage, never overwriting
author:
  - INSA platform team (@insa)
version_added: 0.1.0
description:
  - Uploads one backup set (archive, roles, manifest) given its manifest, or with O(catch_up=true) every
    local backup set under O(backup_dir) whose manifest is not in Azure yet, oldest first - after an
    outage of days, all of them.
  - Blob names follow C(<prefix>/<host>/<database>/<YYYY>/<MM>/<backup_id>.<ext>), so lifecycle rules
    can filter by prefix. Names are validated (no C(..), no control characters, at most 1024 characters).
  - The archive is read once - hashed and sent as blocks of O(block_size_mb) with O(max_concurrency) blocks
    in flight, each block checked by Azure (Content-MD5). Memory stays near O(block_size_mb) x
    (O(max_concurrency) + 1) whatever the archive size. The blocks are committed only when the archive's
    sha256 matches the manifest, and only if the blob does not exist yet.
  - The manifest blob is uploaded last, so a visible manifest means a complete set. After each upload the
    blob's properties are read back and its size and sha256 metadata checked.
  - Never overwrites. A blob that exists with the same sha256 is skipped - nothing is sent. A blob that
    exists with other content fails the module before anything is sent.
  - Metadata on every blob - sha256, backup_id, database, host, kind, pg_version, tsdb_version.
  - The local backup set is never changed or removed.
extends_documentation_fragment: [insa.timescaledb_backup.azure, insa.timescaledb_backup.azure.upload,
  insa.timescaledb_backup.attributes, insa.timescaledb_backup.attributes.check_mode, insa.timescaledb_backup.attributes.no_diff,
  insa.timescaledb_backup.attributes.idempotent]
attributes:
  check_mode:
    details: Reads the container and the blobs' properties and reports what would be uploaded; sends no data.
  idempotent:
    details: Blobs already uploaded with the same sha256 are skipped; a second run reports C(changed=false).
options:
  manifest_path:
    description:
      - Manifest of the backup set to upload (C(<backup_dir>/<database>/<backup_id>.manifest.json)).
      - Required unless O(catch_up=true).
    type: path
  catch_up:
    description:
      - Upload every local backup set under O(backup_dir) (optionally only of O(database)) that is not yet
        complete in Azure, oldest first.
      - A damaged set (sha256 differs from its manifest) or a conflicting one is reported in RV(failures) and
        the others are still uploaded; an unreachable or refusing service stops the run. Either way the module fails
        when RV(failures) is not empty.
    type: bool
    default: false
  backup_dir:
    description: Directory of backup sets (C(<backup_dir>/<database>/...)) for O(catch_up=true).
    type: path
  verified_only:
    description:
      - With O(catch_up=true), upload only sets whose last verification passed for this very archive (the
        C(<backup_id>.verify.json) that M(insa.timescaledb_backup.verify) writes). Others are listed in
        RV(unusable) and not sent.
      - An upload of one set by O(manifest_path) does not look at verification; the archive is always checked
        against the manifest's sha256 before it is committed.
    type: bool
    default: true
  database:
    description: With O(catch_up=true), only this database's sets.
    type: str
  host_label:
    description:
      - Host part of the blob names. Defaults to the C(host) recorded in each manifest (the dump module's
        O(insa.timescaledb_backup.dump#module:host_label)).
    type: str
  access_tier:
    description:
      - Access tier of the archive blobs at upload. The roles and manifest blobs keep the account's default
        tier so that the catalog can read them.
      - Unset means the account's default tier.
    type: str
    choices: [Hot, Cool, Cold, Archive]
  tags:
    description: Blob index tags on every uploaded blob (at most 10). Needs the C(t) permission with SAS.
    type: dict
notes:
  - Tested against Azurite (the Azure Storage emulator).
seealso:
  - module: insa.timescaledb_backup.blob_download
  - module: insa.timescaledb_backup.backup_info
  - module: insa.timescaledb_backup.lifecycle_policy
"""

EXAMPLES = r"""
- name: Upload tonight's backup set (managed identity of the VM)
  insa.timescaledb_backup.blob_upload:
    manifest_path: "{{ backup.manifest_path }}"
    auth_mode: entra
    account_name: insabackups
    container: tsdb-backups

- name: Upload every backup set not yet in Azure, oldest first
  insa.timescaledb_backup.blob_upload:
    catch_up: true
    backup_dir: /var/backups/tsdb
    auth_mode: sas
    account_url: https://insabackups.blob.core.windows.net
    sas_token: "{{ vault_backup_sas }}"
    container: tsdb-backups
    access_tier: Cool
    tags:
      retention: forever

- name: Upload to Azurite
  insa.timescaledb_backup.blob_upload:
    manifest_path: /var/backups/tsdb/iot/20261127T020000Z.manifest.json
    auth_mode: connection_string
    connection_string: "{{ azurite_connection_string }}"
    container: tsdb-backups
    create_container: true
    block_size_mb: 4
    max_concurrency: 8
"""

RETURN = r"""
backup_id:
  description: The uploaded set's id (single set).
  returned: when O(catch_up=false)
  type: str
  sample: 20261127T020000Z
url:
  description: URL of the archive blob (without any SAS token).
  returned: when O(catch_up=false)
  type: str
  sample: https://insabackups.blob.core.windows.net/tsdb-backups/timescaledb/db01/iot/2026/11/20261127T020000Z.dump
manifest_url:
  description: URL of the manifest blob (without any SAS token).
  returned: when O(catch_up=false)
  type: str
etag:
  description: ETag of the archive blob.
  returned: when O(catch_up=false)
  type: str
bytes:
  description: Bytes sent (0 when everything was already there).
  returned: success
  type: int
duration:
  description: Seconds the module spent.
  returned: success
  type: float
throughput_mib_s:
  description: Bytes sent per second, in MiB/s (null when nothing was sent).
  returned: success
  type: float
blobs:
  description: Every blob of the set with its name, url, kind, status (uploaded, skipped, would_upload), bytes, sha256, etag.
  returned: when O(catch_up=false)
  type: list
  elements: dict
container_created:
  description: Whether the container was (or in check mode would be) created.
  returned: success
  type: bool
uploaded:
  description: Backup ids uploaded (or that would be, in check mode), in upload order.
  returned: when O(catch_up=true)
  type: list
  elements: str
  sample: [20261122T020000Z, 20261123T020000Z]
sets:
  description: Result of each set uploaded or checked, in order (same keys as a single upload).
  returned: when O(catch_up=true)
  type: list
  elements: dict
failures:
  description: Sets that could not be uploaded, with the reason.
  returned: when O(catch_up=true)
  type: list
  elements: dict
unusable:
  description: Local sets not uploaded, with the reason - an unreadable manifest, or not verified (O(verified_only)).
  returned: when O(catch_up=true)
  type: list
  elements: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _azure, _module_glue


def main():
    argument_spec = _azure.azure_common_argument_spec()
    argument_spec.update(
        manifest_path=dict(type="path"),
        catch_up=dict(type="bool", default=False),
        backup_dir=dict(type="path"),
        verified_only=dict(type="bool", default=True),
        database=dict(type="str"),
        host_label=dict(type="str"),
        access_tier=dict(type="str", choices=list(_azure.TIERS)),
        tags=dict(type="dict"),
        block_size_mb=dict(type="int", default=_azure.DEFAULT_BLOCK_SIZE_MB),
        max_concurrency=dict(type="int", default=_azure.DEFAULT_CONCURRENCY),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        required_if=[("catch_up", True, ("backup_dir",)), ("catch_up", False, ("manifest_path",))],
    )
    _module_glue.require_azure_storage(module)
    p = module.params
    if p["catch_up"] and p["manifest_path"]:
        module.fail_json(
            msg="give manifest_path (one set) or catch_up: true with backup_dir (all pending sets), not both"
        )
    store = _module_glue.open_store(module, progress=True)
    options = dict(
        check_mode=module.check_mode,
        **_module_glue.options(p, "access_tier", "tags", "block_size_mb", "max_concurrency", host="host_label"),
    )
    if p["catch_up"]:
        result = _module_glue.run_module(
            module,
            store.redact,
            store.catch_up,
            p["backup_dir"],
            **_module_glue.options(p, "database", "verified_only"),
            **options,
        )
    else:
        result = _module_glue.run_module(module, store.redact, store.upload_backup_set, p["manifest_path"], **options)
    _module_glue.warn(module, result.pop("warnings", []))
    _module_glue.fail_on_failures(
        module,
        result,
        "backup set(s) not uploaded",
        lambda f: "%s/%s: %s" % (f["database"], f["backup_id"], f["error"]),
    )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
