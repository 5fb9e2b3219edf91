# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Coverage of days by the history archive (hypertable slices, docs/HISTORY.md): which ranges of
each hypertable a target holds - the newest version with a manifest of each range, its manifest
accepted (owner, signature) and its object listed with the manifest's sha256 - their holes, and
whether a day (UTC) lies in ranges that are all verified. Used by _coverage.

Only the host layout (<prefix>/history/<host>/...) is read: the layout without host of earlier
releases may be any host's and is migrated (history_migrate) before it counts.

Private to the collection. No Ansible imports.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import re

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _history_layout as hl
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _history_manifest as hm
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._azure_names import (
    ArchivedError,
    IntegrityError,
    NotFoundError,
    join_name,
    validate_prefix,
    validate_segment,
)

UTC = datetime.timezone.utc
ARCHIVE_TIER = "Archive"
_MONTH_LEAF = re.compile(r"^\d{4}/\d{2}/[^/]+$")
_ESCAPED = re.compile(r"(?:[A-Za-z0-9_]|~[0-9a-f]{2})+")
# A manifest that cannot be used counts as a hole; anything else (the service down, credentials
# refused) stops the reading of this target's history.
_RANGE_ERRORS = (hl.HistoryError, NotFoundError, IntegrityError, ArchivedError, mf.ManifestError)


def _range(start, end, verified, reason, **extra):
    out = {"start": start, "end": end, "verified": verified, "reason": reason}
    out.update(extra)
    return out


# ---------------------------------------------------------------------------------------------
# Reading one store


def history_ranges(store, host, databases):
    """{database: {hypertable: [range]}} of the history ``host`` keeps in ``store``; a range is
    {start, end, verified, reason, unchecked, version, manifest, tier, size_bytes}. One listing
    per database and one small read per range. Databases without history are left out."""
    out = {}
    for database in databases:
        root = join_name(
            validate_prefix(store.prefix),
            hl.HISTORY_DIR,
            validate_segment(host, "host"),
            validate_segment(mf.database_segment(database), "database"),
        )
        listing = store._listing(root + "/")
        tables = {}
        for segment, ranges in sorted(_by_table(listing, root).items()):
            name, found = _table_ranges(store, host, database, root + "/" + segment, ranges, listing)
            if found:
                tables[name] = found
        if tables:
            out[database] = tables
    return out


def _by_table(listing, root):
    """{table segment: {range label: {start, end, data, manifests}}} of a database's listing, as
    _history_manifest.list_ranges gives them for one folder."""
    tables = {}
    for name, info in listing.items():
        segment, _slash, rest = name[len(root) + 1 :].partition("/")
        parsed = hl.parse_leaf(name) if _MONTH_LEAF.match(rest) else None
        if parsed is None:
            continue
        start, end, version, kind = parsed
        entry = tables.setdefault(segment, {}).setdefault(
            hl.range_label(start, end), {"start": start, "end": end, "data": {}, "manifests": {}}
        )
        entry["data" if kind == hl.KIND_DATA else "manifests"][version] = info
    return tables


def _segment_table(segment):
    """The qualified hypertable a table segment stands for, or None (a cut one, or not one)."""
    parts = segment.split(".")
    if len(parts) != 2 or not all(_ESCAPED.fullmatch(p) for p in parts):
        return None
    try:
        decoded = [re.sub(r"~([0-9a-f]{2})", lambda m: "%c" % int(m.group(1), 16), p) for p in parts]
        schema, table = (p.encode("latin-1").decode("utf-8") for p in decoded)
    except ValueError:
        return None
    return hl.qualified(schema, table) if hl.table_segment(schema, table) == segment else None


def _table_name(store, host, database, folder, ranges):
    """The hypertable of a folder: its segment decoded, or (a long name, cut in the blob names) the
    one its manifests record whose folder this is; None when none does."""
    name = _segment_table(folder.rsplit("/", 1)[-1])
    if name is not None:
        return name
    for entry in ranges.values():
        info = entry["manifests"].get(hm.latest_version(entry))
        if info is None or info.get("tier") == ARCHIVE_TIER:
            continue
        try:
            name = hm.read_manifest_blob(store, info["name"])["hypertable"]
            if hl.Place.of(store.prefix, host, database, name).folder == folder:
                return name
        except _RANGE_ERRORS + (ValueError,):
            continue
    return None


def _table_ranges(store, host, database, folder, ranges, listing):
    """(hypertable, [range]) of one folder, oldest first; a folder no manifest names is reported
    under its segment, every range unverified."""
    name = _table_name(store, host, database, folder, ranges)
    place = hl.Place.of(store.prefix, host, database, name) if name else None
    out = []
    for _label, entry in sorted(ranges.items(), key=lambda item: (item[1]["start"], item[1]["end"])):
        version = hm.latest_version(entry)
        if version is None:
            continue  # objects without a manifest: an archive run that did not finish
        info = entry["manifests"][version]
        if place is None:
            out.append(_range(entry["start"], entry["end"], False, "no manifest of this folder names its hypertable"))
            continue
        out.append(_checked_range(store, place, entry, version, info, listing))
    return name or folder.rsplit("/", 1)[-1], out


