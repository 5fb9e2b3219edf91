"""Selecting a backup (latest, by id, as of a time) and merging the local and remote catalogs."""

import datetime

import pytest
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _azure as az

IDS = ["20261122T020000Z", "20261123T020000Z", "20261124T020000Z"]


def entries(complete=(True, True, True)):
    return [{"backup_id": i, "complete": c} for i, c in zip(IDS, complete)]


def test_latest_by_default_and_by_word():
    assert az.select_backup(entries())["backup_id"] == IDS[2]
    assert az.select_backup(entries(), backup_id="latest")["backup_id"] == IDS[2]
    assert az.select_backup(list(reversed(entries())))["backup_id"] == IDS[2]


def test_incomplete_sets_are_never_selected():
    assert az.select_backup(entries((True, True, False)))["backup_id"] == IDS[1]
    assert az.select_backup(entries((True, True, False)), backup_id=IDS[2]) is None
    assert az.select_backup([]) is None


def test_unreadable_manifests_are_never_selected():
    local = [{"backup_id": IDS[0], "manifest": {}}, {"backup_id": IDS[1], "manifest": None, "error": "altered"}]
    assert az.select_backup(local)["backup_id"] == IDS[0]
    assert az.select_backup(local, backup_id=IDS[1]) is None


def test_safety_backups_only_when_asked():
    local = [
        {"backup_id": IDS[0], "manifest": {}},
        {"backup_id": IDS[1], "manifest": {"purpose": "safety-before-restore"}},
    ]
    remote = [
        {"backup_id": IDS[0], "complete": True},
        {"backup_id": IDS[2], "complete": True, "purpose": "safety-before-restore"},
    ]
    assert az.select_backup(local)["backup_id"] == IDS[0]
    assert az.select_backup(local, as_of="2026-12-01")["backup_id"] == IDS[0]
    assert az.select_backup(local, include_safety=True)["backup_id"] == IDS[1]
    assert az.select_backup(local, backup_id=IDS[1])["backup_id"] == IDS[1]
    assert az.select_backup(remote)["backup_id"] == IDS[0]
    only_safety = [{"backup_id": IDS[1], "manifest": {"purpose": "safety-before-restore"}}]
    assert az.select_backup(only_safety) is None


def test_by_id():
    assert az.select_backup(entries(), backup_id=IDS[0])["backup_id"] == IDS[0]
    assert az.select_backup(entries(), backup_id="20261101T000000Z") is None
    with pytest.raises(ValueError, match="backup id"):
        az.select_backup(entries(), backup_id="yesterday")


@pytest.mark.parametrize(
    ("as_of", "expected"),
    [
        ("2026-11-23T02:00:00Z", IDS[1]),  # at the time: inclusive
        ("2026-11-23T01:59:59Z", IDS[0]),
        ("2026-11-23T03:00:00+01:00", IDS[1]),  # 02:00 UTC
        ("2026-11-23 01:59", IDS[0]),  # no zone: UTC
        ("2026-11-24", IDS[1]),  # midnight
        ("20261124T020000Z", IDS[2]),  # a backup id
        ("2030-01-01T00:00:00Z", IDS[2]),
        ("2026-11-01T00:00:00Z", None),
        (datetime.datetime(2026, 11, 23, 12, 0), IDS[1]),
    ],
)
def test_as_of(as_of, expected):
    chosen = az.select_backup(entries(), as_of=as_of)
    assert (chosen and chosen["backup_id"]) == expected


def test_as_of_rejects_nonsense_and_ambiguity():
    with pytest.raises(ValueError, match="ISO 8601"):
        az.select_backup(entries(), as_of="last tuesday")
    with pytest.raises(ValueError, match="not both"):
        az.select_backup(entries(), backup_id=IDS[0], as_of="2026-11-23")


def test_merge_marks_what_is_not_uploaded():
    local = [
        {"backup_id": IDS[1], "database": "iot", "manifest_path": "/b/iot/1", "manifest": {"host": "h"}, "error": None},
        {"backup_id": IDS[2], "database": "iot", "manifest_path": "/b/iot/2", "manifest": {"host": "h"}, "error": None},
        {"backup_id": IDS[2], "database": "ops", "manifest_path": "/b/ops/2", "manifest": None, "error": "bad"},
    ]
    remote = [
        {"backup_id": IDS[0], "database": "iot", "host": "h", "complete": True},
        {"backup_id": IDS[1], "database": "iot", "host": "h", "complete": True},
        {"backup_id": IDS[2], "database": "iot", "host": "h", "complete": False},  # upload interrupted
    ]
    merged = az.merge_catalog(local, remote)
    assert [(m["backup_id"], m["database"]) for m in merged] == [
        (IDS[0], "iot"),
        (IDS[1], "iot"),
        (IDS[2], "iot"),
        (IDS[2], "ops"),
    ]
    assert [m["uploaded"] for m in merged] == [True, True, False, False]
    assert [m["complete"] for m in merged] == [True, True, True, False]
    assert merged[0]["local"] is None and merged[3]["local"]["error"] == "bad"
    assert az.select_backup(merged)["backup_id"] == IDS[2]
