#!/usr/bin/python
# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: chunk_archive
short_description: Archive every closed TimescaleDB chunk to Azure Blob Storage exactly once, as Parquet
author:
  - INSA platform team (@insa)
version_added: 0.1.0
description:
  - For each hypertable, exports every closed time slice (its chunks - one, or one per space partition - whose
    range ended more than O(grace_minutes) before O(reference_time)) that has no verified archive matching it,
    as one Parquet object (zstd) with a manifest.
  - 'Blob names: C(<prefix>/history/<host>/<database>/<schema>.<hypertable>/<YYYY>/<MM>/<start>_<end>.v<N>.parquet)
    and C(.v<N>.manifest.json) beside it (O(host_label); UTC times such as C(20260105T000000Z)). Each host of a fleet
    archives into its own folder, so two hosts with a database of the same name never mix their history.'
  - The manifest records the hypertable, the chunks, the time range, the columns with their PostgreSQL and Parquet
    types, the row count, a content hash computed by PostgreSQL (order independent, so it is recomputed cheaply on
    the live chunk), and the sha256 and size of the object.
  - Rows are streamed (C(COPY) through pyarrow into Parquet row groups); memory stays at about one row group.
  - Every object is verified before its manifest is uploaded - read back from Azure, sha256 checked, decoded and
    loaded into a temporary table where PostgreSQL recomputes the count and content hash. A visible manifest
    therefore means a verified archive; an object without a manifest is a failed attempt and is never trusted.
  - Re-running archives nothing new (C(changed=false), C(bytes=0)). When a closed slice's live count or content
    hash differs from its newest archive (late-arriving rows), it is archived again as a new version; older
    versions are kept. Rows that arrive for a range whose chunks were already dropped start a new generation
    holding only the rows the archive lacks.
  - Blobs are never overwritten.
  - With O(signing_key_file) every manifest is signed. With a trust store too (O(trusted_signers_file),
    O(trusted_signers)), a range whose newest manifest was made before signing is archived again from the live rows
    (reason V(signs_unsigned)), so that M(insa.timescaledb_backup.chunk_retention) may drop it; one whose unsigned
    manifest relies on objects of earlier generations is reported as failed instead (a signature cannot vouch for
    rows that are no longer in the database).
extends_documentation_fragment: [insa.timescaledb_backup.postgres, insa.timescaledb_backup.azure, insa.timescaledb_backup.history,
  insa.timescaledb_backup.signing, insa.timescaledb_backup.signing.TRUST,
  insa.timescaledb_backup.azure.upload, insa.timescaledb_backup.encryption.HISTORY,
  insa.timescaledb_backup.attributes, insa.timescaledb_backup.attributes.check_mode, insa.timescaledb_backup.attributes.no_diff,
  insa.timescaledb_backup.attributes.idempotent]
attributes:
  check_mode:
    details: Compares the live slices with the archive and reports in RV(archived) what would be archived (with
      C(status=would_archive)); exports and sends nothing.
  idempotent:
    details: A slice whose newest verified archive matches its live count and content hash is skipped; a second
      run reports C(changed=false) and sends zero bytes.
