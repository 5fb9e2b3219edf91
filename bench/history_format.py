"""Which format for the history archive? Parquet (pyarrow) against compressed CSV with a schema
file, on real slices of the rig's TimescaleDB, through the collection's own export path.

    . .local/env.sh && .venv/bin/python bench/history_format.py            # seeds it_history_bench if missing
    .venv/bin/python bench/history_format.py --dbname it_history_bench --repeat 3 --json out.json

For each candidate: size of one slice's object, time to write it (COPY + encode + compress)
and time to read it back into typed columns. Every figure is printed as a ratio to gzip-6 CSV
measured in the same process and the same run (absolute times on a shared 2-core VM vary by
±20 % between runs; ratios within one run do not). With --pg-dump-container it also dumps the
whole database with pg_dump -Fc --compress=zstd:3 inside that container, for the storage
arithmetic in docs/HISTORY.md (archive versus nightly full dumps kept forever).
"""

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "collections"))

import pyarrow as pa  # noqa: E402
import pyarrow.csv as pacsv  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _history as h  # noqa: E402
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _history_codec as hc  # noqa: E402
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _history_sql as hs  # noqa: E402
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _pg  # noqa: E402


def parquet(compression, level=None, byte_stream_split=False):
    def options(info):
        opts = {"compression": compression, "use_dictionary": True, "write_statistics": True, "version": "2.6"}
        if level is not None:
            opts["compression_level"] = level
        if byte_stream_split:
            # Dictionary encoding wins over BYTE_STREAM_SPLIT: keep dictionaries for the others only.
            floats = [c["name"] for c in info["columns"] if c["parquet_type"] in ("float32", "float64")]
            opts["use_dictionary"] = [c["name"] for c in info["columns"] if c["name"] not in floats]
            opts["use_byte_stream_split"] = floats
        return opts

    return options


CANDIDATES = [
    ("csv.gz (gzip-6) + schema", "csv", "gzip"),
    ("csv.zst (zstd-3) + schema", "csv", "zstd"),
    ("parquet snappy", "parquet", parquet("snappy")),
    ("parquet zstd-1", "parquet", parquet("zstd", 1)),
    ("parquet zstd-3 dictionaries", "parquet", parquet("zstd", 3)),
    ("parquet zstd-9", "parquet", parquet("zstd", 9)),
    ("parquet zstd-3 byte_stream_split", "parquet", parquet("zstd", 3, byte_stream_split=True)),
    ("parquet zstd-3 adaptive (chosen)", "parquet", None),
]


def connection_params():
    return _pg.ConnectionParams(
        login_host=os.environ.get("PGHOST", "127.0.0.1"),
        port=int(os.environ.get("PGPORT", "5432")),
        login_user=os.environ.get("PGUSER", "postgres"),
        login_password=os.environ.get("PGPASSWORD"),
    )


def ensure_seeded(params, dbname, days):
    conn = _pg.connect(params, "postgres")
    try:
        exists = _pg.database_exists(conn, dbname)
    finally:
        conn.close()
    if exists:
        return
    print("seeding %s (10 pumps, %d days, a reading every 3 s: about 288,000 rows a day)..." % (dbname, days))
    subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "tests", "rig", "seed_iot.py"),
            "--dbname",
            dbname,
            "--devices",
            "10",
            "--days",
            str(days),
            "--diag-days",
            str(days * 4),
            "--interval",
            "3",
            "--end",
            "2026-01-10T00:00:00Z",
        ],
        check=True,
    )


QUANTIZED = """
CREATE TABLE IF NOT EXISTS esp_telemetry_quantized (LIKE esp_telemetry);
SELECT create_hypertable('esp_telemetry_quantized', by_range('time', INTERVAL '1 day'), if_not_exists => true);
INSERT INTO esp_telemetry_quantized
SELECT time, device_id, round(motor_current_a::numeric, 1), round(motor_voltage_v::numeric, 0),
       round(intake_pressure_kpa::numeric, 0), round(discharge_pressure_kpa::numeric, 0),
       round(motor_temperature_c::numeric, 1), round(vibration_x_mm_s::numeric, 2), round(vibration_y_mm_s::numeric, 2),
       round(frequency_hz::numeric, 1), round(flow_rate_m3_h::numeric, 1), round(power_kw::numeric, 1), status
FROM esp_telemetry WHERE time >= (SELECT min(time) FROM esp_telemetry) + interval '1 day'
                     AND time < (SELECT min(time) FROM esp_telemetry) + interval '2 days'
  AND NOT EXISTS (SELECT 1 FROM esp_telemetry_quantized);
"""


