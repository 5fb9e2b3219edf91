"""_coverage: a day counts as covered in a target only by a set that is complete there with a
manifest that was read and accepted, or by that target's verified history archive; every other
day is a gap, named by day, database and target, with the reason an operator can act on."""

import datetime
import hashlib
import html.parser
import re

import pytest
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _azure, _coverage
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _coverage_history as ch
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _history_layout as hl
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _history_manifest as hm
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf

DAYS = _coverage.window(5, datetime.date(2026, 11, 30))
LATER = datetime.date(2030, 1, 1)  # "today" after the window: no day is pending
UTC = datetime.timezone.utc


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


def one(backups, databases=("iot",), days=DAYS, **kw):
    """The report of the primary alone."""
    return _coverage.coverage([("primary", backups)], list(databases), days, **kw)


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
    report = one(backups)
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
    summary = report["summary"]
    assert (summary["days"], summary["databases"], summary["targets"]) == (5, 1, 1)
    assert (summary["covered"], summary["gaps"], summary["covered_nowhere"]) == (2, 3, 3)
    assert (summary["from"], summary["to"]) == ("2026-11-26", "2026-11-30")
    assert summary["per_target"]["primary"] == {"covered": 2, "by_history": 0, "only_here": 2, "gaps": 3}


def test_a_refused_manifest_does_not_cover_its_day():
    report = one([set_on(26, remote_entry=remote(manifest=None, manifest_error="forged"))])
    assert statuses(report)[0] == _coverage.REFUSED and "forged" in report["gaps"][0]["reason"]


def test_a_database_with_no_set_is_all_gaps_and_others_do_not_cover_it():
    report = one([set_on(d, database="iot", remote_entry=remote()) for d in range(26, 31)], ["iot", "ops"])
    assert statuses(report, "iot") == [_coverage.OK] * 5
    assert statuses(report, "ops") == [_coverage.MISSING] * 5
    assert {g["database"] for g in report["gaps"]} == {"ops"}


def test_the_text_and_the_page_name_every_gap():
    report = one([set_on(26, remote_entry=remote())])
    lines = _coverage.table(report)
    assert lines[0].endswith("1 of 5 database-days covered") and len(lines) == 5
    page = _coverage.render_html(report, "Coverage <iot>")
    assert "<title>Coverage &lt;iot&gt;</title>" in page and "<script" not in page
    assert page.count("<li>") == 4 and "2026-11-30 <b>iot</b> (primary)" in page


def test_a_manifest_without_its_archive_blob_does_not_cover_its_day():
    for blobs, missing in ((BLOBS[1:], "archive"), ([dict(BLOBS[0], sha256="b" * 64)] + BLOBS[1:], "archive")):
        report = one([set_on(26, remote_entry=remote(blobs=blobs))])
        assert statuses(report)[0] == _coverage.INCOMPLETE
        assert report["gaps"][0]["reason"] == "its manifest is in primary but not: %s" % missing


def test_a_set_archived_whole_counts_and_says_its_manifest_was_not_checked():
    archived = remote(manifest=None, manifest_error="the manifest blob is in the Archive tier", archived=True)
    report = one([set_on(26, remote_entry=archived)])
    assert statuses(report)[0] == _coverage.UNCHECKED and report["summary"]["covered"] == 1


def test_today_without_a_set_yet_is_pending_not_a_gap():
    report = one([], today=DAYS[-1])
    assert statuses(report)[-1] == _coverage.PENDING
    assert [g["day"] for g in report["gaps"]] == ["2026-11-26", "2026-11-27", "2026-11-28", "2026-11-29"]


def test_the_reason_says_how_the_signature_was_checked():
    signed = remote(signature={"status": "trusted", "key_id": "k1", "signer_host": "db1"})
    report = one([set_on(26, remote_entry=signed), set_on(27, remote_entry=remote())])
    reasons = [r["reason"] for r in report["databases"]["iot"][:2]]
    assert reasons[0].endswith("(trusted (key k1, host db1))") and reasons[1].endswith("(unsigned, no trust store)")


# ---------------------------------------------------------------------------------------------
# Targets


def every_day(database="iot", skip=()):
    return [set_on(d, database=database, remote_entry=remote()) for d in range(26, 31) if d not in skip]


