#!/usr/bin/python
# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: restore
short_description: Restore a verified backup set, beside the live database, then swap
author:
  - INSA platform team (@insa)
version_added: 0.1.0
description:
  - Refuses to run without O(confirm=true).
  - Verifies the set first (the signature and the sha256 of every file); a set that fails is never restored.
    The restored copy is then compared with the manifest (every table, its rows) before anything is swapped.
  - With a trust store (O(trusted_signers_file), O(trusted_signers)) the set's manifest must be signed by a key trusted
    for the host it claims; an unsigned set is restored only with O(allow_unsigned=true). O(signing_key_file) signs the
    safety backup.
  - Takes a safety backup of the existing target database unless O(safety_backup=false).
  - With O(strategy=beside) (default) restores into C(<target>__restore_<id>) - C(CREATE EXTENSION timescaledb VERSION <manifest version>),
    C(timescaledb_pre_restore()), C(pg_restore), C(timescaledb_post_restore()), C(ANALYZE) - and compares counts and hypertable
    ranges with the manifest. Only then it swaps - ends the sessions, renames the old database to C(<target>__pre_restore_<id>)
    and the restored one to C(<target>). A failure at any earlier step leaves the original database untouched and removes
    the half-restored copy.
  - With O(strategy=in_place) the target is dropped (after the safety backup) and restored directly - for hosts without room
    for two copies.
  - On a fresh server the roles of the backup's cluster are created first (without passwords), so ownership and grants restore intact.
extends_documentation_fragment: [insa.timescaledb_backup.postgres, insa.timescaledb_backup.signing,
  insa.timescaledb_backup.signing.TRUST, insa.timescaledb_backup.signing.ALLOW_UNSIGNED, insa.timescaledb_backup.encryption.IDENTITY,
  insa.timescaledb_backup.attributes, insa.timescaledb_backup.attributes.check_mode, insa.timescaledb_backup.attributes.no_diff]
attributes:
  check_mode:
    details: Verifies the set and reports what would happen; nothing is created, renamed or dropped.
  idempotent:
    support: none
    details: Each run restores again.
