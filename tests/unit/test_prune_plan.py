import datetime
import os

import pytest
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _prune

NOW = datetime.datetime(2026, 11, 27, 12, 0, tzinfo=datetime.timezone.utc)


def entries(*days_ago, broken=()):
    out = []
    for d in sorted(days_ago, reverse=True):
        bid = (NOW - datetime.timedelta(days=d)).strftime("%Y%m%dT%H%M%SZ")
        out.append({"backup_id": bid, "manifest": None if d in broken else {"backup_id": bid}, "error": "bad"})
    return out


def ids(items):
    return [i["backup_id"] for i in items]


def test_keep_days_removes_only_old_uploaded_sets():
    e = entries(40, 35, 10, 1)
    delete, keep = _prune.plan(e, keep_days=30, uploaded_ids={x["backup_id"] for x in e}, now=NOW)
    assert ids(delete) == ids(e[:2])


def test_not_uploaded_is_kept_unless_forced():
    e = entries(40, 35, 1)
    delete, keep = _prune.plan(e, keep_days=30, uploaded_ids={e[1]["backup_id"]}, now=NOW)
    assert ids(delete) == [e[1]["backup_id"]]
    assert {k["backup_id"]: k["reason"] for k in keep}[e[0]["backup_id"]] == "not yet uploaded to Azure"
    delete, _keep = _prune.plan(e, keep_days=30, uploaded_ids=set(), force=True, now=NOW)
    assert ids(delete) == ids(e[:2])


def test_newest_verified_survives_everything():
    e = entries(50, 40, 35)
    verified = {e[0]["backup_id"]}
    delete, keep = _prune.plan(e, keep_days=1, now=NOW, verified=lambda x: x["backup_id"] in verified, force=True)
    assert e[0]["backup_id"] not in ids(delete)
    assert ids(delete) == ids(e[1:])


def test_keep_last_and_unreadable_manifests():
    e = entries(9, 8, 7, 6, broken=(8,))
    delete, keep = _prune.plan(e, keep_last=2, now=NOW)
    assert ids(delete) == [e[0]["backup_id"]]
    assert any("manifest unreadable" in k["reason"] for k in keep)


def test_no_rule_is_an_error():
    with pytest.raises(ValueError, match="never guesses"):
        _prune.plan(entries(1), now=NOW)


def test_a_manifest_copied_into_another_folder_never_speaks_for_it(tmp_path):
    """Every path of a set comes from its manifest: one planted (or moved) under another
    folder's name must not make prune there delete the other database's files."""
    import shutil

    from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf
    from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _prune

    backup_dir = tmp_path / "b"
    backup_dir.mkdir(mode=0o700)
    files = {}
    for database in ("iot", "billing"):
        bset = mf.BackupSet(str(backup_dir), database, "20261101T020000Z")
        os.makedirs(bset.folder, mode=0o700)
        for path in (bset.archive, bset.globals_sql):
            with open(path, "wb") as f:
                f.write(b"data of " + database.encode())
        manifest = {
            "format": mf.MANIFEST_FORMAT,
            "format_version": mf.MANIFEST_VERSION,
            "backup_id": bset.backup_id,
            "database": database,
            "host": "db1",
            "dump": {"format": "custom"},
            "archive": {"file": os.path.basename(bset.archive)},
            "tables": {},
        }
        mf.write_manifest(bset.manifest, manifest)
        files[database] = bset
    # billing's manifest planted in iot's folder under a name of iot's.
    planted = os.path.join(files["iot"].folder, "20261031T020000Z.manifest.json")
    shutil.copy(files["billing"].manifest, planted)

    entries = {e["backup_id"]: e for e in mf.list_local(str(backup_dir), "iot")}
    assert entries["20261031T020000Z"]["manifest"] is None
    assert "describes backup 20261101T020000Z of database billing" in entries["20261031T020000Z"]["error"]
    _prune.prune(str(backup_dir), "iot", keep_last=1, keep_days=0, force=True)
    assert os.path.exists(files["billing"].archive) and os.path.exists(files["billing"].manifest)
