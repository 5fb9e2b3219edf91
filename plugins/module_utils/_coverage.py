# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Coverage of history, per target (the primary and each replica, _replica): for each day of a
window and each database, whether a backup set taken that day is safe in the target (complete,
its manifest read and accepted by the signing policy), or the day lies in the target's verified
history archive (_coverage_history), or it is only on the host, refused, or missing - and every
gap (day, database, target) with its reason. Works on one merged catalog per target
(_azure_names.merge_catalog of the local sets and that target's, remote manifests read by
with_manifests); renders a text table, and a self-contained HTML page (_coverage_html) an
auditor can open.

Private to the collection. No Ansible imports.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _coverage_history as ch
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _signing
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._azure_names import (
    KIND_ARCHIVE,
    KIND_ARCHIVE_PART,
    KIND_GLOBALS,
)

PRIMARY = "primary"  # _replica.PRIMARY (not imported: _replica pulls in the signing and copy code)
# A day's status in one target, best first: what the day counts as is its best set's.
OK, ARCHIVED, UNCHECKED, HISTORY, PENDING, LOCAL_ONLY, INCOMPLETE, REFUSED, MISSING, UNREADABLE = (
    "ok",
    "ok (archive tier)",
    "in archive tier, manifest not checked",
    "ok (history archive)",
    "pending (today)",
    "local only",
    "incomplete in azure",
    "refused",
    "missing",
    "target unreadable",
)
RANK = [OK, ARCHIVED, UNCHECKED, HISTORY, PENDING, LOCAL_ONLY, INCOMPLETE, REFUSED, MISSING, UNREADABLE]
# UNCHECKED counts: every blob of the set is in the target (the lifecycle rule moved the whole
# set, manifest included, to the Archive tier); its manifest can be checked once rehydrated.
# HISTORY: no set, but every hypertable's rows of the day are in verified history objects.
COVERED = (OK, ARCHIVED, UNCHECKED, HISTORY)
# Today before its backup ran is no gap yet (the next report tells).
NOT_A_GAP = COVERED + (PENDING,)
COLOURS = {
    OK: "#2e7d32",
    ARCHIVED: "#558b2f",
    UNCHECKED: "#9e9d24",
    HISTORY: "#00838f",
    PENDING: "#90a4ae",
    LOCAL_ONLY: "#f9a825",
    INCOMPLETE: "#ef6c00",
    REFUSED: "#c62828",
    MISSING: "#b71c1c",
    UNREADABLE: "#6a1b9a",
}
GIB = 1024**3
# Azure's rehydration from the Archive tier (docs: "Blob rehydration from the archive tier").
REHYDRATION = "up to 15 h at Standard priority, under 1 h at High for blobs under 10 GB; priced per GB read"


def window(days, until=None):
    """The dates (UTC) of the last ``days`` days up to ``until`` (a date; today by default)."""
    if days < 1:
        raise ValueError("days must be at least 1")
    until = until or mf.utcnow().date()
    return [until - datetime.timedelta(days=n) for n in range(days - 1, -1, -1)]


def missing_blobs(remote, manifest):
    """The blobs the manifest lists that the listing lacks or holds with another sha256 (an
    encrypted set's blobs are its stored form: the digests of its ``encryption``)."""
    have = {(b["kind"], b.get("part")): b.get("sha256") for b in remote.get("blobs") or ()}
    archive = manifest.get("archive") or {}
    stored = manifest.get("encryption") or {}
    wanted = [((KIND_ARCHIVE_PART, part), digest) for part, digest in sorted((archive.get("files") or {}).items())]
    if not wanted:
        wanted = [((KIND_ARCHIVE, None), (stored.get("archive") or archive).get("sha256"))]
    if manifest.get("globals"):
        wanted.append(((KIND_GLOBALS, None), (stored.get("globals") or manifest["globals"]).get("sha256")))
    return [
        "%s%s" % (kind, " " + part if part else "")
        for (kind, part), digest in wanted
        if (kind, part) not in have or have[(kind, part)] != digest
    ]


def set_status(entry, target=PRIMARY):
    """(status, reason) of one set of a target's merged catalog."""
    remote, local = entry.get("remote"), entry.get("local")
    if remote and remote.get("complete"):
        if remote.get("manifest") is None:
            error = remote.get("manifest_error") or "not read"
            if "Archive tier" in error:
                return UNCHECKED, "in %s, the whole set in the Archive tier: rehydrate to check its manifest" % target
            return REFUSED, "in %s, but its manifest is not usable: %s" % (target, error)
        missing = missing_blobs(remote, remote["manifest"])
        if missing:
            return INCOMPLETE, "its manifest is in %s but not: %s" % (target, ", ".join(missing))
        signature = _signing.describe(remote.get("signature"))
        if remote.get("archived"):
            return ARCHIVED, "in %s (%s); its archive is in the Archive tier: rehydrate before a restore" % (
                target,
                signature,
            )
        return OK, "in %s, every blob of its manifest there (%s)" % (target, signature)
    if remote:
        return INCOMPLETE, "blobs in %s without their manifest (an upload that did not finish)" % target
    if local and local.get("usable"):
        verified = "verified" if local.get("verified") else "not verified"
        return LOCAL_ONLY, "only on the host (%s), not in %s" % (verified, target)
    return MISSING, "no usable set"