def test_a_set_deleted_in_the_replica_is_a_gap_of_the_replica_only():
    report = _coverage.coverage([("primary", every_day()), ("dr", every_day(skip=(28,)))], ["iot"], DAYS, today=LATER)
    assert [(g["day"], g["database"], g["target"]) for g in report["gaps"]] == [("2026-11-28", "iot", "dr")]
    assert report["gaps"][0]["reason"] == "no backup set taken on this day"
    rows = {r["day"]: r for r in report["databases"]["iot"]}
    assert rows["2026-11-28"]["only_in"] == "primary" and rows["2026-11-28"]["covered_in"] == ["primary"]
    assert rows["2026-11-28"]["status"] == _coverage.OK  # the day is safe somewhere: the best target's
    assert rows["2026-11-28"]["targets"]["dr"]["status"] == _coverage.MISSING
    assert rows["2026-11-27"]["only_in"] is None and rows["2026-11-27"]["covered_in"] == ["primary", "dr"]
    assert "in dr, every blob of its manifest there" in rows["2026-11-27"]["targets"]["dr"]["reason"]
    assert _coverage.uncovered_days(report) == {("iot", "primary"): 0, ("iot", "dr"): 1}
    per = report["summary"]["per_target"]
    assert (per["primary"]["covered"], per["dr"]["covered"], per["primary"]["only_here"]) == (5, 4, 1)
    lines = _coverage.table(report)
    assert lines[0] == (
        "coverage 2026-11-26 .. 2026-11-30: primary 5 of 5 database-days covered (1 only there); "
        "dr 4 of 5 database-days covered"
    )
    assert re.fullmatch(r"  2026-11-28  iot\s+dr\s+no backup set taken on this day", lines[-1]), lines


def test_a_day_only_on_the_host_is_local_only():
    local = {"usable": True, "verified": True}
    report = _coverage.coverage(
        [("primary", [set_on(26, local=local)]), ("dr", [set_on(26, local=local)])], ["iot"], DAYS, today=LATER
    )
    first = report["databases"]["iot"][0]
    assert first["local_only"] is True and first["covered_in"] == [] and first["only_in"] is None
    assert first["targets"]["dr"]["reason"] == "only on the host (verified), not in dr"
    assert report["summary"]["covered_nowhere"] == 5


def test_a_target_that_cannot_be_read_is_a_gap_on_every_day_with_its_reason():
    report = _coverage.coverage(
        [("primary", every_day()), ("dr", "the account refused the credentials")], ["iot", "ops"], DAYS
    )
    dr = [g for g in report["gaps"] if g["target"] == "dr"]
    assert len(dr) == 10  # every day of both databases, today included: nothing is known of it
    assert {g["reason"] for g in dr} == {"target dr could not be read: the account refused the credentials"}
    assert {r["targets"]["dr"]["status"] for r in report["databases"]["iot"]} == {_coverage.UNREADABLE}
    assert report["errors"] == {"dr": "the account refused the credentials"}
    assert report["summary"]["per_target"]["dr"]["error"] == "the account refused the credentials"
    assert "dr 0 of 10 database-days covered (unreadable)" in _coverage.table(report)[0]
    assert _coverage.uncovered_days(report)[("ops", "dr")] == 5


# ---------------------------------------------------------------------------------------------
# History archive (pure: ranges as history_ranges gives them)


def at(day, hour=0):
    return datetime.datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def daily(first, days, verified=True, reason="verified", **extra):
    return [
        dict(
            start=at(first + datetime.timedelta(days=n)),
            end=at(first + datetime.timedelta(days=n + 1)),
            verified=verified,
            reason=reason,
            **extra,
        )
        for n in range(days)
    ]


WINDOW_400 = _coverage.window(400, datetime.date(2026, 6, 30))


def test_history_covering_400_days_leaves_no_gap_without_a_set():
    first = WINDOW_400[0]
    weekly = [
        {"start": at(first) + datetime.timedelta(days=7 * n), "end": at(first) + datetime.timedelta(days=7 * n + 7)}
        for n in range(58)  # to 2026-07-02: past the window's last day
    ]
    tables = {
        "public.metrics": daily(first, 401),
        "public.events": [dict(r, verified=True, reason="verified") for r in weekly],
    }
    report = _coverage.coverage(
        [("primary", [])], ["iot"], WINDOW_400, today=LATER, history={"primary": {"iot": tables}}
    )
    assert report["gaps"] == [] and set(statuses(report)) == {_coverage.HISTORY}
    assert report["summary"]["per_target"]["primary"]["by_history"] == 400
    assert (
        "in primary's history archive: 2 hypertable(s), every range verified" in report["databases"]["iot"][0]["reason"]
    )
    metrics = report["history"]["primary"]["iot"]["public.metrics"]
    assert (metrics["ranges"], metrics["verified"], metrics["holes"]) == (401, 401, [])
    assert (metrics["first"], metrics["last"]) == ("2025-05-27T00:00:00Z", "2026-07-02T00:00:00Z")
    assert _coverage.table(report)[-1].startswith("  no gap")


