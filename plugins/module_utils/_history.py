# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The history guarantee: chunk-level archive to Azure, retention gated by that archive, and
restore of a time range from it.

Private to the collection. No Ansible imports: the scheduled runner uses this too.

The unit is a *time slice* of a hypertable: the chunks that share one range of the time
dimension (one chunk, or one per space partition). Blob layout::

    <prefix>/history/<database>/<schema>.<hypertable>/<YYYY>/<MM>/<start>_<end>.v<N>.parquet
    <prefix>/history/<database>/<schema>.<hypertable>/<YYYY>/<MM>/<start>_<end>.v<N>.manifest.json

``<YYYY>/<MM>`` is the month of the range start, ``<start>``/``<end>`` are UTC
(``20260105T000000Z``). A manifest is uploaded only after its object was read back and
verified, so a visible manifest means a verified archive; an object without a manifest is a
failed attempt and is never trusted.

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

Entry points (plain arguments and dicts, no Ansible): ``archive_history``,
``enforce_retention``, ``restore_range``. Azure comes in as a ``_azure.BlobStore``
(``_azure.open_store(config)``), PostgreSQL as a ``_pg.ConnectionParams``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import threading
import traceback

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _azure, _errors, _pg
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf

try:
    import pyarrow as pa
    import pyarrow.compute as pacompute
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq
except ImportError:
    HAS_PYARROW = False
    PYARROW_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_PYARROW = True
    PYARROW_IMPORT_ERROR = None

# Query composition and PostgreSQL's error classes come through _pg (None without psycopg2).
sql, pg_errors = _pg.sql, _pg.errors

PYARROW_REQUIREMENT = "pyarrow"

HISTORY_FORMAT = "insa.timescaledb_backup/history-manifest"
HISTORY_VERSION = 1
HASH_ALGORITHM = "pg-sum-hashtextextended-row-text-v1"
DATA_EXT = "parquet"
MANIFEST_EXT = "manifest.json"
HISTORY_DIR = "history"
DEFAULT_GRACE = datetime.timedelta(hours=2)
DEFAULT_ZSTD_LEVEL = 3
ROW_GROUP_ROWS = 131072
# Float columns with more distinct values than this share of rows are written with
# BYTE_STREAM_SPLIT rather than a dictionary.
BSS_DISTINCT_RATIO = 0.25
READ_BATCH_ROWS = 65536
LOCK_TIMEOUT_SECONDS = 30
# Up to this many slices to look up in one month: one listing per range, else one per month.
SMALL_LISTING = 3

KIND_DATA = "history_data"
KIND_MANIFEST = "history_manifest"

# Why a slice older than its retention is kept.
HELD_NOT_ARCHIVED = "not_archived"
HELD_CHANGED = "changed_since_archive"
HELD_DAMAGED = "archive_damaged"
HELD_UNREACHABLE = "archive_unreachable"
HELD_LOCKED = "lock_timeout"
HELD_UNEXPECTED = "unexpected_chunks"
HELD_REFERENCED = "referenced_by_foreign_key"
HELD_ERROR = "error"

TIME_RE = r"\d{8}T\d{6}(?:\.\d{6})?Z"
LEAF_RE = re.compile(r"^(%s)_(%s)\.v([1-9]\d{0,8})\.(parquet|manifest\.json)$" % (TIME_RE, TIME_RE))
# Type names as format_type() writes them, once quoted identifiers are set aside: nothing that
# could end a statement or start a comment.
PG_TYPE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_ .(),\[\]]{0,200}$")

# The settings that fix the text form of values (and so the content hash).
SESSION_SETTINGS = (
    "SET TimeZone = 'UTC'",
    "SET DateStyle = 'ISO, YMD'",
    "SET IntervalStyle = 'postgres'",
    "SET extra_float_digits = 1",
    "SET bytea_output = 'hex'",
    "SET client_encoding = 'UTF8'",
)


class HistoryError(_errors.OperatorError):
    """A history problem explained for an operator: what is wrong and what to do."""


# ---------------------------------------------------------------------------------------------
# Names and times


def utc(dt):
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone.utc)
    return dt.astimezone(datetime.timezone.utc)


def reference_time(now=None):
    """The injectable 'now': None means the clock; strings as _azure.parse_timestamp reads them."""
    if now is None:
        return mf.utcnow()
    return _azure.parse_timestamp(now)


def time_label(dt):
    dt = utc(dt)
    text = dt.strftime("%Y%m%dT%H%M%S")
    if dt.microsecond:
        text += ".%06d" % dt.microsecond
    return text + "Z"


def parse_time_label(text):
    fmt = "%Y%m%dT%H%M%S.%fZ" if "." in text else "%Y%m%dT%H%M%SZ"
    return datetime.datetime.strptime(text, fmt).replace(tzinfo=datetime.timezone.utc)


def range_label(start, end):
    return "%s_%s" % (time_label(start), time_label(end))


def split_table_name(name):
    """'esp_telemetry', 'public.esp_telemetry' or 'public."Plant A"' -> (schema, table), read the
    way PostgreSQL reads identifiers (bare parts fold to lower case)."""
    try:
        return _pg.split_qualified(name)
    except ValueError as e:
        raise HistoryError("hypertable %s" % e) from None


def qualified(schema, table):
    return _pg.qualified(schema, table)


def table_segment(schema, table):
    """<schema>.<table> as one blob name segment. Parts are escaped (_manifest.escape_name): plain
    names stand for themselves, as in the layout of earlier releases, and no two names share a
    folder. Longer than Azure's 255 characters per segment (hierarchical namespace accounts), it
    is cut and ends in ``~~`` and 16 hex digits of its sha256 (no escape writes ``~~``)."""
    segment = "%s.%s" % (mf.escape_name(schema), mf.escape_name(table))
    if len(segment) <= _azure.MAX_SEGMENT:
        return segment
    head = re.sub(r"~[0-9a-f]?$", "", segment[:200])
    return "%s~~%s" % (head, hashlib.sha256(segment.encode("utf-8")).hexdigest()[:16])


def history_folder(prefix, database, hypertable):
    """<prefix>/history/<database>/<schema>.<table> (no trailing '/')."""
    schema, table = split_table_name(hypertable)
    return _azure.join_name(
        _azure.validate_prefix(prefix),
        HISTORY_DIR,
        _azure.validate_segment(mf.database_segment(database), "database"),
        _azure.validate_segment(table_segment(schema, table), "hypertable"),
    )


def month_folder(folder, start):
    start = utc(start)
    return "%s/%04d/%02d" % (folder, start.year, start.month)


def object_name(folder, start, end, version, ext):
    name = "%s/%s.v%d.%s" % (month_folder(folder, start), range_label(start, end), int(version), ext)
    return _azure.validate_blob_name(name)


def parse_leaf(name):
    """(start, end, version, kind) of a history blob name's last part, or None."""
    m = LEAF_RE.match(name.rsplit("/", 1)[-1])
    if not m:
        return None
    kind = KIND_DATA if m.group(4) == DATA_EXT else KIND_MANIFEST
    return parse_time_label(m.group(1)), parse_time_label(m.group(2)), int(m.group(3)), kind


# ---------------------------------------------------------------------------------------------
# PostgreSQL side


