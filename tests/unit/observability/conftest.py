"""Fixtures of the observability tests (helpers in obs_helpers.py)."""

import threading

import pytest
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _pitr
from obs_helpers import Receiver, parse_prom, write_all_run_types


@pytest.fixture(scope="session")
def written_metric_names(tmp_path_factory):
    """Metric names found in real output of write_run_metrics for every run type, and of the
    physical-backup status (tsdb_backup_pitr.prom) with every value and job set."""
    base = tmp_path_factory.mktemp("metrics-names")
    write_all_run_types(str(base / "textfile"), str(base / "state"))
    state = _pitr.load_state(str(base / "pitr"))
    state["status"] = {key: 1 for _name, _doc, key in _pitr.STATUS_METRICS}
    _pitr.record_check(state, True)
    for job in _pitr.JOBS:
        _pitr.record_job(state, job, True, duration=1.0)
    _pitr.write_metrics(str(base / "textfile"), state, "db1", "tsdb")
    names = set()
    for path in (base / "textfile").glob("*.prom"):
        names.update(name for name, _labels in parse_prom(str(path))[0])
    return names


@pytest.fixture
def http_receiver():
    """A real HTTP server on 127.0.0.1 (kernel-chosen port) recording the requests it gets."""
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
