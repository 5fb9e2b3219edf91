"""The physical-backup facts and metrics (pgBackRest info, pg_stat_archiver), the choice of the
backup a point-in-time restore starts from, and the runner's settings - without pgBackRest."""

import json
import os

import pytest
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _errors, _pitr, _pitr_restore, _runner_pitr
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _pgbackrest as pgbr


def backup(label, kind, start, stop, size=1000, delta=400, error=False):
    return {
        "label": label,
        "type": kind,
        "error": error,
        "timestamp": {"start": start, "stop": stop},
        "info": {"size": size, "repository": {"delta": delta, "size": delta}},
    }


INFO = [
    {
        "name": "tsdb",
        "status": {"code": 0, "message": "ok"},
        "db": [{"id": 1, "system-id": 7441, "version": "17"}],
        "archive": [{"id": "17-1", "min": "000000010000000000000002", "max": "00000001000000000000000A"}],
        "backup": [
            backup("20261201-010000F", "full", 1000, 1100, size=5000, delta=2000),
            backup("20261201-010000F_20261202-010000D", "diff", 2000, 2050),
            backup("20261201-010000F_20261203-010000D", "diff", 3000, 3010, error=True),
        ],
    },
    {"name": "other", "status": {"code": 1, "message": "missing stanza path"}},
]


def test_info_is_read_for_its_stanza_only():
    entry = pgbr.parse_info(json.dumps(INFO), "tsdb")
    assert entry["db"][0]["system-id"] == 7441
    with pytest.raises(pgbr.PgBackRestError) as e:
        pgbr.parse_info(json.dumps(INFO), "missing")
    assert e.value.kind == "not_found"
    with pytest.raises(pgbr.PgBackRestError, match="no JSON"):
        pgbr.parse_info("ERROR: nope", "tsdb")


def test_backup_facts_skip_failed_backups():
    facts = _pitr.backup_facts(INFO[0])
    assert facts["backups"] == 2
    assert facts["last_full"] == 1100 and facts["last_diff"] == 2050 and facts["last_backup"] == 2050
    assert facts["last_backup_duration"] == 50 and facts["last_backup_type"] == "diff"
    assert facts["archive_max_wal"] == "00000001000000000000000A"
    assert _pitr.backup_facts(INFO[1]) == {"status_code": 1, "status_message": "missing stanza path", "backups": 0}


def test_archive_lag_counts_complete_segments_only():
    row = (10, "000000010000000100000002", 900.0, 0, None, None, "000000010000000100000005", 1000.0, "on", "x", "7441")
    facts = _pitr.archiver_facts(row)
    # 0x...0103 and 0x...0104 are complete and not archived; 0x...0105 is being written.
    assert facts["lag_segments"] == 2
    assert facts["last_archived_age"] == 100.0
    # Across a "log" boundary (256 segments of 16 MiB per log).
    row = (10, "0000000100000000000000FF", 900.0, 0, None, None, "000000010000000100000000", 1000.0, "on", "x", "1")
    assert _pitr.archiver_facts(row)["lag_segments"] == 0
    # A history file archived last: its segment is unknown, the lag too.
    row = (10, "00000002.history", 900.0, 0, None, None, "000000020000000100000000", 1000.0, "on", "x", "1")
    assert "lag_segments" not in {k for k, v in _pitr.archiver_facts(row).items() if v is not None}
    assert _pitr.segment_number("000000010000000A0000000B.00000028.backup") == 0xA0B


