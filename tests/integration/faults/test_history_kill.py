"""Faults in the history archive and the gated retention (tsdb-history-archive.service and
tsdb-history-retention.service under the container's systemd, the real runner, Azurite behind
the fault proxy): kill -9 of the archive while an object is being sent and between an object
and its manifest; kill -9 of the retention while it verifies an archive and while its DROP waits
for a chunk lock; Azurite stopped during the archive.

What must hold: no manifest in Azure without its object (the object's bytes hash to what the
manifest records); retention drops a day only when a verified archive of it exists; after the
next runs, every day of telemetry is either still in the live table or in the archive with all
its rows (the Parquet object read back and counted): rows lost = 0."""

import hashlib
import io
import json
import threading
import uuid

import faults_helpers as fh
import pyarrow.parquet as pq
import pytest
from faults_helpers import rig
from proxy import Rule

pytestmark = pytest.mark.rig

DB = "flt_history"
TABLE = "public.esp_telemetry"
RETENTION = [{"hypertable": TABLE, "retention_days": 5}]


@pytest.fixture
def days(agent):
    """A fresh database (10 days of telemetry, daily chunks); the rows of each day."""
    rig.drop_database(DB)
    rig.seed(DB, devices=4, days=10, interval=300)
    yield per_day()
    rig.drop_database(DB)


def per_day():
    return dict(
        rig.query(
            DB,
            "SELECT to_char(time_bucket('1 day', time), 'YYYYMMDD'), count(*) FROM esp_telemetry GROUP BY 1 ORDER BY 1",
        )
    )


def chunk_count():
    return rig.query(DB, "SELECT count(*) FROM show_chunks('esp_telemetry')")[0][0]


class History:
    def __init__(self, c, env, port):
        self.c, self.env = c, env
        self.days = None  # rows per day of the fresh database
        self.container = "faults-h-%s" % uuid.uuid4().hex[:8]
        settings = {
            "TSDB_BACKUP_DATABASES": DB,
            "TSDB_HISTORY_DATABASE": DB,
            "TSDB_HISTORY_RETENTION": json.dumps(RETENTION).replace('"', '\\"'),
            "AZURE_STORAGE_CONNECTION_STRING": fh.connection_string(env, port),
            "AZURE_STORAGE_CONTAINER": self.container,
            "TSDB_BACKUP_AZURE_MAX_RETRIES": "1",
            "TSDB_BACKUP_AZURE_RETRY_BACKOFF": "0",
        }
        self.archive = fh.Unit(c, "tsdb-history-archive.service", settings)
        self.retention = fh.Unit(c, "tsdb-history-retention.service", settings)
        self.archive.configure()
        self.retention.configure()
        rig.sh(c, "rm -f /var/lib/tsdb-backup/history-%s.json" % DB)

    @staticmethod
    def use(unit):
        """Both units read the one override file (written once, the same settings)."""
        return unit

    def objects(self):
        """Azure's real listing: range label -> (manifest, object bytes) of the newest version;
        asserts that every manifest's object is there with the bytes the manifest records."""
        cc = fh.container_client(self.env, self.container)
        if not cc.exists():
            return {}
        folder = "%s/history/%s/" % (fh.PREFIX, fh.HOST)
        names = {p.name for p in cc.list_blobs(name_starts_with=folder)}
        out = {}
        for name in sorted(n for n in names if n.endswith(".manifest.json")):
            m = json.loads(cc.download_blob(name).readall())
            obj = name.rsplit("/", 1)[0] + "/" + m["object"]["name"]
            assert obj in names, "manifest %s without its object %s" % (name, obj)
            data = cc.download_blob(obj).readall()
            assert hashlib.sha256(data).hexdigest() == m["object"]["sha256"], name
            label = m["range"]["label"]
            if label not in out or out[label][0]["version"] < m["version"]:
                out[label] = (m, data)
        return out

    def archived_days(self):
        """day (YYYYMMDD) -> rows of the telemetry archive, counted in the Parquet objects."""
        days = {}
        for label, (m, data) in self.objects().items():
            if m["hypertable"] != TABLE:
                continue
            rows = pq.read_table(io.BytesIO(data)).num_rows
            assert rows == m["rows"], label
            days[label[:8]] = days.get(label[:8], 0) + rows
        return days

    def cleanup(self):
        self.archive.cleanup()
        self.retention.cleanup()
        cc = fh.container_client(self.env, self.container)
        if cc.exists():
            cc.delete_container()