def _grid(backups, target):
    """{(database, day): [(rank, status, reason, backup_id, usable on the host)]} of a catalog."""
    grid = {}
    for entry in backups:
        if entry.get("purpose") == mf.SAFETY_PURPOSE:
            continue
        try:
            day = mf.backup_id_time(entry["backup_id"]).date()
        except ValueError:
            continue
        status, reason = set_status(entry, target)
        local = bool((entry.get("local") or {}).get("usable"))
        grid.setdefault((entry["database"], day), []).append(
            (RANK.index(status), status, reason, entry["backup_id"], local)
        )
    return grid


def _cell(target, error, found, tables, day, is_today):
    """(status, reason, backup ids) of a day in one target, and whether the host has a set of it."""
    if error is not None:
        reason = "target %s could not be read: %s" % (target, error)
        return {"status": UNREADABLE, "reason": reason, "backup_ids": []}, False
    best = min(found) if found else (None, MISSING, "no backup set taken on this day")
    status, reason = best[1], best[2]
    if status not in COVERED:
        by_history, why = ch.day_verdict(tables or {}, day, target)
        if by_history:
            status, reason = HISTORY, why
        elif why:
            reason = "%s; %s" % (reason, why)
    if is_today and status not in COVERED:
        status, reason = PENDING, "today, not in %s yet (%s)" % (target, reason)
    cell = {"status": status, "reason": reason, "backup_ids": [f[3] for f in sorted(found)]}
    return cell, any(f[4] for f in found)


def _row(day, cells, names, local):
    """A day of a database over every target: its best status (the first target's on a tie)."""
    covered_in = [n for n in names if cells[n]["status"] in COVERED]
    best = cells[min(names, key=lambda n: RANK.index(cells[n]["status"]))]
    return {
        "day": day.isoformat(),
        "status": best["status"],
        "reason": best["reason"],
        "backup_ids": sorted({i for c in cells.values() for i in c["backup_ids"]}),
        "targets": cells,
        "covered_in": covered_in,
        "only_in": covered_in[0] if len(covered_in) == 1 else None,
        "local_only": bool(local and not covered_in),
    }


def coverage(targets, databases, days, today=None, history=None):
    """The report over ``targets``, [(name, catalog or the error string of a target that could
    not be listed)], the primary first: per database one row per day - its status and reason in
    each target (``targets``), its best status, the targets that cover it (covered_in, only_in),
    whether only the host has it (local_only) - then every gap (a day, database and target not
    covered) with its reason, a summary, the Archive tier, and each target's history archive.
    ``history``: {target: {database: {hypertable: [range]}}} (_coverage_history.history_ranges),
    or {target: error string}. Safety backups do not cover a day: restores take them, not the
    schedule that keeps history."""
    today = today or mf.utcnow().date()
    history = history or {}
    names = [name for name, _backups in targets]
    errors = {name: backups for name, backups in targets if isinstance(backups, str)}
    grids = {name: _grid(backups, name) for name, backups in targets if name not in errors}
    spans = {name: _spans(history.get(name)) for name in names}
    report = {"targets": names, "days": [d.isoformat() for d in days], "databases": {}, "gaps": [], "errors": errors}
    report["notes"] = [h for h in (history.get(n) for n in names) if isinstance(h, str)]
    for database in databases:
        rows = report["databases"][database] = []
        for day in days:
            cells, local = {}, False
            for name in names:
                found = grids.get(name, {}).get((database, day), [])
                cells[name], has = _cell(name, errors.get(name), found, spans[name].get(database), day, day == today)
                local = local or has
            rows.append(_row(day, cells, names, local))
            report["gaps"].extend(
                {"day": day.isoformat(), "database": database, "target": n, "reason": cells[n]["reason"]}
                for n in names
                if cells[n]["status"] not in NOT_A_GAP
            )
    report["summary"] = _summary(report, days, databases)
    report["archive_tier"] = {name: archive_tier(backups, history.get(name)) for name, backups in targets}
    report["history"] = {name: _history_report(spans[name]) for name in names if spans[name]}
    return report


def _spans(history):
    """{database: {hypertable: _coverage_history.summarize(ranges)}} of one target's history."""
    if not isinstance(history, dict):
        return {}
    return {
        database: {name: ch.summarize(ranges) for name, ranges in tables.items() if ranges}
        for database, tables in history.items()
    }


