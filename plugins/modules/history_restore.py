#!/usr/bin/python
# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: history_restore
short_description: Load a time range of a hypertable from the Azure history archive into a database
author:
  - INSA platform team (@insa)
version_added: 0.1.0
description:
  - Loads the archived rows of O(hypertable) with O(start) <= time < O(end), written by
    M(insa.timescaledb_backup.chunk_archive), into O(database) - the live database (for example to bring back a
    range that retention dropped) or a separate analysis database.
  - Rows already present in the target are skipped, compared as whole rows and with their multiplicity, so a
    partial earlier load or rows still live are not duplicated.
  - Each object is checked before use - its sha256 against the manifest, then the rows it decodes to are counted
    and hashed by PostgreSQL and compared with the manifest. After loading a range, every archived row of the window
    must be present in the target, or that range's load is rolled back and the module fails.
  - The history read is O(host_label)'s (C(<prefix>/history/<host>/...)) - to restore another host's history, give
    its label. Every manifest must record that host, O(source_database) and O(hypertable), or the module fails before
    any row is loaded. With a trust store (O(trusted_signers_file), O(trusted_signers)) every manifest must also be
    signed by a key trusted for that host (unsigned ones only with O(allow_unsigned=true)).
  - A range's history is the newest version of each generation (see M(insa.timescaledb_backup.chunk_archive));
    O(version) loads one exact version instead.
extends_documentation_fragment: [insa.timescaledb_backup.postgres, insa.timescaledb_backup.azure,
  insa.timescaledb_backup.azure.REPLICAS, insa.timescaledb_backup.history,
  insa.timescaledb_backup.signing.TRUST, insa.timescaledb_backup.signing.ALLOW_UNSIGNED, insa.timescaledb_backup.encryption.IDENTITY,
  insa.timescaledb_backup.attributes, insa.timescaledb_backup.attributes.check_mode, insa.timescaledb_backup.attributes.no_diff,
  insa.timescaledb_backup.attributes.idempotent]
attributes:
  check_mode:
    details: Downloads and checks the objects and counts the rows that would be inserted; the target is not changed.
  idempotent:
    details: Rows already present are skipped; a second run inserts nothing and reports C(changed=false).
