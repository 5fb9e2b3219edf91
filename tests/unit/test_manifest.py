import datetime
import json
import os
import stat

import pytest
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf


def sample(backup_id="20261127T020000Z", database="iot"):
    return {
        "format": mf.MANIFEST_FORMAT,
        "format_version": mf.MANIFEST_VERSION,
        "backup_id": backup_id,
        "database": database,
        "archive": {"file": backup_id + ".dump", "size_bytes": 3, "sha256": "x"},
        "tables": {"public.devices": {"rows": 10}},
        "dump": {"format": "custom"},
    }


def test_backup_ids_sort_by_time_and_reject_paths():
    a = mf.new_backup_id(datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc))
    b = mf.new_backup_id(datetime.datetime(2026, 11, 27, 2, 0, 0, tzinfo=datetime.timezone.utc))
    assert a == "20260102T030405Z" and sorted([b, a]) == [a, b]
    assert mf.backup_id_time(b).hour == 2
    for bad in ("../20261127T020000Z", "20261127T020000Z/..", "latest", "", None, "20261127T020000"):
        with pytest.raises(ValueError):
            mf.validate_backup_id(bad)


@pytest.mark.parametrize("name", ["..", "a/b", "", "x" * 64, "iot\n", "-iot"])
def test_database_names_that_are_unsafe_as_paths(name):
    with pytest.raises(ValueError):
        mf.validate_database_name(name)


def test_sealed_manifest_round_trip_and_tamper_detection(tmp_path):
    path = str(tmp_path / "m.json")
    mf.write_manifest(path, sample())
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert mf.read_manifest(path)["tables"]["public.devices"]["rows"] == 10
    data = json.loads(open(path).read())
    data["tables"]["public.devices"]["rows"] = 11
    open(path, "w").write(json.dumps(data))
    with pytest.raises(mf.ManifestError, match="altered"):
        mf.read_manifest(path)


def test_unknown_format_and_garbage(tmp_path):
    with pytest.raises(mf.ManifestError, match="not valid JSON"):
        mf.parse_manifest(b"{nope")
    with pytest.raises(mf.ManifestError, match="not an insa"):
        mf.parse_manifest(b'{"format": "other"}')
    future = dict(sample(), format_version=99)
    with pytest.raises(mf.ManifestError, match="format_version 99"):
        mf.parse_manifest(mf.dumps(future))


def test_list_local_ignores_partials_and_reports_bad_manifests(tmp_path):
    folder = tmp_path / "iot"
    folder.mkdir()
    mf.write_manifest(str(folder / "20261126T020000Z.manifest.json"), sample("20261126T020000Z"))
    (folder / "20261127T020000Z.manifest.json").write_text("{broken")
    (folder / "20261128T020000Z.dump.partial").write_text("half")
    found = mf.list_local(str(tmp_path))
    assert [e["backup_id"] for e in found] == ["20261126T020000Z", "20261127T020000Z"]
    assert found[0]["manifest"] and found[1]["manifest"] is None and "not valid JSON" in found[1]["error"]


def test_hashing_writer_equals_a_reread(tmp_path):
    path = tmp_path / "a.bin"
    with open(path, "wb") as f:
        w = mf.HashingWriter(f)
        for i in range(50):
            w.write(os.urandom(1000 + i))
    assert (w.sha256.hexdigest(), w.size) == mf.sha256_file(str(path))


def test_atomic_write_leaves_no_temp_on_failure(tmp_path, monkeypatch):
    def boom(*a):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "rename", boom)
    with pytest.raises(OSError):
        mf.atomic_write_bytes(str(tmp_path / "x.json"), b"{}")
    assert os.listdir(tmp_path) == []