def ensure_quantized(conn):
    """The seed's sensor values are uniform noise in float4 (incompressible by any format);
    real sensors report at a fixed resolution. One day of the same rows rounded to such a
    resolution (0.1 A, 1 V, 1 kPa, 0.1 C, 0.01 mm/s...) shows the other end."""
    with conn.cursor() as cur:
        cur.execute("SET client_min_messages = warning")
        cur.execute(QUANTIZED)


class ZstdFrames:
    """A zstd file at a chosen level (pyarrow's stream writer only has the default, 1): 4 MiB
    frames, concatenated, which every zstd reader reads as one stream."""

    def __init__(self, path, level):
        self.f = open(path, "wb")  # noqa: SIM115 - closed in __exit__
        self.codec = pa.Codec("zstd", compression_level=level)
        self.buf = bytearray()

    def write(self, data):
        self.buf += data
        if len(self.buf) >= 4 << 20:
            self.flush()
        return len(data)

    def flush(self):
        if self.buf:
            self.f.write(self.codec.compress(bytes(self.buf), asbytes=True))
            self.buf = bytearray()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.flush()
        self.f.close()


def write_csv(conn, info, s, path, compression):
    query = hs._wire_select(info["columns"], hs._table(info), hs._range_where(info), order=info["time_column"])
    with conn.cursor() as cur:
        copy_sql = cur.mogrify(
            hs.sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv)").format(query).as_string(conn),
            {"lo": s["start"], "hi": s["end"]},
        ).decode("utf-8")
    if compression == "gzip":
        sink = gzip.open(path, "wb", compresslevel=6)
    else:
        sink = ZstdFrames(path, 3)
    with sink, conn.cursor() as cur:
        cur.copy_expert(copy_sql, sink, size=1 << 16)
    schema = {"columns": [{"name": c["name"], "pg_type": c["pg_type"]} for c in info["columns"]]}
    with open(path + ".schema.json", "w") as f:
        json.dump(schema, f)
    return os.path.getsize(path) + os.path.getsize(path + ".schema.json")


def read_csv(info, path, compression):
    read_options, parse_options, convert_options = hc._csv_read_options(info["columns"])
    with pa.input_stream(path, compression=compression) as stream:
        table = pacsv.read_csv(
            stream, read_options=read_options, parse_options=parse_options, convert_options=convert_options
        )
    return table.num_rows


def write_parquet(conn, info, s, path, options):
    query = hs._wire_select(info["columns"], hs._table(info), hs._range_where(info), order=info["time_column"])
    hc.export_parquet(
        conn,
        query,
        {"lo": s["start"], "hi": s["end"]},
        info["columns"],
        path,
        info=info,
        writer_options=options and options(info),
    )
    return os.path.getsize(path)


def read_parquet(path):
    return pq.read_table(path).num_rows


def measure(conn, info, s, folder, repeat):
    out = []
    for label, kind, option in CANDIDATES:
        best_write = best_read = None
        size = rows = None
        for i in range(repeat):
            path = os.path.join(folder, "obj-%d.%s" % (i, kind))
            t0 = time.perf_counter()
            if kind == "csv":
                size = write_csv(conn, info, s, path, option)
            else:
                size = write_parquet(conn, info, s, path, option)
            t1 = time.perf_counter()
            rows = read_csv(info, path, option) if kind == "csv" else read_parquet(path)
            t2 = time.perf_counter()
            best_write = min(best_write or 1e9, t1 - t0)
            best_read = min(best_read or 1e9, t2 - t1)
            for p in (path, path + ".schema.json"):
                if os.path.exists(p):
                    os.unlink(p)
        out.append({"format": label, "bytes": size, "rows": rows, "write_s": best_write, "read_s": best_read})
    base = out[0]
    for r in out:
        r["size_ratio"] = r["bytes"] / base["bytes"]
        r["write_ratio"] = r["write_s"] / base["write_s"]
        r["read_ratio"] = r["read_s"] / base["read_s"]
    return out


