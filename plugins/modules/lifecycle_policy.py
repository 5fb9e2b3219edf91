#!/usr/bin/python
# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: lifecycle_policy
short_description: Tier backup blobs to Cool / Cold / Archive by age; by default never delete
author:
  - INSA platform team (@insa)
version_added: 0.1.0
description:
  - Rules per part of the blob layout - tier to Cool, Cold and Archive after N days since the blob was last
    modified, and optionally delete dump sets. By default Cool after 30 days, Archive after 365, never delete.
  - Dump sets and history get separate rules (O(rules[].target)). The history archive
    (C(<container>/<prefix>/history/)) may be the only copy of dropped chunks - no delete rule may reach it. A
    lifecycle rule's prefixMatch is a plain, case-sensitive string prefix of C(<container>/<blob name>) and a rule
    without one matches the whole account, so a rule on C(<container>/) or C(<container>/<prefix>/) covers history.
    A rule of this task that would delete history objects (base blob, snapshot or version delete) is refused before
    anything is sent; a policy that would still hold such a rule of someone else's is refused with the rule's name
    (RV(history_violations) lists the current ones).
  - Tiering history stays allowed, with a warning of what it costs history_restore - higher read charges in Cool
    and Cold, and in Archive no reading at all until the objects are rehydrated (hours).
  - Day ordering is validated (cool < cold < archive < delete). Steps that move or delete a blob before the
    end of a tier's minimum billing period (Cool 30, Cold 90, Archive 180 days) give a warning about the early
    deletion charge.
  - O(mode=management_policy) manages the storage account's lifecycle management policy through Azure Resource
    Manager (azure-mgmt-storage). Only the rules named here are changed; other rules of the account's policy
    are kept unless O(purge_rules=true). Azure then applies the policy once a day.
  - O(mode=data_plane) is the fallback for accounts where only a SAS token or data-plane roles are available -
    it lists the blobs under each rule's prefix and sets the tier each blob's age calls for, now. It only ever
    moves blobs to a colder tier, skips blobs being rehydrated and refuses O(rules[].delete_after_days). Run it
    regularly (for example from the backup timer).
extends_documentation_fragment: [insa.timescaledb_backup.azure, insa.timescaledb_backup.azure.arm,
  insa.timescaledb_backup.attributes, insa.timescaledb_backup.attributes.check_mode, insa.timescaledb_backup.attributes.idempotent]
attributes:
  check_mode:
    details: Reads the current policy (or the blobs) and reports the change; writes nothing.
  diff_mode:
    support: full
    details: O(mode=management_policy) returns the policy's rules before and after.
  idempotent:
    details: Rules already in place, or blobs already in their tier, give C(changed=false).
options:
  mode:
    description: Where to apply the rules.
    type: str
    choices: [management_policy, data_plane]
    default: management_policy
  state:
    description:
      - V(present) puts the rules in place; V(absent) removes the rules named in O(rules) from the policy
        (the whole policy when no rule is left). V(absent) needs O(mode=management_policy).
    type: str
    choices: [present, absent]
    default: present
  rules:
    description:
      - Lifecycle rules. Without it, one rule of O(rules[].target=prefix) for O(container) and O(prefix) with the
        defaults below.
    type: list
    elements: dict
    suboptions:
      name:
        description:
          - Rule name (letters and digits). Defaults to one derived from container, prefix and target.
          - A V(dumps) rule for more than ten hosts (Azure takes ten prefixes per rule) becomes several rules,
            C(<name>), C(<name>2), C(<name>3) ...; the parts left over when hosts go are removed.
        type: str
      target:
        description:
          - What the rule matches (block blobs only).
          - V(dumps) - the dump sets of O(rules[].hosts), C(<container>/<prefix>/<host>/) each.
          - V(history) - the history archive, C(<container>/<prefix>/history/). No delete.
          - V(prefix) - everything under C(<container>/<prefix>/), history included. No delete unless the prefix is
            elsewhere than the history's (for example C(drill)).
        type: str
        choices: [prefix, dumps, history]
        default: prefix
      hosts:
        description: Host labels of the dump sets (the blob names' C(<host>) part), for O(rules[].target=dumps).
        type: list
        elements: str
      prefix:
        description: Blob name prefix within O(container); defaults to O(prefix), which is also where history lives.
        type: str
      cool_after_days:
        description:
          - Days after the last modification to move blobs to Cool.
          - A rule that sets none of O(rules[].cool_after_days), O(rules[].cold_after_days),
            O(rules[].archive_after_days) and O(rules[].delete_after_days) gets the defaults - Cool after 30 days,
            Archive after 365, never delete. A rule that sets any of them gets only those.
        type: int
      cold_after_days:
        description: Days after the last modification to move blobs to Cold.
        type: int
      archive_after_days:
        description: Days after the last modification to move blobs to Archive.
        type: int
      archive_after_tier_change_days:
        description:
          - Do not archive a blob again before this many days after its last tier change - a blob rehydrated
            for a restore is not sent straight back to Archive. V(0) drops the condition.
        type: int
        default: 7
      delete_after_days:
        description:
          - Days after the last modification to delete blobs. Unset - the default - keeps them forever.
          - Refused for a rule that reaches the history archive. Management policy only.
        type: int
      previous_versions_delete_after_days:
        description:
          - With blob versioning on, a deleted dump blob stays as a previous version (and is billed) until this many
            days after it was written (C(version.delete.daysAfterCreationGreaterThan)). Unset keeps previous
            versions. Refused for a rule that reaches the history archive. Management policy only.
        type: int
      enabled:
        description: Whether the rule is active.
        type: bool
        default: true
  purge_rules:
    description: Remove the policy's rules that are not in O(rules) (other teams' rules too).
    type: bool
    default: false