def test_a_hole_in_the_history_is_a_gap_naming_the_hypertable_and_the_hole():
    ranges = daily(DAYS[0] - datetime.timedelta(days=10), 20)
    ranges[11] = dict(ranges[11], verified=False, reason="manifest refused: forged")  # 2026-11-27
    del ranges[13]  # 2026-11-29: nothing archived
    report = _coverage.coverage(
        [("primary", []), ("dr", [])], ["iot"], DAYS, today=LATER, history={"primary": {"iot": {"public.m": ranges}}}
    )
    primary = [(g["day"], g["reason"]) for g in report["gaps"] if g["target"] == "primary"]
    assert [day for day, _reason in primary] == ["2026-11-27", "2026-11-29"]
    assert primary[0][1] == (
        "no backup set taken on this day; the history archive of public.m in primary has a hole "
        "2026-11-27T00:00:00Z .. 2026-11-28T00:00:00Z (manifest refused: forged)"
    )
    assert "hole 2026-11-29T00:00:00Z .. 2026-11-30T00:00:00Z (nothing archived)" in primary[1][1]
    holes = report["history"]["primary"]["iot"]["public.m"]["holes"]
    assert [h["reason"] for h in holes] == ["manifest refused: forged", "nothing archived"]
    assert len([g for g in report["gaps"] if g["target"] == "dr"]) == 5  # the replica has no history


def test_history_ends_where_the_rows_are_live_and_starts_with_its_first_range():
    # Archived from 26 Nov 12:00 to 29 Nov 06:00: the 26th counts from noon (nothing before was
    # archived), the 29th does not (its rows after 06:00 are live: only a set holds them).
    ranges = [{"start": at(DAYS[0], 12), "end": at(DAYS[3], 6), "verified": True, "reason": "verified"}]
    report = one([], today=LATER, history={"primary": {"iot": {"public.m": ranges}}})
    assert statuses(report) == [_coverage.HISTORY] * 3 + [_coverage.MISSING] * 2
    assert report["gaps"][0]["reason"].endswith("the history archive of public.m ends 2026-11-29T06:00:00Z")
    assert report["gaps"][1]["reason"] == "no backup set taken on this day"  # outside the history: not its concern


def test_every_hypertable_must_cover_the_day():
    tables = {"public.a": daily(DAYS[0], 5), "public.b": daily(DAYS[2], 3)}
    report = one([], today=LATER, history={"primary": {"iot": tables}})
    assert statuses(report) == [_coverage.MISSING] * 2 + [_coverage.HISTORY] * 3
    assert report["gaps"][0]["reason"].endswith("the history archive of public.b begins 2026-11-28T00:00:00Z")


def test_a_set_still_counts_as_the_day_s_status_and_history_errors_are_noted():
    report = one(
        every_day(), today=LATER, history={"primary": "the history archive of target primary could not be read: x"}
    )
    assert set(statuses(report)) == {_coverage.OK} and report["notes"] == [
        "the history archive of target primary could not be read: x"
    ]
    assert "  note: the history archive of target primary could not be read: x" in _coverage.table(report)


# ---------------------------------------------------------------------------------------------
# Archive tier


def test_the_archive_tier_is_counted_per_target_with_what_rehydrating_takes():
    gib = 1024**3
    cold = [dict(BLOBS[0], tier="Archive", size=3 * gib), dict(BLOBS[1], tier="Hot", size=10)]
    backups = [
        set_on(26, remote_entry=remote(archived=True, blobs=cold)),
        set_on(27, remote_entry=remote(archived=True, bytes=gib)),
    ]
    ranges = daily(DAYS[0], 2, tier="Archive", size_bytes=gib // 2)
    report = _coverage.coverage(
        [("primary", backups + every_day(skip=(26, 27))), ("dr", every_day())],
        ["iot"],
        DAYS,
        today=LATER,
        history={"primary": {"iot": {"public.m": ranges}}},
    )
    primary = report["archive_tier"]["primary"]
    assert (primary["sets"], primary["set_bytes"], primary["history_objects"], primary["history_bytes"]) == (
        2,
        4 * gib,
        2,
        gib,
    )
    assert primary["rehydrate"] == (
        "2 set(s) and 2 history object(s), 5.0 GiB: up to 15 h at Standard priority, under 1 h at High for blobs "
        "under 10 GB; priced per GB read"
    )
    assert report["archive_tier"]["dr"] == {
        "sets": 0,
        "set_bytes": 0,
        "history_objects": 0,
        "history_bytes": 0,
        "rehydrate": None,
    }
    assert "  primary, in the Archive tier: 2 set(s) and 2 history object(s), 5.0 GiB" in _coverage.table(report)[1]


# ---------------------------------------------------------------------------------------------
# The page


# What the page is made of: text, tables, lists and an inline SVG; nothing that runs or loads.
PAGE_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "table", "tr", "th", "td", "span"}
PAGE_TAGS |= {"ul", "li", "b", "br", "svg", "rect", "text", "line"}