options:
  confirm:
    description: Must be V(true). A restore replaces a database; nothing happens without it.
    type: bool
    default: false
  backup_dir:
    description: Directory of backup sets.
    type: path
    required: true
  database:
    description: Database the backup was taken of (its folder in O(backup_dir)).
    type: str
    required: true
  backup_id:
    description:
      - Set to restore, or V(latest) - the newest set whose manifest is intact, never a safety backup (a safety
        backup is restored only by its id).
    type: str
    default: latest
  target:
    description: Database to restore as; defaults to O(database).
    type: str
  strategy:
    description: V(beside) restores next to the target and swaps; V(in_place) drops the target first (after the safety backup).
    type: str
    choices: [beside, in_place]
    default: beside
  safety_backup:
    description: Back up the existing target before replacing it (into O(safety_backup_dir)).
    type: bool
    default: true
  safety_backup_dir:
    description:
      - Directory of backup sets the safety backup goes to; defaults to O(backup_dir).
      - restore.yml keeps the sets it downloaded from another host in a folder of their own (backup ids are times,
        so two hosts' sets may share a name) and gives this host's own backup directory here.
    type: path
  keep_replaced:
    description: Keep the replaced database as C(<target>__pre_restore_<id>); V(false) drops it after a successful swap.
    type: bool
    default: true
  restore_roles:
    description:
      - Create the backup's roles that are missing on this server before restoring, without passwords and without
        SUPERUSER, REPLICATION or BYPASSRLS (each such attribute left out is named in RV(warnings_roles)).
      - Roles that exist on this server are never changed - no attributes, settings or memberships from an old backup
        come back (a revoked SUPERUSER stays revoked). Only the settings a role had in the restored database itself
        (C(ALTER ROLE ... IN DATABASE ... SET)) are given back, and never for a superuser.
      - The globals file is parsed, never run through C(psql). A statement this collection does not understand (a
        psql meta-command such as C(\!), a function, anything but roles, memberships, role settings and comments)
        refuses the whole file before anything is changed; set V(false) to restore without roles.
    type: bool
    default: true
  jobs:
    description:
      - Parallel C(pg_restore) workers for the bulk of the data and the indexes. The TimescaleDB catalog and the schema are always
        restored serially first (C(pg_restore -j) alone is unsafe for TimescaleDB's catalog, timescale/timescaledb#698).
      - V(0) - one worker per core of the database host, at most 8 (what C(restore.yml) uses by default).
    type: int
    default: 1
  host_label:
    description: Host name recorded in the safety backup's manifest.
    type: str
seealso:
  - module: insa.timescaledb_backup.verify
  - module: insa.timescaledb_backup.blob_download
"""

EXAMPLES = r"""
- name: Restore last night's backup of iot (beside, then swap)
  insa.timescaledb_backup.restore:
    confirm: true
    backup_dir: /var/backups/tsdb
    database: iot
    backup_id: latest
    login_password: "{{ vault_tsdb_password }}"
  register: restored

- name: Host without room for two copies
  insa.timescaledb_backup.restore:
    confirm: true
    backup_dir: /var/backups/tsdb
    database: iot
    backup_id: 20261127T020000Z
    strategy: in_place
"""

RETURN = r"""
signature:
  description: The restored set's signature status (C(status), C(key_id), C(signer_host)); see M(insa.timescaledb_backup.verify).
  returned: success
  type: dict
  sample: {"status": "trusted", "key_id": "3f2a9c0d11e4b5a6", "signer_host": "db01"}
decrypted:
  description:
    - The files of an encrypted set that were decrypted with O(identity) before the restore (the set was here only in
      its encrypted form, as M(insa.timescaledb_backup.blob_download) leaves it without an identity); empty otherwise.
  returned: success
  type: list
  elements: path
jobs:
  description: The C(pg_restore) workers used (O(jobs), or for V(0) the number the host's cores gave).
  returned: success
  type: int
  sample: 2
backup_id:
  description: The restored set.
  returned: always
  type: str
target:
  description: The database that now holds the restored data.
  returned: always
  type: str
replaced_database:
  description: Where the previous database went (null when dropped or when there was none).
  returned: success
  type: str
safety_backup:
  description: The safety backup taken before replacing (backup_id, path, manifest_path).
  returned: success
  type: dict
timings:
  description: Seconds spent verifying the set, in pg_restore, ANALYZE, the whole restore, the safety backup (beside the
    restore) and the swap.
  returned: success
  type: dict
differences:
  description: Differences between the restored data and the manifest (empty on success).
  returned: success
  type: list
  elements: dict
tables:
  description: Row counts of the restored database.
  returned: success
  type: dict
warnings_roles:
  description: Roles created, and everything of the globals file that was left alone (existing roles, privileged attributes, tablespaces) with the reason.
  returned: success
  type: list
  elements: str
"""

import os
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import (
    _encryption,
    _lock,
    _module_glue,
    _pg,
    _restore,
    _signing,
    _verify,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._pg import postgres_common_argument_spec


def latest_backup_id(module, backup_dir, database):
    """The newest complete set of database, never a safety backup (that one is restored only by its id)."""
    local = mf.list_local(backup_dir, database)
    entry = mf.select_backup(local)
    if entry is None:
        safety = mf.select_backup(local, include_safety=True)
        module.fail_json(
            msg="no complete backup of %s in %s%s"
            % (
                database,
                backup_dir,
                "; only the safety backup %s, which is restored only by its id (backup_id: %s)"
                % (safety["backup_id"], safety["backup_id"])
                if safety
                else "",
            )
        )
    return entry["backup_id"]


def verified_set(module, params, backup_dir, database, backup_id, signing):
    """The set and its manifest, once the set passed a checksum-level verification (its signature
    included, by ``signing``). The signature comes first: a refused set leaves no trace, not
    even a verification record."""
    found = _module_glue.run_module(module, None, _restore.backup_set_for, backup_dir, database, backup_id, signing)
    # Checksum level: sha256 of every file against the signed manifest. Reading the whole archive
    # once more (archive level) would repeat what pg_restore does next, and the restored copy is
    # compared with the manifest (every table, its rows) before any swap: a failure there leaves
    # the live database untouched as well.
    check = _module_glue.run_module(
        module, None, _verify.verify, params, backup_dir, database, backup_id, level="checksum", signing=signing
    )
    if not check["ok"]:
        module.fail_json(
            msg="backup %s of %s failed verification, nothing was restored: %s"
            % (backup_id, database, "; ".join(f["message"] for f in check["failures"])),
            failures=check["failures"],
            error_kind="integrity",
        )
    return found


def exit_check_mode(module, params, backup_id, target):
    p = module.params
    conn = _module_glue.run_module(module, None, _pg.connect, params)
    exists = _pg.database_exists(conn, target)
    conn.close()
    module.exit_json(
        changed=True,
        backup_id=backup_id,
        target=target,
        msg="would restore %s into %s (%s)%s"
        % (
            backup_id,
            target,
            p["strategy"],
            ", after a safety backup of the existing database" if exists and p["safety_backup"] else "",
        ),
    )


def restore(module, params, bset, manifest, target, signing):
    """The restore's result, and the audit lines it wrote."""
    p = module.params
    audit_lines = []

    def audit(action, **fields):
        audit_lines.append(dict(action=action, **fields))

    result = _module_glue.run_module(
        module,
        None,
        _restore.restore_backup,
        params,
        bset,
        manifest,
        target,
        roles=p["restore_roles"],
        audit=audit,
        progress=_module_glue.progress_factory(module),
        backup_dir=p["safety_backup_dir"] or p["backup_dir"],
        signing=signing,
        **_module_glue.options(p, "strategy", "safety_backup", "keep_replaced", "jobs", "host_label"),
    )
    return result, audit_lines


def main():
    argument_spec = postgres_common_argument_spec()
    argument_spec.update(
        confirm=dict(type="bool", default=False),
        backup_dir=dict(type="path", required=True),
        database=dict(type="str", required=True),
        backup_id=dict(type="str", default="latest"),
        target=dict(type="str"),
        strategy=dict(type="str", choices=["beside", "in_place"], default="beside"),
        safety_backup=dict(type="bool", default=True),
        safety_backup_dir=dict(type="path"),
        keep_replaced=dict(type="bool", default=True),
        restore_roles=dict(type="bool", default=True),
        jobs=dict(type="int", default=1),
        host_label=dict(type="str"),
    )
    argument_spec.update(_signing.signing_argument_spec(allow_unsigned=True))
    argument_spec.update(_encryption.identity_argument_spec())
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    p = module.params
    if not p["confirm"]:
        module.fail_json(
            msg="restore replaces database %s; nothing was done. Set confirm: true to go ahead "
            "(a safety backup is taken first unless safety_backup: false)." % (p["target"] or p["database"])
        )
    _module_glue.require_psycopg2(module)
    database = _module_glue.run_module(module, None, mf.validate_database_name, p["database"])
    target = _module_glue.run_module(module, None, mf.validate_database_name, p["target"] or database)
    # Held until the module ends: no prune removes the set between choosing it and restoring it.
    _module_glue.run_module(
        module, None, _lock.hold_reading_folder, os.path.join(p["backup_dir"], mf.database_segment(database))
    )
    backup_id = p["backup_id"]
    if backup_id == "latest":
        backup_id = latest_backup_id(module, p["backup_dir"], database)
    _module_glue.run_module(module, None, mf.validate_backup_id, backup_id)
    params = _module_glue.connection_params(module)
    signing = _module_glue.signing_policy(module)
    started = time.monotonic()
    bset, manifest = verified_set(module, params, p["backup_dir"], database, backup_id, signing)
    if module.check_mode:
        if _encryption.missing_plaintext(bset, manifest):
            _module_glue.run_module(
                module, None, _encryption.require_identity, bset, manifest, p["identity"], "restore"
            )
        exit_check_mode(module, params, backup_id, target)
    # A set downloaded in its encrypted form: decrypted here, each file checked against the manifest.
    decrypted = _module_glue.run_module(module, None, _encryption.open_set, bset, manifest, p["identity"], "restore")
    verify_seconds = round(time.monotonic() - started, 3)
    result, audit_lines = restore(module, params, bset, manifest, target, signing)
    result["timings"]["verify_seconds"] = verify_seconds
    if result.get("differences"):
        module.fail_json(
            msg="restored %s differs from the manifest: %s" % (target, _restore.describe_diffs(result["differences"])),
            differences=result["differences"],
        )
    module.exit_json(
        changed=True,
        backup_id=backup_id,
        target=target,
        strategy=p["strategy"],
        replaced_database=result.get("replaced_database"),
        safety_backup=result.get("safety_backup"),
        timings=result["timings"],
        jobs=result["jobs"],
        differences=result["differences"],
        tables=result["facts"]["tables"],
        warnings_roles=result["warnings"],
        audit=audit_lines,
        signature=_restore.check_trusted(manifest, signing, bset.manifest),
        decrypted=decrypted,
    )


if __name__ == "__main__":
    main()