def _history_report(spans):
    """The history part of the report, as JSON: per database and hypertable, the ranges
    archived and verified, the first and last moment, and every hole with its reason."""
    return {
        database: {
            name: {
                "ranges": s["ranges"],
                "verified": s["verified"],
                "unchecked": s["unchecked"],
                "first": ch.iso(s["first"]),
                "last": ch.iso(s["last"]),
                "holes": [{"start": ch.iso(a), "end": ch.iso(b), "reason": r} for a, b, r in s["holes"]],
            }
            for name, s in sorted(tables.items())
        }
        for database, tables in sorted(spans.items())
    }


def _summary(report, days, databases):
    per = {n: {"covered": 0, "by_history": 0, "only_here": 0, "gaps": 0} for n in report["targets"]}
    nowhere = 0
    for rows in report["databases"].values():
        for row in rows:
            for name, cell in row["targets"].items():
                per[name]["covered"] += cell["status"] in COVERED
                per[name]["by_history"] += cell["status"] == HISTORY
            if row["only_in"]:
                per[row["only_in"]]["only_here"] += 1
            nowhere += not row["covered_in"] and row["status"] != PENDING
    for gap in report["gaps"]:
        per[gap["target"]]["gaps"] += 1
    for name, error in report["errors"].items():
        per[name]["error"] = error
    return {
        "days": len(days),
        "databases": len(databases),
        "targets": len(report["targets"]),
        "covered": sum(p["covered"] for p in per.values()),
        "gaps": len(report["gaps"]),
        "covered_nowhere": nowhere,
        "from": days[0].isoformat(),
        "to": days[-1].isoformat(),
        "per_target": per,
    }


def archive_tier(backups, history=None):
    """The sets (complete, their archive in the Archive tier) and history objects of one target
    in the Archive tier, their bytes, and what a restore of them takes (None when there is none)."""
    sets = [b for b in (_archived_bytes(e) for e in backups) if b is not None] if not isinstance(backups, str) else []
    objects = [
        r.get("size_bytes") or 0
        for tables in (history.values() if isinstance(history, dict) else ())
        for ranges in tables.values()
        for r in ranges
        if r.get("tier") == ch.ARCHIVE_TIER
    ]
    out = {"sets": len(sets), "set_bytes": sum(sets), "history_objects": len(objects), "history_bytes": sum(objects)}
    what = ["%d set(s)" % len(sets)] if sets else []
    what += ["%d history object(s)" % len(objects)] if objects else []
    gib = (out["set_bytes"] + out["history_bytes"]) / GIB
    out["rehydrate"] = "%s, %.1f GiB: %s" % (" and ".join(what), gib, REHYDRATION) if what else None
    return out


def _archived_bytes(entry):
    """Bytes of a set's blobs in the Archive tier (all of it when the listing says no tier), or None."""
    remote = entry.get("remote") or {}
    if not (remote.get("complete") and remote.get("archived")):
        return None
    sizes = [b.get("size") or 0 for b in remote.get("blobs") or () if b.get("tier") == ch.ARCHIVE_TIER]
    return sum(sizes) if sizes else remote.get("bytes") or 0


def uncovered_days(report):
    """{(database, target): the days not covered there} - every pair, 0 included (a metric that
    is not reset stays stuck at its last gap count)."""
    out = {(database, target): 0 for database in report["databases"] for target in report["targets"]}
    for gap in report["gaps"]:
        out[(gap["database"], gap["target"])] += 1
    return out


def table(report):
    """The report as text lines: a total per target; the sets to rehydrate and what could not be
    read; then one line per gap - day, database, target, reason - oldest first."""
    s = report["summary"]
    parts = []
    for name in report["targets"]:
        p = s["per_target"][name]
        part = "%s %d of %d database-days covered" % (name, p["covered"], s["days"] * s["databases"])
        if len(report["targets"]) > 1 and p["only_here"]:
            part += " (%d only there)" % p["only_here"]
        parts.append(part + (" (unreadable)" if p.get("error") else ""))
    lines = ["coverage %s .. %s: %s" % (s["from"], s["to"], "; ".join(parts))]
    for name in report["targets"]:
        note = report["archive_tier"][name]["rehydrate"]
        if note:
            lines.append("  %s, in the Archive tier: %s" % (name, note))
    lines.extend("  note: %s" % note for note in report["notes"])
    gaps = report["gaps"]
    dw = max([len(g["database"]) for g in gaps] + [8])
    tw = max([len(g["target"]) for g in gaps] + [7])
    lines.extend("  %s  %-*s  %-*s  %s" % (g["day"], dw, g["database"], tw, g["target"], g["reason"]) for g in gaps)
    if not gaps:
        lines.append("  no gap: every day of every database is covered in every target")
    return lines


def render_html(report, title):
    """The self-contained HTML page of the report (_coverage_html)."""
    from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _coverage_html

    return _coverage_html.render_html(report, title)
