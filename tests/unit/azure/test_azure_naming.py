"""The blob layout and its validation."""

import pytest
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _azure as az
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf


def test_layout():
    assert (
        az.blob_name("timescaledb", "db01.example.com", "iot", "20261127T020000Z", mf.ARCHIVE_SUFFIX)
        == "timescaledb/db01.example.com/iot/2026/11/20261127T020000Z.dump"
    )
    assert (
        az.blob_name("a/b/", "db01", "iot", "20270105T230000Z", mf.MANIFEST_SUFFIX)
        == "a/b/db01/iot/2027/01/20270105T230000Z.manifest.json"
    )
    assert az.blob_name("", "db01", "iot", "20261127T020000Z", mf.GLOBALS_SUFFIX) == (
        "db01/iot/2026/11/20261127T020000Z.globals.sql"
    )
    assert az.blob_name("p", "h", "iot", "20261127T020000Z", mf.DIRECTORY_SUFFIX, part="toc.dat") == (
        "p/h/iot/2026/11/20261127T020000Z.dir/toc.dat"
    )


@pytest.mark.parametrize(
    "name",
    [
        "timescaledb/db01/iot/2026/11/20261127T020000Z.dump",
        "timescaledb/db01/iot/2026/11/20261127T020000Z.globals.sql",
        "timescaledb/db01/iot/2026/11/20261127T020000Z.manifest.json",
        "timescaledb/db01/iot/2026/11/20261127T020000Z.dir/3001.dat.zst",
    ],
)
def test_parse_round_trip(name):
    parsed = az.parse_blob_name(name, "timescaledb")
    assert (parsed["host"], parsed["database"], parsed["backup_id"]) == ("db01", "iot", "20261127T020000Z")
    suffix = name.split("20261127T020000Z", 1)[1]
    if parsed["kind"] == az.KIND_ARCHIVE_PART:
        assert az.blob_name("timescaledb", "db01", "iot", "20261127T020000Z", ".dir", parsed["part"]) == name
    else:
        assert az.blob_name("timescaledb", "db01", "iot", "20261127T020000Z", suffix) == name


@pytest.mark.parametrize(
    "name",
    [
        "other/db01/iot/2026/11/20261127T020000Z.dump",  # another prefix
        "timescaledb/db01/iot/2026/12/20261127T020000Z.dump",  # month does not match the id
        "timescaledb/db01/iot/2026/11/20261127T0200Z.dump",  # not a backup id
        "timescaledb/db01/iot/2026/11/20261127T020000Z.txt",  # unknown file
        "timescaledb/db01/iot/20261127T020000Z.dump",  # missing level
        "timescaledb/db01/iot/2026/11/20261127T020000Z.dump/x",  # only .dir has files
    ],
)
def test_foreign_names_are_not_parsed(name):
    assert az.parse_blob_name(name, "timescaledb") is None


@pytest.mark.parametrize(
    ("segment", "reason"),
    [
        ("..", "'..'"),
        ("a..b", "'..'"),
        ("", "empty"),
        ("bad\x07", "control characters"),
        ("tab\there", "control characters"),
        ("del\x7f", "control characters"),
        ("x" * 255, "longer than 254"),
        ("two words", "not accepted"),
        ("back\\slash", "not accepted"),
        (".hidden", "not accepted"),
        ("-dash", "not accepted"),
        ("trailing.", "not accepted"),
        ("q?x", "not accepted"),
        ("pct%2F", "not accepted"),
        ("ünïcode", "not accepted"),
    ],
)
def test_bad_segments(segment, reason):
    with pytest.raises(az.BlobNameError, match=reason):
        az.validate_segment(segment, "host")


def test_prefix_rules():
    assert az.validate_prefix("backups/tsdb/") == "backups/tsdb"
    assert az.validate_prefix("") == "" and az.validate_prefix(None) == ""
    for bad in ("/abs", "a//b", "a/../b", "a/./b", "a\nb"):
        with pytest.raises(az.BlobNameError):
            az.validate_prefix(bad)


def test_whole_name_limits():
    assert az.validate_blob_name("a/b.c") == "a/b.c"
    with pytest.raises(az.BlobNameError, match="1024"):
        az.validate_blob_name("/".join(["x" * 200] * 6))
    with pytest.raises(az.BlobNameError, match="start or end"):
        az.validate_blob_name("/a/b")
    assert (
        az.blob_name("p", "h", "my db/ü", "20261127T020000Z", ".dump")
        == "p/h/my~20db~2f~c3~bc/2026/11/20261127T020000Z.dump"
    )
    assert az.parse_blob_name("p/h/my~20db~2f~c3~bc/2026/11/20261127T020000Z.dump", "p")["database"] == "my db/ü"
    assert az.parse_blob_name("p/h/my~zzdb/2026/11/20261127T020000Z.dump", "p") is None
    with pytest.raises(ValueError, match="invalid database name"):
        az.blob_name("p", "h", "x" * 64, "20261127T020000Z", ".dump")
    with pytest.raises(ValueError, match="backup id"):
        az.blob_name("p", "h", "iot", "2026-11-27", ".dump")


def test_container_names():
    assert az.validate_container_name("tsdb-backups") == "tsdb-backups"
    for bad in ("ab", "Upper", "a--b", "-a", "a-", "a_b", "x" * 64):
        with pytest.raises(az.ConfigError):
            az.validate_container_name(bad)


def test_tags():
    assert az.validate_tags({"retention": "forever", "env": "prod-1"}) == {"retention": "forever", "env": "prod-1"}
    with pytest.raises(az.ConfigError):
        az.validate_tags({"k%d" % i: "v" for i in range(11)})
    with pytest.raises(az.ConfigError):
        az.validate_tags({"bad*key": "v"})
