"""The history guarantee over 400 simulated days, against the rig's TimescaleDB and Azurite.

Every simulated day: yesterday's telemetry and diagnostics arrive (3 pumps, small rows, with a
reference time that moves one day per step), then chunk archive and gated retention run with
that reference time, calling the core directly (the modules are thin; their own tests go
through Ansible). Injected along the way:

- late rows: every 7th day one row per pump for three days ago (already archived) -> new version;
- a very late row for a range dropped two months earlier -> a new generation;
- a 10-day Azure outage (the store points at a loopback port that refuses connections);
- a verification failure: an object corrupted in Azure right after its upload;
- an archived object damaged in Azure before its slice is due (retention must refuse it).

At the end, per pump per day, rows live plus rows only in the archive equal rows generated:
not one missing, not one duplicated; during the outage nothing was dropped and every due slice
was reported as held back.
"""

import collections
import datetime
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import history_helpers as hh
import psycopg2.extras
import pytest
from history_helpers import _azure, _history

sys.path.insert(0, os.path.join(hh.REPO, "tests", "rig"))
sys.path.insert(0, os.path.join(hh.REPO, "tests", "integration", "azure"))
import seed_iot  # noqa: E402
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import (  # noqa: E402
    _coverage,
    _coverage_history,
    _replica,
)
from azure_helpers import PrivateAzurite  # noqa: E402

pytestmark = [pytest.mark.rig, pytest.mark.slow]

UTC = datetime.timezone.utc
DB = "it_history_sim"
PREFIX = "sim"
START = datetime.datetime(2025, 1, 1, tzinfo=UTC)
DAYS = 400
PUMPS = ["esp-001", "esp-002", "esp-003"]
TELEMETRY_EVERY = datetime.timedelta(minutes=30)  # 48 rows per pump per day
DIAG_EVERY = datetime.timedelta(hours=6)  # 4 rows per pump per day
RETENTION = [{"name": "esp_telemetry", "retention_days": 30}, {"name": "diagnostic_results", "retention_days": 90}]
GRACE = datetime.timedelta(hours=2)
OUTAGE = range(150, 160)
VERY_LATE_DAY, VERY_LATE_TARGET = 200, 120
VERIFY_FAIL_DAY = 250
DAMAGE_DAY = 300  # after retention: damage the object of the slice due the next day
ESP = "public.esp_telemetry"
DIAG = "public.diagnostic_results"


def day_start(d):
    return START + datetime.timedelta(days=d)


