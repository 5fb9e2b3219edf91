"""A backup set that can never be uploaded (a different blob holds its name in Azure) must not
stop the pruning of the sets Azure holds: the runner's pipeline (its real upload step against
the rig's Azurite and the real prune of real files) removes what is safe, keeps the stuck set
and every set Azure lacks, and reports the stuck set. Dump and verify are the only stand-ins
(the sets are made by the Azure tests' helper). docs/RELIABILITY.md lists this row."""

import logging
import os

import azure_helpers as h
import pytest
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _azure, _runner
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _azure_names as names
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf

STUCK, SAFE, NEWEST = "20261101T020000Z", ["20261102T020000Z", "20261103T020000Z"], "20261104T020000Z"


@pytest.fixture
def store(azure_env, container):
    return _azure.open_store(
        {
            "auth_mode": "connection_string",
            "connection_string": azure_env["AZURE_STORAGE_CONNECTION_STRING"],
            "container": container,
            "prefix": "stuck",
            "create_container": True,
            "max_retries": 1,
            "retry_backoff": 0,
            "timeout": 10,
        }
    )


def test_a_stuck_set_does_not_stop_pruning(store, service, container, tmp_path, monkeypatch):
    backups = tmp_path / "backups"
    backups.mkdir(mode=0o700)
    for bid in [STUCK] + SAFE + [NEWEST]:
        h.make_backup_set(str(backups), "iot", bid)
    store.ensure_container()
    # Someone else's blob holds the stuck set's archive name: it can never be uploaded.
    taken = names.blob_name("stuck", h.HOST, "iot", STUCK, mf.ARCHIVE_SUFFIX)
    service.get_blob_client(container, taken).upload_blob(b"another backup's archive")
    monkeypatch.setattr(_runner, "_dump_step", lambda config, database, *a: ({"backup_id": NEWEST}, []))
    monkeypatch.setattr(_runner, "_verify_step", lambda *a: None)
    config = {"backup_dir": str(backups), "keep_days": 0, "keep_last": 1, "upload": True, "host_label": h.HOST}

    r = _runner.backup_database(config, "iot", logging.getLogger("it-prune-stuck"), store)

    left = sorted(n[: -len(mf.MANIFEST_SUFFIX)] for n in os.listdir(backups / "iot") if n.endswith(mf.MANIFEST_SUFFIX))
    # Pruned: the sets Azure holds (older than the rules). Kept: the stuck one and the newest.
    assert left == [STUCK, NEWEST], r
    assert sorted(r["pruned"]) == SAFE
    assert (
        r["success"] is False and r["error"].startswith("upload failed: %s" % STUCK) and r["error_kind"] == "conflict"
    )
    assert [s["backup_id"] for s in r["stuck_sets"]] == [STUCK] and "refusing to overwrite" in r["stuck_sets"][0][
        "reason"
    ]
    assert r["unuploaded_sets"] == 1 and r["oldest_unuploaded_age_seconds"] > 86400
    # Nothing Azure lacks was removed: every set gone locally is complete in Azure.
    remote = {e["backup_id"] for e in store.list_remote(h.HOST, "iot") if e["complete"]}
    assert set(SAFE) <= remote and STUCK not in remote
