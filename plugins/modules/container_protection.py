#!/usr/bin/python
# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: container_protection
short_description: Protect the backup container - versioning, soft delete, version-level WORM immutability
author:
  - INSA platform team (@insa)
version_added: 0.1.0
description:
  - Manages, through Azure Resource Manager (azure-mgmt-storage), what keeps history from being deleted or
    overwritten in the storage account O(account_name) and its container O(container) - blob versioning, blob soft
    delete and container soft delete (the account's blob service properties), and a version-level time-based
    retention (WORM) policy on the container.
  - Only the settings given are managed; the others are left as they are. Only the blob service properties the task
    changes are sent (Azure keeps the others, such as CORS or the change feed).
  - Steps run in the order Azure needs them - versioning first (version-level immutability requires it), then the
    container's immutability policy, then the container's migration to version-level immutability (Azure requires
    a container policy for it, refuses it under a legal hold, and it cannot be undone), the lock last.
  - An unlocked policy already protects against deletes and overwrites but can be shortened or deleted; a locked one
    cannot be unlocked, shortened or deleted, only extended (five times at most). The module never deletes a policy
    and refuses to shorten a locked one.
  - A migration Azure has not finished within five minutes is reported in RV(pending); run the module again later.
extends_documentation_fragment: [insa.timescaledb_backup.azure, insa.timescaledb_backup.azure.arm,
  insa.timescaledb_backup.attributes, insa.timescaledb_backup.attributes.check_mode, insa.timescaledb_backup.attributes.idempotent]
attributes:
  check_mode:
    details: Reads the account's and the container's settings and reports the steps; writes nothing.
  diff_mode:
    support: full
    details: Returns the protection before and after.
  idempotent:
    details: Settings already in place give C(changed=false) and no write request.
options:
  versioning:
    description:
      - Blob versioning of the account - an overwritten or deleted blob stays as a previous version. Needed for
        O(immutability_days). V(false) is refused while the container has version-level immutability.
    type: bool
  delete_retention_days:
    description:
      - Blob soft delete of the account - a deleted blob (or version) can be undeleted for this many days (1 to 365).
        V(0) turns it off. Permanent delete of soft-deleted versions is turned off with it.
    type: int
  container_delete_retention_days:
    description: Container soft delete of the account - a deleted container can be restored for this many days (1 to 365). V(0) turns it off.
    type: int
  immutability_days:
    description:
      - The container's default version-level time-based retention, in days since each blob version was written
        (1 to 146000). A blob version cannot be deleted or overwritten before - by anyone, lifecycle rules included.
      - Migrates the container to version-level immutability when it is not yet (cannot be undone).
    type: int
  immutability_locked:
    description:
      - V(true) locks the policy (cannot be undone). V(false) with a locked policy fails. Unset leaves the lock as it is.
    type: bool
notes:
  - The identity needs C(Microsoft.Storage/storageAccounts/blobServices/*) and
    C(Microsoft.Storage/storageAccounts/blobServices/containers/*) on the account (for example Storage Account
    Contributor). Data-plane roles, SAS tokens and account keys cannot change these settings.
  - Immutability blocks lifecycle deletes too - a dump set that a delete rule selects goes only once its versions'
    retention has run out.
  - The container must exist (M(insa.timescaledb_backup.blob_upload) with O(create_container=true) creates it).
seealso:
  - module: insa.timescaledb_backup.lifecycle_policy
  - module: insa.timescaledb_backup.backup_info
  - name: Immutable storage for Azure Blob Storage
    description: WORM policies, versioning and their limits.
    link: https://learn.microsoft.com/azure/storage/blobs/immutable-storage-overview
"""

EXAMPLES = r"""
- name: History forever - versioning, soft delete, ten-year version-level WORM (unlocked while testing)
  insa.timescaledb_backup.container_protection:
    auth_mode: entra
    subscription_id: 00000000-0000-0000-0000-000000000000
    resource_group: rg-backups
    account_name: insabackups
    container: tsdb-backups
    versioning: true
    delete_retention_days: 30
    container_delete_retention_days: 30
    immutability_days: 3650
  diff: true

- name: Lock it once tested (cannot be undone)
  insa.timescaledb_backup.container_protection:
    arm_access_token: "{{ arm_token }}"
    subscription_id: 00000000-0000-0000-0000-000000000000
    resource_group: rg-backups
    account_name: insabackups
    container: tsdb-backups
    immutability_locked: true
"""

RETURN = r"""
protection:
  description:
    - The protection after the run (or as it would be, in check mode) - versioning, delete_retention_days,
      allow_permanent_delete, container_delete_retention_days (0 is off), version_level_immutability,
      migration_state, immutability_days, immutability_state (V(Unlocked), V(Locked) or null), legal_hold.
  returned: always
  type: dict
  sample:
    versioning: true
    delete_retention_days: 30
    allow_permanent_delete: false
    container_delete_retention_days: 30
    version_level_immutability: true
    migration_state: Completed
    immutability_days: 3650
    immutability_state: Unlocked
    legal_hold: false
actions:
  description: What was (or would be, in check mode) done, in order.
  returned: always
  type: list
  elements: str
pending:
  description: Steps still waiting on a migration Azure has not finished; run the module again.
  returned: always
  type: list
  elements: str
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import (
    _azure,
    _lifecycle,
    _module_glue,
    _protection,
)


def main():
    argument_spec = _azure.azure_common_argument_spec()
    argument_spec.update(_lifecycle.arm_argument_spec())
    argument_spec.update(_protection.protection_argument_spec())
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    p = module.params
    _module_glue.require_azure_mgmt_storage(module)
    redact = _azure.Redactor([p.get(k) for k in _azure.SECRET_KEYS] + [p["arm_access_token"]])
    container = p["container"] or os.environ.get(_azure.ENV_FALLBACK["container"])
    if not container:
        module.fail_json(msg="container is required (or set AZURE_STORAGE_CONTAINER)", error_kind="config")
    container = _module_glue.run_module(module, redact, _azure.validate_container_name, container)
    manager = _module_glue.arm_manager(module, redact, _lifecycle.ProtectionManager)
    result = _module_glue.run_module(
        module,
        redact,
        _lifecycle.apply_protection,
        manager,
        container,
        p,
        check_mode=module.check_mode,
    )
    _module_glue.warn(module, result.pop("warnings"))
    diff = result.pop("diff")
    if module._diff:
        result["diff"] = diff
    module.exit_json(**result)


if __name__ == "__main__":
    main()
