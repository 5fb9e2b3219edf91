#!/usr/bin/python
# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: dump
short_description: Back up one TimescaleDB/PostgreSQL database into a verified backup set
author:
  - INSA platform team (@insa)
version_added: 0.1.0
description:
  - Runs C(pg_dump) on the database host and writes a backup set into O(backup_dir)/<database>/
    an archive, the cluster's roles (C(pg_dumpall --globals-only --no-role-passwords)) and a manifest.
  - The row counts, chunk counts and time ranges in the manifest are taken in the same snapshot that
    C(pg_dump) reads (C(pg_export_snapshot()) + C(pg_dump --snapshot)), so verification stays exact
    while telemetry keeps arriving.
  - The archive streams through sha256 into a C(.partial) file, is fsynced and renamed; the manifest
    is written last. A killed dump never leaves anything that looks like a backup, and stale
    partial files are removed by the next run.
  - Pre-flight checks say what is wrong before anything is written - connection and authentication,
    that the database exists, the directory (exists, mode C(0700), owned by the user running the
    module), the client tool versions and the free space.
extends_documentation_fragment: [insa.timescaledb_backup.postgres, insa.timescaledb_backup.signing, insa.timescaledb_backup.encryption,
  insa.timescaledb_backup.attributes, insa.timescaledb_backup.attributes.check_mode, insa.timescaledb_backup.attributes.no_diff]
attributes:
  check_mode:
    details: Runs the pre-flight checks only and reports the paths it would write.
  idempotent:
    support: none
    details: Every run takes a new backup; that is its purpose.
options:
  database:
    description: Database to back up.
    type: str
    required: true
  backup_dir:
    description: Directory of backup sets; must exist with mode C(0700) and belong to the user running the module.
    type: path
    required: true
  format:
    description:
      - V(custom) writes one archive file (hashed while it is written).
      - V(directory) writes a folder and allows O(jobs) parallel dump workers, one per table;
        TimescaleDB chunks are tables, so large hypertables dump in parallel.
    type: str
    choices: [custom, directory]
    default: custom
  compression:
    description:
      - pg_dump's own compression. V(zstd) needs pg_dump 16 or newer and is the fastest here for
        about the size of gzip. The archive is never piped through an external compressor.
    type: str
    choices: [zstd, lz4, gzip, none]
    default: zstd
  compression_level:
    description: Level for O(compression); default 3 for zstd, 1 for lz4, 6 for gzip.
    type: int
  jobs:
    description: Parallel dump workers for O(format=directory).
    type: int
    default: 1
  host_label:
    description: Name of the host recorded in the manifest and used in blob names; defaults to the host's FQDN.
    type: str
notes:
  - Run it on the database host (or a host with client tools of the server's major version).
seealso:
  - module: insa.timescaledb_backup.verify
  - module: insa.timescaledb_backup.restore
  - module: insa.timescaledb_backup.prune
"""

EXAMPLES = r"""
- name: Back up the telemetry database
  insa.timescaledb_backup.dump:
    database: iot
    backup_dir: /var/backups/tsdb
    login_user: postgres
    login_password: "{{ vault_tsdb_password }}"
  register: backup

- name: Large database - directory format, two workers
  insa.timescaledb_backup.dump:
    database: iot
    backup_dir: /var/backups/tsdb
    format: directory
    jobs: 2
    passfile: /etc/tsdb-backup/pgpass
"""

RETURN = r"""
backup_id:
  description: Identifier of the new set (UTC time, sortable).
  returned: success
  type: str
  sample: 20261127T020000Z
path:
  description: Archive path (file or directory).
  returned: success
  type: str
  sample: /var/backups/tsdb/iot/20261127T020000Z.dump
manifest_path:
  description: Manifest path.
  returned: success
  type: str
globals_path:
  description: Roles and memberships of the cluster (no passwords).
  returned: success
  type: str
size_bytes:
  description: Archive size.
  returned: success
  type: int
sha256:
  description: sha256 of the archive (for directory format, of its sorted file digests).
  returned: success
  type: str
duration_seconds:
  description: Wall time of the backup.
  returned: success
  type: float
tables:
  description: Row count per table, as of the dump's snapshot.
  returned: success
  type: dict
  sample: {"public.devices": {"rows": 10}}
hypertables:
  description: Chunk count and time range per hypertable, as of the dump's snapshot.
  returned: success
  type: dict
stale_partials_removed:
  description: Leftovers of interrupted runs that were removed.
  returned: success
  type: list
  elements: str
preflight:
  description: Facts of the pre-flight (server and tool versions, size estimate, free space).
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import (
    _age,
    _dump,
    _encryption,
    _module_glue,
    _signing,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._pg import postgres_common_argument_spec


def main():
    argument_spec = postgres_common_argument_spec()
    argument_spec.update(
        database=dict(type="str", required=True),
        backup_dir=dict(type="path", required=True),
        format=dict(type="str", choices=["custom", "directory"], default="custom"),
        compression=dict(type="str", choices=list(_dump.COMPRESSIONS), default="zstd"),
        compression_level=dict(type="int"),
        jobs=dict(type="int", default=1),
        host_label=dict(type="str"),
    )
    argument_spec.update(_signing.signing_argument_spec(trust=False))
    argument_spec.update(_encryption.recipients_argument_spec())
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    _module_glue.require_psycopg2(module)
    p = module.params
    params = _module_glue.connection_params(module)
    directory = p["format"] == "directory"
    _module_glue.run_module(module, None, mf.validate_database_name, p["database"])
    _module_glue.check_minimum(module, "jobs", 1)
    if p["jobs"] > 1 and not directory:
        module.fail_json(msg="jobs > 1 needs format: directory (a custom-format archive is written by one process)")
    recipients = _module_glue.run_module(module, None, _age.recipients, p["encryption_recipients"])
    if recipients:
        _module_glue.run_module(module, None, _encryption.check_directory_format, recipients, directory)
        _module_glue.run_module(module, None, _age.find)

    facts = _module_glue.run_module(
        module, None, _dump.preflight, params, p["database"], p["backup_dir"], p["compression"], directory
    )
    preflight = {k: v for k, v in facts.items() if k != "extensions"}
    if module.check_mode:
        _module_glue.warn(module, facts.get("warnings") or [])
        bset = mf.BackupSet(p["backup_dir"], p["database"], mf.new_backup_id(), directory_format=directory)
        module.exit_json(changed=True, path=bset.archive, manifest_path=bset.manifest, preflight=preflight)

    result = _module_glue.run_module(
        module,
        None,
        _dump.dump,
        params,
        p["database"],
        p["backup_dir"],
        directory_format=directory,
        facts=facts,
        signing=_module_glue.signing_policy(module),
        encryption=recipients,
        **_module_glue.options(p, "compression", "compression_level", "jobs", "host_label"),
    )
    m = result["manifest"]
    bset = result["backup_set"]
    _module_glue.warn(module, result.get("warnings") or [])
    module.exit_json(
        changed=True,
        backup_id=m["backup_id"],
        path=bset.archive,
        manifest_path=bset.manifest,
        globals_path=bset.globals_sql,
        size_bytes=m["archive"]["size_bytes"],
        sha256=m["archive"]["sha256"],
        duration_seconds=m["duration_seconds"],
        tables=m["tables"],
        hypertables=m["hypertables"],
        stale_partials_removed=result["stale_partials_removed"],
        preflight=preflight,
    )


if __name__ == "__main__":
    main()
