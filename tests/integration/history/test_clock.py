"""History takes "now" from the database server: with this host's clock two days ahead of the
rig's PostgreSQL, the archive and the retention refuse (kind clock) and nothing is archived or
dropped - the rows, the chunks and the container stay as they were. With the clocks agreeing,
the server's time is the reference and a run works as before. The host clock is offset in this
process (the engine's mf.utcnow), the server's is the real one. docs/RELIABILITY.md lists these."""

import datetime

import history_helpers as hh
import pytest
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _clock, _history
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf

DB = "it_hist_clock"
PREFIX = "clock"
TABLE = "public.readings"
# Rows over the last 6 days, in daily chunks: with "now" two days late, two more days look closed
# to the archive, and with retention 3 days two more chunks look due.
RETENTION = [{"hypertable": TABLE, "retention_days": 3}]


@pytest.fixture(scope="module")
def world():
    hh.rig.drop_database(DB)
    hh.rig.query("postgres", "CREATE DATABASE %s" % DB)
    hh.rig.query(
        DB,
        "CREATE EXTENSION IF NOT EXISTS timescaledb; "
        "CREATE TABLE readings (t timestamptz NOT NULL, device text NOT NULL, v double precision); "
        "SELECT create_hypertable('readings', 't', chunk_time_interval => interval '1 day'); "
        "INSERT INTO readings SELECT date_trunc('day', now()) - interval '6 days' + g * interval '10 minutes', "
        "'pump-' || (g % 3), g FROM generate_series(0, 6 * 144 + 60) g",
    )
    yield
    hh.rig.drop_database(DB)


def state():
    rows = hh.rig.query(
        DB, "SELECT count(*), md5(string_agg(t::text || device || v::text, ',' ORDER BY t, device)) FROM readings"
    )[0]
    chunks = hh.rig.query(DB, "SELECT count(*) FROM timescaledb_information.chunks")[0][0]
    return rows, chunks


@pytest.fixture
def host_ahead(monkeypatch):
    def ahead(days):
        real = datetime.datetime.now
        monkeypatch.setattr(mf, "utcnow", lambda: real(datetime.timezone.utc) + datetime.timedelta(days=days))

    return ahead


def test_with_the_host_clock_two_days_ahead_nothing_is_archived_or_dropped(env, params, container, world, host_ahead):
    store = hh.open_store(env, container, PREFIX)
    store.ensure_container()
    before, blobs_before = state(), hh.blobs(store)
    host_ahead(2)
    with pytest.raises(_clock.ClockError) as archive_refused:
        _history.archive_history(params, DB, store, hypertables=[TABLE], host_label=hh.HOST_LABEL)
    with pytest.raises(_clock.ClockError) as retention_refused:
        _history.enforce_retention(params, DB, store, RETENTION, host_label=hh.HOST_LABEL)
    for refused in (archive_refused, retention_refused):
        text = str(refused.value)
        assert refused.value.kind == "clock" and "ahead" in text and "Nothing was archived or dropped" in text
        assert "this host's clock says" in text and "the database server's says" in text
    assert state() == before, "rows or chunks changed"
    assert hh.blobs(store) == blobs_before, "something reached Azure"


def test_with_the_clocks_agreeing_the_servers_time_is_the_reference(env, params, container, world, host_ahead):
    store = hh.open_store(env, container, PREFIX)
    host_ahead(0)
    server = hh.rig.query(DB, "SELECT now()")[0][0]
    archived = _history.archive_history(params, DB, store, hypertables=[TABLE], host_label=hh.HOST_LABEL)
    assert archived["stopped"] is None and not archived["failures"], archived
    reference = datetime.datetime.fromisoformat(archived["reference_time"].replace("Z", "+00:00"))
    assert abs((reference - server).total_seconds()) < 60
    # The closed days (end + 2 h grace <= server now) are archived; today's is not.
    assert len(archived["archived"]) >= 5
    before = state()
    retention = _history.enforce_retention(params, DB, store, RETENTION, host_label=hh.HOST_LABEL)
    assert retention["dropped"], retention
    assert state()[1] < before[1]  # chunks older than 3 days by the server's clock went
    oldest = hh.rig.query(DB, "SELECT min(t) FROM readings")[0][0]
    assert (server - oldest) < datetime.timedelta(days=4)
