# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Coverage of history by backup sets: for each day of a window and each database, whether a
set taken that day is safe in Azure (complete, its manifest read and accepted by the signing
policy), only on the host, refused, or missing - and every gap with its reason. Works on the
merged catalog (_azure_names.merge_catalog, remote manifests read by with_manifests); renders a
text table, and a self-contained HTML page an auditor can open.

Private to the collection. No Ansible imports.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import html

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _signing
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._azure_names import (
    KIND_ARCHIVE,
    KIND_ARCHIVE_PART,
    KIND_GLOBALS,
)

TARGET = "primary"  # the one Azure target; more targets get their own column (issue: second copy)
# A day's status, best first: what the day counts as is its best set.
OK, ARCHIVED, UNCHECKED, PENDING, LOCAL_ONLY, INCOMPLETE, REFUSED, MISSING = (
    "ok",
    "ok (archive tier)",
    "in archive tier, manifest not checked",
    "pending (today)",
    "local only",
    "incomplete in azure",
    "refused",
    "missing",
)
RANK = [OK, ARCHIVED, UNCHECKED, PENDING, LOCAL_ONLY, INCOMPLETE, REFUSED, MISSING]
# UNCHECKED counts: every blob of the set is in Azure (the lifecycle rule moved the whole set,
# manifest included, to the Archive tier); its manifest can be checked once rehydrated.
COVERED = (OK, ARCHIVED, UNCHECKED)
# Today before its backup ran is no gap yet (the next report tells).
NOT_A_GAP = COVERED + (PENDING,)
COLOURS = {
    OK: "#2e7d32",
    ARCHIVED: "#558b2f",
    UNCHECKED: "#9e9d24",
    PENDING: "#90a4ae",
    LOCAL_ONLY: "#f9a825",
    INCOMPLETE: "#ef6c00",
    REFUSED: "#c62828",
    MISSING: "#b71c1c",
}


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


def set_status(entry):
    """(status, reason) of one set of the merged catalog for the primary target."""
    remote, local = entry.get("remote"), entry.get("local")
    if remote and remote.get("complete"):
        if remote.get("manifest") is None:
            error = remote.get("manifest_error") or "not read"
            if "Archive tier" in error:
                return UNCHECKED, "in Azure, the whole set in the Archive tier: rehydrate to check its manifest"
            return REFUSED, "in Azure, but its manifest is not usable: %s" % error
        missing = missing_blobs(remote, remote["manifest"])
        if missing:
            return INCOMPLETE, "its manifest is in Azure but not: %s" % ", ".join(missing)
        signature = _signing.describe(remote.get("signature"))
        if remote.get("archived"):
            return ARCHIVED, "in Azure (%s); its archive is in the Archive tier: rehydrate before a restore" % signature
        return OK, "in Azure, every blob of its manifest there (%s)" % signature
    if remote:
        return INCOMPLETE, "blobs in Azure without their manifest (an upload that did not finish)"
    if local and local.get("usable"):
        verified = "verified" if local.get("verified") else "not verified"
        return LOCAL_ONLY, "only on the host (%s), not in Azure" % verified
    return MISSING, "no usable set"


def coverage(backups, databases, days, today=None):
    """The report: per database, one row per day (status, reason, backup ids), the gaps (every
    day not covered, with its reason) and a summary. Safety backups do not cover a day: they are
    taken by restores, not by the schedule that keeps history."""
    grid = {}
    for entry in backups:
        if entry.get("purpose") == mf.SAFETY_PURPOSE:
            continue
        try:
            day = mf.backup_id_time(entry["backup_id"]).date()
        except ValueError:
            continue
        status, reason = set_status(entry)
        grid.setdefault((entry["database"], day), []).append((RANK.index(status), status, reason, entry["backup_id"]))
    report = {"target": TARGET, "days": [d.isoformat() for d in days], "databases": {}, "gaps": []}
    for database in databases:
        rows = []
        for day in days:
            found = sorted(grid.get((database, day), []))
            status, reason = (found[0][1], found[0][2]) if found else (MISSING, "no backup set taken on this day")
            if day == (today or mf.utcnow().date()) and status not in COVERED:
                status, reason = PENDING, "today, not in Azure yet (%s)" % reason
            rows.append(
                {"day": day.isoformat(), "status": status, "reason": reason, "backup_ids": [f[3] for f in found]}
            )
            if status not in NOT_A_GAP:
                report["gaps"].append(
                    {"day": day.isoformat(), "database": database, "target": TARGET, "reason": reason}
                )
        report["databases"][database] = rows
    covered = sum(1 for rows in report["databases"].values() for r in rows if r["status"] in COVERED)
    report["summary"] = {
        "days": len(days),
        "databases": len(databases),
        "covered": covered,
        "gaps": len(report["gaps"]),
        "from": days[0].isoformat(),
        "to": days[-1].isoformat(),
    }
    return report


def table(report):
    """The report as text lines: one per database and day that is not covered, and a total."""
    s = report["summary"]
    lines = [
        "coverage %s .. %s, target %s: %d of %d database-days covered"
        % (s["from"], s["to"], report["target"], s["covered"], s["days"] * s["databases"])
    ]
    width = max([len(g["database"]) for g in report["gaps"]] + [8])
    for gap in report["gaps"]:
        lines.append("  %s  %-*s  %s" % (gap["day"], width, gap["database"], gap["reason"]))
    if not report["gaps"]:
        lines.append("  no gap: every day of every database has a set in Azure")
    return lines


def render_html(report, title):
    """One self-contained page (no script, no external resource): a calendar strip per database,
    one cell per day coloured by status (the reason on hover), then the list of gaps."""
    esc = html.escape
    out = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>%s</title><style>" % esc(title),
        "body{font-family:sans-serif;margin:2em}td.d{width:14px;height:18px;padding:0}table{border-collapse:collapse}"
        "th{text-align:left;padding-right:1em;font-weight:normal}li{margin:.2em 0}",
        "</style></head><body><h1>%s</h1>" % esc(title),
        "<p>%s</p>" % esc(table(report)[0]),
        "<table>",
    ]
    for database, rows in sorted(report["databases"].items()):
        cells = "".join(
            "<td class='d' style='background:%s' title='%s'></td>"
            % (COLOURS[r["status"]], esc("%s: %s - %s" % (r["day"], r["status"], r["reason"]), quote=True))
            for r in rows
        )
        out.append("<tr><th>%s</th>%s</tr>" % (esc(database), cells))
    out.append("</table><p>")
    out.append(" ".join("<span style='color:%s'>&#9632;</span> %s" % (COLOURS[k], esc(k)) for k in RANK))
    out.append("</p><h2>Gaps (%d)</h2><ul>" % len(report["gaps"]))
    out.extend(
        "<li>%s <b>%s</b> (%s): %s</li>" % (esc(g["day"]), esc(g["database"]), esc(g["target"]), esc(g["reason"]))
        for g in report["gaps"]
    )
    out.append("</ul></body></html>")
    return "\n".join(out) + "\n"