@pytest.fixture
def history(agent, env, proxy, days):
    h = History(agent, env, proxy.port)
    h.days = days
    yield h
    h.cleanup()


def assert_no_row_lost(h, days):
    """Each day is whole in the live table, or whole in the archive and gone from the table."""
    live, archived = per_day(), h.archived_days()
    for day, rows in days.items():
        assert live.get(day, 0) in (0, rows), (day, live.get(day), rows)
        if live.get(day, 0) == 0:
            assert archived.get(day) == rows, "day %s dropped without a whole archive: %s" % (day, archived.get(day))


def recover(h, days):
    """The next archive and retention runs succeed; then nothing is lost and the due days are gone."""
    assert h.use(h.archive).run() == "inactive", h.archive.journal()
    assert h.use(h.retention).run() == "inactive", h.retention.journal()
    assert_no_row_lost(h, days)
    assert len(per_day()) < len(days), "retention dropped nothing after the recovery"


@pytest.mark.parametrize(
    "held,nth",
    [(r"\.parquet\?.*comp=block|\.parquet$", 1), (r"\.manifest\.json", 3)],
    ids=["first-object-upload", "third-manifest-upload"],
)
def test_kill9_of_the_archive(history, proxy, days, held, nth):
    gate = threading.Event()
    proxy.add(Rule(method="PUT", path=held, action=("hold", gate), every=nth, limit=1))
    try:
        history.archive.start()
        proxy.wait_held(timeout=120)
        fh.kill9(history.c, history.archive.main_pid())
        assert history.archive.wait() == "failed"
    finally:
        gate.set()
    got = history.objects()  # asserts: no manifest without its whole object
    if nth == 1:
        assert got == {}, sorted(got)
    else:
        assert got, "no range was complete before the kill: the fault was not where the test meant it"
    # Retention right after the killed archive: drops only what a verified archive covers.
    assert history.use(history.retention).run() in ("inactive", "failed"), history.retention.journal()
    assert_no_row_lost(history, days)
    recover(history, days)


def test_kill9_of_the_retention_while_it_verifies(history, proxy, days):
    assert history.archive.run() == "inactive", history.archive.journal()
    chunks = chunk_count()
    gate = threading.Event()
    proxy.add(Rule(method="GET", path=r"\.parquet", action=("hold", gate), limit=1))
    try:
        history.use(history.retention).start()
        proxy.wait_held(timeout=120)
        fh.kill9(history.c, history.retention.main_pid())
        assert history.retention.wait() == "failed"
    finally:
        gate.set()
    assert chunk_count() == chunks  # killed before its first DROP: nothing dropped
    assert per_day() == days
    recover(history, days)


def test_kill9_of_the_retention_while_its_drop_waits_for_a_lock(history, days):
    assert history.archive.run() == "inactive", history.archive.journal()
    oldest = min(days)
    reader = rig.connect(DB)  # a long report holding the oldest day's chunk
    reader.autocommit = False
    with reader.cursor() as cur:
        cur.execute("SELECT count(*) FROM esp_telemetry WHERE time < %s::date + 1", (oldest,))
    try:
        history.use(history.retention).start()
        fh.wait_lock_waiter(DB, timeout=120)
        fh.kill9(history.c, history.retention.main_pid())
        assert history.retention.wait() == "failed"
    finally:
        reader.rollback()
        reader.close()
    assert per_day()[oldest] == days[oldest]  # the DROP in flight was rolled back by the server
    assert_no_row_lost(history, days)
    recover(history, days)


def test_azurite_stopped_during_the_archive(history, proxy, days):
    gate = threading.Event()
    proxy.add(Rule(method="PUT", path=r"\.manifest\.json", action=("hold", gate), every=2, limit=1))
    history.archive.start()
    proxy.wait_held(timeout=120)
    fh.azurite("stop")
    try:
        gate.set()
        assert history.archive.wait() == "failed"
        assert "history archive" in history.archive.journal()
    finally:
        fh.azurite("start")
    history.objects()  # no manifest without its object
    assert_no_row_lost(history, days)
    recover(history, days)