def test_metrics_render_status_check_and_jobs(tmp_path):
    state = _pitr.load_state(str(tmp_path))
    state["status"] = dict(_pitr.backup_facts(INFO[0]), up=1, collected_at=5000.0, lag_segments=0)
    _pitr.record_check(state, False, now=4000.0, error="boom")
    _pitr.record_job(state, "full", True, now=3000.0)
    _pitr.record_job(state, "diff", False, now=3500.0)
    text = _pitr.render(state, 'db"1', "tsdb").decode()
    assert 'tsdb_backup_pitr_last_full_timestamp_seconds{host="db\\"1",stanza="tsdb"} 1100.0' in text
    assert 'tsdb_backup_pitr_check_success{host="db\\"1",stanza="tsdb"} 0.0' in text
    assert 'tsdb_backup_pitr_last_run_success{host="db\\"1",job="diff",stanza="tsdb"} 0.0' in text
    assert 'tsdb_backup_pitr_last_success_timestamp_seconds{host="db\\"1",job="full",stanza="tsdb"} 3000.0' in text
    assert 'job="diff",stanza="tsdb"} 3500.0' in text
    # Every family is declared once, as a gauge.
    names = [ln.split()[2] for ln in text.splitlines() if ln.startswith("# TYPE")]
    assert len(names) == len(set(names))


def test_state_survives_a_run_and_a_broken_file(tmp_path):
    d = str(tmp_path / "state")
    _pitr.update_state(d, lambda s: _pitr.record_job(s, "full", True, now=10.0))
    assert _pitr.load_state(d)["jobs"]["full"]["last_success"] == 10.0
    _pitr.update_state(d, lambda s: _pitr.record_job(s, "full", False, now=20.0))
    assert _pitr.load_state(d)["jobs"]["full"] == {
        "success": False,
        "ended_at": 20.0,
        "error": None,
        "last_success": 10.0,
    }
    assert oct(os.stat(os.path.join(d, _pitr.STATE_FILE)).st_mode & 0o777) == "0o600"
    with open(os.path.join(d, _pitr.STATE_FILE), "w") as f:
        f.write("{not json")
    assert _pitr.load_state(d)["jobs"] == {}


def test_the_restore_starts_from_the_newest_backup_before_the_target():
    assert _pitr_restore.choose_backup(INFO[0], None)["label"].endswith("D")
    assert _pitr_restore.choose_backup(INFO[0], 2049)["label"] == "20261201-010000F"
    assert _pitr_restore.choose_backup(INFO[0], 2050)["type"] == "diff"
    with pytest.raises(_errors.NotFoundError, match="the oldest ends at 1970-01-01T00:18:20Z"):
        _pitr_restore.choose_backup(INFO[0], 1099)
    with pytest.raises(_errors.NotFoundError, match="holds none"):
        _pitr_restore.choose_backup(INFO[1], None)


def test_restore_options_say_target_and_promote():
    b = {"label": "L"}
    assert _pitr_restore.restore_options("/d", b, None, 2) == ["--pg1-path=/d", "--set=L", "--process-max=2"]
    opts = _pitr_restore.restore_options("/d", b, _pitr.parse_time("2026-12-02T05:00:00.25Z"), 1)
    assert "--type=time" in opts and "--target-action=promote" in opts
    assert "--target=2026-12-02 05:00:00.250000+00" in opts


@pytest.mark.parametrize(
    "text, epoch",
    [
        ("2026-12-02T05:00:00Z", 1796187600.0),
        ("2026-12-02 05:00:00", 1796187600.0),
        ("2026-12-02T06:00:00+01:00", 1796187600.0),
    ],
)
def test_targets_are_utc_unless_they_say_otherwise(text, epoch):
    assert _pitr_restore.target_epoch(text) == epoch


def test_a_bad_target_is_a_config_error():
    assert _pitr_restore.target_epoch("latest") is None
    with pytest.raises(_errors.ConfigError, match="ISO 8601"):
        _pitr_restore.target_epoch("yesterday")


def test_stanza_names_and_argv_carry_no_shell():
    argv = pgbr.argv("tsdb", "backup", ["--type=full"], binary="/usr/bin/pgbackrest")
    assert argv == [
        "/usr/bin/pgbackrest",
        "--stanza=tsdb",
        "--log-level-console=off",
        "--log-level-stderr=warn",
        "--type=full",
        "backup",
    ]
    for bad in ("", "a b", "../x", "-x", "a;rm"):
        with pytest.raises(_errors.ConfigError):
            pgbr.check_stanza(bad)


