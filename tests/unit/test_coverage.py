"""_coverage: a day counts as covered only by a set that is complete in Azure with a manifest
that was read and accepted; every other day is a gap with the reason an operator can act on."""

import datetime

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _coverage
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf

DAYS = _coverage.window(5, datetime.date(2026, 11, 30))


MANIFEST = {"archive": {"sha256": "a" * 64}, "globals": {"sha256": "g" * 64}}
BLOBS = [{"kind": "archive", "part": None, "sha256": "a" * 64}, {"kind": "globals", "part": None, "sha256": "g" * 64}]


def remote(**kw):
    entry = {"complete": True, "manifest": MANIFEST, "blobs": BLOBS + [{"kind": "manifest"}], "archived": False}
    entry.update(kw)
    return entry


def set_on(day, database="iot", remote_entry=None, local=None, purpose=None):
    return {
        "backup_id": "202611%02dT020000Z" % day,
        "database": database,
        "remote": remote_entry,
        "local": local,
        "purpose": purpose,
    }


def statuses(report, database="iot"):
    return [r["status"] for r in report["databases"][database]]


def test_the_window_ends_on_the_day_asked():
    assert [d.isoformat() for d in DAYS] == ["2026-11-26", "2026-11-27", "2026-11-28", "2026-11-29", "2026-11-30"]


def test_each_day_gets_its_best_set_and_every_other_day_is_a_gap():
    backups = [
        set_on(26, remote_entry=remote()),
        set_on(27, remote_entry=remote(archived=True)),
        set_on(28, local={"usable": True, "verified": True}),
        set_on(29, remote_entry=remote(manifest=None, manifest_error="signed by a key the trust store does not hold")),
        set_on(29, remote_entry={"complete": False}),
        set_on(30, purpose=mf.SAFETY_PURPOSE, remote_entry=remote()),  # a restore's, not the schedule's
    ]
    report = _coverage.coverage(backups, ["iot"], DAYS)
    assert statuses(report) == [
        _coverage.OK,
        _coverage.ARCHIVED,
        _coverage.LOCAL_ONLY,
        _coverage.INCOMPLETE,  # better than refused, still not covered
        _coverage.MISSING,
    ]
    gaps = {g["day"]: g["reason"] for g in report["gaps"]}
    assert sorted(gaps) == ["2026-11-28", "2026-11-29", "2026-11-30"]
    assert "only on the host (verified)" in gaps["2026-11-28"]
    assert "without their manifest" in gaps["2026-11-29"]
    assert gaps["2026-11-30"] == "no backup set taken on this day"
    assert report["summary"] == {
        "days": 5,
        "databases": 1,
        "covered": 2,
        "gaps": 3,
        "from": "2026-11-26",
        "to": "2026-11-30",
    }


def test_a_refused_manifest_does_not_cover_its_day():
    report = _coverage.coverage(
        [set_on(26, remote_entry=remote(manifest=None, manifest_error="forged"))], ["iot"], DAYS
    )
    assert statuses(report)[0] == _coverage.REFUSED and "forged" in report["gaps"][0]["reason"]


def test_a_database_with_no_set_is_all_gaps_and_others_do_not_cover_it():
    report = _coverage.coverage(
        [set_on(d, database="iot", remote_entry=remote()) for d in range(26, 31)], ["iot", "ops"], DAYS
    )
    assert statuses(report, "iot") == [_coverage.OK] * 5
    assert statuses(report, "ops") == [_coverage.MISSING] * 5
    assert {g["database"] for g in report["gaps"]} == {"ops"}


def test_the_text_and_the_page_name_every_gap():
    report = _coverage.coverage([set_on(26, remote_entry=remote())], ["iot"], DAYS)
    lines = _coverage.table(report)
    assert lines[0].endswith("1 of 5 database-days covered") and len(lines) == 5
    page = _coverage.render_html(report, "Coverage <iot>")
    assert "<title>Coverage &lt;iot&gt;</title>" in page and "<script" not in page
    assert page.count("<li>") == 4 and "2026-11-30 <b>iot</b> (primary)" in page


def test_a_manifest_without_its_archive_blob_does_not_cover_its_day():
    for blobs, missing in ((BLOBS[1:], "archive"), ([dict(BLOBS[0], sha256="b" * 64)] + BLOBS[1:], "archive")):
        report = _coverage.coverage([set_on(26, remote_entry=remote(blobs=blobs))], ["iot"], DAYS)
        assert statuses(report)[0] == _coverage.INCOMPLETE
        assert report["gaps"][0]["reason"] == "its manifest is in Azure but not: %s" % missing


def test_a_set_archived_whole_counts_and_says_its_manifest_was_not_checked():
    archived = remote(manifest=None, manifest_error="the manifest blob is in the Archive tier", archived=True)
    report = _coverage.coverage([set_on(26, remote_entry=archived)], ["iot"], DAYS)
    assert statuses(report)[0] == _coverage.UNCHECKED and report["summary"]["covered"] == 1


def test_today_without_a_set_yet_is_pending_not_a_gap():
    report = _coverage.coverage([], ["iot"], DAYS, today=DAYS[-1])
    assert statuses(report)[-1] == _coverage.PENDING
    assert [g["day"] for g in report["gaps"]] == ["2026-11-26", "2026-11-27", "2026-11-28", "2026-11-29"]


def test_the_reason_says_how_the_signature_was_checked():
    signed = remote(signature={"status": "trusted", "key_id": "k1", "signer_host": "db1"})
    report = _coverage.coverage([set_on(26, remote_entry=signed), set_on(27, remote_entry=remote())], ["iot"], DAYS)
    reasons = [r["reason"] for r in report["databases"]["iot"][:2]]
    assert reasons[0].endswith("(trusted (key k1, host db1))") and reasons[1].endswith("(unsigned, no trust store)")
