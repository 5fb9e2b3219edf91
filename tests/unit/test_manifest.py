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


@pytest.mark.parametrize("name", ["", "x" * 64, "é" * 32, "a\0b", None])
def test_names_postgresql_does_not_accept(name):
    with pytest.raises(ValueError):
        mf.validate_database_name(name)


@pytest.mark.parametrize(
    "name, segment",
    [
        ("iot", "iot"),
        ("iot-prod.2", "iot-prod.2"),
        ("..", "~2e~2e"),
        ("a/b", "a~2fb"),
        ("iot\n", "iot~0a"),
        ("-iot", "~2diot"),
        ("my db", "my~20db"),
        ("x~1", "x~7e1"),
        ("x.", "x~2e"),
        ("Plant 🚀", "Plant~20~f0~9f~9a~80"),
        ("日" * 21, "~e6~97~a5" * 21),
    ],
)
def test_any_database_name_gets_its_own_safe_path_segment(name, segment):
    assert mf.database_segment(name) == segment
    assert mf.database_from_segment(segment) == name
    assert "/" not in segment and ".." not in segment and len(segment) <= 189


@pytest.mark.parametrize("segment", ["~zz", "a~2", ".hidden", "a~2F", "~ff~fe", "x" * 64, "a b"])
def test_folders_that_are_not_database_segments(segment):
    assert mf.database_from_segment(segment) is None


def test_local_listing_reads_escaped_folders(tmp_path):
    bset = mf.BackupSet(str(tmp_path), "my db ü", "20261127T020000Z")
    os.makedirs(bset.folder)
    mf.write_manifest(bset.manifest, sample(database="my db ü"))
    os.makedirs(str(tmp_path / "not~zzdb"))
    assert [(e["database"], e["error"]) for e in mf.list_local(str(tmp_path))] == [("my db ü", None)]
    assert [e["database"] for e in mf.list_local(str(tmp_path), "my db ü")] == ["my db ü"]


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