def test_error_codes_become_kinds():
    assert pgbr.PgBackRestError("x", code=50).kind == "conflict"
    assert pgbr.PgBackRestError("x", code=38).kind == "config"
    assert pgbr.PgBackRestError("x", code=82).kind == "service"
    text = "2026-12-02 05:00:00.000 P00  ERROR: [082]: WAL segment was not archived\nsome noise"
    assert pgbr.error_lines(text) == "2026-12-02 05:00:00.000 P00  ERROR: [082]: WAL segment was not archived"


def test_runner_refuses_a_missing_stanza():
    assert _runner_pitr.main(["status"], environ={}) == _errors.EXIT_CONFIG
    config = _runner_pitr.load_config({"TSDB_PITR_STANZA": "tsdb", "TSDB_BACKUP_HOST_LABEL": "db1"})
    assert config["params"].host == "/var/run/postgresql" and config["host"] == "db1"


class FakeCluster:
    """pg_ctlcluster, pgBackRest and the local psql of a physical restore, on a temporary data
    directory: start writes postmaster.pid (this process, alive), stop removes it."""

    def __init__(self, monkeypatch, data, restore=None, stop_leaves_running=False, recovery="f"):
        self.data, self.calls = data, []
        self.restore, self.stop_leaves_running, self.recovery = restore, stop_leaves_running, recovery
        monkeypatch.setattr(_pitr_restore._pg_cluster, "cluster_control", self.control)
        monkeypatch.setattr(_pitr_restore._pg_cluster, "local_query", self.query)
        monkeypatch.setattr(_pitr_restore._pg_cluster, "cluster_log_tail", lambda cluster: "FATAL: it broke")
        monkeypatch.setattr(_pitr_restore.pgbr, "info", lambda stanza, as_user=None: INFO[0])
        monkeypatch.setattr(_pitr_restore.pgbr, "run", self.run)
        monkeypatch.setattr(_pitr_restore, "_empty_directory_like", lambda path, aside: os.mkdir(path, 0o700))

    def control(self, cluster, action, timeout=None):
        self.calls.append(action)
        pid = os.path.join(self.data, "postmaster.pid")
        if action == "start" and os.path.isdir(self.data):
            with open(pid, "w") as f:
                f.write("%d\n" % os.getpid())
        elif action == "stop" and not self.stop_leaves_running and os.path.exists(pid):
            os.remove(pid)

    def run(self, stanza, command, options=(), as_user=None, timeout=None):
        self.calls.append(command)
        if command == "restore":
            if self.restore:
                self.restore()
            with open(os.path.join(self.data, "PG_VERSION"), "w") as f:
                f.write("restored\n")

    def query(self, sql, owner, port, version):
        if "pg_is_in_recovery" in sql:
            return self.recovery
        return "2" if "timeline" in sql else "7441"


def live_cluster(tmp_path):
    data = str(tmp_path / "main")
    os.mkdir(data)
    with open(os.path.join(data, "PG_VERSION"), "w") as f:
        f.write("live\n")
    with open(os.path.join(data, "postmaster.pid"), "w") as f:
        f.write("%d\n" % os.getpid())
    return data


def content(path):
    with open(os.path.join(path, "PG_VERSION")) as f:
        return f.read().strip()


def restore_job(data, target=None, timeout=5):
    return _pitr_restore.Restore("tsdb", "17/main", data, target, recovery_timeout=timeout, port=5432)


def test_a_restore_keeps_the_previous_data_directory_aside(tmp_path, monkeypatch):
    data = live_cluster(tmp_path)
    fake = FakeCluster(monkeypatch, data)
    result = restore_job(data).run()
    assert content(data) == "restored"
    assert content(result["previous_data_directory"]) == "live"
    assert result["timeline"] == 2 and result["backup_label"].endswith("D")
    assert fake.calls == ["check", "stop", "restore", "start"]