def copy_only(conn, info, s):
    """The cost of reading the slice at all (COPY to nowhere), as a ratio to the baseline too."""

    class Null:
        def write(self, data):
            return len(data)

    query = hs._wire_select(info["columns"], hs._table(info), hs._range_where(info), order=info["time_column"])
    with conn.cursor() as cur:
        copy_sql = cur.mogrify(
            hs.sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv)").format(query).as_string(conn),
            {"lo": s["start"], "hi": s["end"]},
        ).decode("utf-8")
        t0 = time.perf_counter()
        cur.copy_expert(copy_sql, Null(), size=1 << 16)
    return time.perf_counter() - t0


def archive_all(conn, folder):
    """Every slice of every hypertable through the chosen format: the archive's total size."""
    total = rows = 0
    for name in hs.list_hypertables(conn):
        info = hs.describe_hypertable(conn, name)
        for s in hs.list_slices(conn, info):
            path = os.path.join(folder, "all.parquet")
            query = hs._wire_select(info["columns"], hs._table(info), hs._range_where(info), order=info["time_column"])
            rows += hc.export_parquet(conn, query, {"lo": s["start"], "hi": s["end"]}, info["columns"], path, info=info)
            total += os.path.getsize(path)
            os.unlink(path)
    return total, rows


def pg_dump_size(container, dbname):
    proc = subprocess.run(
        [
            "/usr/bin/docker",
            "exec",
            "-e",
            "PGPASSWORD=%s" % os.environ.get("PGPASSWORD", ""),
            container,
            "bash",
            "-c",
            "pg_dump -h 127.0.0.1 -p %s -U %s -Fc --compress=zstd:3 -d %s | wc -c"
            % (os.environ.get("PGPORT", "5432"), os.environ.get("PGUSER", "postgres"), dbname),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(proc.stdout.strip())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dbname", default="it_history_bench")
    p.add_argument("--days", type=int, default=7, help="days to seed when the database is missing")
    p.add_argument("--repeat", type=int, default=3, help="best of N per candidate")
    p.add_argument("--pg-dump-container", default=os.environ.get("TSDB_CONTAINER"))
    p.add_argument("--json", help="write the figures here too")
    a = p.parse_args(argv)
    params = connection_params()
    ensure_seeded(params, a.dbname, a.days)
    conn = h.open_connection(params, a.dbname)
    report = {"database": a.dbname, "tables": {}}
    with tempfile.TemporaryDirectory(prefix="history-bench.") as folder:
        ensure_quantized(conn)
        for name in ("public.esp_telemetry", "public.esp_telemetry_quantized", "public.diagnostic_results"):
            info = hs.describe_hypertable(conn, name)
            slices = hs.list_slices(conn, info)
            s = max(slices[:-1] or slices, key=lambda x: hs.fingerprint(conn, info, x["start"], x["end"])[0])
            results = measure(conn, info, s, folder, a.repeat)
            copy_s = copy_only(conn, info, s)
            report["tables"][name] = {
                "slice": s["label"],
                "rows": results[0]["rows"],
                "copy_only_s": copy_s,
                "results": results,
            }
            print(
                "\n%s, slice %s, %d rows (COPY alone: %.2f x the gzip CSV write time)"
                % (name, s["label"], results[0]["rows"], copy_s / results[0]["write_s"])
            )
            print("%-36s %12s %7s %7s %7s" % ("format", "bytes", "size", "write", "read"))
            for r in results:
                print(
                    "%-36s %12d %6.2fx %6.2fx %6.2fx"
                    % (r["format"], r["bytes"], r["size_ratio"], r["write_ratio"], r["read_ratio"])
                )
        total, rows = archive_all(conn, folder)
        report["archive_total_bytes"] = total
        report["archive_total_rows"] = rows
        print("\nwhole database as Parquet zstd-3 slices: %d rows, %d bytes" % (rows, total))
        if a.pg_dump_container:
            dump = pg_dump_size(a.pg_dump_container, a.dbname)
            report["pg_dump_zstd3_bytes"] = dump
            print(
                "pg_dump -Fc --compress=zstd:3 of the same database: %d bytes (archive / dump = %.2f)"
                % (dump, total / dump)
            )
    conn.close()
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