class Tags(html.parser.HTMLParser):
    """The elements of a page, and any attribute that would load something."""

    def __init__(self):
        super().__init__()
        self.found, self.resources = set(), []

    def handle_starttag(self, tag, attrs):
        self.found.add(tag)
        self.resources += [(tag, k, v) for k, v in attrs if k in ("src", "href", "xlink:href", "data", "action")]


def test_the_page_is_self_contained_and_escapes_every_name():
    hostile = 'x"><script>alert(1)</script><img src=//evil.example/a.png>'
    ranges = [dict(r, verified=False, reason="refused <b>") for r in daily(DAYS[0], 2)]
    report = _coverage.coverage(
        [("primary", every_day(database=hostile, skip=(28,))), ("dr<i>", "down <u>")],
        [hostile],
        DAYS,
        today=LATER,
        history={"primary": {hostile: {"public.<m>": ranges}}},
    )
    page = _coverage.render_html(report, "Coverage <of> db1")
    assert "<script" not in page and "<img" not in page and "<b>refused" not in page and "<i>" not in page
    assert "http://" not in page and "https://" not in page
    assert "@import" not in page and "url(" not in page
    tags = Tags()
    tags.feed(page)
    assert tags.found <= PAGE_TAGS and {"svg", "rect", "ul", "li"} <= tags.found, tags.found - PAGE_TAGS
    assert not tags.resources, tags.resources
    assert "&lt;script&gt;" in page and "dr&lt;i&gt;" in page and "public.&lt;m&gt;" in page
    assert "<svg" in page and page.count("<rect") == 5 and "<title>Coverage &lt;of&gt; db1</title>" in page
    assert page.count('class="d"') == 10  # one strip of 5 days per target
    assert "2026-11-28 <b>x&quot;&gt;&lt;script&gt;" in page  # the gaps list names day, database and target
    assert "History archive" in page and "Archive tier" in page


# ---------------------------------------------------------------------------------------------
# history_ranges against an in-memory container


class HistoryStore:
    """What history_ranges asks of _azure.BlobStore: a listing with metadata and tiers, reads."""

    prefix = "tsdb"
    signing = None

    def __init__(self):
        self.blobs = {}  # name -> (bytes, info)

    def put(self, name, data, tier="Hot", **metadata):
        metadata.setdefault("sha256", hashlib.sha256(data).hexdigest())
        info = {"name": name, "size": len(data), "tier": tier, "sha256": metadata["sha256"], "metadata": metadata}
        self.blobs[name] = (data, info)

    def _listing(self, start):
        return {n: dict(info) for n, (_d, info) in self.blobs.items() if n.startswith(start)}

    def read_blob(self, name):
        data, info = self.blobs[name]
        if info["tier"] == "Archive":
            raise _azure.ArchivedError("%s is in the Archive tier" % name)
        return data

    def url(self, name):
        return "azure:c/" + name

    def redact(self, e):
        return "%s" % e