def test_a_failed_restore_puts_the_previous_cluster_back(tmp_path, monkeypatch):
    data = live_cluster(tmp_path)

    def broken():
        raise _pitr_restore.pgbr.PgBackRestError("pgbackrest restore failed with code 40: boom", code=40)

    fake = FakeCluster(monkeypatch, data, restore=broken)
    with pytest.raises(_pitr_restore.PhysicalRestoreError) as e:
        restore_job(data).run()
    assert content(data) == "live"
    assert "back in place" in str(e.value) and "boom" in str(e.value)
    failed = [n for n in os.listdir(str(tmp_path)) if _pitr_restore.FAILED_MARK in n]
    assert len(failed) == 1 and not [n for n in os.listdir(str(tmp_path)) if _pitr_restore.ASIDE_MARK in n]
    assert fake.calls[-2:] == ["stop", "start"]
    assert os.path.exists(os.path.join(data, "postmaster.pid")), "the previous cluster runs again"


def test_a_recovery_that_stops_is_put_back_at_once(tmp_path, monkeypatch):
    data = live_cluster(tmp_path)
    fake = FakeCluster(monkeypatch, data, recovery="t")
    real_control = fake.control

    def control(cluster, action, timeout=None):
        real_control(cluster, action, timeout)
        if action == "start" and content(data) == "restored":
            os.remove(os.path.join(data, "postmaster.pid"))  # FATAL during recovery: the server exits

    monkeypatch.setattr(_pitr_restore._pg_cluster, "cluster_control", control)
    with pytest.raises(_pitr_restore.PhysicalRestoreError, match="stopped during recovery: FATAL: it broke"):
        restore_job(data, timeout=3600).run()
    assert content(data) == "live"


def test_an_interrupt_puts_the_previous_cluster_back(tmp_path, monkeypatch):
    data = live_cluster(tmp_path)

    def interrupted():
        raise _pitr_restore._signals.Terminated(15)

    FakeCluster(monkeypatch, data, restore=interrupted)
    with pytest.raises(_pitr_restore.PhysicalRestoreError, match="interrupted"):
        restore_job(data).run()
    assert content(data) == "live"


def test_nothing_moves_when_the_cluster_does_not_stop(tmp_path, monkeypatch):
    data = live_cluster(tmp_path)
    fake = FakeCluster(monkeypatch, data, stop_leaves_running=True)
    with pytest.raises(_pitr_restore.PhysicalRestoreError, match="still runs"):
        restore_job(data).run()
    assert content(data) == "live" and sorted(os.listdir(str(tmp_path))) == ["main"]
    assert "restore" not in fake.calls


def test_a_future_target_and_tablespaces_are_refused_before_anything_stops(tmp_path, monkeypatch):
    data = live_cluster(tmp_path)
    fake = FakeCluster(monkeypatch, data)
    with pytest.raises(_errors.ConfigError, match="in the future"):
        restore_job(data, target=4102444800.0).run()
    os.makedirs(os.path.join(data, "pg_tblspc", "16384"))
    with pytest.raises(_errors.ConfigError, match="tablespaces"):
        restore_job(data).run()
    assert fake.calls == []


def test_a_data_directory_that_cannot_be_renamed_leaves_the_cluster_running(tmp_path, monkeypatch):
    data = live_cluster(tmp_path)
    fake = FakeCluster(monkeypatch, data)
    real_rename = os.rename

    def no_rename(src, dst):
        if src == data:
            raise OSError(18, "Invalid cross-device link")
        real_rename(src, dst)

    monkeypatch.setattr(_pitr_restore.os, "rename", no_rename)
    with pytest.raises(_pitr_restore.PhysicalRestoreError, match="nothing was changed, the cluster is started again"):
        restore_job(data).run()
    assert content(data) == "live" and fake.calls == ["check", "stop", "start"]
    assert os.path.exists(os.path.join(data, "postmaster.pid"))
