"""Catch-up after an outage, the catalog (backup_info) and download selection, the Archive tier."""

import json
import os

import azure_helpers as h
import pytest

DAYS = ["20261122T020000Z", "20261123T020000Z", "20261124T020000Z", "20261125T020000Z", "20261126T020000Z"]


def test_catch_up_after_a_five_day_outage(azure_env, service, container, cs_args, tmp_path):
    backup_dir = str(tmp_path)
    uploaded_before = h.make_backup_set(backup_dir, "iot", "20261121T020000Z")
    assert h.store_for(azure_env, container).upload_backup_set(uploaded_before.manifest)["changed"] is True
    # Five nights without Azure; the sets were taken and verified locally. Made newest first, so
    # the order of upload cannot come from the order of creation on disk.
    for backup_id in reversed(DAYS):
        h.make_backup_set(backup_dir, "iot", backup_id, size=256 * 1024)
    # A set whose manifest is damaged and one never verified are reported and never uploaded.
    broken = h.make_backup_set(backup_dir, "iot", "20261120T020000Z")
    with open(broken.manifest, "a") as f:
        f.write("{")
    h.make_backup_set(backup_dir, "iot", "20261119T020000Z", verified=False)
    args = dict(cs_args, catch_up=True, backup_dir=backup_dir)
    before = h.blob_state(service, container)

    checked = h.run_module("blob_upload", args, check=True)
    assert checked["changed"] is True and checked["uploaded"] == DAYS
    assert h.blob_state(service, container) == before, "check mode sent something"

    done = h.run_module("blob_upload", args)
    assert done["changed"] is True and done["uploaded"] == DAYS, done
    assert done["failures"] == []
    unusable = {u["backup_id"]: u["error"] for u in done["unusable"]}
    assert sorted(unusable) == ["20261119T020000Z", "20261120T020000Z"]
    assert unusable["20261119T020000Z"].startswith("not verified")
    assert "is not valid JSON" in unusable["20261120T020000Z"]
    after = h.blob_state(service, container)
    assert len(after) == 3 * 6
    assert {n: after[n] for n in before} == before, "the set uploaded before was sent again"
    manifests = sorted((v[1], n) for n, v in after.items() if n.endswith(".manifest.json") and n not in before)
    # Oldest first: manifests were committed in backup-id order.
    assert [n.rsplit("/", 1)[1][:16] for _t, n in manifests] == DAYS
    assert not [n for n in after if "20261120T020000Z" in n or "20261119T020000Z" in n]

    again = h.run_module("blob_upload", args)
    assert again["changed"] is False and again["uploaded"] == [] and again["bytes"] == 0
    assert h.blob_state(service, container) == after


def test_catalog_and_download_selection(azure_env, service, container, cs_args, tmp_path):
    backup_dir = str(tmp_path / "backups")
    store = h.store_for(azure_env, container)
    for backup_id in DAYS[:3]:
        store.upload_backup_set(h.make_backup_set(backup_dir, "iot", backup_id).manifest)
    h.make_backup_set(backup_dir, "iot", DAYS[3], verified=False)  # taken, not verified nor uploaded yet
    info_args = dict(cs_args, backup_dir=backup_dir, host_label=h.HOST, as_of="2026-11-24T01:59:59Z")

    dest = str(tmp_path / "restore")
    info, only_remote, down = h.run_tasks(
        [
            ("backup_info", info_args, {"check": True}),
            ("backup_info", dict(cs_args, host_label=h.HOST, backup_id="latest")),
            (
                "blob_download",
                dict(cs_args, dest=dest, database="iot", host_label=h.HOST, before="2026-11-23T02:00:00Z"),
            ),
        ]
    )
    assert info["changed"] is False, info
    assert [b["backup_id"] for b in info["backups"]] == DAYS[:4]
    assert [b["uploaded"] for b in info["backups"]] == [True, True, True, False]
    assert [(n["backup_id"], n["verified"]) for n in info["not_uploaded"]] == [(DAYS[3], False)]
    assert [b["local"]["verified"] for b in info["backups"]] == [True, True, True, False]
    assert info["counts"] == {"local": 4, "remote": 3, "not_uploaded": 1}
    assert info["selected"]["backup_id"] == DAYS[1] and info["selected"]["manifest"]["backup_id"] == DAYS[1]
    remote = info["backups"][0]["remote"]
    assert remote["complete"] is True and {b["kind"] for b in remote["blobs"]} == {"archive", "globals", "manifest"}

    assert only_remote["changed"] is False and only_remote["selected"]["backup_id"] == DAYS[2]
    assert only_remote["selected"]["manifest"]["database"] == "iot"

    assert down["changed"] is True and down["backup_id"] == DAYS[1], down
    assert sorted(os.listdir(os.path.join(dest, "iot"))) == sorted(
        DAYS[1] + s for s in (".dump", ".globals.sql", ".manifest.json")
    )
    local = json.load(open(os.path.join(backup_dir, "iot", DAYS[1] + ".manifest.json")))
    fetched = json.load(open(os.path.join(dest, "iot", DAYS[1] + ".manifest.json")))
    assert fetched == local

    with pytest.raises(h._azure.NotFoundError, match="no complete backup of iot .* available: " + ", ".join(DAYS[:3])):
        store.download_backup(dest, "iot", host=h.HOST, before="2026-11-01T00:00:00Z")


def test_archive_tier_download_needs_rehydration(azure_env, service, container, cs_args, tmp_path):
    store = h.store_for(azure_env, container)
    bset = h.make_backup_set(str(tmp_path / "backups"), "iot", DAYS[0])
    store.upload_backup_set(bset.manifest)
    names = h.blob_names(service, container)
    for name in names:  # what a lifecycle policy does after a year
        service.get_blob_client(container, name).set_standard_blob_tier("Archive")
    dest = str(tmp_path / "restore")
    args = dict(cs_args, dest=dest, database="iot", host_label=h.HOST, backup_id=DAYS[0])

    # Refused without rehydrate; check mode reports the rehydration and starts nothing.
    refused, checked = h.run_tasks(
        [("blob_download", args), ("blob_download", dict(args, rehydrate=True), {"check": True})]
    )
    h.assert_clean_failure(refused, "in the Archive tier", "rehydrate: true")
    assert checked["changed"] is True and checked["rehydration"] == "pending"
    assert not os.path.exists(dest)
    tiers = {n: service.get_blob_client(container, n).get_blob_properties().blob_tier for n in names}
    assert set(tiers.values()) == {"Archive"}, "check mode started a rehydration"

    started = h.run_module("blob_download", dict(args, rehydrate=True, rehydrate_priority="High"))
    assert started["changed"] is True and started["rehydration"] == "pending", started
    assert "download again" in started["msg"] and len(started["archived_blobs"]) == 3
    assert not os.path.exists(dest)
    # Azurite rehydrates at once (Azure takes hours): the next run downloads and verifies.
    tiers = {n: service.get_blob_client(container, n).get_blob_properties().blob_tier for n in names}
    assert set(tiers.values()) == {"Hot"}
    fetched, again = h.run_tasks([("blob_download", args), ("blob_download", args)])
    assert fetched["changed"] is True and fetched["rehydration"] is None, fetched
    assert h.mf.sha256_file(os.path.join(dest, "iot", DAYS[0] + ".dump")) == h.mf.sha256_file(bset.archive)
    assert again["changed"] is False and again["backup_id"] == DAYS[0]
