"""Seed a database with the IoT platform's schema and synthetic telemetry.

The schema is the user's: ``devices`` (a regular table), the hypertables ``esp_telemetry``
(electric submersible pump sensors, one-day chunks) and ``diagnostic_results`` (space
partitioned by device, with a bigserial id, JSON details, NULLs and non-ASCII text).
Rows are produced server-side with ``generate_series`` so millions take seconds.

    python tests/rig/seed_iot.py --dbname iot --devices 10 --days 30 --interval 60

Connection settings come from the libpq environment (``. .local/env.sh``).
"""

import argparse
import datetime
import sys

import psycopg2

SCHEMA = """
CREATE EXTENSION IF NOT EXISTS timescaledb;

CREATE TABLE IF NOT EXISTS devices (
    device_id     text PRIMARY KEY,
    name          text NOT NULL,
    site          text NOT NULL,
    pump_model    text,
    installed_at  timestamptz NOT NULL,
    notes         text
);

CREATE TABLE IF NOT EXISTS esp_telemetry (
    time                    timestamptz NOT NULL,
    device_id               text NOT NULL REFERENCES devices (device_id),
    motor_current_a         real,
    motor_voltage_v         real,
    intake_pressure_kpa     real,
    discharge_pressure_kpa  real,
    motor_temperature_c     real,
    vibration_x_mm_s        real,
    vibration_y_mm_s        real,
    frequency_hz            real,
    flow_rate_m3_h          real,
    power_kw                real,
    status                  text NOT NULL
);
SELECT create_hypertable('esp_telemetry', by_range('time', INTERVAL '1 day'), if_not_exists => true);
CREATE INDEX IF NOT EXISTS esp_telemetry_device_time_idx ON esp_telemetry (device_id, time DESC);

CREATE TABLE IF NOT EXISTS diagnostic_results (
    id          bigserial,
    time        timestamptz NOT NULL,
    device_id   text NOT NULL REFERENCES devices (device_id),
    check_name  text NOT NULL,
    severity    text NOT NULL,
    score       double precision,
    details     jsonb,
    PRIMARY KEY (id, time, device_id)
);
SELECT create_hypertable('diagnostic_results', by_range('time', INTERVAL '7 days'), if_not_exists => true);
"""

SPACE_PARTITION = """
SELECT add_dimension('diagnostic_results', by_hash('device_id', 2), if_not_exists => true);
"""

DEVICES = """
INSERT INTO devices (device_id, name, site, pump_model, installed_at, notes)
SELECT 'esp-' || lpad(d::text, 3, '0'),
       'Bomba ' || d,
       (ARRAY['Añelo Norte', 'Loma Campana', 'Łódź test rig', 'Río Neuquén'])[1 + mod(d, 4)],
       CASE WHEN mod(d, 5) = 0 THEN NULL ELSE 'REDA-' || (400 + mod(d, 3) * 100) END,
       %(end)s::timestamptz - interval '3 years',
       CASE WHEN mod(d, 3) = 0 THEN 'revisión trimestral — ok' END
FROM generate_series(1, %(devices)s) AS d
ON CONFLICT (device_id) DO NOTHING;
"""

# One row per device per interval; sensor values follow a daily sine plus noise, with
# occasional dropouts (NULL) like real telemetry.
TELEMETRY = """
INSERT INTO esp_telemetry
SELECT t, dev.device_id,
       40 + 5 * sin(extract(epoch from t) / 86400 * 2 * pi()) + random(),
       CASE WHEN random() < 0.01 THEN NULL ELSE 2300 + 20 * random() END,
       1200 + 50 * random(), 9800 + 200 * random(),
       CASE WHEN random() < 0.01 THEN NULL ELSE 95 + 10 * random() END,
       2 * random(), 2 * random(), 50 + random(), 80 + 10 * random(), 90 + 15 * random(),
       (ARRAY['running', 'running', 'running', 'stopped', 'alarm'])[1 + floor(random() * 5)::int]
FROM generate_series(%(start)s::timestamptz, %(end)s::timestamptz - interval '1 second',
                     make_interval(secs => %(interval)s)) AS t
CROSS JOIN (SELECT device_id FROM devices ORDER BY device_id LIMIT %(devices)s) AS dev;
"""

