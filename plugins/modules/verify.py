#!/usr/bin/python
# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: verify
short_description: Prove that a backup set is intact and restorable
author:
  - INSA platform team (@insa)
version_added: 0.1.0
description:
  - Checks a backup set written by M(insa.timescaledb_backup.dump) at one of three levels, each including the ones before it.
  - V(checksum) - the manifest is intact (its own digest), belongs to this archive (backup id, database), and the archive's
    size and sha256 match it; a legacy C(.md5) beside the archive, as the old shell scripts wrote, is checked too.
  - V(archive) - C(pg_restore --list) reads the table of contents and every table of the manifest is in it; then
    C(pg_restore) reads the whole archive, decompressing every block.
  - V(restore) - restores into a scratch database C(<db>__verify_<id>), compares per-table row counts and hypertable chunk
    counts and time ranges with the manifest, and drops the scratch database afterwards, also when something fails.
  - The result is recorded beside the set (C(<id>.verify.json)); M(insa.timescaledb_backup.prune) keeps the newest verified set.
  - Fails when any check fails, listing each failed check with what was expected and what was found.
  - Check C(signature) - with a trust store (O(trusted_signers_file), O(trusted_signers)), fails for a manifest the
    signing policy refuses (unsigned, a key of another host, an unknown key, a bad signature); without one it passes
    and says C(unsigned, no trust store).
  - An encrypted set held here only in its encrypted form (downloaded without an identity) is checked at level
    C(checksum) without any key - C(encrypted archive sha256) and size against the manifest's record of what is stored.
    The levels C(archive) and C(restore) decrypt it first with O(identity) (check C(decryption)) - the plaintext
    replaces the encrypted form in the set's folder, RV(decrypted), C(changed=true) - and fail with a message saying
    so without one.
extends_documentation_fragment: [insa.timescaledb_backup.postgres, insa.timescaledb_backup.signing.TRUST,
  insa.timescaledb_backup.signing.ALLOW_UNSIGNED, insa.timescaledb_backup.encryption.IDENTITY,
  insa.timescaledb_backup.attributes, insa.timescaledb_backup.attributes.check_mode, insa.timescaledb_backup.attributes.no_diff,
  insa.timescaledb_backup.attributes.idempotent]
attributes:
  check_mode:
    details:
      - Verification only reads; in check mode the result is not recorded and level V(restore) is lowered to V(archive).
      - A set held only encrypted is not decrypted in check mode - O(identity) is checked against its recipients and
        the set verified at level V(checksum).
  idempotent:
    details: Verifying reads the set; only the decryption of a set held only encrypted changes it, once.
options:
  backup_dir:
    description: Directory of backup sets.
    type: path
  database:
    description: Database whose set is verified.
    type: str
  backup_id:
    description:
      - Backup id, or V(latest) for the newest set of O(database) whose manifest is intact (safety backups only by id).
    type: str
    default: latest
  level:
    description: How deep to verify.
    type: str
    choices: [checksum, archive, restore]
    default: archive
  jobs:
    description: Parallel restore workers for O(level=restore) (catalog and schema are always restored serially first).
    type: int
    default: 1
  legacy_path:
    description:
      - A backup of the old shell scripts (for example C(iot_20261001.sql.gz)) with its C(.md5) beside it; only its md5 is
        checked. Mutually exclusive with O(backup_dir).
    type: path
seealso:
  - module: insa.timescaledb_backup.dump
"""

EXAMPLES = r"""
- name: Verify last night's backup by restoring it into a scratch database
  insa.timescaledb_backup.verify:
    backup_dir: /var/backups/tsdb
    database: iot
    backup_id: latest
    level: restore
    login_password: "{{ vault_tsdb_password }}"

- name: Check an old script backup against its md5
  insa.timescaledb_backup.verify:
    legacy_path: /var/backups/postgres/iot_20261001.sql.gz
"""

RETURN = r"""
decrypted:
  description: The files of a set held only encrypted that were decrypted with O(identity) (their encrypted form removed).
  returned: when something was decrypted
  type: list
  elements: path
ok:
  description: Whether every check passed (the module fails otherwise).
  returned: always
  type: bool
backup_id:
  description: The verified set.
  returned: when O(backup_dir) is used
  type: str
level:
  description: The level verified.
  returned: always
  type: str
checks:
  description: Every check with its result, message, expected and found values.
  returned: always
  type: list
  elements: dict
