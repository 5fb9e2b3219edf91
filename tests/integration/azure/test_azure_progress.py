"""Progress of long transfers: what an operator sees in the journal while a large archive goes
to Azure or comes back. Real Azurite; _log.Progress with interval 0, so every step is a line."""

import logging
import os
import threading
import time

import azure_helpers as h
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _azure, _log


class Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


def capture():
    logger = logging.getLogger("it-progress-%d" % id(object()))
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = Lines()
    logger.addHandler(handler)

    def factory(label, total=None):
        return _log.Progress(logger, label, total_bytes=total, interval_seconds=0)

    return factory, handler.records


def done_series(records, label_start):
    return [r.fields["done_bytes"] for r in records if r.getMessage().startswith(label_start)]


def test_upload_and_download_report_bytes_rate_and_eta(azure_env, service, container, tmp_path):
    size = 24 * h.MIB + 777
    bset = h.make_backup_set(str(tmp_path / "src"), "iot", "20261127T020000Z", size=size)
    store = h.store_for(azure_env, container)
    store.progress, records = capture()

    up = store.upload_backup_set(bset.manifest, block_size_mb=1, max_concurrency=4)
    assert up["bytes"] > size
    name = "20261127T020000Z.dump"
    lines = [r.getMessage() for r in records if r.getMessage().startswith("upload " + name)]
    done = done_series(records, "upload " + name)
    # One line per acknowledged block, growing, then the final line with every byte.
    assert len(done) >= 25 and done == sorted(done) and done[-1] == size, done
    assert any("%)" in line and "MiB/s" in line and "ETA" in line for line in lines), lines
    assert lines[-1].startswith("upload %s: finished, 24.0 MiB in" % name), lines[-1]
    # Manifest and globals are small: no progress lines for them.
    assert not [r for r in records if ".manifest.json" in r.getMessage() or ".globals.sql" in r.getMessage()]
    assert h.blob_names(service, container)  # the upload really happened

    del records[:]
    dest = str(tmp_path / "back")
    down = store.download_backup(dest, "iot", host=h.HOST)
    assert down["changed"] is True
    done = done_series(records, "download " + name)
    assert len(done) >= 2 and done == sorted(done) and done[-1] == size, done
    assert os.path.getsize(os.path.join(dest, "iot", name)) == size
    assert records[-1].getMessage().startswith("download %s: finished" % name)


def test_an_upload_cut_off_midway_ends_with_a_failure_line(azure_env, tmp_path):
    """Azurite stopped while blocks are in flight: progress lines, then 'failed after' with the
    reason, and the upload raises the same clear error the module reports."""
    private = h.PrivateAzurite(str(tmp_path / "azurite")).start()
    try:
        bset = h.make_backup_set(str(tmp_path / "src"), "iot", "20261127T030000Z", size=32 * h.MIB)
        config = {
            "auth_mode": "account_key",
            "account_name": "devstoreaccount1",
            "account_key": azure_env["AZURE_STORAGE_KEY"],
            "account_url": private.endpoint,
            "container": "cut",
            "create_container": True,
            "max_retries": 1,
            "retry_backoff": 0,
            "timeout": 5,
        }
        store = _azure.open_store(config, environ={})
        store.progress, records = capture()
        outcome = {}

        def upload():
            try:
                outcome["result"] = store.upload_backup_set(bset.manifest, block_size_mb=1, max_concurrency=1)
            except Exception as e:  # noqa: BLE001 - the test checks which error
                outcome["error"] = e

        worker = threading.Thread(target=upload)
        worker.start()
        deadline = time.monotonic() + 60
        while len(records) < 3 and time.monotonic() < deadline and worker.is_alive():
            time.sleep(0.01)
        assert len(records) >= 3, "the upload was not caught in flight: %s" % outcome
        private.stop()
        worker.join(120)
        assert not worker.is_alive()
    finally:
        private.stop()
    assert "error" in outcome, outcome
    assert "cannot reach Azure Blob Storage" in str(outcome["error"]), outcome["error"]
    last = records[-1]
    assert last.levelno == logging.WARNING, last.getMessage()
    assert last.getMessage().startswith("upload 20261127T030000Z.dump: failed after"), last.getMessage()
    assert "cannot reach Azure Blob Storage" in last.fields["error"]
    assert azure_env["AZURE_STORAGE_KEY"] not in " ".join(r.getMessage() + str(r.fields) for r in records)
    done = done_series(records, "upload 20261127T030000Z.dump")
    assert done == sorted(done) and 0 < done[-1] < 32 * h.MIB, done
