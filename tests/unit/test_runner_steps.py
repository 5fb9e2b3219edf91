"""The runner's per-database pipeline names the step that failed and reports how long each step
took (the result's timings), with the steps themselves replaced by stand-ins."""

import logging

import pytest
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _runner

CONFIG = {"backup_dir": "/nonexistent", "keep_days": 7, "keep_last": 3, "upload": True}


@pytest.fixture
def steps(monkeypatch):
    calls = []

    def step(name):
        def run(*args, **kwargs):
            calls.append(name)
            if name in fail_at:
                raise OSError(28, "No space left on device", "/var/backups/tsdb/iot/x.dump.partial")
            return ({"backup_id": "20261201T020000Z"}, []) if name == "dump" else {"deleted": []}

        return run

    fail_at = set()
    monkeypatch.setattr(_runner, "_dump_step", step("dump"))
    monkeypatch.setattr(_runner, "_verify_step", step("verify"))
    monkeypatch.setattr(_runner, "_upload_step", step("upload"))
    monkeypatch.setattr(_runner._prune, "prune", step("prune"))
    return calls, fail_at


def test_every_step_is_timed(steps):
    calls, _fail_at = steps
    r = _runner.backup_database(CONFIG, "iot", logging.getLogger("t"))
    assert r["success"] is True and r["error"] is None
    assert calls == ["dump", "verify", "upload", "prune"]
    assert list(r["timings"]) == calls
    assert all(v >= 0 for v in r["timings"].values())


def test_a_failed_step_is_named_and_timed_up_to_it(steps):
    calls, fail_at = steps
    fail_at.add("upload")
    r = _runner.backup_database(CONFIG, "iot", logging.getLogger("t"))
    assert r["success"] is False
    assert r["error"].startswith("upload failed: ") and r["error_kind"] == "service"
    assert list(r["timings"]) == ["dump", "verify", "upload"] and calls == ["dump", "verify", "upload"]
