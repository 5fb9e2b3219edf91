"""_metrics: real exposition output through promtool, state that survives failed runs, atomic
files, one file per run type without duplicate series."""

import datetime
import io
import json
import os
import stat
import subprocess

import pytest
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _metrics
from obs_helpers import FULL_RESULT, NOW, logger_to, parse_prom, write_all_run_types

PROMTOOL = "/usr/bin/promtool"
HOST = "db1.example"


def series(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


@pytest.fixture
def dirs(tmp_path):
    return str(tmp_path / "textfile"), str(tmp_path / "state")


def test_promtool_accepts_every_file(dirs):
    textfile, state = dirs
    write_all_run_types(textfile, state)
    _metrics.write_run_metrics(
        textfile, state, "db2", "backup", [{"database": "x", "success": False}], run_error="boom"
    )
    files = sorted(os.listdir(textfile))
    assert files == ["tsdb_backup_%s.prom" % t for t in sorted(_metrics.RUN_TYPES + ("status",))]
    for name in files:
        with open(os.path.join(textfile, name), "rb") as f:
            proc = subprocess.run([PROMTOOL, "check", "metrics"], stdin=f, capture_output=True, timeout=30, check=False)
        assert proc.returncode == 0 and not proc.stdout and not proc.stderr, (name, proc)


def test_metric_names_units_labels_and_values(dirs):
    textfile, state = dirs
    _metrics.write_run_metrics(textfile, state, HOST, "backup", [dict(FULL_RESULT)], now=NOW)
    samples, meta = parse_prom(os.path.join(textfile, "tsdb_backup_backup.prom"))
    labels = {"run_type": "backup", "host": HOST, "database": "iot"}
    assert series(samples, "tsdb_backup_last_run_success", **labels) == 1
    assert series(samples, "tsdb_backup_last_run_timestamp_seconds", **labels) == NOW
    assert series(samples, "tsdb_backup_last_success_timestamp_seconds", **labels) == NOW
    assert series(samples, "tsdb_backup_duration_seconds", **labels) == 42.5
    assert series(samples, "tsdb_backup_archive_size_bytes", **labels) == 123456789
    assert series(samples, "tsdb_backup_upload_bytes", **labels) == 123456789
    assert series(samples, "tsdb_backup_upload_duration_seconds", **labels) == 12
    assert series(samples, "tsdb_backup_verify_success", **labels) == 1
    assert series(samples, "tsdb_backup_drill_success", **labels) == 1
    assert series(samples, "tsdb_backup_chunks_held_back", **labels) == 0
    assert series(samples, "tsdb_backup_host_last_run_success", run_type="backup", host=HOST) == 1
    assert all(t == "gauge" and doc for doc, t in meta.values())
    status = parse_prom(os.path.join(textfile, "tsdb_backup_status.prom"))[0]
    assert series(status, "tsdb_backup_pending_uploads", host=HOST, database="iot") == 0
    assert (
        series(status, "tsdb_backup_oldest_unarchived_chunk_age_seconds", host=HOST, database="iot", hypertable="")
        == 86400
    )
    assert (
        series(
            status, "tsdb_backup_retention_horizon_seconds", host=HOST, database="iot", hypertable="public.telemetry"
        )
        == 30 * 86400
    )
    replica = {"host": HOST, "database": "iot", "target": "dr"}
    assert series(status, "tsdb_backup_target_copy_success", **replica) == 1
    assert series(status, "tsdb_backup_target_last_copy_success_timestamp_seconds", **replica) == NOW
    assert series(status, "tsdb_backup_coverage_gaps", host=HOST, database="iot", target="primary") == 0
    assert set(_metrics.metric_names()) == {key[0] for key in samples} | {key[0] for key in status}


def test_last_success_survives_failed_runs_and_restarts(dirs):
    textfile, state = dirs
    path = os.path.join(textfile, "tsdb_backup_backup.prom")
    when = datetime.datetime(2027, 1, 15, 2, 0, tzinfo=datetime.timezone.utc)
    _metrics.write_run_metrics(textfile, state, HOST, "backup", [dict(FULL_RESULT)], now=when)
    # The next night fails (state reread from disk: nothing is kept in memory between calls).
    failed = {"database": "iot", "success": False, "duration_seconds": 3.0, "error": "pg_dump: connection refused"}
    _metrics.write_run_metrics(textfile, state, HOST, "backup", [failed], now=when.timestamp() + 86400)
    samples = parse_prom(path)[0]
    labels = {"run_type": "backup", "host": HOST, "database": "iot"}
    assert series(samples, "tsdb_backup_last_run_success", **labels) == 0
    assert series(samples, "tsdb_backup_last_run_timestamp_seconds", **labels) == when.timestamp() + 86400
    assert series(samples, "tsdb_backup_last_success_timestamp_seconds", **labels) == when.timestamp()
    # The failed run's own values replace the last run's: no archive size from a failed run.
    assert series(samples, "tsdb_backup_archive_size_bytes", **labels) is None
    assert series(samples, "tsdb_backup_duration_seconds", **labels) == 3
    # Another run type does not touch it.
    _metrics.write_run_metrics(textfile, state, HOST, "drill", [{"database": "iot", "success": False}], now=NOW + 5)
    samples = parse_prom(path)[0]
    assert series(samples, "tsdb_backup_last_success_timestamp_seconds", **labels) == when.timestamp()
    drill = parse_prom(os.path.join(textfile, "tsdb_backup_drill.prom"))[0]
    assert series(drill, "tsdb_backup_last_success_timestamp_seconds", run_type="drill", host=HOST, database="iot") == 0


def test_a_replica_copy_that_fails_keeps_its_last_success(dirs):
    textfile, state = dirs
    status = os.path.join(textfile, "tsdb_backup_status.prom")
    ok = {"database": "iot", "success": True, "targets": {"dr": {"copy_success": True, "pending_sets": 0}}}
    down = {"database": "iot", "success": True, "targets": {"dr": {"copy_success": False, "pending_sets": 3}}}
    _metrics.write_run_metrics(textfile, state, HOST, "backup", [ok], now=NOW)
    _metrics.write_run_metrics(textfile, state, HOST, "backup", [down], now=NOW + 86400)
    samples = parse_prom(status)[0]
    replica = {"host": HOST, "database": "iot", "target": "dr"}
    assert series(samples, "tsdb_backup_target_copy_success", **replica) == 0
    assert series(samples, "tsdb_backup_target_pending_sets", **replica) == 3
    assert series(samples, "tsdb_backup_target_last_copy_success_timestamp_seconds", **replica) == NOW
    # The primary run of another type (history) with no copy of sets leaves the sets' values alone.
    history = {"database": "iot", "success": True, "targets": {"dr": {"history_copy_success": True}}}
    _metrics.write_run_metrics(textfile, state, HOST, "history", [history], now=NOW + 86400 + 60)
    samples = parse_prom(status)[0]
    assert series(samples, "tsdb_backup_target_pending_sets", **replica) == 3
    assert series(samples, "tsdb_backup_target_history_copy_success", **replica) == 1
    with pytest.raises(ValueError, match="targets must be a dict"):
        _metrics.write_run_metrics(textfile, state, HOST, "backup", [dict(ok, targets=[1])], now=NOW)


def test_databases_not_in_a_run_keep_their_series_until_forgotten(dirs):
    textfile, state = dirs
    path = os.path.join(textfile, "tsdb_backup_backup.prom")
    two = [{"database": "iot", "success": True}, {"database": "old", "success": True, "pending_uploads": 1}]
    _metrics.write_run_metrics(textfile, state, HOST, "backup", two, now=NOW)
    _metrics.write_run_metrics(textfile, state, HOST, "backup", [{"database": "iot", "success": True}], now=NOW + 60)
    samples = parse_prom(path)[0]
    old = {"run_type": "backup", "host": HOST, "database": "old"}
    assert series(samples, "tsdb_backup_last_success_timestamp_seconds", **old) == NOW  # ages: "backup missing"
    _metrics.write_run_metrics(textfile, state, HOST, "backup", [], now=NOW + 120, forget=["old"])
    samples = parse_prom(path)[0]
    assert not [k for k in samples if ("database", "old") in k[1]]
    status = parse_prom(os.path.join(textfile, "tsdb_backup_status.prom"))[0]
    assert not [k for k in status if ("database", "old") in k[1]]


def test_status_shows_the_latest_observation_whatever_the_run_type(dirs):
    textfile, state = dirs
    _metrics.write_run_metrics(
        textfile, state, HOST, "backup", [{"database": "iot", "success": False, "pending_uploads": 2}], now=NOW
    )
    _metrics.write_run_metrics(
        textfile, state, HOST, "upload", [{"database": "iot", "success": True, "pending_uploads": 0}], now=NOW + 3600
    )
    # A run that did not look (no pending_uploads key) changes nothing.
    _metrics.write_run_metrics(textfile, state, HOST, "drill", [{"database": "iot", "success": True}], now=NOW + 7200)
    status = parse_prom(os.path.join(textfile, "tsdb_backup_status.prom"))[0]
    assert series(status, "tsdb_backup_pending_uploads", host=HOST, database="iot") == 0


def test_no_duplicate_series_across_files_and_consistent_help(dirs):
    """node_exporter merges every *.prom file: a series twice, or one name with two HELP texts,
    breaks the whole textfile collector."""
    textfile, state = dirs
    write_all_run_types(textfile, state)
    seen, helps = set(), {}
    for name in os.listdir(textfile):
        samples, meta = parse_prom(os.path.join(textfile, name))
        assert not seen & set(samples), name
        seen |= set(samples)
        for metric, doc_type in meta.items():
            assert helps.setdefault(metric, doc_type) == doc_type


def test_run_error_marks_the_host_run_failed(dirs):
    textfile, state = dirs
    _metrics.write_run_metrics(textfile, state, HOST, "upload", [], now=NOW, run_error="cannot read credentials")
    samples = parse_prom(os.path.join(textfile, "tsdb_backup_upload.prom"))[0]
    assert series(samples, "tsdb_backup_host_last_run_success", run_type="upload", host=HOST) == 0
    assert series(samples, "tsdb_backup_host_last_run_timestamp_seconds", run_type="upload", host=HOST) == NOW


def test_atomic_write_leaves_no_temp_file_and_sets_modes(dirs):
    textfile, state = dirs
    for i in range(3):
        _metrics.write_run_metrics(textfile, state, HOST, "backup", [dict(FULL_RESULT)], now=NOW + i)
    assert sorted(os.listdir(textfile)) == ["tsdb_backup_backup.prom", "tsdb_backup_status.prom"]
    assert sorted(os.listdir(state)) == [_metrics.STATE_FILE, _metrics.STATE_LOCK]
    for name in os.listdir(textfile):
        assert stat.S_IMODE(os.stat(os.path.join(textfile, name)).st_mode) == 0o644
    assert stat.S_IMODE(os.stat(os.path.join(state, _metrics.STATE_FILE)).st_mode) == 0o600
    with open(os.path.join(state, _metrics.STATE_FILE)) as f:
        assert json.load(f)["format"] == _metrics.STATE_FORMAT


def test_failed_write_keeps_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "tsdb_backup_backup.prom"
    _metrics.atomic_write(str(path), b"old\n")
    inode = os.stat(path).st_ino
    with pytest.raises(TypeError):
        _metrics.atomic_write(str(path), "not bytes")  # fails after the temp file exists
    assert os.listdir(tmp_path) == ["tsdb_backup_backup.prom"]
    assert path.read_bytes() == b"old\n" and os.stat(path).st_ino == inode
    _metrics.atomic_write(str(path), b"new\n")
    assert path.read_bytes() == b"new\n" and os.stat(path).st_ino != inode  # replaced by rename


def test_damaged_state_is_kept_aside(dirs):
    textfile, state = dirs
    os.makedirs(state)
    with open(os.path.join(state, _metrics.STATE_FILE), "w") as f:
        f.write("{not json")
    stream = io.StringIO()
    _metrics.write_run_metrics(
        textfile, state, HOST, "backup", [{"database": "iot", "success": True}], now=NOW, logger=logger_to(stream)
    )
    assert os.path.exists(os.path.join(state, _metrics.STATE_FILE + ".damaged"))
    assert "damaged" in stream.getvalue()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"run_type": "nightly"}, "run_type 'nightly'"),
        ({"results": [{"database": "iot"}]}, "success must be true or false"),
        ({"results": [{"database": "iot", "success": True, "hypertables": [{"age": 1}]}]}, "hypertable name"),
        ({"results": [{"database": "iot", "success": True, "duration_seconds": -1}]}, "must not be negative"),
        ({"results": [{"database": "iot", "success": True, "verify_ok": 1}]}, "verify_ok must be true or false"),
        ({"results": [{"database": "iot", "success": True}] * 2}, "more than once"),
        ({"results": {"database": "iot", "success": True}}, "list of dicts"),
        ({"now": datetime.datetime(2027, 1, 1)}, "naive datetime"),
    ],
)
def test_bad_input_is_refused(dirs, kwargs, message):
    textfile, state = dirs
    args = {"run_type": "backup", "results": [{"database": "iot", "success": True}], "now": NOW}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        _metrics.write_run_metrics(textfile, state, HOST, **args)
    assert not os.path.exists(textfile)