def put_range(store, day, table="public.metrics", host="db01", recorded_host=None, object_sha=None, tier="Hot"):
    start, end = at(day), at(day + datetime.timedelta(days=1))
    folder = hl.history_folder(store.prefix, host, "iot", table)
    data_name = hl.object_name(folder, start, end, 1, hl.DATA_EXT)
    payload = b"rows of %s" % day.isoformat().encode()
    sha = hashlib.sha256(payload).hexdigest()
    store.put(data_name, payload, tier, sha256=object_sha or sha)
    label = hl.range_label(start, end)
    body = {
        "format": hm.HISTORY_FORMAT,
        "format_version": hm.HISTORY_VERSION,
        "host": recorded_host or host,
        "database": "iot",
        "hypertable": hl.qualified(*hl.split_table_name(table)),
        "range": {"start": mf.isoformat(start), "end": mf.isoformat(end), "label": label},
        "version": 1,
        "generation": 1,
        "columns": [],
        "rows": 3,
        "content_hash": "42",
        "object": {"name": data_name.rsplit("/", 1)[1], "sha256": sha, "size_bytes": len(payload)},
        "covers": {"rows": 3, "content_hash": "42", "chunks": []},
    }
    meta = {"kind": hl.KIND_MANIFEST, "host": host, "database": "iot", "hypertable": body["hypertable"]}
    store.put(
        hl.object_name(folder, start, end, 1, hl.MANIFEST_EXT),
        hm.encode_manifest(body),
        tier,
        object_sha256=sha,
        **meta,
    )


def test_history_ranges_reads_each_range_s_newest_manifest_and_checks_its_object():
    store = HistoryStore()
    days = [datetime.date(2026, 1, d) for d in range(1, 6)]
    put_range(store, days[0])
    put_range(store, days[1], object_sha="0" * 64)  # the object listed is another one
    put_range(store, days[2], recorded_host="db02")  # copied from another host's folder
    put_range(store, days[3], tier="Archive")  # manifest unreadable: metadata and the object's sha256 count
    put_range(store, days[0], table='public."Plant A"')
    put_range(store, days[0], host="db02")  # another host's history is not this host's
    found = ch.history_ranges(store, "db01", ["iot", "ops"])
    assert sorted(found) == ["iot"] and sorted(found["iot"]) == ['public."Plant A"', "public.metrics"]
    ranges = found["iot"]["public.metrics"]
    assert [(r["start"].day, r["verified"], r["unchecked"]) for r in ranges] == [
        (1, True, False),
        (2, False, False),
        (3, False, False),
        (4, True, True),
    ]
    assert ranges[1]["reason"].startswith("object missing or another sha256: tsdb/history/db01/iot/public.metrics/")
    assert ranges[2]["reason"].startswith("manifest refused: ") and "records host db02" in ranges[2]["reason"]
    assert "manifest not checked" in ranges[3]["reason"] and ranges[3]["tier"] == "Archive"
    assert found["iot"]['public."Plant A"'][0]["verified"] is True


@pytest.mark.parametrize("name", ["public.metrics", 'public."Plant A"', '"Süd"."x.y"', "public." + "l" * 63])
def test_a_table_segment_reads_back_as_its_hypertable(name):
    schema, table = hl.split_table_name(name)
    assert ch._segment_table(hl.table_segment(schema, table)) == hl.qualified(schema, table)


def test_a_long_name_cut_in_the_layout_is_read_from_its_manifest():
    store = HistoryStore()
    table = '"%s"."%s"' % ("Ä" * 31, "Ö" * 31)  # longer than a segment once escaped: cut and hashed
    put_range(store, datetime.date(2026, 1, 1), table=table)
    assert "~~" in hl.table_segment(*hl.split_table_name(table))
    found = ch.history_ranges(store, "db01", ["iot"])
    assert list(found["iot"]) == [hl.qualified(*hl.split_table_name(table))]
    assert found["iot"][hl.qualified(*hl.split_table_name(table))][0]["verified"] is True


# ---------------------------------------------------------------------------------------------
# The module's reading of its targets


class _Target:
    def __init__(self, name, store=None, error=None):
        self.name, self.store, self.error = name, store, error


class _ListingStore:
    def __init__(self, sets=None, error=None):
        self.sets, self.error = sets or [], error

    def list_remote(self, host=None, database=None):
        if self.error:
            raise _azure.ServiceError(self.error)
        return [s for s in self.sets if database in (None, s["database"])]

    def redact(self, e):
        return ("%s" % e).replace("sekret", "<redacted>")


def test_the_module_reports_a_target_it_cannot_list_and_reads_the_others():
    from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _coverage_collect as module

    targets = [
        _Target("primary", _ListingStore([{"database": "iot"}, {"database": "ops"}])),
        _Target("dr", _ListingStore(error="refused key sekret")),
        _Target("dr2", error="cannot build an Azure client"),
    ]
    listed = module.listings(targets, "db01", ["iot"])
    assert listed == {
        "primary": [{"database": "iot"}],
        "dr": "refused key <redacted>",
        "dr2": "cannot build an Azure client",
    }