options:
  database:
    description: Database whose hypertables are archived.
    type: str
    required: true
  hypertables:
    description:
      - Hypertables to archive, as C(table) (schema C(public)) or C(schema.table).
      - Default is every hypertable of the database - history is kept for all of them unless you say otherwise.
      - Names are read as PostgreSQL reads them - bare parts fold to lower case; quote the others, for example
        C('"Plant A"."Readings"').
    type: list
    elements: str
  grace_minutes:
    description:
      - A slice is closed when its range ended more than this many minutes before O(reference_time). Rows arriving
        later are still caught, as a new version.
    type: int
    default: 120
  reference_time:
    description:
      - The time taken as "now", as ISO 8601 (C(2026-11-27T02:00:00Z)). For replays and tests.
      - Default is the database server's clock (C(clock_timestamp())), once this host's clock is found within
        O(max_clock_skew) of it.
    type: str
  max_clock_skew:
    description:
      - Seconds this host's clock and the database server's may differ. When they differ by more, nothing is archived
        and the module fails (C(error_kind=clock)) naming both times - a wrong clock makes open ranges look closed.
      - Not checked with O(reference_time).
    type: int
    default: 300
  verify:
    description:
      - Read each object back and compare its decoded rows with the database before the manifest is written.
      - Turning it off leaves only the sha256 check at upload; not recommended.
    type: bool
    default: true
  reverify:
    description:
      - Also download the newest object of every already archived, still live slice and check its sha256; a damaged
        or missing one is archived again as a new version.
      - Use it when M(insa.timescaledb_backup.chunk_retention) reports C(archive_damaged).
    type: bool
    default: false
  state_file:
    description:
      - A file in which the module remembers which live slices it found covered by a verified archive (their count
        and content hash), so that a run in which nothing changed asks Azure nothing. Written atomically, mode C(0600).
      - A hint only - M(insa.timescaledb_backup.chunk_retention) never uses it and checks the archive itself, and
        O(reverify=true) ignores it. Without it every run lists the months of the closed live slices in Azure.
    type: path
  work_dir:
    description:
      - Directory for the temporary Parquet file of one slice (removed afterwards). Default is the system's temporary
        directory.
    type: path
  compression_level:
    description: zstd level of the Parquet pages (1-22).
    type: int
    default: 3
  access_tier:
    description: Access tier of the Parquet objects at upload (manifests keep the account's default tier).
    type: str
    choices: [Hot, Cool, Cold, Archive]
  tags:
    description: Blob index tags on every uploaded blob (at most 10).
    type: dict
requirements:
  - pyarrow (pinned in the collection's C(requirements/runtime.txt))
notes:
  - Run it on the database host with the interpreter of the collection's virtual environment, which has pyarrow and
    the Azure SDK (C(ansible_python_interpreter=/opt/tsdb-backup/venv/bin/python)).
  - Integer-time hypertables are not supported.
  - Names of any shape are archived; in blob names, each byte outside C([A-Za-z0-9_]) of the database, schema and
    table names is written C(~XX) (plain names stand for themselves).
  - Host labels must be unique within one O(prefix) (as for the backup sets); database names need not be.
seealso:
  - module: insa.timescaledb_backup.chunk_retention
  - module: insa.timescaledb_backup.history_restore
"""

EXAMPLES = r"""
- name: Archive every closed chunk of the telemetry database
  insa.timescaledb_backup.chunk_archive:
    database: iot
    login_user: postgres
    login_password: "{{ vault_tsdb_password }}"
    auth_mode: entra
    account_name: insabackups
    container: tsdb-history
  register: archive

- name: Only the two IoT hypertables, to Azurite, with one hour of grace
  insa.timescaledb_backup.chunk_archive:
    database: iot
    hypertables: [esp_telemetry, diagnostic_results]
    grace_minutes: 60
    auth_mode: connection_string
    connection_string: "{{ azurite_connection_string }}"
    container: tsdb-history
    create_container: true
  vars:
    ansible_python_interpreter: /opt/tsdb-backup/venv/bin/python
"""

RETURN = r"""
archived:
  description:
    - One entry per slice archived (or, in check mode, that would be) with hypertable, range_start, range_end, chunks,
      reason (V(new), V(changed), V(new_generation), V(replaces_damaged), V(retry), V(signs_unsigned)), version, generation, rows,
      content_hash, bytes, object and manifest (URLs without SAS), sha256, verified, status.
  returned: success
  type: list
  elements: dict
failures:
  description: Slices that could not be archived, with the error; the others were still archived.
  returned: always
  type: list
  elements: dict
stopped:
  description: Why the run stopped early (Azure unreachable or refusing), or null.
  returned: always
  type: str
bytes:
  description: Bytes sent to Azure (0 when everything was already archived).
  returned: always
  type: int
hypertables:
  description:
    - Per hypertable - slices, closed, open, archived, unchanged and oldest_unarchived (start of the oldest closed
      slice left without a verified archive, or null).
  returned: always
  type: dict
oldest_unarchived:
  description: Start of the oldest closed slice of any hypertable left without a verified archive, or null.
  returned: always
  type: str
reference_time:
  description: The time taken as "now".
  returned: always
  type: str
  sample: "2026-11-27T02:00:00Z"
"""

import datetime

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import (
    _azure,
    _clock,
    _encryption,
    _history,
    _module_glue,
    _signing,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._pg import postgres_common_argument_spec


def main():
    argument_spec = postgres_common_argument_spec()
    argument_spec.update(_azure.azure_common_argument_spec())
    argument_spec.update(
        database=dict(type="str", required=True),
        hypertables=dict(type="list", elements="str"),
        grace_minutes=dict(type="int", default=120),
        reference_time=dict(type="str"),
        max_clock_skew=dict(type="int", default=_clock.DEFAULT_MAX_SKEW_SECONDS),
        verify=dict(type="bool", default=True),
        reverify=dict(type="bool", default=False),
        state_file=dict(type="path"),
        work_dir=dict(type="path"),
        **_history.HOST_OPTIONS,
        compression_level=dict(type="int", default=_history.DEFAULT_ZSTD_LEVEL),
        access_tier=dict(type="str", choices=list(_azure.TIERS)),
        tags=dict(type="dict"),
        block_size_mb=dict(type="int", default=_azure.DEFAULT_BLOCK_SIZE_MB),
        max_concurrency=dict(type="int", default=_azure.DEFAULT_CONCURRENCY),
    )
    argument_spec.update(_signing.signing_argument_spec())
    argument_spec.update(_encryption.recipients_argument_spec())
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    _module_glue.require_psycopg2(module)
    _module_glue.require_azure_storage(module)
    _module_glue.require_pyarrow(module, "to write the Parquet archive")
    p = module.params
    _module_glue.check_minimum(module, "grace_minutes", 0)
    _module_glue.check_minimum(module, "max_clock_skew", 0)
    result = _module_glue.run_history(
        module,
        _history.archive_history,
        now=p["reference_time"],
        grace=datetime.timedelta(minutes=p["grace_minutes"]),
        check_mode=module.check_mode,
        **_module_glue.options(p, "hypertables", "verify", "reverify", "state_file", "work_dir", "compression_level"),
        **_module_glue.options(p, "access_tier", "tags", "block_size_mb", "max_concurrency"),
        **_module_glue.options(p, "host_label", "legacy_owner", "max_clock_skew", "encryption_recipients"),
    )
    _module_glue.warn(module, result.pop("warnings", []))
    _module_glue.warn(module, [item.pop("warning") for item in result["archived"] if item.get("warning")])
    if result["stopped"]:
        module.fail_json(msg="archive stopped: %s" % result["stopped"], **result)
    _module_glue.fail_on_failures(
        module,
        result,
        "slice(s) not archived",
        lambda f: "%s %s: %s" % (f["hypertable"], f["range_start"], f["error"]),
        most=5,
    )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