def test_missing_prometheus_client_is_a_clear_error(dirs, monkeypatch):
    monkeypatch.setattr(_metrics, "HAS_PROMETHEUS_CLIENT", False)
    monkeypatch.setattr(_metrics, "PROMETHEUS_CLIENT_IMPORT_ERROR", "ModuleNotFoundError: prometheus_client")
    with pytest.raises(_metrics.MetricsError, match="prometheus-client==0.26.0"):
        _metrics.write_run_metrics(*dirs, HOST, "backup", [{"database": "iot", "success": True}])


def test_other_result_keys_are_ignored(dirs):
    """The runner passes its per-database results as they are (backup_id, uploaded, pruned...)."""
    textfile, state = dirs
    result = dict(FULL_RESULT, backup_id="20270115T020000Z", uploaded=["20270115T020000Z"], pruned=[], step=None)
    result["hypertables"] = [dict(result["hypertables"][0], chunks=3)]
    _metrics.write_run_metrics(textfile, state, HOST, "backup", [result], now=NOW)
    samples = parse_prom(os.path.join(textfile, "tsdb_backup_backup.prom"))[0]
    assert series(samples, "tsdb_backup_archive_size_bytes", run_type="backup", host=HOST, database="iot") == 123456789
    with open(os.path.join(state, _metrics.STATE_FILE)) as f:
        assert "backup_id" not in f.read()