options:
  database:
    description: Target database (the live one or an analysis database). It must exist.
    type: str
    required: true
  hypertable:
    description:
      - Archived hypertable, as C(table) (schema C(public)) or C(schema.table).
      - Read as PostgreSQL reads names - bare parts fold to lower case; quote the others, for example
        C('"Plant A"."Readings"').
    type: str
    required: true
  source_database:
    description: Database the archive was taken from (the C(<database>) of the blob names). Default is O(database).
    type: str
  target_table:
    description: Table to load into, as C(table) or C(schema.table). Default is O(hypertable).
    type: str
  create_table:
    description:
      - Create O(target_table) from the archived columns when it does not exist (a hypertable when the target
        database has the timescaledb extension). Without it, a missing table fails the module.
      - A column whose type (a domain, enum, composite or range of the source database) does not exist in the
        target database is created with the built-in type of the same text form recorded in the history manifest
        (a domain's base type, otherwise C(text)), with a warning that names it. Create the types first to keep them.
    type: bool
    default: false
  start:
    description: Start of the window (included), ISO 8601 such as C(2026-01-01T00:00:00Z).
    type: str
    required: true
  end:
    description: End of the window (excluded), ISO 8601.
    type: str
    required: true
  version:
    description: Load exactly this archived version of each range instead of the newest of each generation.
    type: int
  work_dir:
    description: Directory for downloaded objects (removed afterwards). Default is the system's temporary directory.
    type: path
  read_from:
    description:
      - The target whose history listing and manifests are read - V(primary) (the Azure options above), a replica's
        name from O(replicas), or V(secondary) for the first replica.
      - With O(fallback), an object that is missing, damaged (another sha256) or unreachable there is downloaded from
        the next target; its sha256 is checked against the manifest wherever it comes from.
    type: str
    default: primary
  fallback:
    description: Download objects O(read_from) cannot provide soundly from the other targets.
    type: bool
    default: true
requirements:
  - pyarrow (pinned in the collection's C(requirements/runtime.txt))
notes:
  - Run it on the database host with the interpreter of the collection's virtual environment.
  - Loading into the live database a range that retention dropped re-creates its chunks; the next
    M(insa.timescaledb_backup.chunk_archive) run sees they are covered and archives nothing new for them.
seealso:
  - module: insa.timescaledb_backup.chunk_archive
  - module: insa.timescaledb_backup.chunk_retention
"""

EXAMPLES = r"""
- name: Bring January's telemetry into an analysis database
  insa.timescaledb_backup.history_restore:
    database: iot_analysis
    source_database: iot
    hypertable: esp_telemetry
    start: "2026-01-01T00:00:00Z"
    end: "2026-02-01T00:00:00Z"
    create_table: true
    auth_mode: entra
    account_name: insabackups
    container: tsdb-history

- name: Put back one dropped day into the live database
  insa.timescaledb_backup.history_restore:
    database: iot
    hypertable: esp_telemetry
    start: "2026-03-14T00:00:00Z"
    end: "2026-03-15T00:00:00Z"
    auth_mode: connection_string
    connection_string: "{{ azurite_connection_string }}"
    container: tsdb-history
"""

RETURN = r"""
target:
  description: The target whose listing and manifests were read.
  returned: success
  type: str
  sample: primary
fallbacks:
  description: Objects read from another target than O(read_from), each with the reason (C(blob), C(target), C(error), C(read_from)).
  returned: success
  type: list
  elements: dict
  sample: []
ranges:
  description:
    - One entry per archived range overlapping the window - range_start, range_end, versions (version, generation,
      rows), rows_archived, rows_in_window, rows_inserted, rows_present, verified.
  returned: success
  type: list
  elements: dict
rows_archived:
  description: Archived rows inside the window (what the target must hold afterwards).
  returned: success
  type: int
rows_inserted:
  description: Rows inserted (in check mode - that would be).
  returned: success
  type: int
rows_present:
  description: Archived rows of the window the target already had (skipped).
  returned: success
  type: int
source_host:
  description: The host whose history was read (O(host_label), or this host's FQDN).
  returned: success
  type: str
  sample: db01
table_created:
  description: Whether O(target_table) was (or would be) created.
  returned: success
  type: bool
target_table:
  description: The table loaded into.
  returned: success
  type: str
  sample: public.esp_telemetry
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import (
    _azure,
    _encryption,
    _history,
    _module_glue,
    _replica,
    _replica_read,
    _signing,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._pg import postgres_common_argument_spec


def main():
    argument_spec = postgres_common_argument_spec()
    argument_spec.update(_azure.azure_common_argument_spec())
    argument_spec.update(
        database=dict(type="str", required=True),
        hypertable=dict(type="str", required=True),
        source_database=dict(type="str"),
        target_table=dict(type="str"),
        create_table=dict(type="bool", default=False),
        start=dict(type="str", required=True),
        end=dict(type="str", required=True),
        version=dict(type="int"),
        work_dir=dict(type="path"),
        read_from=dict(type="str", default="primary"),
        fallback=dict(type="bool", default=True),
        **_history.HOST_OPTIONS,
    )
    argument_spec.update(_replica.replicas_argument_spec())
    argument_spec.update(_signing.signing_argument_spec(sign=False, allow_unsigned=True))
    argument_spec.update(_encryption.identity_argument_spec())
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    _module_glue.require_psycopg2(module)
    _module_glue.require_azure_storage(module)
    _module_glue.require_pyarrow(module, "to read the Parquet archive")
    p = module.params
    store = _module_glue.open_store(module)
    targets = _module_glue.run_module(module, store.redact, _replica.open_targets, store, p["replicas"])
    order = _module_glue.run_module(
        module, store.redact, _replica_read.read_order, targets, p["read_from"], p["fallback"]
    )
    reader = _module_glue.run_module(module, store.redact, _replica_read.FallbackReader, order)
    result = _module_glue.run_module(
        module,
        reader.redact,
        _history.restore_range,
        _module_glue.connection_params(module),
        p["database"],
        reader,
        p["hypertable"],
        p["start"],
        p["end"],
        check_mode=module.check_mode,
        **_module_glue.options(p, "source_database", "target_table", "version", "create_table", "work_dir"),
        **_module_glue.options(p, "host_label", "legacy_owner", "identity"),
    )
    result["target"], result["fallbacks"] = order[0].name, reader.fallbacks
    for failed in reader.fallbacks:
        module.warn(
            "%s could not be read from %s (%s); read from %s"
            % (failed["blob"], failed["target"], failed["error"], failed["read_from"])
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
