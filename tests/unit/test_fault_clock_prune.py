"""History takes "now" from the database server and refuses to act when this host's clock is
off by more than max_clock_skew; a backup set that cannot be uploaded no longer stops pruning,
and is reported (result, metrics)."""

import datetime
import logging

import pytest
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import (
    _clock,
    _errors,
    _history,
    _metrics,
    _pg,
    _runner,
    _runner_guard,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf

UTC = datetime.timezone.utc
SERVER = datetime.datetime(2026, 11, 27, 2, 0, tzinfo=UTC)


@pytest.fixture
def host_clock(monkeypatch):
    """The host clock (mf.utcnow) offset from the server's clock_timestamp()."""
    offset = {"value": datetime.timedelta(0)}
    monkeypatch.setattr(_pg, "scalar", lambda conn, q, a=None: SERVER)
    monkeypatch.setattr(mf, "utcnow", lambda: SERVER + offset["value"])
    return offset


def test_now_is_the_servers_when_the_clocks_agree(host_clock):
    host_clock["value"] = datetime.timedelta(seconds=299)
    assert _clock.server_now(object()) == SERVER


@pytest.mark.parametrize("days", [2, -2])
def test_a_host_clock_days_off_refuses_and_names_both_times(host_clock, days):
    host_clock["value"] = datetime.timedelta(days=days)
    with pytest.raises(_clock.ClockError) as info:
        _clock.server_now(object(), max_skew=300)
    text = str(info.value)
    assert info.value.kind == "clock" and _errors.kind_of(info.value) == "clock"
    assert "2026-11-27 02:00:00 UTC" in text and ("2026-11-29" in text if days > 0 else "2026-11-25" in text)
    assert ("ahead" if days > 0 else "behind") in text and "Nothing was archived or dropped" in text
    assert "max_clock_skew (now 300 s)" in text


class Untouchable:
    """A store any use of which fails the test: nothing may reach Azure."""

    def __getattr__(self, name):
        raise AssertionError("the store was used (%s) although the clock is off" % name)


class Conn:
    """An open connection that accepts the session settings and nothing else."""

    closed = False

    def cursor(self):
        conn = self

        class Cursor:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def execute(self, query, args=None):
                conn.executed.append(query)

        return Cursor()


def test_retention_with_a_clock_two_days_ahead_drops_nothing(host_clock):
    host_clock["value"] = datetime.timedelta(days=2)
    conn = Conn()
    conn.executed = []
    with pytest.raises(_clock.ClockError):
        _history.enforce_retention(
            None, "iot", Untouchable(), [{"hypertable": "public.t", "retention_days": 1}], connection=conn
        )
    assert not any("drop" in q.lower() for q in conn.executed)


def test_the_skew_setting_reaches_the_runner():
    config = _runner.load_config({"TSDB_BACKUP_DATABASES": "iot", "TSDB_HISTORY_MAX_CLOCK_SKEW": "30"})
    assert config["history"]["max_clock_skew"] == 30
    assert _runner.load_config({"TSDB_BACKUP_DATABASES": "iot"})["history"]["max_clock_skew"] == 300


# --- prune when a set is stuck -------------------------------------------------------------


class Store:
    """Azure holds B and C; A (older) conflicts with a blob there and never uploads."""

    def __init__(self, listing_works=True):
        self.listing_works = listing_works

    def catch_up(self, backup_dir, database=None, host=None):
        failure = {"backup_id": "20261120T020000Z", "error": "a different blob exists", "error_kind": "conflict"}
        return {"bytes": 0, "uploaded": [], "failures": [failure], "warnings": []}

    def pending_uploads(self, backup_dir, database, host):
        return [{"backup_id": "20261120T020000Z"}], []

    def list_remote(self, host, database):
        if not self.listing_works:
            raise _errors.ServiceError("Azure unreachable")
        return [{"backup_id": b, "complete": True} for b in ("20261125T020000Z", "20261126T020000Z")]

    def uploaded_copies(self, backup_dir, host, database):
        """The ids prune may delete (_azure_catalog: the remote copy's manifest is the local one)."""
        return {e["backup_id"] for e in self.list_remote(host, database)}


@pytest.fixture
def night(monkeypatch):
    pruned = []
    monkeypatch.setattr(_runner, "_dump_step", lambda *a: ({"backup_id": "20261127T020000Z"}, []))
    monkeypatch.setattr(_runner, "_verify_step", lambda *a: None)
    monkeypatch.setattr(_runner._prune, "prune", lambda *a, **k: pruned.append(k["uploaded_ids"]) or {"deleted": []})
    config = {"backup_dir": "/x", "keep_days": 7, "keep_last": 3, "upload": True, "host_label": "db1"}
    return config, pruned


def test_a_stuck_set_does_not_stop_pruning_and_is_reported(night):
    config, pruned = night
    r = _runner.backup_database(config, "iot", logging.getLogger("t"), Store())
    assert pruned == [{"20261125T020000Z", "20261126T020000Z"}]  # what Azure holds may go
    assert r["success"] is False and r["error"].startswith("upload failed: 20261120T020000Z: a different blob")
    assert r["error_kind"] == "conflict" and "prune" in r["timings"]
    assert r["stuck_sets"] == [{"backup_id": "20261120T020000Z", "reason": "a different blob exists"}]
    assert r["unuploaded_sets"] == 1 and r["oldest_unuploaded_age_seconds"] > 6 * 86400


def test_without_a_listing_nothing_is_pruned(night):
    config, pruned = night
    r = _runner.backup_database(config, "iot", logging.getLogger("t"), Store(listing_works=False))
    assert pruned == [] and r["success"] is False and "upload failed" in r["error"]


def test_the_stuck_set_reaches_the_metrics(tmp_path):
    r = {"database": "iot", "success": False}
    _runner_guard.note_unuploaded(
        r,
        [],
        [{"backup_id": "20261120T020000Z", "error": "not verified"}],
        [],
        now=datetime.datetime(2026, 11, 27, 2, 0, tzinfo=UTC),
    )
    assert r["oldest_unuploaded_age_seconds"] == 7 * 86400 and r["unuploaded_sets"] == 1
    textfile, state = tmp_path / "textfile", tmp_path / "state"
    _metrics.write_run_metrics(str(textfile), str(state), "db1", "backup", [r])
    status = (textfile / _metrics.STATUS_FILE).read_text()
    assert 'tsdb_backup_oldest_unuploaded_age_seconds{database="iot",host="db1"} 604800.0' in status
    assert 'tsdb_backup_unuploaded_sets{database="iot",host="db1"} 1.0' in status
