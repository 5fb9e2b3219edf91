#!/usr/bin/python
# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: chunk_retention
short_description: Drop old TimescaleDB chunks only when a verified archive in Azure covers them
author:
  - INSA platform team (@insa)
version_added: 0.1.0
description:
  - For each hypertable with its own retention (for example C(esp_telemetry) 30 days, C(diagnostic_results) 90
    days), drops the time slices (the chunks sharing one time range) whose range ended more than
    O(hypertables[].retention_days) before O(reference_time) - B(only if) each one is covered by a verified archive
    written by M(insa.timescaledb_backup.chunk_archive).
  - Only this host's archive counts (O(host_label)) - the manifests in C(<prefix>/history/<host>/...) that record
    this host, database and hypertable.
  - Covered means - the newest archived version's manifest exists (it is uploaded only after the object was read
    back and verified), its objects are still in Azure with the recorded sha256 (downloaded and hashed with
    O(verify_objects=true)), and the live rows' count and content hash, recomputed by PostgreSQL while the chunks
    are locked against writes, equal the ones the archive covers. The chunks are then dropped with C(drop_chunks)
    in the same transaction, and only if it drops exactly the checked chunks.
  - Every other due slice is kept and reported in RV(held_back) with a reason code - V(not_archived),
    V(changed_since_archive), V(archive_damaged), V(archive_refused) (the newest manifest in this host's folder records
    another host, database or hypertable - copied or planted there; the reason names both - or, with a trust store
    (O(trusted_signers_file), O(trusted_signers)), is not signed by a key trusted for this host - unsigned, another
    host's key, an unknown key or a bad signature; unsigned is refused here whatever O(require_signatures) says),
    V(archive_unreachable),
    V(lock_timeout), V(unexpected_chunks),
    V(referenced_by_foreign_key) (TimescaleDB cannot drop chunks that a foreign key points at; the reason names
    the key and what to do), V(error). Azure being unreachable holds everything back; it never fails the module.
  - Warns when a TimescaleDB retention policy job exists on a hypertable, since that one drops chunks without this
    check.
  - Each dropped slice is appended to O(audit_log) as a JSON line.
extends_documentation_fragment: [insa.timescaledb_backup.postgres, insa.timescaledb_backup.azure, insa.timescaledb_backup.history,
  insa.timescaledb_backup.signing.TRUST,
  insa.timescaledb_backup.attributes, insa.timescaledb_backup.attributes.check_mode, insa.timescaledb_backup.attributes.idempotent]
attributes:
  check_mode:
    details: Runs every check (without locking) and lists in RV(dropped) exactly the chunks that would be dropped;
      drops nothing.
  diff_mode:
    support: full
    details: The diff lists the due chunks before and the chunks left after (held back ones stay).
  idempotent:
    details: Once the covered slices are dropped, a second run with the same reference time drops nothing
      (C(changed=false)).
options:
  database:
    description: Database whose hypertables are trimmed.
    type: str
    required: true
  hypertables:
    description: Hypertables and how long their chunks stay in the database. Only these are touched.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description:
          - Hypertable, as C(table) (schema C(public)) or C(schema.table).
          - Read as PostgreSQL reads names - bare parts fold to lower case; quote the others, for example
            C('"Plant A"."Readings"').
        type: str
        required: true
      retention_days:
        description: Days a slice stays after its range ended.
        type: int
        required: true
  reference_time:
    description:
      - The time taken as "now", as ISO 8601 (C(2026-11-27T02:00:00Z)).
      - Default is the database server's clock (C(clock_timestamp())), once this host's clock is found within
        O(max_clock_skew) of it.
    type: str
  max_clock_skew:
    description:
      - Seconds this host's clock and the database server's may differ. When they differ by more, nothing is dropped
        and the module fails (C(error_kind=clock)) naming both times - a wrong clock makes ranges look due too early.
      - Not checked with O(reference_time).
    type: int
    default: 300
  verify_objects:
    description:
      - Download every object a slice's archive relies on and check its sha256 before dropping the slice.
      - With V(false) only the blobs' size and sha256 metadata are compared.
    type: bool
    default: true
  lock_timeout:
    description: Seconds to wait for the lock on a slice's chunks; a busy slice is held back and tried next run.
    type: int
    default: 30
  audit_log:
    description: File to which one JSON line per dropped slice is appended (created with mode C(0600)).
    type: path
  work_dir:
    description: Directory for objects downloaded for the check (removed afterwards). Default is the system's temporary directory.
    type: path
notes:
  - Run it on the database host, after M(insa.timescaledb_backup.chunk_archive), with the interpreter of the
    collection's virtual environment (it needs the Azure SDK).
  - The Apache-licensed TimescaleDB that Debian ships has no C(add_retention_policy); this module is the retention.
seealso:
  - module: insa.timescaledb_backup.chunk_archive
  - module: insa.timescaledb_backup.history_restore
"""

EXAMPLES = r"""
- name: Keep 30 days of telemetry and 90 of diagnostics in the database; the rest lives in Azure
  insa.timescaledb_backup.chunk_retention:
    database: iot
    hypertables:
      - name: esp_telemetry
        retention_days: 30
      - name: diagnostic_results
        retention_days: 90
    audit_log: /var/log/tsdb-backup/history-audit.jsonl
    auth_mode: entra
    account_name: insabackups
    container: tsdb-history
  register: retention

- name: Show what would be dropped
  insa.timescaledb_backup.chunk_retention:
    database: iot
    hypertables:
      - name: esp_telemetry
        retention_days: 30
    auth_mode: connection_string
    connection_string: "{{ azurite_connection_string }}"
    container: tsdb-history
  check_mode: true
  diff: true
"""

RETURN = r"""
dropped:
  description:
    - Slices dropped (in check mode - that would be dropped) with hypertable, range_start, range_end, chunks, rows,
      content_hash and the archive version, generation and object URL that covers them.
  returned: always
  type: list
  elements: dict
held_back:
  description:
    - Due slices kept, with hypertable, range_start, range_end, chunks, reason_code and reason.
  returned: always
  type: list
  elements: dict
  sample:
    - hypertable: public.esp_telemetry
      range_start: "2026-10-01T00:00:00Z"
      range_end: "2026-10-02T00:00:00Z"
      chunks: [_hyper_1_12_chunk]
      reason_code: archive_unreachable
      reason: "the archive cannot be checked: cannot reach Azure Blob Storage ..."
hypertables:
  description: Per hypertable - retention_days, cutoff, slices, due, dropped, held_back, retention_policy_jobs.
  returned: always
  type: dict
reference_time:
  description: The time taken as "now".
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import (
    _azure,
    _clock,
    _history,
    _module_glue,
    _signing,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._pg import postgres_common_argument_spec


def _diff(result):
    def lines(entries):
        return "".join(
            "%s %s .. %s: %s\n" % (e["hypertable"], e["range_start"], e["range_end"], ", ".join(e["chunks"]))
            for e in sorted(entries, key=lambda e: (e["hypertable"], e["range_start"]))
        )

    return {
        "before_header": "due chunks",
        "after_header": "chunks left after retention",
        "before": lines(result["dropped"] + result["held_back"]),
        "after": lines(result["held_back"]),
    }


def main():
    argument_spec = postgres_common_argument_spec()
    argument_spec.update(_azure.azure_common_argument_spec())
    argument_spec.update(
        database=dict(type="str", required=True),
        hypertables=dict(
            type="list",
            elements="dict",
            required=True,
            options=dict(name=dict(type="str", required=True), retention_days=dict(type="int", required=True)),
        ),
        reference_time=dict(type="str"),
        max_clock_skew=dict(type="int", default=_clock.DEFAULT_MAX_SKEW_SECONDS),
        verify_objects=dict(type="bool", default=True),
        lock_timeout=dict(type="int", default=_history.LOCK_TIMEOUT_SECONDS),
        audit_log=dict(type="path"),
        work_dir=dict(type="path"),
        **_history.HOST_OPTIONS,
    )
    argument_spec.update(_signing.signing_argument_spec(sign=False))
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    _module_glue.require_psycopg2(module)
    _module_glue.require_azure_storage(module)
    p = module.params
    _module_glue.check_minimum(module, "lock_timeout", 1)
    _module_glue.check_minimum(module, "max_clock_skew", 0)
    result = _module_glue.run_history(
        module,
        _history.enforce_retention,
        p["hypertables"],
        now=p["reference_time"],
        check_mode=module.check_mode,
        **_module_glue.options(
            p, "verify_objects", "lock_timeout", "audit_log", "work_dir", "host_label", "legacy_owner", "max_clock_skew"
        ),
    )
    _module_glue.warn(module, result.pop("warnings", []))
    if result["held_back"]:
        codes = sorted({h["reason_code"] for h in result["held_back"]})
        module.warn(
            "%d slice(s) older than their retention were kept (%s); see held_back"
            % (len(result["held_back"]), ", ".join(codes))
        )
    if module._diff:
        result["diff"] = _diff(result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