class World:
    """The database, what was generated, and what every run reported."""

    def __init__(self, conn):
        self.conn = conn
        self.generated = {ESP: collections.Counter(), DIAG: collections.Counter()}  # (pump, time) -> n
        self.runs = []

    def insert(self, table, rows):
        with self.conn.cursor() as cur:
            if table == ESP:
                psycopg2.extras.execute_values(
                    cur,
                    "INSERT INTO esp_telemetry (time, device_id, motor_current_a, motor_temperature_c, status) "
                    "VALUES %s",
                    rows,
                )
            else:
                psycopg2.extras.execute_values(
                    cur,
                    "INSERT INTO diagnostic_results (time, device_id, check_name, severity, score, details) VALUES %s",
                    rows,
                )
        for row in rows:
            self.generated[table][(row[1], row[0])] += 1

    def ingest_day(self, d):
        t0, t1 = day_start(d), day_start(d + 1)
        esp, diag = [], []
        t = t0
        while t < t1:
            for i, pump in enumerate(PUMPS):
                epoch = int(t.timestamp())
                esp.append((t, pump, 40 + (epoch // 60 + i) % 97 / 10.0, None if epoch % 11 == 0 else 95.5, "running"))
            t += TELEMETRY_EVERY
        t = t0
        while t < t1:
            for pump in PUMPS:
                diag.append((t, pump, "vibración", "info", 0.5, psycopg2.extras.Json({"day": d, "nota": "ok"})))
            t += DIAG_EVERY
        self.insert(ESP, esp)
        self.insert(DIAG, diag)

    def late_rows(self, d):
        target = day_start(d) + datetime.timedelta(hours=12, seconds=17)
        self.insert(ESP, [(target, p, 1.0, 1.0, "late") for p in PUMPS])


def create_database():
    hh.rig.drop_database(DB)
    hh.rig.query("postgres", "CREATE DATABASE %s" % DB)
    conn = hh.rig.connect(DB)
    with conn.cursor() as cur:
        cur.execute("SET client_min_messages = warning")
        cur.execute(seed_iot.SCHEMA)
        cur.execute(seed_iot.SPACE_PARTITION)
        cur.execute(
            "INSERT INTO devices (device_id, name, site, installed_at) "
            "SELECT d, d, 'sim', '2024-01-01' FROM unnest(%s) d",
            (PUMPS,),
        )
    return conn


def corrupt_blob(store, name):
    """Rewrites a blob with one byte flipped, keeping its metadata (sha256 included): damage
    that only reading the content back can see."""
    blob = store.container_client.get_blob_client(name)
    props = blob.get_blob_properties()
    data = bytearray(blob.download_blob().readall())
    data[len(data) // 2] ^= 0xFF
    blob.upload_blob(bytes(data), overwrite=True, metadata=props.metadata)


@pytest.fixture(scope="module")
def world(env):
    conn = create_database()
    yield World(conn)
    conn.close()
    hh.rig.drop_database(DB)


def test_400_days_no_row_missing_or_duplicated(env, params, container, world):
    store = hh.open_store(env, container, PREFIX)
    outage_store = hh.unreachable_store(env, container, PREFIX)
    t_start = time.monotonic()
    reverify = False
    state_file = os.path.join(tempfile.mkdtemp(prefix="it-history-sim."), "state.json")
    corrupted = []
    damaged_range = None
    original_upload = store.upload_file
    conn = _history.open_connection(params, DB)  # one session for all runs, as the scheduled runner can

    def corrupting_upload(item, metadata, *args):
        info, warning = original_upload(item, metadata, *args)
        if metadata.get("kind") == _history.KIND_DATA and not corrupted:
            corrupt_blob(store, item["name"])
            corrupted.append(item["name"])
        return info, warning

    for d in range(DAYS):
        world.ingest_day(d)
        if d >= 3 and d % 7 == 3:
            world.late_rows(d - 3)
        if d == VERY_LATE_DAY:
            world.late_rows(VERY_LATE_TARGET)
        now = day_start(d + 1) + datetime.timedelta(hours=1)
        use = outage_store if d in OUTAGE else store
        if d == VERIFY_FAIL_DAY:
            store.upload_file = corrupting_upload
        try:
            archived = _history.archive_history(
                params,
                DB,
                use,
                now=now,
                grace=GRACE,
                reverify=reverify,
                state_file=state_file,
                connection=conn,
                host_label=hh.HOST_LABEL,
            )
        finally:
            store.upload_file = original_upload
        reverify = False
        chunks_before = hh.rig.query(DB, "SELECT count(*) FROM timescaledb_information.chunks")[0][0]
        retention = _history.enforce_retention(
            params, DB, use, RETENTION, now=now, connection=conn, host_label=hh.HOST_LABEL
        )
        chunks_after = hh.rig.query(DB, "SELECT count(*) FROM timescaledb_information.chunks")[0][0]
        world.runs.append({"day": d, "archive": archived, "retention": retention})

        if d in OUTAGE:
            assert archived["stopped"] and "cannot reach" in archived["stopped"], archived
            assert retention["dropped"] == [] and chunks_after == chunks_before, "dropped during the outage"
            assert retention["held_back"], "due slices must be reported during the outage (day %d)" % d
            assert {h["reason_code"] for h in retention["held_back"]} == {_history.HELD_UNREACHABLE}
        else:
            assert archived["stopped"] is None, (d, archived["stopped"])
        if d == VERIFY_FAIL_DAY:
            assert len(corrupted) == 1
            assert [f["error"] for f in archived["failures"] if "sha256" in f["error"]], archived["failures"]
        elif d not in OUTAGE:
            assert archived["failures"] == [], (d, archived["failures"])
        if any(h["reason_code"] == _history.HELD_DAMAGED for h in retention["held_back"]):
            reverify = True  # what the runner does: re-check the objects and archive again
        if d == DAMAGE_DAY:
            due_tomorrow = day_start(d + 2 - 30)  # end of the slice that tomorrow's cutoff reaches
            damaged_range = _history.range_label(due_tomorrow - datetime.timedelta(days=1), due_tomorrow)
            folder = _history.month_folder(
                _history.history_folder(PREFIX, hh.HOST_LABEL, DB, ESP), due_tomorrow - datetime.timedelta(days=1)
            )
            entry = _history.list_ranges(store, "%s/%s." % (folder, damaged_range))[damaged_range]
            corrupt_blob(store, entry["data"][_history.latest_version(entry)]["name"])
    conn.close()
    elapsed = time.monotonic() - t_start
    print("\n400 simulated days in %.1f s" % elapsed)

    by_day = {r["day"]: r for r in world.runs}
    # After the outage the backlog is archived at once and dropped at once.
    catch_up = by_day[OUTAGE[-1] + 1]
    assert len([a for a in catch_up["archive"]["archived"] if a["hypertable"] == ESP]) >= len(OUTAGE)
    assert len([x for x in catch_up["retention"]["dropped"] if x["hypertable"] == ESP]) >= len(OUTAGE)
    # The slice whose object failed verification was archived again the next day, as a new version.
    retried = [a for a in by_day[VERIFY_FAIL_DAY + 1]["archive"]["archived"] if a["reason"] == "retry"]
    assert len(retried) == 1 and retried[0]["version"] == 2
    # The damaged object was refused by retention, archived again, then dropped.
    held = [h for h in by_day[DAMAGE_DAY + 1]["retention"]["held_back"] if h["reason_code"] == _history.HELD_DAMAGED]
    assert [
        _history.range_label(_azure.parse_timestamp(h["range_start"]), _azure.parse_timestamp(h["range_end"]))
        for h in held
    ] == [damaged_range]
    replaced = [a for a in by_day[DAMAGE_DAY + 2]["archive"]["archived"] if a["reason"] == "replaces_damaged"]
    assert len(replaced) == 1
    assert [x for x in by_day[DAMAGE_DAY + 2]["retention"]["dropped"] if x["range_start"] == held[0]["range_start"]]

    # The last run left nothing behind: no failure, nothing held back, nothing due still live.
    last = world.runs[-1]
    assert last["retention"]["held_back"] == []
    for name, summary in last["archive"]["hypertables"].items():
        assert summary["oldest_unarchived"] is None, (name, summary)
        assert summary["closed"] == summary["unchanged"] + summary["archived"]
    now = day_start(DAYS) + datetime.timedelta(hours=1)
    for policy in RETENTION:
        cutoff = now - datetime.timedelta(days=policy["retention_days"])
        left = hh.rig.query(
            DB,
            "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = %s AND range_end <= %s",
            (policy["name"], cutoff),
        )[0][0]
        assert left == 0, "%s has %d chunks older than its retention" % (policy["name"], left)

    with tempfile.TemporaryDirectory() as folder:
        for table, key_columns in ((ESP, ["device_id", "time"]), (DIAG, ["device_id", "time"])):
            check_table(store, world, table, key_columns, folder)

    # Versions and generations happened, and nothing was ever overwritten: the corrupted
    # first attempt is still there, without a manifest.
    all_esp = hh.manifests(store, DB, ESP)
    assert any(m["reason"] == "changed" and m["version"] >= 2 for m in all_esp)
    assert [m for m in all_esp if m["generation"] == 2 and m["reason"] == "new_generation"]
    assert corrupted[0] in hh.blobs(store)
    assert corrupted[0].replace(".parquet", ".manifest.json") not in hh.blobs(store)
    check_second_copy(env, store, damaged_range)


def check_second_copy(env, store, damaged_range):
    """The 400 days copied to a replica (another Azurite: another account): every verified object
    but the one damaged in the primary, which is never copied and is named; a second run copies
    nothing; the copies are the primary's bytes."""
    azurite = PrivateAzurite(tempfile.mkdtemp(prefix="it-history-replica.")).start()
    try:
        replica = azurite.replica("dr-history")
        dr = _replica.open_targets(store, [replica])[1]
        first = _replica.replicate_history(store, dr, hh.HOST_LABEL)
        primary_manifests = [n for n in hh.blobs(store) if n.endswith(".manifest.json")]
        assert first["error"] is None, first["error"]
        (failure,) = first["failures"]
        assert damaged_range in failure["name"] and "not copied" in failure["error"], failure
        assert len(first["copied"]) == len(primary_manifests) - 1 and first["pending"] == 1
        again = _replica.replicate_history(store, dr, hh.HOST_LABEL)
        assert again["copied"] == [] and again["bytes"] == 0 and len(again["failures"]) == 1, again
        copies = hh.blobs(dr.store)
        assert set(primary_manifests) - set(copies) == {failure["name"]}
        some = sorted(n for n in copies if n.endswith(".parquet"))[::50]
        for name in some:
            read = [s.container_client.get_blob_client(name).download_blob().readall() for s in (store, dr.store)]
            assert read[0] == read[1], name
        check_coverage(store, dr)
    finally:
        azurite.stop()


def check_coverage(store, dr):
    """The coverage report over the simulated days (no logical set: history only): every day of
    both hypertables covered in both targets by a verified archive, no gap."""
    history = {
        t: _coverage_history.history_ranges(s, hh.HOST_LABEL, [DB]) for t, s in (("primary", store), ("dr", dr.store))
    }
    # Up to the last day both hypertables have closed and archived (the newest chunks are still live:
    # the nightly sets cover those days).
    last = min(max(r["end"] for r in ranges) for ranges in history["primary"][DB].values())
    days = [(START + datetime.timedelta(days=d)).date() for d in range((last - START).days)]
    assert len(days) >= DAYS - 14, (len(days), last)
    report = _coverage.coverage(
        [("primary", []), ("dr", [])], [DB], days, today=days[-1] + datetime.timedelta(days=2), history=history
    )
    assert report["gaps"] == [], report["gaps"][:5]
    assert {r["status"] for r in report["databases"][DB]} == {_coverage.HISTORY}
    for target in ("primary", "dr"):
        assert report["summary"]["per_target"][target]["by_history"] == len(days), report["summary"]
    assert sorted(history["dr"][DB]) == [DIAG, ESP]


def check_table(store, world, table, key_columns, folder):
    """live + archive-only == generated, per pump per day; no key twice anywhere."""
    live = collections.Counter((pump, t) for pump, t in hh.rig.query(DB, "SELECT device_id, time FROM %s" % table))
    assert max(live.values()) == 1, "duplicate live rows in %s" % table
    live_slices = set(
        hh.rig.query(
            DB,
            "SELECT DISTINCT range_start, range_end FROM timescaledb_information.chunks WHERE hypertable_name = %s",
            (table.split(".")[1],),
        )
    )
    archive = collections.Counter()
    archived_live = collections.Counter()
    view = hh.history_view(hh.manifests(store, DB, table))
    wanted = [(label, m) for label, versions in view.items() for m in versions]
    with ThreadPoolExecutor(max_workers=8) as pool:
        tables = pool.map(lambda lm: hh.read_object(store, DB, lm[1], folder, columns=key_columns), wanted)
        objects = list(zip(wanted, tables))
    for (label, m), table_rows in objects:
        start, end = (_history.parse_time_label(x) for x in label.split("_"))
        rows = table_rows.to_pylist()
        assert len(rows) == m["rows"]
        for r in rows:
            key = (r["device_id"], r["time"])
            assert start <= r["time"] < end
            if (start, end) in live_slices:
                archived_live[key] += 1
            else:
                archive[key] += 1
    assert not archive or max(archive.values()) == 1, "a row is twice in the archive of %s" % table
    # Closed live slices are archived and the archive equals them.
    assert all(live[k] == n for k, n in archived_live.items())
    generated = world.generated[table]
    assert max(generated.values()) == 1
    per_day = collections.defaultdict(lambda: [0, 0, 0])  # generated, live, archive only
    for (pump, t), n in generated.items():
        per_day[(pump, t.astimezone(UTC).date())][0] += n
    for (pump, t), n in live.items():
        per_day[(pump, t.astimezone(UTC).date())][1] += n
    for (pump, t), n in archive.items():
        if (pump, t) not in live:
            per_day[(pump, t.astimezone(UTC).date())][2] += n
    wrong = {k: v for k, v in per_day.items() if v[0] != v[1] + v[2]}
    assert not wrong, "%s: per pump per day, generated != live + archive: %s" % (table, sorted(wrong.items())[:10])
    assert set(live) | set(archive) == set(generated)
    assert not (set(archive) & set(live)), "rows both live and in a dropped range's archive"
    assert len(per_day) == len(PUMPS) * DAYS