DIAGNOSTICS = """
INSERT INTO diagnostic_results (time, device_id, check_name, severity, score, details)
SELECT t, dev.device_id,
       (ARRAY['vibración', 'temperature', 'insulation'])[1 + floor(random() * 3)::int],
       (ARRAY['info', 'warning', 'critical'])[1 + floor(random() * 3)::int],
       CASE WHEN random() < 0.05 THEN NULL ELSE random() END,
       jsonb_build_object('note', 'análisis automático', 'sample', floor(random() * 1000))
FROM generate_series(%(start_diag)s::timestamptz, %(end)s::timestamptz - interval '1 second',
                     interval '1 hour') AS t
CROSS JOIN (SELECT device_id FROM devices ORDER BY device_id LIMIT %(devices)s) AS dev;
"""


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dbname", default=None, help="database to seed (default: PGDATABASE); created if missing")
    p.add_argument("--devices", type=int, default=10, help="number of pumps (default 10)")
    p.add_argument("--days", type=int, default=30, help="days of esp_telemetry history (default 30)")
    p.add_argument("--diag-days", type=int, default=90, help="days of diagnostic_results (default 90)")
    p.add_argument("--interval", type=int, default=60, help="seconds between readings (default 60)")
    p.add_argument(
        "--rows", type=int, default=None, help="target esp_telemetry rows; sets --interval from --days and --devices"
    )
    p.add_argument("--end", default=None, help="end of the series, ISO timestamp (default: now, truncated to the hour)")
    p.add_argument("--no-space-partition", action="store_true", help="keep diagnostic_results time-only")
    p.add_argument(
        "--seed", type=float, default=None, help="setseed() value in [-1, 1]: the same rows on every run (with --end)"
    )
    a = p.parse_args(argv)
    if a.rows:
        a.interval = max(1, int(a.days * 86400 * a.devices / a.rows))
    if a.devices < 1 or a.days < 0 or a.interval < 1:
        p.error("--devices, --days and --interval must be positive")
    return a


def ensure_database(dbname):
    conn = psycopg2.connect(dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,))
        if cur.fetchone() is None:
            cur.execute('CREATE DATABASE "%s"' % dbname.replace('"', '""'))
    conn.close()


def main(argv=None):
    a = parse_args(argv)
    kw = {}
    if a.dbname:
        ensure_database(a.dbname)
        kw["dbname"] = a.dbname
    conn = psycopg2.connect(**kw)
    with conn, conn.cursor() as cur:
        cur.execute("SET client_min_messages = warning")
        cur.execute(SCHEMA)
        if not a.no_space_partition:
            cur.execute(SPACE_PARTITION)
        cur.execute("SELECT coalesce(%s::timestamptz, date_trunc('hour', now()))", (a.end,))
        end = cur.fetchone()[0]
        params = {
            "devices": a.devices,
            "interval": a.interval,
            "end": end,
            "start": end - datetime.timedelta(days=a.days),
            "start_diag": end - datetime.timedelta(days=a.diag_days),
        }
        if a.seed is not None:
            cur.execute("SELECT setseed(%s)", (a.seed,))
        cur.execute(DEVICES, params)
        cur.execute(TELEMETRY, params)
        tel = cur.rowcount
        cur.execute(DIAGNOSTICS, params)
        diag = cur.rowcount
    with conn.cursor() as cur:
        cur.execute("ANALYZE")
        cur.execute("SELECT count(*) FROM show_chunks('esp_telemetry')")
        chunks = cur.fetchone()[0]
        cur.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
        size = cur.fetchone()[0]
    conn.close()
    print(
        "seeded %s: %d esp_telemetry rows (%d devices, %d days, every %ds, %d chunks), "
        "%d diagnostic_results rows; database size %s"
        % (a.dbname or "PGDATABASE", tel, a.devices, a.days, a.interval, chunks, diag, size)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
