# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The history archive's Parquet codec: export a slice (COPY -> pyarrow CSV reader -> ParquetWriter)
and load an object back (Parquet -> CSV -> COPY) into a staging table that checks it.

Private to the collection. No Ansible imports: the scheduled runner uses this too.
Part of the history archive (see _history).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import shutil
import tempfile
import threading
import traceback

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _pg
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._history_layout import (
    HistoryError,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._history_sql import (
    _col_list,
    _fingerprint_query,
    _ident,
    _pg_type,
    sql,
)

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

PYARROW_REQUIREMENT = "pyarrow"
DEFAULT_ZSTD_LEVEL = 3
ROW_GROUP_ROWS = 131072
# Float columns with more distinct values than this share of rows are written with
# BYTE_STREAM_SPLIT rather than a dictionary.
BSS_DISTINCT_RATIO = 0.25
READ_BATCH_ROWS = 65536


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


def row_group_count(path):
    """Row groups of a Parquet file (recorded in the history manifest)."""
    return pq.ParquetFile(path).metadata.num_row_groups