failures:
  description: The failed checks.
  returned: always
  type: list
  elements: dict
signature:
  description:
    - The manifest's signature status - C(status) (V(trusted), V(unsigned), V(unknown-key), V(other-host),
      V(bad-signature), or without a trust store V(unsigned, no trust store) / V(signed, no trust store)), C(key_id),
      C(signer_host) (the host the key is trusted for).
  returned: when O(backup_dir) is used and the manifest is readable
  type: dict
  sample: {"status": "trusted", "key_id": "3f2a9c0d11e4b5a6", "signer_host": "db01"}
restore_timings:
  description: Timings of the scratch restore.
  returned: when O(level=restore)
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import (
    _encryption,
    _module_glue,
    _signing,
    _verify,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._pg import postgres_common_argument_spec


def check_mode_level(module, backup_dir, database, backup_id, level):
    """In check mode a set held only encrypted is not decrypted (that writes its plaintext): the
    identity is checked against its recipients and the set at level checksum."""
    if not module.check_mode or level == "checksum":
        return level
    try:
        manifest = mf.read_manifest(mf.BackupSet(backup_dir, database, backup_id).manifest)
    except (mf.ManifestError, OSError):
        return level  # the verification says what is wrong with it
    bset = mf.BackupSet.from_manifest(backup_dir, manifest)
    if not _encryption.missing_plaintext(bset, manifest):
        return level
    _module_glue.run_module(
        module, None, _encryption.require_identity, bset, manifest, module.params["identity"], level
    )
    module.warn(
        "check mode: backup %s is held here only encrypted and is not decrypted; checked at level checksum" % backup_id
    )
    return "checksum"


def latest_id(module, backup_dir, database):
    entry = mf.select_backup(mf.list_local(backup_dir, database))
    if entry is None:
        module.fail_json(
            msg="no complete backup of %s in %s (safety backups are verified by id)" % (database, backup_dir)
        )
    return entry["backup_id"]


def main():
    argument_spec = postgres_common_argument_spec()
    argument_spec.update(
        backup_dir=dict(type="path"),
        database=dict(type="str"),
        backup_id=dict(type="str", default="latest"),
        level=dict(type="str", choices=list(_verify.LEVELS), default="archive"),
        jobs=dict(type="int", default=1),
        legacy_path=dict(type="path"),
    )
    argument_spec.update(_signing.signing_argument_spec(sign=False, allow_unsigned=True))
    argument_spec.update(_encryption.identity_argument_spec())
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        mutually_exclusive=[("backup_dir", "legacy_path")],
        required_one_of=[("backup_dir", "legacy_path")],
        required_by={"backup_dir": "database"},
    )
    p = module.params
    if p["legacy_path"]:
        result = _module_glue.run_module(module, None, _verify.verify_legacy, p["legacy_path"])
    else:
        _module_glue.run_module(module, None, mf.validate_database_name, p["database"])
        backup_id = p["backup_id"]
        if backup_id == "latest":
            backup_id = latest_id(module, p["backup_dir"], p["database"])
        _module_glue.run_module(module, None, mf.validate_backup_id, backup_id)
        level = p["level"]
        if level != "checksum":
            _module_glue.require_psycopg2(module)
        if module.check_mode and level == "restore":
            level = "archive"
        level = check_mode_level(module, p["backup_dir"], p["database"], backup_id, level)
        result = _module_glue.run_module(
            module,
            None,
            _verify.verify,
            _module_glue.connection_params(module),
            p["backup_dir"],
            p["database"],
            backup_id,
            level=level,
            jobs=p["jobs"],
            record=not module.check_mode,
            progress=_module_glue.progress_factory(module),
            signing=_module_glue.signing_policy(module),
            identity=None if module.check_mode else p["identity"],
        )
        result["changed"] = bool(result.get("decrypted"))
    if not result["ok"]:
        failures = [f for f in result["checks"] if not f["ok"]]
        module.fail_json(
            msg="verification failed: " + "; ".join("%s: %s" % (f["check"], f["message"]) for f in failures),
            **{k: v for k, v in result.items() if k not in ("ok",)},
            ok=False,
        )
    result.setdefault("failures", [])
    result.setdefault("changed", False)  # the legacy check, and the checks that decrypted nothing
    module.exit_json(**result)


if __name__ == "__main__":
    main()
