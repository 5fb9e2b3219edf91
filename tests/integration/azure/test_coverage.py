"""insa.timescaledb_backup.coverage against Azurite: five days, each in another state (in Azure,
in Azure with its archive in the Archive tier, its manifest blob gone, only on the host, nothing
at all); the report names each gap by day and database with its reason, writes its JSON and
HTML files (check mode writes nothing, a re-run changes nothing), and counts only what Azurite
really holds."""

import json
import os
import stat

import azure_helpers as h
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf

IDS = ["20261126T020000Z", "20261127T020000Z", "20261128T020000Z", "20261129T020000Z"]  # none on the 30th


def test_every_gap_is_named_by_day_database_and_reason(azure_env, service, container, cs_args, tmp_path):
    backups = tmp_path / "backups"
    store = h.store_for(azure_env, container)
    store.ensure_container(create=True)
    sets = [h.make_backup_set(str(backups), "iot", bid) for bid in IDS]
    for bset in sets[:3]:
        store.upload_backup_set(bset.manifest, host=h.HOST)
    client = service.get_container_client(container)
    names = h.blob_names(service, container)
    archive = next(n for n in names if IDS[1] + mf.ARCHIVE_SUFFIX in n)
    client.get_blob_client(archive).set_standard_blob_tier("Archive")
    client.get_blob_client(next(n for n in names if IDS[2] + mf.MANIFEST_SUFFIX in n)).delete_blob()
    before = h.blob_state(service, container)

    out = tmp_path / "out"
    out.mkdir()
    args = dict(
        cs_args,
        backup_dir=str(backups),
        host_label=h.HOST,
        days=5,
        until="2026-11-30",
        json_path=str(out / "coverage.json"),
        html_path=str(out / "coverage.html"),
    )
    checked = h.run_module("coverage", args, check=True)
    assert checked.get("failed") is not True, checked
    assert checked["changed"] is True and os.listdir(out) == [], "check mode wrote the report"

    res = h.run_module("coverage", args)
    assert res.get("failed") is not True and res["changed"] is True, res
    rows = {r["day"]: r for r in res["report"]["databases"]["iot"]}
    assert [rows[d]["status"] for d in sorted(rows)] == [
        "ok",
        "ok (archive tier)",
        "incomplete in azure",
        "local only",
        "missing",
    ]
    gaps = [(g["day"], g["database"], g["target"]) for g in res["gaps"]]
    assert gaps == [
        ("2026-11-28", "iot", "primary"),
        ("2026-11-29", "iot", "primary"),
        ("2026-11-30", "iot", "primary"),
    ]
    assert res["summary"]["covered"] == 2 and res["lines"][0].endswith("2 of 5 database-days covered")
    assert "no backup set taken on this day" in res["lines"][-1]

    assert json.loads((out / "coverage.json").read_text()) == res["report"]
    page = (out / "coverage.html").read_text()
    assert "only on the host (verified), not in primary" in page and "2026-11-29" in page
    assert {stat.S_IMODE(os.stat(out / n).st_mode) for n in os.listdir(out)} == {0o640}
    assert h.blob_state(service, container) == before, "the report changed the container"

    again = h.run_module("coverage", args)
    assert again["changed"] is False and again["report"] == res["report"]


def test_bad_input_is_refused_clearly(cs_args, container, service):
    service.create_container(container)
    res = h.run_module("coverage", dict(cs_args, until="30.11.2026"))
    h.assert_clean_failure(res, "until must be a date as YYYY-MM-DD")
    res = h.run_module("coverage", dict(cs_args, days=0))
    h.assert_clean_failure(res, "days must be at least 1")


def test_a_manifest_whose_archive_blob_is_gone_does_not_cover_its_day(azure_env, service, container, cs_args, tmp_path):
    store = h.store_for(azure_env, container)
    store.ensure_container(create=True)
    bset = h.make_backup_set(str(tmp_path / "b"), "iot", IDS[0])
    store.upload_backup_set(bset.manifest, host=h.HOST)
    client = service.get_container_client(container)
    client.delete_blob(next(n for n in h.blob_names(service, container) if n.endswith(IDS[0] + mf.ARCHIVE_SUFFIX)))
    res = h.run_module("coverage", dict(cs_args, host_label=h.HOST, databases=["iot"], days=1, until="2026-11-26"))
    assert res.get("failed") is not True, res
    (row,) = res["report"]["databases"]["iot"]
    assert row["status"] == "incomplete in azure" and row["reason"] == "its manifest is in primary but not: archive", (
        row
    )


def test_a_blob_deleted_in_the_replica_is_a_gap_named_by_day_database_and_target(
    azure_env, service, container, cs_args, tmp_path
):
    """Two Azurite instances as two accounts: four days copied to the replica, then one blob of
    the second day deleted there. The report names exactly that day, database and target, and
    says the day is only in the primary."""
    from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _replica

    azurite = h.PrivateAzurite(str(tmp_path / "dr-azurite")).start()
    try:
        replica = azurite.replica("dr-coverage")
        backups = tmp_path / "backups"
        store = h.store_for(azure_env, container)
        store.ensure_container(create=True)
        for bid in IDS[:4]:
            store.upload_backup_set(h.make_backup_set(str(backups), "iot", bid).manifest, host=h.HOST)
        dr = _replica.open_targets(store, [replica])[1]
        assert _replica.replicate_sets(store, dr, h.HOST, "iot")["copied"] == IDS[:4]
        lost = next(n for n in dr.store._listing("") if IDS[1] + mf.ARCHIVE_SUFFIX in n)
        dr.store.container_client.delete_blob(lost)
        args = dict(cs_args, backup_dir=str(backups), host_label=h.HOST, days=4, until="2026-11-29", replicas=[replica])
        res = h.run_module("coverage", args, secrets=[replica["connection_string"]])
        assert res.get("failed") is not True, res
        assert [(g["day"], g["database"], g["target"]) for g in res["gaps"]] == [("2026-11-27", "iot", "dr")]
        (gap,) = res["gaps"]
        assert "archive" in gap["reason"], gap
        rows = {r["day"]: r for r in res["report"]["databases"]["iot"]}
        assert rows["2026-11-27"]["only_in"] == "primary"
        assert [rows[d]["covered_in"] for d in ("2026-11-26", "2026-11-28", "2026-11-29")] == [["primary", "dr"]] * 3
        assert any("2026-11-27" in line and "dr" in line for line in res["lines"]), res["lines"]
    finally:
        azurite.stop()