def open_connection(params, database):
    conn = _pg.connect(params, database, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("; ".join(SESSION_SETTINGS))
    except Exception:
        conn.close()
        raise
    return conn


def use_connection(params, database, connection=None):
    """(connection, owned): the caller's open connection (from open_connection, on `database`;
    kept open afterwards) or a new one that the caller of this function must close."""
    if connection is None:
        return open_connection(params, database), True
    if connection.closed:
        raise HistoryError("the connection given is closed")
    with connection.cursor() as cur:
        cur.execute("; ".join(SESSION_SETTINGS))
    return connection, False


def abort(conn):
    """Ends a failed transaction (or a broken COPY) so the connection can be used again.
    Returns False when the connection is unusable and must be replaced."""
    if conn is None or conn.closed:
        return False
    try:
        status = conn.info.transaction_status
        if status in (1, 2, 3):  # active, in transaction, in error
            with conn.cursor() as cur:
                cur.execute("ROLLBACK")
        return conn.info.transaction_status == 0
    except Exception:  # noqa: BLE001 - a broken connection: the caller replaces it
        return False


def list_hypertables(conn):
    return [
        qualified(s, t)
        for s, t in _pg.rows(
            conn,
            "SELECT hypertable_schema::text, hypertable_name::text FROM timescaledb_information.hypertables "
            "ORDER BY 1, 2",
        )
    ]


def _numeric_typmod(typmod):
    if typmod is None or typmod < 4:
        return None
    precision = ((typmod - 4) >> 16) & 0xFFFF
    scale = (typmod - 4) & 0xFFFF
    if scale > precision or not 0 < precision <= 38:
        return None
    return precision, scale


def column_plan(typname, typmod):
    """How a column of a PostgreSQL base type travels: (wire, arrow type name, arrow type).
    wire 'epoch_us' sends timestamps as integer microseconds since 1970 (exact; parsed by
    pyarrow without guessing), 'native' lets pyarrow parse PostgreSQL's text, 'text' keeps
    PostgreSQL's own text form as a string (every other type: it round-trips by casting)."""
    simple = {
        "int2": ("native", "int16"),
        "int4": ("native", "int32"),
        "int8": ("native", "int64"),
        "float4": ("native", "float32"),
        "float8": ("native", "float64"),
        "bool": ("native", "bool"),
        "date": ("native", "date32"),
        "timestamptz": ("epoch_us", "timestamp[us, tz=UTC]"),
        "timestamp": ("epoch_us", "timestamp[us]"),
    }
    if typname in simple:
        return simple[typname]
    if typname == "numeric" and _numeric_typmod(typmod):
        return ("native", "decimal128(%d, %d)" % _numeric_typmod(typmod))
    return ("text", "string")


def arrow_type(name):
    if name.startswith("decimal128("):
        precision, scale = (int(x) for x in name[len("decimal128(") : -1].split(","))
        return pa.decimal128(precision, scale)
    return {
        "int16": pa.int16(),
        "int32": pa.int32(),
        "int64": pa.int64(),
        "float32": pa.float32(),
        "float64": pa.float64(),
        "bool": pa.bool_(),
        "date32": pa.date32(),
        "timestamp[us, tz=UTC]": pa.timestamp("us", tz="UTC"),
        "timestamp[us]": pa.timestamp("us"),
        "string": pa.string(),
    }[name]


# Columns, and for a type that is not built in (domain, enum, composite, range, arrays of them)
# the built-in type with the same text form: a domain's base type, else text. A history restore
# into a database that lacks the type uses it (resolve_columns); the content hash, computed
# over text forms, is the same either way.
_COLUMNS_QUERY = """
SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), t.typname::text, a.atttypmod, t.typtype::text,
  CASE WHEN t.typnamespace = 'pg_catalog'::regnamespace THEN NULL
       WHEN e.oid IS NOT NULL THEN CASE WHEN e.typtype = 'd' AND eb.typnamespace = 'pg_catalog'::regnamespace
                                        THEN format_type(e.typbasetype, e.typtypmod) ELSE 'text' END || '[]'
       WHEN t.typtype = 'd' AND b.typnamespace = 'pg_catalog'::regnamespace THEN format_type(t.typbasetype, t.typtypmod)
       ELSE 'text' END
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_type b ON b.oid = t.typbasetype
LEFT JOIN pg_type e ON e.oid = t.typelem AND t.typcategory = 'A'
LEFT JOIN pg_type eb ON eb.oid = e.typbasetype
WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum
"""


def resolve_columns(conn, columns):
    """The archived columns as this database can hold them: a type it lacks is replaced by the
    column's recorded fallback (text for manifests written before fallbacks were recorded).
    Returns (columns, warnings)."""
    resolved, warnings = [], []
    for c in columns:
        if _pg.scalar(conn, "SELECT to_regtype(%s) IS NOT NULL", (_pg_type(c),)):
            resolved.append(c)
            continue
        fallback = c.get("fallback_type") or "text"
        resolved.append(dict(c, pg_type=fallback))
        warnings.append(
            "column %s: type %s does not exist in database %s; restored as %s (the same text form). Create the type "
            "first to keep it"
            % (_pg.qualify_part(c["name"]), c["pg_type"], _pg.scalar(conn, "SELECT current_database()"), fallback)
        )
    return resolved, warnings


def describe_hypertable(conn, name):
    """Schema, time column and columns (name, pg_type, typname, wire, parquet type)."""
    schema, table = split_table_name(name)
    found = _pg.rows(
        conn,
        "SELECT d.column_name::text, d.column_type::text FROM timescaledb_information.dimensions d "
        "WHERE d.hypertable_schema = %s AND d.hypertable_name = %s AND d.dimension_number = 1",
        (schema, table),
    )
    if not found:
        raise HistoryError(
            "%s is not a hypertable in database %s (timescaledb_information.hypertables lists: %s)"
            % (
                qualified(schema, table),
                _pg.scalar(conn, "SELECT current_database()"),
                ", ".join(list_hypertables(conn)) or "none",
            )
        )
    time_column, time_type = found[0]
    columns = []
    for attname, pg_type, typname, typmod, typtype, fallback in _pg.rows(
        conn, _COLUMNS_QUERY, (_pg.regclass_text(schema, table),)
    ):
        wire, parquet = column_plan(typname if typtype == "b" else "", typmod)
        column = {"name": attname, "pg_type": pg_type, "wire": wire, "parquet_type": parquet}
        if fallback:
            column["fallback_type"] = fallback
        columns.append(column)
    time_col = next(c for c in columns if c["name"] == time_column)
    if time_col["wire"] != "epoch_us" and time_col["parquet_type"] != "date32":
        raise HistoryError(
            "%s is partitioned by %s (%s): only timestamptz, timestamp and date time columns are supported"
            % (qualified(schema, table), time_column, time_type)
        )
    return {
        "schema": schema,
        "table": table,
        "name": qualified(schema, table),
        "time_column": time_column,
        "time_type": time_col["pg_type"],
        "columns": columns,
    }


def _ident(*parts):
    return sql.Identifier(*parts)


def _table(info):
    return _ident(info["schema"], info["table"])


def _col_list(columns, prefix=None, cast=False):
    items = []
    for c in columns:
        ident = _ident(prefix, c["name"]) if prefix else _ident(c["name"])
        items.append(sql.SQL("{}::{}").format(ident, sql.SQL(_pg_type(c))) if cast else ident)
    return sql.SQL(", ").join(items)


def _fallback(column):
    return {"fallback_type": column["fallback_type"]} if column.get("fallback_type") else {}


def _pg_type(column):
    if len(column["pg_type"]) > 1000 or not PG_TYPE_RE.match(_pg.without_quoted_identifiers(column["pg_type"])):
        raise HistoryError(
            "column %r has a type name this collection does not accept: %r" % (column["name"], column["pg_type"])
        )
    return column["pg_type"]


def _range_where(info, time_column=None):
    col = _ident(time_column or info["time_column"])
    time_type = sql.SQL(_pg_type({"name": info["time_column"], "pg_type": info["time_type"]}))
    return sql.SQL("{col} >= (%(lo)s)::{t} AND {col} < (%(hi)s)::{t}").format(col=col, t=time_type)


def _fingerprint_query(columns, source, where=None):
    query = sql.SQL(
        "SELECT count(*), coalesce(sum(hashtextextended(ROW({cols})::text, 0)::numeric), 0)::text FROM {src}"
    ).format(cols=_col_list(columns, cast=True), src=source)
    if where is not None:
        query = query + sql.SQL(" WHERE ") + where
    return query


def fingerprint(conn, info, start, end):
    """(rows, content_hash) of a slice of the live hypertable."""
    count, digest = _pg.rows(
        conn, _fingerprint_query(info["columns"], _table(info), _range_where(info)), {"lo": start, "hi": end}
    )[0]
    return int(count), digest


# TimescaleDB's own catalog: about 20x faster than timescaledb_information.chunks (measured
# 3 ms against 50-70 ms on the rig), which matters to a job that runs hourly on every host and
# to the 400-day simulation. Range values are microseconds since 1970 for time types. The view
# is the fallback should a future release change the catalog.
_SLICES_CATALOG = """
SELECT 'epoch'::timestamptz + ds.range_start * interval '1 microsecond',
       'epoch'::timestamptz + ds.range_end * interval '1 microsecond',
       array_agg(c.schema_name::text ORDER BY c.table_name), array_agg(c.table_name::text ORDER BY c.table_name),
       array_agg(format('%%I.%%I', c.schema_name, c.table_name)::regclass::oid::int8 ORDER BY c.table_name)
FROM _timescaledb_catalog.hypertable h
JOIN _timescaledb_catalog.dimension d ON d.hypertable_id = h.id AND d.interval_length IS NOT NULL
JOIN _timescaledb_catalog.chunk c ON c.hypertable_id = h.id AND NOT c.dropped
JOIN _timescaledb_catalog.chunk_constraint cc ON cc.chunk_id = c.id
JOIN _timescaledb_catalog.dimension_slice ds ON ds.id = cc.dimension_slice_id AND ds.dimension_id = d.id
WHERE h.schema_name = %s AND h.table_name = %s
  AND d.id = (SELECT min(d2.id) FROM _timescaledb_catalog.dimension d2 WHERE d2.hypertable_id = h.id
              AND d2.interval_length IS NOT NULL)
GROUP BY ds.range_start, ds.range_end ORDER BY ds.range_start
"""

_SLICES_VIEW = """
SELECT range_start, range_end, array_agg(chunk_schema::text ORDER BY chunk_name),
       array_agg(chunk_name::text ORDER BY chunk_name),
       array_agg(format('%%I.%%I', chunk_schema, chunk_name)::regclass::oid::int8 ORDER BY chunk_name)
FROM timescaledb_information.chunks
WHERE hypertable_schema = %s AND hypertable_name = %s GROUP BY range_start, range_end ORDER BY range_start
"""


def list_slices(conn, info, use_view=False):
    """Time slices of a hypertable, oldest first: start, end, chunks [{schema, name}], oids."""
    args = (info["schema"], info["table"])
    found = None
    if not use_view:
        try:
            found = _pg.rows(conn, _SLICES_CATALOG, args)
        except _pg.psycopg2.Error:
            abort(conn)
    if found is None:
        found = _pg.rows(conn, _SLICES_VIEW, args)
    slices = []
    for start, end, schemas, names, oids in found:
        if start is None or end is None or info["time_type"] in ("bigint", "integer", "smallint"):
            raise HistoryError("%s has chunks without a time range (integer time?): not supported" % info["name"])
        slices.append(
            {
                "start": utc(start),
                "end": utc(end),
                "label": range_label(start, end),
                "chunks": [{"schema": s, "name": n} for s, n in zip(schemas, names)],
                "oids": list(oids),
            }
        )
    return slices


def fingerprint_slices(conn, info, slices):
    """{label: (rows, content_hash)} of consecutive slices in one scan: the hash is a sum, so
    per-chunk sums add up to the slice's. Slices without rows get (0, '0')."""
    if not slices:
        return {}
    query = sql.SQL(
        "SELECT tableoid::int8, count(*), coalesce(sum(hashtextextended(ROW({cols})::text, 0)::numeric), 0)::text "
        "FROM {t} WHERE {w} GROUP BY 1"
    ).format(cols=_col_list(info["columns"], cast=True), t=_table(info), w=_range_where(info))
    per_chunk = {
        oid: (int(count), int(digest))
        for oid, count, digest in _pg.rows(
            conn, query, {"lo": min(s["start"] for s in slices), "hi": max(s["end"] for s in slices)}
        )
    }
    out = {}
    for s in slices:
        parts = [per_chunk.pop(oid) for oid in s["oids"] if oid in per_chunk]
        out[s["label"]] = (sum(p[0] for p in parts), "%d" % sum(p[1] for p in parts))
    if per_chunk:
        raise HistoryError("%s: rows in chunks outside the listed slices (chunks changed meanwhile?)" % info["name"])
    return out


def retention_policy_jobs(conn, info):
    """TimescaleDB retention policy jobs on a hypertable (they drop chunks without our check)."""
    return [
        int(r[0])
        for r in _pg.rows(
            conn,
            "SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = 'policy_retention' "
            "AND hypertable_schema = %s AND hypertable_name = %s",
            (info["schema"], info["table"]),
        )
    ]


def _server(conn):
    return {
        "postgresql_version": _pg.scalar(conn, "SHOW server_version").split()[0],
        "timescaledb_version": _pg.scalar(conn, "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"),
    }


def _wire_select(columns, source, where=None, order=None):
    items = []
    for c in columns:
        ident = _ident(c["name"])
        if c["wire"] == "epoch_us":
            items.append(sql.SQL("(extract(epoch FROM {c}) * 1000000)::int8").format(c=ident))
        else:
            items.append(ident)
    query = sql.SQL("SELECT {items} FROM {src}").format(items=sql.SQL(", ").join(items), src=source)
    if where is not None:
        query = query + sql.SQL(" WHERE ") + where
    if order:
        query = query + sql.SQL(" ORDER BY ") + _ident(order)
    return query


# ---------------------------------------------------------------------------------------------
# Parquet: export (COPY -> pyarrow CSV reader -> ParquetWriter) and load (Parquet -> CSV -> COPY)


def require_pyarrow():
    if not HAS_PYARROW:
        raise HistoryError(
            "the Python library pyarrow is needed to write and read the Parquet archive "
            "(pip install -r requirements/runtime.txt in the interpreter that runs this)"
        )


def arrow_schema(columns, info=None):
    fields = []
    for c in columns:
        fields.append(pa.field(c["name"], arrow_type(c["parquet_type"]), metadata={"pg_type": c["pg_type"]}))
    metadata = None
    if info is not None:
        metadata = {"insa.hypertable": info["name"], "insa.time_column": info["time_column"]}
    return pa.schema(fields, metadata=metadata)


def parquet_options(level=DEFAULT_ZSTD_LEVEL, sample=None):
    """Writer settings: zstd, statistics, dictionaries. With a sample (the first row group),
    float columns whose values rarely repeat (full-precision sensor noise) use
    BYTE_STREAM_SPLIT instead of a dictionary: measured 0.59x the size of gzip CSV against
    1.02x with dictionaries; quantized readings keep dictionaries (0.46x). See docs/HISTORY.md."""
    options = {
        "compression": "zstd",
        "compression_level": level,
        "use_dictionary": True,
        "write_statistics": True,
        "version": "2.6",
    }
    if sample is not None and sample.num_rows:
        split = []
        for field, column in zip(sample.schema, sample.columns):
            if pa.types.is_floating(field.type):
                distinct = pacompute.count_distinct(column).as_py()
                if distinct > BSS_DISTINCT_RATIO * sample.num_rows:
                    split.append(field.name)
        if split:
            options["use_dictionary"] = [n for n in sample.schema.names if n not in split]
            options["use_byte_stream_split"] = split
    return options


def _csv_read_options(columns):
    read_types = {}
    for c in columns:
        read_types[c["name"]] = pa.int64() if c["wire"] == "epoch_us" else arrow_type(c["parquet_type"])
    return (
        pacsv.ReadOptions(column_names=[c["name"] for c in columns], block_size=1 << 20, use_threads=True),
        pacsv.ParseOptions(newlines_in_values=True, double_quote=True, escape_char=False),
        pacsv.ConvertOptions(
            column_types=read_types,
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            true_values=["t"],
            false_values=["f"],
        ),
    )


def export_parquet(
    conn,
    query,
    params,
    columns,
    path,
    info=None,
    level=DEFAULT_ZSTD_LEVEL,
    row_group_rows=ROW_GROUP_ROWS,
    writer_options=None,
):
    """Streams COPY (query) TO STDOUT (CSV) through a pipe into pyarrow's CSV reader and a
    ParquetWriter: memory stays at about one row group whatever the slice size. Runs in the
    connection's current transaction. Returns the number of rows written. writer_options
    replace parquet_options(level) (the benchmark compares settings with it)."""
    require_pyarrow()
    schema = arrow_schema(columns, info)
    with conn.cursor() as cur:
        copy_sql = cur.mogrify(sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv)").format(query).as_string(conn), params)
    read_fd, write_fd = os.pipe()
    errors = []

    def produce():
        try:
            with os.fdopen(write_fd, "wb") as sink, conn.cursor() as cur:
                cur.copy_expert(copy_sql.decode("utf-8"), sink, size=1 << 16)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            errors.append(e)

    producer = threading.Thread(target=produce, name="history-copy-out", daemon=True)
    producer.start()
    rows = 0
    try:
        with os.fdopen(read_fd, "rb") as source:
            read_options, parse_options, convert_options = _csv_read_options(columns)
            writer = None

            def write(batches, n_rows):
                # The writer's settings depend on the first row group (see parquet_options).
                nonlocal writer
                table = pa.Table.from_batches(batches, schema)
                if writer is None:
                    writer = pq.ParquetWriter(path, schema, **(writer_options or parquet_options(level, table)))
                if n_rows:
                    writer.write_table(table, row_group_size=n_rows)
                return n_rows

            try:
                pending, pending_rows = [], 0
                try:
                    reader = pacsv.open_csv(
                        source, read_options=read_options, parse_options=parse_options, convert_options=convert_options
                    )
                except pa.ArrowInvalid as e:
                    if "Empty CSV file" not in str(e):
                        raise
                    reader = ()
                for batch in reader:
                    pending.append(_to_schema(batch, schema))
                    pending_rows += batch.num_rows
                    if pending_rows >= row_group_rows:
                        rows += write(pending, pending_rows)
                        pending, pending_rows = [], 0
                # Also with no rows at all: an empty slice is a valid, empty Parquet file.
                rows += write(pending, pending_rows)
            finally:
                if writer is not None:
                    writer.close()
    finally:
        producer.join()
    if errors:
        raise errors[0]
    return rows


def _to_schema(batch, schema):
    arrays = []
    for i, field in enumerate(schema):
        column = batch.column(i)
        if column.type != field.type:
            column = column.cast(field.type)
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def load_parquet(conn, path, columns, table_ident):
    """COPYs a Parquet object into an existing table (columns in manifest order). Streams
    batch by batch through a pipe. Returns the rows read from the file."""
    require_pyarrow()
    parquet = pq.ParquetFile(path)
    names = [c["name"] for c in columns]
    if parquet.schema_arrow.names != names:
        raise HistoryError(
            "%s has columns %s, its manifest says %s" % (os.path.basename(path), parquet.schema_arrow.names, names)
        )
    copy_sql = (
        sql.SQL("COPY {t} ({cols}) FROM STDIN WITH (FORMAT csv)")
        .format(t=table_ident, cols=_col_list(columns))
        .as_string(conn)
    )
    read_fd, write_fd = os.pipe()
    errors = []

    def consume():
        try:
            with os.fdopen(read_fd, "rb") as source, conn.cursor() as cur:
                cur.copy_expert(copy_sql, source, size=1 << 16)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            errors.append(e)

    consumer = threading.Thread(target=consume, name="history-copy-in", daemon=True)
    consumer.start()
    rows = 0
    try:
        with os.fdopen(write_fd, "wb") as sink:
            writer = None
            try:
                for batch in parquet.iter_batches(batch_size=READ_BATCH_ROWS):
                    if writer is None:
                        writer = pacsv.CSVWriter(
                            sink,
                            batch.schema,
                            write_options=pacsv.WriteOptions(include_header=False, quoting_style="all_valid"),
                        )
                    writer.write_batch(batch)
                    rows += batch.num_rows
            except BrokenPipeError:
                pass  # the COPY failed: its error is the one to report
            finally:
                if writer is not None:
                    try:
                        writer.close()
                    except (BrokenPipeError, OSError):
                        pass
    finally:
        consumer.join()
    if errors:
        raise errors[0]
    return rows


# ---------------------------------------------------------------------------------------------
# Manifests


def seal(manifest):
    return mf.seal(manifest)


def encode_manifest(manifest):
    return (json.dumps(seal(manifest), sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def parse_history_manifest(data, source="history manifest"):
    try:
        manifest = json.loads(data)
    except ValueError as e:
        raise HistoryError("%s is not valid JSON: %s" % (source, e)) from None
    if not isinstance(manifest, dict) or manifest.get("format") != HISTORY_FORMAT:
        raise HistoryError("%s is not an insa.timescaledb_backup history manifest" % source)
    if manifest.get("format_version") != HISTORY_VERSION:
        raise HistoryError(
            "%s has format_version %r; this collection reads version %d"
            % (source, manifest.get("format_version"), HISTORY_VERSION)
        )
    if mf.seal(manifest)["manifest_sha256"] != manifest.get("manifest_sha256"):
        raise HistoryError("%s was altered after it was written (manifest_sha256 does not match)" % source)
    for key in (
        "database",
        "hypertable",
        "range",
        "version",
        "generation",
        "columns",
        "rows",
        "content_hash",
        "object",
        "covers",
    ):
        if key not in manifest:
            raise HistoryError("%s lacks %r" % (source, key))
    return manifest


# ---------------------------------------------------------------------------------------------
# The remote side


def _service_error(exc):
    return isinstance(exc, _azure.ServiceError) or isinstance(exc, _azure.NotFoundError)


def list_ranges(store, prefix_name):
    """History blobs under a name prefix, by range label: {label: {start, end, data: {v: info},
    manifests: {v: info}}}. One listing with metadata; no blob is read."""
    ranges = {}
    try:
        for props in store.container_client.list_blobs(name_starts_with=prefix_name, include=["metadata"]):
            parsed = parse_leaf(props.name)
            if parsed is None:
                continue
            start, end, version, kind = parsed
            entry = ranges.setdefault(
                range_label(start, end), {"start": start, "end": end, "data": {}, "manifests": {}}
            )
            metadata = dict(props.metadata or {})
            entry["data" if kind == KIND_DATA else "manifests"][version] = {
                "name": props.name,
                "size": props.size,
                "sha256": metadata.get("sha256"),
                "metadata": metadata,
            }
    except _azure.AzureError as e:
        if isinstance(e, _azure.ResourceNotFoundError):
            return {}
        raise store.explain(e, "list %s" % prefix_name) from None
    return ranges


def latest_version(entry):
    """Highest version with a manifest (a verified archive), or None."""
    return max(entry["manifests"]) if entry and entry["manifests"] else None


def next_version(entry):
    seen = list(entry["data"]) + list(entry["manifests"]) if entry else []
    return max(seen) + 1 if seen else 1


def read_manifest_blob(store, name):
    return parse_history_manifest(store.read_blob(name), source=store.url(name))


def _download_checked(store, name, sha256, folder):
    path = os.path.join(folder, "%s.%s" % (sha256[:16], DATA_EXT))
    if not os.path.exists(path):
        store.download_file(name, path, sha256)
    return path


class _Work:
    """A private spool directory, removed at the end."""

    def __init__(self, work_dir=None):
        if work_dir and not os.path.isdir(work_dir):
            raise HistoryError("work_dir %s does not exist" % work_dir)
        self.path = tempfile.mkdtemp(prefix="tsdb-history.", dir=work_dir)
        os.chmod(self.path, 0o700)

    def file(self, name):
        return os.path.join(self.path, name)

    def close(self):
        shutil.rmtree(self.path, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Staging tables (loads and multiset differences)


class _Stage:
    """A temporary table with the manifest's columns and types."""

    counter = 0

    def __init__(self, conn, columns):
        _Stage.counter += 1
        self.conn = conn
        self.columns = columns
        self.name = "tsdb_history_stage_%d_%d" % (os.getpid(), _Stage.counter)
        self.ident = _ident(self.name)
        defs = sql.SQL(", ").join(sql.SQL("{} {}").format(_ident(c["name"]), sql.SQL(_pg_type(c))) for c in columns)
        with conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE TEMP TABLE {} ({})").format(self.ident, defs))

    def load(self, path):
        return load_parquet(self.conn, path, self.columns, self.ident)

    def fingerprint(self, where=None, params=None):
        count, digest = _pg.rows(self.conn, _fingerprint_query(self.columns, self.ident, where), params)[0]
        return int(count), digest

    def drop(self):
        with self.conn.cursor() as cur:
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self.ident))


def _missing_query(columns, left, left_where, right, right_where, select=None):
    """Rows of `left` (with multiplicity) that `right` lacks, compared by their text form in
    the manifest's types: works for every type that has a text form (json too)."""
    keyed = sql.SQL("ROW({})::text").format(_col_list(columns, cast=True))
    lhs = sql.SQL("SELECT {cols}, {k} AS _k FROM {t}").format(cols=_col_list(columns), k=keyed, t=left)
    if left_where is not None:
        lhs = lhs + sql.SQL(" WHERE ") + left_where
    rhs = sql.SQL("SELECT {k} AS _k FROM {t}").format(k=keyed, t=right)
    if right_where is not None:
        rhs = rhs + sql.SQL(" WHERE ") + right_where
    return sql.SQL(
        "SELECT {out} FROM (SELECT l.*, row_number() OVER (PARTITION BY l._k) AS _n FROM ({lhs}) l) a "
        "WHERE NOT EXISTS (SELECT 1 FROM (SELECT r._k, row_number() OVER (PARTITION BY r._k) AS _n FROM ({rhs}) r) b "
        "WHERE b._k = a._k AND b._n = a._n)"
    ).format(out=select if select is not None else _col_list(columns, prefix="a"), lhs=lhs, rhs=rhs)


# ---------------------------------------------------------------------------------------------
# Archive


def _iso(dt):
    return mf.isoformat(dt) if dt is not None else None


def _slice_result(info, s, **extra):
    result = {
        "hypertable": info["name"],
        "range_start": _iso(s["start"]),
        "range_end": _iso(s["end"]),
        "chunks": [c["name"] for c in s["chunks"]],
    }
    result.update(extra)
    return result


def _object_ref(manifest, folder):
    obj = manifest["object"]
    return {
        "version": manifest["version"],
        "generation": manifest["generation"],
        "name": "%s/%s" % (folder, obj["name"]) if "/" not in obj["name"] else obj["name"],
        "sha256": obj["sha256"],
        "size_bytes": obj["size_bytes"],
        "rows": manifest["rows"],
        "content_hash": manifest["content_hash"],
    }


def _metadata(values):
    return {k: _azure._metadata_value(v) for k, v in values.items() if v not in (None, "")}


class _State:
    """What the last runs found archived: {hypertable: {range label: [rows, content_hash]}} of
    the closed live slices covered by a verified archive. A hint, never a proof: with it a run
    that finds a slice's live count and hash unchanged asks Azure nothing. Retention never uses
    it (it reads the archive itself), and reverify ignores it. Written atomically at the end of
    a run; an unreadable file is ignored."""

    FORMAT = "insa.timescaledb_backup/history-state"

    def __init__(self, path, database):
        self.path = path
        self.database = database
        self.known = {}
        self.fresh = {}
        self.warning = None
        if path and os.path.exists(path):
            try:
                with open(path, "rb") as f:
                    data = json.loads(f.read().decode("utf-8"))
                if data.get("format") == self.FORMAT and data.get("database") == database:
                    self.known = data.get("hypertables") or {}
            except (OSError, ValueError, AttributeError) as e:
                self.warning = "ignored the history state file %s: %s" % (path, e)

    def get(self, hypertable, label):
        value = (self.known.get(hypertable) or {}).get(label)
        return (int(value[0]), "%s" % value[1]) if isinstance(value, list) and len(value) == 2 else None

    def keep(self, hypertable, label, fingerprint_value):
        self.fresh.setdefault(hypertable, {})[label] = [int(fingerprint_value[0]), "%s" % fingerprint_value[1]]

    def save(self, hypertables_done):
        if not self.path:
            return
        merged = {k: v for k, v in self.known.items() if k not in hypertables_done}
        merged.update(self.fresh)
        body = {"format": self.FORMAT, "version": 1, "database": self.database, "hypertables": merged}
        folder = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(folder):
            os.makedirs(folder, mode=0o700)
        mf.atomic_write_bytes(self.path, (json.dumps(body, sort_keys=True) + "\n").encode("utf-8"))


class _Archiver:
    def __init__(self, params, database, store, now, grace, check_mode, verify, reverify, work, options):
        self.params = params
        self.database = database
        self.store = store
        self.now = now
        self.grace = grace
        self.check_mode = check_mode
        self.verify = verify
        self.reverify = reverify
        self.work = work
        self.options = options
        self.conn = None
        self.server = None
        self.container_exists = True
        self.state = _State(None, database)
        self.owned = True

    def run_table(self, name, result):
        info = describe_hypertable(self.conn, name)
        folder = history_folder(self.store.prefix, self.database, info["name"])
        slices = list_slices(self.conn, info)
        closed = [s for s in slices if s["end"] + self.grace <= self.now]
        summary = {
            "slices": len(slices),
            "closed": len(closed),
            "open": len(slices) - len(closed),
            "archived": 0,
            "unchanged": 0,
            "oldest_unarchived": None,
        }
        result["hypertables"][info["name"]] = summary
        live = fingerprint_slices(self.conn, info, closed)
        todo = []
        for s in closed:
            known = self.state.get(info["name"], s["label"])
            if known is not None and not self.reverify and known == live[s["label"]]:
                summary["unchanged"] += 1
                self.state.keep(info["name"], s["label"], known)
            else:
                todo.append(s)
        remote = {}
        by_month = {}
        for s in todo:
            by_month.setdefault(month_folder(folder, s["start"]), []).append(s)
        for month, items in sorted(by_month.items()) if self.container_exists else ():
            if len(items) <= SMALL_LISTING:
                for s in items:  # a few ranges: small listings beat one of the whole month
                    remote.update(list_ranges(self.store, "%s/%s." % (month, s["label"])))
            else:
                remote.update(list_ranges(self.store, month + "/"))
        for s in todo:
            try:
                outcome = self.slice(info, folder, s, remote.get(s["label"]), live[s["label"]])
            except _azure.AzureTierError as e:
                if _service_error(e):
                    raise
                outcome = _slice_result(info, s, status="failed", error=self.store.redact(e))
            except (HistoryError, _pg.PgError, mf.ManifestError, OSError) as e:
                outcome = _slice_result(info, s, status="failed", error=self.store.redact(e))
                if not abort(self.conn):
                    if self.owned:
                        self.conn.close()
                    self.conn, self.owned = open_connection(self.params, self.database), True
            status = outcome["status"]
            if status in ("unchanged", "archived"):
                self.state.keep(info["name"], s["label"], (outcome["covers_rows"], outcome["covers_hash"]))
            if status == "unchanged":
                summary["unchanged"] += 1
                continue
            if status == "failed":
                result["failures"].append(outcome)
            else:
                result["archived"].append(outcome)
                summary["archived"] += 1
                result["bytes"] += outcome.get("bytes") or 0
            if status == "failed" or self.check_mode:
                if summary["oldest_unarchived"] is None:
                    summary["oldest_unarchived"] = _iso(s["start"])

    def slice(self, info, folder, s, entry, fingerprint_now):
        rows, digest = fingerprint_now
        latest = latest_version(entry)
        reason = "new"
        prior = None
        if latest is not None:
            meta = entry["manifests"][latest]["metadata"]
            if (meta.get("covers_rows"), meta.get("covers_hash")) == ("%d" % rows, digest):
                data = entry["data"].get(latest)
                intact = (
                    data is not None
                    and data["sha256"] == meta.get("object_sha256")
                    and "%s" % data["size"] == meta.get("object_size")
                )
                if intact and self.reverify:
                    intact = self._object_intact(data["name"], meta.get("object_sha256"))
                    if intact:
                        checked = read_manifest_blob(self.store, entry["manifests"][latest]["name"])
                        for ref in checked.get("depends_on") or []:
                            if not self._object_intact(ref["name"], ref["sha256"]):
                                raise HistoryError(
                                    "%s (version %d, generation %d of this range) is damaged or missing; its rows "
                                    "are no longer in the database, so they cannot be archived again. Restore it "
                                    "from another copy of the container if there is one"
                                    % (self.store.url(ref["name"]), ref["version"], ref["generation"])
                                )
                if intact:
                    return _slice_result(
                        info, s, status="unchanged", version=latest, covers_rows=rows, covers_hash=digest
                    )
                reason = "replaces_damaged"
            else:
                reason = "changed"
            prior = read_manifest_blob(self.store, entry["manifests"][latest]["name"])
        elif entry and entry["data"]:
            reason = "retry"

        version = next_version(entry)
        live_chunks = {c["name"] for c in s["chunks"]}
        depends_on = []
        generation = 1
        if prior is not None:
            prior_chunks = {c["name"] for c in prior["covers"].get("chunks", prior.get("chunks", []))}
            depends_on = list(prior.get("depends_on") or [])
            generation = prior["generation"]
            if reason == "replaces_damaged":
                # The newest object is unusable: the new version takes its place in its
                # generation, with the live rows the earlier generations do not hold.
                pass
            elif not live_chunks & prior_chunks:
                # The chunks archived before are gone: these rows came back after a drop.
                depends_on.append(_object_ref(prior, month_folder(folder, s["start"])))
                generation += 1
                reason = "new_generation"
        planned = _slice_result(
            info,
            s,
            status="would_archive" if self.check_mode else "archived",
            reason=reason,
            version=version,
            generation=generation,
            covers_rows=rows,
            covers_hash=digest,
        )
        if self.check_mode:
            return planned
        return self._write(info, folder, s, planned, rows, digest, depends_on)

    def _object_intact(self, name, sha256):
        path = self.work.file("reverify.%s" % DATA_EXT)
        try:
            self.store.download_file(name, path, sha256)
            return True
        except _azure.IntegrityError:
            return False
        finally:
            if os.path.exists(path):
                os.unlink(path)

    def _write(self, info, folder, s, planned, live_rows, live_digest, depends_on):
        conn = self.conn
        columns = info["columns"]
        version = planned["version"]
        data_name = object_name(folder, s["start"], s["end"], version, DATA_EXT)
        manifest_name = object_name(folder, s["start"], s["end"], version, MANIFEST_EXT)
        local = self.work.file(data_name.rsplit("/", 1)[-1])
        bounds = {"lo": s["start"], "hi": s["end"]}
        prior_stage = None
        if depends_on:
            prior_stage = _Stage(conn, columns)
            for ref in depends_on:
                path = _download_checked(self.store, ref["name"], ref["sha256"], self.work.path)
                before = prior_stage.fingerprint()
                prior_stage.load(path)
                after = prior_stage.fingerprint()
                if after[0] - before[0] != ref["rows"]:
                    raise HistoryError(
                        "%s holds %d rows, its manifest says %d" % (ref["name"], after[0] - before[0], ref["rows"])
                    )
        try:
            with conn.cursor() as cur:
                cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            try:
                rows, digest = fingerprint(conn, info, s["start"], s["end"])
                if prior_stage is None:
                    source = sql.SQL("(SELECT * FROM {t} WHERE {w}) src").format(t=_table(info), w=_range_where(info))
                    obj_rows, obj_digest = rows, digest
                else:
                    delta = _Stage(conn, columns)
                    with conn.cursor() as cur:
                        cur.execute(
                            sql.SQL("INSERT INTO {d} ({cols}) ").format(d=delta.ident, cols=_col_list(columns))
                            + _missing_query(columns, _table(info), _range_where(info), prior_stage.ident, None),
                            bounds,
                        )
                    source = delta.ident
                    obj_rows, obj_digest = delta.fingerprint()
                exported = export_parquet(
                    conn,
                    _wire_select(columns, source, order=info["time_column"]),
                    bounds,
                    columns,
                    local,
                    info=info,
                    level=self.options["compression_level"],
                )
            finally:
                with conn.cursor() as cur:
                    cur.execute("ROLLBACK")
        finally:
            if prior_stage is not None:
                prior_stage.drop()
        if exported != obj_rows:
            raise HistoryError(
                "export of %s wrote %d rows, the snapshot holds %d" % (planned["range_start"], exported, obj_rows)
            )
        sha256, size = mf.sha256_file(local)
        row_groups = pq.ParquetFile(local).metadata.num_row_groups
        common = {
            "database": self.database,
            "hypertable": info["name"],
            "range_start": planned["range_start"],
            "range_end": planned["range_end"],
            "version": version,
            "generation": planned["generation"],
        }
        data_meta = dict(common, kind=KIND_DATA, sha256=sha256, rows=obj_rows, content_hash=obj_digest)
        item = {
            "kind": _azure.KIND_ARCHIVE,
            "part": None,
            "path": local,
            "name": data_name,
            "sha256": sha256,
            "size": size,
        }
        uploaded, warning = self.store.upload_file(
            item,
            _metadata(data_meta),
            self.options["access_tier"],
            self.options["tags"],
            int(self.options["block_size_mb"]),
            int(self.options["max_concurrency"]),
        )
        os.unlink(local)
        sent = uploaded["bytes"] if uploaded["status"] == "uploaded" else 0

        verified = None
        if self.verify:
            verified = verify_object(conn, self.store, data_name, sha256, columns, obj_rows, obj_digest, self.work)
        manifest = {
            "format": HISTORY_FORMAT,
            "format_version": HISTORY_VERSION,
            "database": self.database,
            "hypertable": info["name"],
            "time_column": info["time_column"],
            "time_type": info["time_type"],
            "range": {"start": planned["range_start"], "end": planned["range_end"], "label": s["label"]},
            "version": version,
            "generation": planned["generation"],
            "reason": planned["reason"],
            "chunks": s["chunks"],
            "columns": [dict({k: c[k] for k in ("name", "pg_type", "parquet_type")}, **_fallback(c)) for c in columns],
            "rows": obj_rows,
            "content_hash": obj_digest,
            "hash_algorithm": HASH_ALGORITHM,
            "covers": {"rows": rows, "content_hash": digest, "chunks": s["chunks"]},
            "depends_on": depends_on,
            "object": {
                "name": data_name.rsplit("/", 1)[-1],
                "format": "parquet",
                "compression": "zstd:%d" % self.options["compression_level"],
                "row_groups": row_groups,
                "size_bytes": size,
                "sha256": sha256,
            },
            "verified": verified,
            "reference_time": _iso(self.now),
            "created_at": _iso(mf.utcnow()),
            "host": socket.getfqdn(),
            "server": self.server,
        }
        if (rows, digest) != (live_rows, live_digest):
            planned["covers_rows"], planned["covers_hash"] = rows, digest
        body = encode_manifest(manifest)
        manifest_path = self.work.file(manifest_name.rsplit("/", 1)[-1])
        mf.atomic_write_bytes(manifest_path, body)
        manifest_sha, manifest_size = mf.sha256_file(manifest_path)
        manifest_meta = dict(
            common,
            kind=KIND_MANIFEST,
            sha256=manifest_sha,
            rows=obj_rows,
            content_hash=obj_digest,
            covers_rows=rows,
            covers_hash=digest,
            object_sha256=sha256,
            object_size=size,
        )
        item = {
            "kind": _azure.KIND_MANIFEST,
            "part": None,
            "path": manifest_path,
            "name": manifest_name,
            "sha256": manifest_sha,
            "size": manifest_size,
        }
        up_manifest, _w = self.store.upload_file(item, _metadata(manifest_meta), None, self.options["tags"], 4, 1)
        os.unlink(manifest_path)
        sent += up_manifest["bytes"] if up_manifest["status"] == "uploaded" else 0
        planned.update(
            rows=obj_rows,
            content_hash=obj_digest,
            bytes=sent,
            object=self.store.url(data_name),
            manifest=self.store.url(manifest_name),
            sha256=sha256,
            verified=bool(verified),
        )
        if warning:
            planned["warning"] = warning
        return planned


def verify_object(conn, store, name, sha256, columns, rows, content_hash, work):
    """Reads an uploaded object back: sha256 of what Azure returns, then the rows it decodes
    to, loaded into a temporary table, counted and hashed by PostgreSQL. Raises on mismatch."""
    path = work.file("verify.%s" % DATA_EXT)
    stage = None
    try:
        store.download_file(name, path, sha256)
        stage = _Stage(conn, columns)
        loaded = stage.load(path)
        got = stage.fingerprint()
    finally:
        if stage is not None:
            stage.drop()
        if os.path.exists(path):
            os.unlink(path)
    if loaded != rows or got != (rows, content_hash):
        raise HistoryError(
            "verification of %s failed: it decodes to %d rows with content hash %s; expected %d rows with %s. "
            "The object is kept but not trusted (no manifest); the next run archives a new version"
            % (store.url(name), got[0], got[1], rows, content_hash)
        )
    return {"method": "download+sha256+reload+pg-hash", "at": _iso(mf.utcnow()), "rows": got[0], "content_hash": got[1]}


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
):
    """Archives every closed slice of the hypertables (default: all of the database) that has
    no verified archive matching its live count and hash. An unreachable Azure stops the run
    ('stopped'); a slice that fails is reported in 'failures' and the others go on.

    state_file (optional) remembers which live slices were found covered, so that a run in
    which nothing changed asks Azure nothing (see _State). connection (optional) is an open
    connection to `database` from open_connection, reused and left open (the runner's)."""
    mf.validate_database_name(database)
    now = reference_time(now)
    if not check_mode:
        require_pyarrow()
    if access_tier is not None and access_tier not in _azure.TIERS:
        raise _azure.ConfigError("access_tier must be one of %s" % ", ".join(_azure.TIERS))
    _azure.validate_tags(tags)
    if not 1 <= int(compression_level) <= 22:
        raise HistoryError("compression_level must be between 1 and 22 (zstd)")
    result = _new_result()
    result["reference_time"] = _iso(now)
    work = _Work(work_dir)
    archiver = _Archiver(
        params,
        database,
        store,
        now,
        grace,
        check_mode,
        verify,
        reverify,
        work,
        {
            "access_tier": access_tier,
            "tags": tags,
            "block_size_mb": block_size_mb,
            "max_concurrency": max_concurrency,
            "compression_level": int(compression_level),
        },
    )
    archiver.state = _State(state_file, database)
    if archiver.state.warning:
        result["warnings"].append(archiver.state.warning)
    done = []
    try:
        archiver.conn, archiver.owned = use_connection(params, database, connection)
        archiver.server = _server(archiver.conn)
        names = (
            [qualified(*split_table_name(n)) for n in hypertables] if hypertables else list_hypertables(archiver.conn)
        )
        try:
            container = store.ensure_container(check_mode=check_mode)
            archiver.container_exists = container["exists"]
            result["container_created"] = container["created"]
            for name in names:
                archiver.run_table(name, result)
                done.append(name)
        except _azure.AzureTierError as e:
            if not _service_error(e):
                raise
            result["stopped"] = store.redact(e)
        if not check_mode:
            archiver.state.save(done)
    finally:
        if archiver.conn is not None and archiver.owned:
            archiver.conn.close()
        work.close()
    oldest = [h["oldest_unarchived"] for h in result["hypertables"].values() if h["oldest_unarchived"]]
    result["oldest_unarchived"] = min(oldest) if oldest else None
    result["changed"] = bool(result["archived"]) or bool(result.get("container_created"))
    return result


# ---------------------------------------------------------------------------------------------
# Retention


def _audit(path, record):
    if not path:
        return
    line = (json.dumps(record, sort_keys=True, ensure_ascii=True) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def normalize_policies(policies):
    """[{'hypertable'|'name': str, 'retention_days': int}] -> [(name, timedelta)]."""
    out = []
    for p in policies or []:
        name = p.get("hypertable") or p.get("name")
        days = p.get("retention_days")
        if not name or days is None:
            raise HistoryError("each retention entry needs a hypertable name and retention_days")
        if int(days) < 1:
            raise HistoryError("retention_days of %s must be 1 or more" % name)
        out.append((qualified(*split_table_name(name)), datetime.timedelta(days=int(days))))
    if not out:
        raise HistoryError("no hypertable given: retention is per hypertable (e.g. esp_telemetry: 30 days)")
    return out


def _referenced_reason(conn, info):
    """Why no chunk of a hypertable that a foreign key points at can be dropped, or None.
    TimescaleDB refuses such a drop (the key depends on each chunk's unique index) even when no
    row refers to the chunk; said before trying, in words an operator can act on."""
    oid = _pg.scalar(
        conn,
        "SELECT %s::regclass::oid::int8",
        (_pg.regclass_text(info["schema"], info["table"]),),
    )
    refs = _pg.hypertable_references(conn, oid)
    if not refs:
        return None
    keys = ", ".join("%s on %s" % (_pg.qualify_part(r["name"]), r["table"]) for r in refs)
    return (
        "TimescaleDB cannot drop chunks of %s while a foreign key points at it (%s), even when no row refers to "
        "them. Drop the key (ALTER TABLE %s DROP CONSTRAINT %s) if the reference need not be enforced by the "
        "database, or take %s out of the retention policies; its archive is kept either way"
        % (info["name"], keys, refs[0]["table"], _pg.qualify_part(refs[0]["name"]), info["name"])
    )


def _held(info, s, code, reason, **extra):
    return _slice_result(info, s, reason_code=code, reason=reason, **extra)


def _check_archive(store, info, folder, s, verify_objects, work):
    """The sealed manifest of the newest verified version of a slice and the objects it relies
    on, checked. Returns (manifest, None) or (None, (code, reason))."""
    entry = list_ranges(store, "%s/%s." % (month_folder(folder, s["start"]), s["label"])).get(s["label"])
    latest = latest_version(entry)
    if latest is None:
        attempts = len(entry["data"]) if entry else 0
        return None, (
            HELD_NOT_ARCHIVED,
            "no verified archive of this range yet%s; chunk_archive must archive it first"
            % (" (%d unverified attempt(s))" % attempts if attempts else ""),
        )
    try:
        manifest = read_manifest_blob(store, entry["manifests"][latest]["name"])
    except HistoryError as e:
        return None, (HELD_DAMAGED, "%s" % e)
    month = month_folder(folder, s["start"])
    refs = [_object_ref(manifest, month)] + list(manifest.get("depends_on") or [])
    for ref in refs:
        try:
            if verify_objects:
                path = work.file("check.%s" % DATA_EXT)
                try:
                    store.download_file(ref["name"], path, ref["sha256"])
                finally:
                    if os.path.exists(path):
                        os.unlink(path)
            else:
                props = store.properties(ref["name"])
                if props is None or props["sha256"] != ref["sha256"] or props["size"] != ref["size_bytes"]:
                    raise _azure.IntegrityError("%s is missing or differs from its manifest" % store.url(ref["name"]))
        except _azure.IntegrityError as e:
            return None, (HELD_DAMAGED, "%s; run chunk_archive with reverify to archive it again" % store.redact(e))
        except _azure.ArchivedError as e:
            return None, (HELD_DAMAGED, "%s" % store.redact(e))
    return manifest, None


def _drop_slice(conn, info, s, manifest, check_mode, lock_timeout):
    """Locks the slice's chunks, recomputes count and hash, compares them with the archive and
    drops exactly these chunks, all in one transaction. Returns (dropped, held)."""
    chunk_idents = [_ident(c["schema"], c["name"]) for c in s["chunks"]]
    with conn.cursor() as cur:
        cur.execute("BEGIN")
        try:
            cur.execute("SET LOCAL lock_timeout = %s", ("%ds" % lock_timeout,))
            try:
                # EXCLUSIVE blocks writers (late rows) until the drop commits; readers go on.
                # Check mode takes no lock.
                if not check_mode:
                    cur.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(sql.SQL(", ").join(chunk_idents)))
            except pg_errors.LockNotAvailable:
                cur.execute("ROLLBACK")
                return None, (
                    HELD_LOCKED,
                    "could not lock the chunks within %ds (busy); next run tries again" % lock_timeout,
                )
            rows, digest = fingerprint(conn, info, s["start"], s["end"])
            covers = manifest["covers"]
            if (rows, digest) != (covers["rows"], covers["content_hash"]):
                cur.execute("ROLLBACK")
                return None, (
                    HELD_CHANGED,
                    "live rows differ from the archive (live %d rows, hash %s; archive v%d covers %d rows, hash %s): "
                    "rows arrived or changed after archiving; chunk_archive will archive a new version"
                    % (rows, digest, manifest["version"], covers["rows"], covers["content_hash"]),
                )
            if check_mode:
                cur.execute("ROLLBACK")
                return {"rows": rows, "content_hash": digest}, None
            time_type = sql.SQL(_pg_type({"name": info["time_column"], "pg_type": info["time_type"]}))
            cur.execute(
                sql.SQL(
                    "SELECT drop_chunks(%(ht)s::regclass, older_than => (%(hi)s)::{t}, "
                    "newer_than => (%(lo)s)::{t})::text"
                ).format(t=time_type),
                {
                    "ht": _pg.regclass_text(info["schema"], info["table"]),
                    "hi": s["end"],
                    "lo": s["start"],
                },
            )
            dropped = sorted(r[0] for r in cur.fetchall())
            # drop_chunks() names the chunks as quote_identifier() writes them.
            expected = sorted(_pg.qualified(c["schema"], c["name"]) for c in s["chunks"])
            if dropped != expected:
                cur.execute("ROLLBACK")
                return None, (
                    HELD_UNEXPECTED,
                    "drop_chunks would have dropped %s, the verified set is %s; nothing dropped" % (dropped, expected),
                )
            cur.execute("COMMIT")
            return {"rows": rows, "content_hash": digest}, None
        except BaseException:
            abort(conn)
            raise


def enforce_retention(
    params,
    database,
    store,
    policies,
    now=None,
    check_mode=False,
    verify_objects=True,
    lock_timeout=LOCK_TIMEOUT_SECONDS,
    audit_log=None,
    work_dir=None,
    connection=None,
):
    """Drops the slices older than each hypertable's retention that a verified archive covers
    (newest version's count and hash equal the live rows, re-checked under lock; its objects
    read back with the right sha256). Every other due slice is kept and reported in
    'held_back' with a reason code. Never raises for Azure being unreachable: it holds back."""
    mf.validate_database_name(database)
    now = reference_time(now)
    policies = normalize_policies(policies)
    result = {
        "changed": False,
        "reference_time": _iso(now),
        "dropped": [],
        "held_back": [],
        "hypertables": {},
        "warnings": [],
    }
    work = _Work(work_dir)
    conn, owned = use_connection(params, database, connection)
    try:
        for name, retention in policies:
            info = describe_hypertable(conn, name)
            cutoff = now - retention
            jobs = retention_policy_jobs(conn, info)
            if jobs:
                result["warnings"].append(
                    "%s has a TimescaleDB retention policy (job %s): it drops chunks without checking the archive. "
                    "Remove it (SELECT remove_retention_policy('%s')) and let chunk_retention do this"
                    % (info["name"], ", ".join("%d" % j for j in jobs), info["name"])
                )
            slices = list_slices(conn, info)
            due = [s for s in slices if s["end"] <= cutoff]
            summary = {
                "retention_days": retention.days,
                "cutoff": _iso(cutoff),
                "slices": len(slices),
                "due": len(due),
                "dropped": 0,
                "held_back": 0,
                "retention_policy_jobs": jobs,
            }
            result["hypertables"][info["name"]] = summary
            folder = history_folder(store.prefix, database, info["name"])
            unreachable = None
            referenced = _referenced_reason(conn, info)
            for s in due:
                manifest = None
                if referenced is not None:
                    held = (HELD_REFERENCED, referenced)
                elif unreachable is not None:
                    held = (HELD_UNREACHABLE, unreachable)
                else:
                    try:
                        manifest, held = _check_archive(store, info, folder, s, verify_objects, work)
                    except _azure.AzureTierError as e:
                        manifest, held = None, (HELD_UNREACHABLE if _service_error(e) else HELD_ERROR, store.redact(e))
                        if _service_error(e):
                            unreachable = "the archive cannot be checked: %s" % store.redact(e)
                            held = (HELD_UNREACHABLE, unreachable)
                if held is None:
                    try:
                        dropped, held = _drop_slice(conn, info, s, manifest, check_mode, lock_timeout)
                    except _pg.psycopg2.Error as e:
                        dropped, held = None, (HELD_ERROR, "%s" % e)
                if held is not None:
                    summary["held_back"] += 1
                    result["held_back"].append(_held(info, s, held[0], held[1]))
                    continue
                summary["dropped"] += 1
                record = _slice_result(
                    info,
                    s,
                    rows=dropped["rows"],
                    content_hash=dropped["content_hash"],
                    archive_version=manifest["version"],
                    archive_generation=manifest["generation"],
                    archive_object=store.url("%s/%s" % (month_folder(folder, s["start"]), manifest["object"]["name"])),
                )
                result["dropped"].append(record)
                if not check_mode:
                    _audit(
                        audit_log,
                        dict(
                            record,
                            event="chunks_dropped",
                            database=database,
                            at=_iso(mf.utcnow()),
                            reference_time=_iso(now),
                        ),
                    )
    finally:
        if owned:
            conn.close()
        work.close()
    result["changed"] = bool(result["dropped"])
    return result


# ---------------------------------------------------------------------------------------------
# Restore


def restore_range(
    params,
    database,
    store,
    hypertable,
    start,
    end,
    source_database=None,
    target_table=None,
    version=None,
    create_table=False,
    check_mode=False,
    work_dir=None,
    connection=None,
):
    """Loads the archived rows of hypertable with start <= time < end into database (the live
    one or another), skipping rows already present (compared as whole rows, with their
    multiplicity), and verifies that every archived row in the range is then present. Each
    object is checked (sha256, rows and content hash against its manifest) before it is used."""
    require_pyarrow()
    mf.validate_database_name(database)
    source_database = source_database or database
    mf.validate_database_name(source_database)
    start, end = _azure.parse_timestamp(start), _azure.parse_timestamp(end)
    if end <= start:
        raise HistoryError("end (%s) must be after start (%s)" % (_iso(end), _iso(start)))
    name = qualified(*split_table_name(hypertable))
    target = qualified(*split_table_name(target_table or name))
    folder = history_folder(store.prefix, source_database, name)
    result = {
        "changed": False,
        "hypertable": name,
        "target_table": target,
        "source_database": source_database,
        "database": database,
        "start": _iso(start),
        "end": _iso(end),
        "ranges": [],
        "rows_archived": 0,
        "rows_inserted": 0,
        "rows_present": 0,
        "table_created": False,
        "warnings": [],
    }
    store.ensure_container(create=False)
    # Months that can hold a range overlapping [start, end): ranges start at most one month-ish
    # before `start` for usual chunk intervals; list from a month earlier to be safe.
    entries = {}
    month = datetime.datetime(start.year, start.month, 1, tzinfo=datetime.timezone.utc) - datetime.timedelta(days=1)
    month = month.replace(day=1)
    while month < end:
        entries.update(list_ranges(store, "%s/%04d/%02d/" % (folder, month.year, month.month)))
        month = (month + datetime.timedelta(days=32)).replace(day=1)
    selected = []
    for label, entry in sorted(entries.items(), key=lambda kv: kv[1]["start"]):
        if entry["end"] <= start or entry["start"] >= end or not entry["manifests"]:
            continue
        manifests = [read_manifest_blob(store, entry["manifests"][v]["name"]) for v in sorted(entry["manifests"])]
        if version is not None:
            chosen = [m for m in manifests if m["version"] == int(version)]
        else:
            newest = {}
            for m in manifests:
                newest[m["generation"]] = m
            chosen = [newest[g] for g in sorted(newest)]
        if chosen:
            selected.append((label, entry, chosen))
    if not selected:
        raise HistoryError(
            "no archived range of %s (database %s) overlaps %s .. %s under %s in container %s"
            % (name, source_database, _iso(start), _iso(end), folder, store.container)
        )
    work = _Work(work_dir)
    conn, owned = use_connection(params, database, connection)
    try:
        columns, result["warnings"] = resolve_columns(conn, selected[0][2][0]["columns"])
        info = {
            "name": name,
            "time_column": selected[0][2][0]["time_column"],
            "time_type": selected[0][2][0]["time_type"],
        }
        t_schema, t_table = split_table_name(target)
        target_ident = _ident(t_schema, t_table)
        exists = _pg.scalar(conn, "SELECT to_regclass(%s) IS NOT NULL", (_pg.regclass_text(t_schema, t_table),))
        if not exists:
            if not create_table:
                raise HistoryError(
                    "table %s does not exist in database %s: create it (same columns as the hypertable) or set "
                    "create_table: true" % (target, database)
                )
            result["table_created"] = True
            if not check_mode:
                _create_table(conn, t_schema, t_table, columns, info["time_column"])
        else:
            present = {
                r[0]
                for r in _pg.rows(
                    conn,
                    "SELECT attname::text FROM pg_attribute "
                    "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
                    (_pg.regclass_text(t_schema, t_table),),
                )
            }
            lacking = [c["name"] for c in columns if c["name"] not in present]
            if lacking:
                raise HistoryError(
                    "table %s in database %s lacks the archived columns %s" % (target, database, ", ".join(lacking))
                )
        window = {"lo": start, "hi": end}
        for label, entry, manifests in selected:
            stage = _Stage(conn, columns)
            try:
                item = {
                    "range_start": _iso(entry["start"]),
                    "range_end": _iso(entry["end"]),
                    "versions": [],
                    "rows_archived": 0,
                }
                for m in manifests:
                    if [c["name"] for c in m["columns"]] != [c["name"] for c in columns]:
                        raise HistoryError(
                            "range %s version %d has other columns than the first range restored"
                            % (label, m["version"])
                        )
                    ref = _object_ref(m, month_folder(folder, entry["start"]))
                    path = _download_checked(store, ref["name"], ref["sha256"], work.path)
                    part = _Stage(conn, columns)
                    try:
                        part.load(path)
                        got = part.fingerprint()
                        if got != (m["rows"], m["content_hash"]):
                            raise HistoryError(
                                "%s decodes to %d rows (hash %s); its manifest says %d rows (hash %s): not restored"
                                % (store.url(ref["name"]), got[0], got[1], m["rows"], m["content_hash"])
                            )
                        with conn.cursor() as cur:
                            cur.execute(sql.SQL("INSERT INTO {} SELECT * FROM {}").format(stage.ident, part.ident))
                    finally:
                        part.drop()
                    os.unlink(path)
                    item["versions"].append({"version": m["version"], "generation": m["generation"], "rows": m["rows"]})
                    item["rows_archived"] += m["rows"]
                in_window = _range_where(info)
                item["rows_in_window"] = stage.fingerprint(in_window, window)[0]
                if result["table_created"] and check_mode:
                    item["rows_inserted"] = item["rows_in_window"]
                else:
                    count_missing = sql.SQL("SELECT count(*) FROM ({}) m").format(
                        _missing_query(columns, stage.ident, in_window, target_ident, in_window, select=sql.SQL("1"))
                    )
                    with conn.cursor() as cur:
                        cur.execute("BEGIN")
                        try:
                            if check_mode:
                                cur.execute(count_missing, window)
                                item["rows_inserted"] = int(cur.fetchone()[0])
                            else:
                                cur.execute(
                                    sql.SQL("INSERT INTO {t} ({cols}) ").format(t=target_ident, cols=_col_list(columns))
                                    + _missing_query(columns, stage.ident, in_window, target_ident, in_window),
                                    window,
                                )
                                item["rows_inserted"] = cur.rowcount
                                cur.execute(count_missing, window)
                                still = int(cur.fetchone()[0])
                                if still:
                                    raise HistoryError(
                                        "after loading range %s, %d archived rows are still missing from %s; "
                                        "rolled back" % (label, still, target)
                                    )
                            cur.execute("ROLLBACK" if check_mode else "COMMIT")
                        except BaseException:
                            abort(conn)
                            raise
                item["rows_present"] = item["rows_in_window"] - item["rows_inserted"]
                item["verified"] = not check_mode
            finally:
                stage.drop()
            result["ranges"].append(item)
            result["rows_archived"] += item["rows_in_window"]
            result["rows_inserted"] += item["rows_inserted"]
            result["rows_present"] += item["rows_present"]
    finally:
        if owned:
            conn.close()
        work.close()
    result["changed"] = bool(result["rows_inserted"]) or result["table_created"]
    return result


def _create_table(conn, schema, table, columns, time_column):
    defs = sql.SQL(", ").join(sql.SQL("{} {}").format(_ident(c["name"]), sql.SQL(_pg_type(c))) for c in columns)
    with conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(_ident(schema)))
        cur.execute(sql.SQL("CREATE TABLE {} ({})").format(_ident(schema, table), defs))
        if _pg.scalar(conn, "SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'"):
            cur.execute(
                "SELECT create_hypertable(%s::regclass, by_range(%s))",
                (_pg.regclass_text(schema, table), time_column),
            )