notes:
  - O(mode=data_plane) is tested against Azurite.
  - Other sites' history under other prefixes of the same account is not known here; run the module for each prefix.
seealso:
  - module: insa.timescaledb_backup.container_protection
  - module: insa.timescaledb_backup.blob_upload
  - name: Lifecycle management policy
    description: Azure documentation of lifecycle management.
    link: https://learn.microsoft.com/azure/storage/blobs/lifecycle-management-overview
"""

EXAMPLES = r"""
- name: Default policy - Cool after 30 days, Archive after 365, never delete
  insa.timescaledb_backup.lifecycle_policy:
    auth_mode: entra
    subscription_id: 00000000-0000-0000-0000-000000000000
    resource_group: rg-backups
    account_name: insabackups
    container: tsdb-backups

- name: Dumps and history apart, a drill prefix, with a diff - authenticated by a Resource Manager token obtained elsewhere
  insa.timescaledb_backup.lifecycle_policy:
    arm_access_token: "{{ arm_token }}"
    subscription_id: 00000000-0000-0000-0000-000000000000
    resource_group: rg-backups
    account_name: insabackups
    container: tsdb-backups
    rules:
      - name: tsdbdumps
        target: dumps
        hosts: [db01.example.com, db02.example.com]
        prefix: timescaledb
        cool_after_days: 30
        cold_after_days: 120
        archive_after_days: 365
        delete_after_days: 3650
        previous_versions_delete_after_days: 3660
      - name: tsdbhistory
        target: history
        prefix: timescaledb
        cool_after_days: 30
      - name: tsdbdrill
        prefix: drill
        cool_after_days: 7
        delete_after_days: 60
  diff: true

- name: Same rules from the data plane (SAS only)
  insa.timescaledb_backup.lifecycle_policy:
    mode: data_plane
    auth_mode: sas
    account_url: https://insabackups.blob.core.windows.net
    sas_token: "{{ vault_backup_sas }}"
    container: tsdb-backups
"""

RETURN = r"""
rules:
  description: The rules of the policy after the run (or as they would be, in check mode), in Azure's REST shape.
  returned: O(mode=management_policy)
  type: list
  elements: dict
  sample:
    - name: tsdbbackuptsdbbackupstimescaledb
      enabled: true
      type: Lifecycle
      definition:
        filters: {blobTypes: [blockBlob], prefixMatch: [tsdb-backups/timescaledb/]}
        actions:
          baseBlob:
            tierToCool: {daysAfterModificationGreaterThan: 30}
            tierToArchive: {daysAfterModificationGreaterThan: 365, daysAfterLastTierChangeGreaterThan: 7}
history_violations:
  description:
    - The rules of the current policy whose delete action reaches the history archive - rule, enabled, actions,
      prefix_match. A run that would leave one in the policy fails and names it.
  returned: O(mode=management_policy)
  type: list
  elements: dict
  sample:
    - {rule: otherteamcleanup, enabled: true, actions: [baseBlob.delete], prefix_match: [tsdb-backups/]}
changes:
  description: Blobs whose tier was (or would be) changed, with name, url, from, to and rule.
  returned: O(mode=data_plane)
  type: list
  elements: dict
examined:
  description: Blobs looked at.
  returned: O(mode=data_plane)
  type: int
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _azure, _lifecycle, _module_glue
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _lifecycle_rules as rules_


def management_policy(module, redact, rules, settings_list, container, prefix):
    p = module.params
    hint = "; with a SAS token or account key use mode: data_plane"
    manager = _module_glue.arm_manager(module, redact, _lifecycle.PolicyManager, hint=hint)
    result = _module_glue.run_module(
        module,
        redact,
        _lifecycle.apply_management_policy,
        manager,
        rules,
        state=p["state"],
        purge=p["purge_rules"],
        check_mode=module.check_mode,
        container=container,
        prefix=prefix,
        families=rules_.families(settings_list),
    )
    diff = result.pop("diff")
    if module._diff:
        result["diff"] = diff
    return result


def data_plane(module, redact, settings_list):
    p = module.params
    if p["state"] == "absent":
        module.fail_json(msg="state: absent applies to mode: management_policy; the data plane keeps no rules")
    store = _module_glue.open_store(module, redact, check_container=True)
    return _module_glue.run_module(
        module, store.redact, _lifecycle.apply_data_plane, store, settings_list, check_mode=module.check_mode
    )


def main():
    argument_spec = _azure.azure_common_argument_spec()
    argument_spec.update(_lifecycle.arm_argument_spec())
    argument_spec.update(
        mode=dict(type="str", choices=["management_policy", "data_plane"], default="management_policy"),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        rules=dict(type="list", elements="dict", options=rules_.rule_argument_spec()),
        purge_rules=dict(type="bool", default=False),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    p = module.params
    if p["mode"] == "data_plane":
        _module_glue.require_azure_storage(module)
    else:
        _module_glue.require_azure_mgmt_storage(module)
    secrets = [p.get(k) for k in _azure.SECRET_KEYS] + [p["arm_access_token"]]
    redact = _azure.Redactor(secrets)
    container = p["container"] or os.environ.get(_azure.ENV_FALLBACK["container"])
    if not container:
        module.fail_json(msg="container is required (or set AZURE_STORAGE_CONTAINER)")
    prefix = _module_glue.run_module(module, redact, _azure.validate_prefix, p["prefix"])
    rules, settings_list, warnings = _module_glue.run_module(
        module, redact, rules_.prepare_rules, p["rules"], container, prefix, state=p["state"]
    )
    _module_glue.warn(module, warnings)
    if p["mode"] == "management_policy":
        result = management_policy(module, redact, rules, settings_list, container, prefix)
    else:
        result = data_plane(module, redact, settings_list)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