def _checked_range(store, place, entry, version, info, listing):
    """One range, verified when its manifest is the place's and trusted and its object is listed
    with the manifest's sha256. A manifest in the Archive tier cannot be read: it counts when its
    metadata is the place's and the object's listed sha256 is the one it records (unchecked), as
    a backup set archived whole does."""
    base = dict(version=version, manifest=info["name"], unchecked=False, tier=None, size_bytes=None)
    if info.get("tier") == ARCHIVE_TIER:
        return _archived_range(store, place, entry, info, listing, base)
    try:
        manifest = hm.read_owned_manifest(store, info, place)
    except _RANGE_ERRORS as e:
        return _range(entry["start"], entry["end"], False, "manifest refused: %s" % store.redact(e), **base)
    obj = manifest["object"]
    obj_name = obj["name"] if "/" in obj["name"] else "%s/%s" % (hm.folder_of(info["name"]), obj["name"])
    there = listing.get(obj_name) if obj_name.startswith(place.folder + "/") else None
    if there is None or there.get("sha256") != obj["sha256"]:
        return _range(entry["start"], entry["end"], False, "object missing or another sha256: %s" % obj_name, **base)
    base.update(tier=there.get("tier"), size_bytes=there.get("size"))
    return _range(entry["start"], entry["end"], True, "verified", **base)


def _archived_range(store, place, entry, info, listing, base):
    try:
        hm.check_metadata(store, info, place)
    except hl.HistoryError as e:
        return _range(entry["start"], entry["end"], False, "manifest refused: %s" % e, **base)
    wanted = (info.get("metadata") or {}).get("object_sha256")
    there = (entry["data"] or {}).get(base["version"])
    if there is None or not wanted or there.get("sha256") != wanted:
        reason = "manifest in the Archive tier, its object missing or another sha256"
        return _range(entry["start"], entry["end"], False, reason, **base)
    base.update(unchecked=True, tier=there.get("tier"), size_bytes=there.get("size"))
    reason = "in the Archive tier, manifest not checked (rehydrate to check it)"
    return _range(entry["start"], entry["end"], True, reason, **base)


# ---------------------------------------------------------------------------------------------
# Days


def summarize(ranges):
    """{ranges, verified, unchecked, first, last, holes: [(start, end, reason)], unchecked_spans}
    of a hypertable's ranges: a hole is a stretch of [first start, last end) that no verified
    range covers; its reason is the unverified ranges' there, or that nothing is archived there."""
    first = min(r["start"] for r in ranges)
    last = max(r["end"] for r in ranges)
    holes, reached = [], first
    for r in sorted((r for r in ranges if r["verified"]), key=lambda r: r["start"]):
        if r["start"] > reached:
            holes.append((reached, r["start"]))
        reached = max(reached, r["end"])
    if reached < last:
        holes.append((reached, last))
    return {
        "ranges": len(ranges),
        "verified": sum(1 for r in ranges if r["verified"]),
        "unchecked": sum(1 for r in ranges if r.get("unchecked")),
        "first": first,
        "last": last,
        "holes": [(s, e, _hole_reason(ranges, s, e)) for s, e in holes],
        "unchecked_spans": [(r["start"], r["end"]) for r in ranges if r.get("unchecked")],
    }


def _hole_reason(ranges, start, end):
    reasons = sorted({r["reason"] for r in ranges if not r["verified"] and r["start"] < end and r["end"] > start})
    return "; ".join(reasons) or "nothing archived"


def day_bounds(day):
    start = datetime.datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + datetime.timedelta(days=1)


def day_verdict(tables, day, target):
    """(covered, reason) of a day by the history of one database in one target; ``tables``:
    {hypertable: summarize(...)}. Covered when, for every hypertable, the day ends within its
    span - before the first range nothing was archived; after the last the rows are live and only
    a backup set holds them - and no hole touches the part of the day in the span. The reason is
    None when the day is outside every hypertable's span (history says nothing of it)."""
    if not tables:
        return False, None
    start, end = day_bounds(day)
    relevant = [n for n, s in tables.items() if s["first"] < end and s["last"] > start]
    for name, s in sorted(tables.items()):
        if end > s["last"] or end <= s["first"]:
            where = "ends %s" % iso(s["last"]) if end > s["last"] else "begins %s" % iso(s["first"])
            return False, ("the history archive of %s %s" % (name, where)) if relevant else None
        for h_start, h_end, reason in s["holes"]:
            if h_start < end and h_end > start:
                return False, "the history archive of %s in %s has a hole %s .. %s (%s)" % (
                    name,
                    target,
                    iso(h_start),
                    iso(h_end),
                    reason,
                )
    unchecked = any(s < end and e > start for t in tables.values() for s, e in t["unchecked_spans"])
    note = " (in the Archive tier, manifests not checked)" if unchecked else ""
    return True, "in %s's history archive: %d hypertable(s), every range verified%s" % (target, len(tables), note)


def iso(dt):
    return mf.isoformat(dt) if isinstance(dt, datetime.datetime) else dt
