# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The history guarantee: chunk-level archive to Azure, retention gated by that archive, and
restore of a time range from it.

Private to the collection. No Ansible imports: the scheduled runner uses this too.

The unit is a *time slice* of a hypertable: the chunks that share one range of the time
dimension (one chunk, or one per space partition). Blob layout::

    <prefix>/history/<host>/<database>/<schema>.<hypertable>/<YYYY>/<MM>/<start>_<end>.v<N>.parquet
    <prefix>/history/<host>/<database>/<schema>.<hypertable>/<YYYY>/<MM>/<start>_<end>.v<N>.manifest.json

``<host>`` is the host label of the backup sets, ``<YYYY>/<MM>`` the month of the range start,
``<start>``/``<end>`` are UTC (``20260105T000000Z``). A manifest is trusted only in the folder
of the host, database and hypertable it records (_history_manifest.check_owner). The layout of
earlier releases, without ``<host>``, is read only by the host named its owner, and copied into
that host's folder by ``migrate_legacy`` (_history_migrate).

A manifest is uploaded only after its object was read back and verified, so a visible
manifest means a verified archive; an object without a manifest is a failed attempt and is
never trusted.

Versions: when a closed slice's live count or content hash differs from its newest archive
(late-arriving rows), a new version is written and the older one kept. A *generation* starts
when the slice comes back after its chunks were dropped (rows arriving months late, or a
history restore into the live database): such a version holds only the rows that are not in
the earlier generations. The archived content of a range is the union of the newest version of
each generation (what ``restore_range`` loads).

The content hash is computed by PostgreSQL, ``sum(hashtextextended(ROW(<columns>)::text, 0))``
over the rows, with the session settings that fix the text form (UTC, ISO dates,
extra_float_digits = 1): independent of row order, recomputed cheaply on a live chunk, and
recomputed on rows loaded back from an object (which checks the object end to end).

