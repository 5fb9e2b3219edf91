# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The history archive's Parquet codec: export a slice (COPY -> pyarrow CSV reader -> ParquetWriter)
and load an object back (Parquet -> CSV -> COPY) into a staging table that checks it.

Private to the collection. No Ansible imports: the scheduled runner uses this too.
Part of the history archive (see _history).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
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
            "(pip install -r requirements/runtime.txt in the interpreter that runs this)",
            kind="config",
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
    copy_sql = copy_sql.decode("utf-8")
    read_fd, write_fd = os.pipe()
    with _copy_in_thread(conn, copy_sql, write_fd, "wb", "history-copy-out"):
        with os.fdopen(read_fd, "rb") as source:
            sink = _ParquetSink(path, schema, level, writer_options)
            try:
                return _csv_to_parquet(source, columns, schema, sink, row_group_rows)
            finally:
                sink.close()


@contextlib.contextmanager
def _copy_in_thread(conn, copy_sql, fd, mode, name):
    """Runs ``copy_sql`` (COPY ... TO STDOUT or FROM STDIN) on one end of a pipe, ``fd``, in a
    thread while the body works the other end; the COPY's error, if any, is raised after it."""
    errors = []

    def run():
        try:
            with os.fdopen(fd, mode) as stream, conn.cursor() as cur:
                cur.copy_expert(copy_sql, stream, size=1 << 16)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            errors.append(e)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join()
    if errors:
        raise errors[0]


class _ParquetSink:
    """A ParquetWriter opened on the first row group: its settings depend on that sample (see
    parquet_options), unless ``writer_options`` gives them."""

    def __init__(self, path, schema, level, writer_options=None):
        self.path = path
        self.schema = schema
        self.level = level
        self.writer_options = writer_options
        self.writer = None

    def write(self, batches, n_rows):
        table = pa.Table.from_batches(batches, self.schema)
        if self.writer is None:
            options = self.writer_options or parquet_options(self.level, table)
            self.writer = pq.ParquetWriter(self.path, self.schema, **options)
        if n_rows:
            self.writer.write_table(table, row_group_size=n_rows)
        return n_rows

    def close(self):
        if self.writer is not None:
            self.writer.close()


def _csv_to_parquet(source, columns, schema, sink, row_group_rows):
    """Reads COPY's CSV from ``source`` into row groups of ``row_group_rows``. Returns the rows."""
    read_options, parse_options, convert_options = _csv_read_options(columns)
    rows = 0
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
            rows += sink.write(pending, pending_rows)
            pending, pending_rows = [], 0
    # Also with no rows at all: an empty slice is a valid, empty Parquet file.
    return rows + sink.write(pending, pending_rows)


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
            "%s has columns %s, its manifest says %s" % (os.path.basename(path), parquet.schema_arrow.names, names),
            kind="integrity",
        )
    copy_sql = (
        sql.SQL("COPY {t} ({cols}) FROM STDIN WITH (FORMAT csv)")
        .format(t=table_ident, cols=_col_list(columns))
        .as_string(conn)
    )
    read_fd, write_fd = os.pipe()
    with _copy_in_thread(conn, copy_sql, read_fd, "rb", "history-copy-in"):
        with os.fdopen(write_fd, "wb") as sink:
            return _parquet_to_csv(parquet, sink)


def _parquet_to_csv(parquet, sink):
    """Writes the object's rows as CSV into ``sink`` (the COPY's input). Returns the rows."""
    rows = 0
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
    return rows


class _Work:
    """A private spool directory, removed at the end."""

    def __init__(self, work_dir=None):
        if work_dir and not os.path.isdir(work_dir):
            raise HistoryError("work_dir %s does not exist" % work_dir, kind="config")
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