Entry points (plain arguments and dicts, no Ansible): ``archive_history`` (this file; the work
per slice in _history_archive), ``enforce_retention`` (_history_retention), ``restore_range``
(_history_restore), ``migrate_legacy`` (_history_migrate); names, times, the blob layout and
whose history a folder is (Place) are in _history_layout, the PostgreSQL side in _history_sql,
the Parquet codec in _history_codec, history manifests and the refusal of another host's in
_history_manifest. ``__all__`` below is what the modules and the runner use. Azure comes in as
a ``_azure.BlobStore`` (``_azure.open_store(config)``), PostgreSQL as a ``_pg.ConnectionParams``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _age, _azure, _clock
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._history_archive import _Archiver
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._history_codec import (
    DEFAULT_ZSTD_LEVEL,
    HAS_PYARROW,
    PYARROW_IMPORT_ERROR,
    PYARROW_REQUIREMENT,
    _Work,
    require_pyarrow,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._history_layout import (
    KIND_DATA,
    HistoryError,
    Place,
    _iso,
    history_folder,
    legacy_folder,
    month_folder,
    parse_time_label,
    qualified,
    range_label,
    reference_time,
    split_table_name,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._history_layout import (
    host_label as host_label_of,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._history_manifest import (
    _State,
    latest_version,
    list_ranges,
    read_manifest_blob,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._history_migrate import (
    migrate_legacy,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._history_restore import (
    restore_range,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._history_retention import (
    HELD_DAMAGED,
    HELD_UNREACHABLE,
    LOCK_TIMEOUT_SECONDS,
    enforce_retention,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._history_sql import (
    _server,
    list_hypertables,
    open_connection,
    use_connection,
)

DEFAULT_GRACE = datetime.timedelta(hours=2)

# The history modules' options naming whose history it is (doc fragment insa.timescaledb_backup.history).
HOST_OPTIONS = {"host_label": {"type": "str"}, "legacy_owner": {"type": "str"}}


def _new_result():
    return {
        "changed": False,
        "archived": [],
        "failures": [],
        "stopped": None,
        "bytes": 0,
        "hypertables": {},
        "warnings": [],
    }


def archive_history(
    params,
    database,
    store,
    hypertables=None,
    now=None,
    grace=DEFAULT_GRACE,
    check_mode=False,
    verify=True,
    reverify=False,
    work_dir=None,
    access_tier=None,
    tags=None,
    block_size_mb=_azure.DEFAULT_BLOCK_SIZE_MB,
    max_concurrency=_azure.DEFAULT_CONCURRENCY,
    compression_level=DEFAULT_ZSTD_LEVEL,
    state_file=None,
    connection=None,
    host_label=None,
    legacy_owner=None,
    max_clock_skew=_clock.DEFAULT_MAX_SKEW_SECONDS,
    encryption_recipients=None,
):
    """Archives every closed slice of the hypertables (default: all of the database) that has
    no verified archive matching its live count and hash. An unreachable Azure stops the run
    ('stopped'); a slice that fails is reported in 'failures' and the others go on.

    state_file (optional) remembers which live slices were found covered, so that a run in
    which nothing changed asks Azure nothing (see _State). connection (optional) is an open
    connection to `database` from open_connection, reused and left open (the runner's).
    host_label: whose folder (default the FQDN); legacy_owner: see _history_layout.Place.
    now None: the database server's clock, checked against this host's (max_clock_skew, _clock).
    encryption_recipients: age recipients each object is encrypted to before it leaves the host
    (docs/SECURITY.md); its rows are then checked before the encryption, in work_dir."""
    mf.validate_database_name(database)
    from_server = now is None
    now = reference_time(now)
    _check_archive_options(check_mode, access_tier, tags, compression_level)
    result = _new_result()
    result["reference_time"] = _iso(now)
    work = _Work(work_dir)
    options = dict(access_tier=access_tier, tags=tags, block_size_mb=block_size_mb, max_concurrency=max_concurrency)
    options["compression_level"] = int(compression_level)
    options["encryption_recipients"] = _age.recipients(encryption_recipients)
    if options["encryption_recipients"]:
        _age.find()  # before any export
    archiver = _Archiver(params, database, store, now, grace, check_mode, verify, reverify, work, options)
    archiver.host, archiver.legacy_owner = host_label_of(host_label), legacy_owner
    archiver.state = _State(state_file, database, archiver.host)
    if archiver.state.warning:
        result["warnings"].append(archiver.state.warning)
    try:
        archiver.conn, archiver.owned = use_connection(params, database, connection)
        if from_server:
            archiver.now = _clock.server_now(archiver.conn, max_clock_skew)
            result["reference_time"] = _iso(archiver.now)
        archiver.server = _server(archiver.conn)
        names = (
            [qualified(*split_table_name(n)) for n in hypertables] if hypertables else list_hypertables(archiver.conn)
        )
        archiver.run(names, result)
    finally:
        if archiver.conn is not None and archiver.owned:
            archiver.conn.close()
        work.close()
    oldest = [h["oldest_unarchived"] for h in result["hypertables"].values() if h["oldest_unarchived"]]
    result["oldest_unarchived"] = min(oldest) if oldest else None
    result["changed"] = bool(result["archived"]) or bool(result.get("container_created"))
    return result


def _check_archive_options(check_mode, access_tier, tags, compression_level):
    if not check_mode:
        require_pyarrow()
    if access_tier is not None and access_tier not in _azure.TIERS:
        raise _azure.ConfigError("access_tier must be one of %s" % ", ".join(_azure.TIERS))
    _azure.validate_tags(tags)
    if not 1 <= int(compression_level) <= 22:
        raise HistoryError("compression_level must be between 1 and 22 (zstd)", kind="config")


# What modules, the runner and the tests use, wherever in the history files it lives.
__all__ = [
    "HistoryError",
    "HAS_PYARROW",
    "PYARROW_IMPORT_ERROR",
    "PYARROW_REQUIREMENT",
    "DEFAULT_ZSTD_LEVEL",
    "HOST_OPTIONS",
    "KIND_DATA",
    "LOCK_TIMEOUT_SECONDS",
    "HELD_DAMAGED",
    "HELD_UNREACHABLE",
    "archive_history",
    "enforce_retention",
    "restore_range",
    "migrate_legacy",
    "history_folder",
    "legacy_folder",
    "month_folder",
    "Place",
    "host_label_of",
    "parse_time_label",
    "range_label",
    "list_ranges",
    "latest_version",
    "read_manifest_blob",
    "open_connection",
]
