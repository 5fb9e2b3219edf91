# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The coverage report (_coverage) as one self-contained HTML page an auditor can open anywhere:
no script, no stylesheet, font or image from elsewhere; every text from the report escaped
(database, hypertable and target names are the operator's, reasons quote Azure's errors).

Private to the collection. No Ansible imports.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import html

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _coverage as cv

STYLE = (
    "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td.d{height:18px;padding:0}"
    "th{text-align:left;padding-right:1em;font-weight:normal}li{margin:.2em 0}"
    "table.h td,table.h th{border:1px solid #ccc;padding:.2em .5em;vertical-align:top}"
)
PLOT_WIDTH, PLOT_HEIGHT = 900, 140


def esc(value):
    return html.escape("%s" % value, quote=True)


def render_html(report, title):
    """The page: the total per target, per database one strip per target (a cell per day coloured
    by its status, the reason on hover) and the legend, a plot of the share covered per day, the
    gaps, what the Archive tier holds and what rehydrating it takes, and the history archive."""
    out = [
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>%s</title>' % esc(title),
        "<style>%s</style></head><body><h1>%s</h1>" % (STYLE, esc(title)),
        "<p>%s</p>" % esc(cv.table(report)[0]),
    ]
    out += _strips(report) + _legend() + _plot(report) + _gaps(report) + _archive(report) + _history(report)
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _strips(report):
    width = max(2, min(14, PLOT_WIDTH // max(1, len(report["days"]))))
    out = ["<table>"]
    for database, rows in sorted(report["databases"].items()):
        for i, target in enumerate(report["targets"]):
            cells = "".join(
                '<td class="d" style="width:%dpx;background:%s" title="%s"></td>'
                % (width, cv.COLOURS[c["status"]], esc("%s %s: %s - %s" % (r["day"], target, c["status"], c["reason"])))
                for r, c in ((r, r["targets"][target]) for r in rows)
            )
            out.append("<tr><th>%s</th><th>%s</th>%s</tr>" % (esc(database) if i == 0 else "", esc(target), cells))
    out.append("</table>")
    return out


def _legend():
    return [
        "<p>%s</p>" % " ".join('<span style="color:%s">&#9632;</span> %s' % (cv.COLOURS[k], esc(k)) for k in cv.RANK)
    ]


def _plot(report):
    """An inline SVG bar per day: the share of database-target pairs covered that day."""
    days, pairs = report["days"], len(report["databases"]) * len(report["targets"])
    if not days or not pairs:
        return []
    step = (PLOT_WIDTH - 60) / len(days)
    high = PLOT_HEIGHT - 30
    bars = []
    for i, day in enumerate(days):
        covered = sum(
            1 for rows in report["databases"].values() for c in rows[i]["targets"].values() if c["status"] in cv.COVERED
        )
        share = covered / pairs
        colour = cv.COLOURS[cv.OK] if share == 1 else cv.COLOURS[cv.LOCAL_ONLY] if share else cv.COLOURS[cv.MISSING]
        h = max(1.0, share * high)
        bars.append(
            '<rect x="%.2f" y="%.2f" width="%.2f" height="%.2f" fill="%s"><title>%s</title></rect>'
            % (
                50 + i * step,
                10 + high - h,
                max(step - 0.5, 0.5),
                h,
                colour,
                esc("%s: %d%% covered" % (day, share * 100)),
            )
        )
    return [
        "<h2>Share covered per day</h2>",
        '<svg width="%d" height="%d" viewBox="0 0 %d %d" role="img" aria-label="share of database-target pairs '
        'covered per day">' % (PLOT_WIDTH, PLOT_HEIGHT, PLOT_WIDTH, PLOT_HEIGHT),
        '<text x="0" y="18" font-size="11">100%%</text><text x="12" y="%d" font-size="11">0%%</text>' % (10 + high),
        '<line x1="48" y1="%d" x2="%d" y2="%d" stroke="#999"/>' % (10 + high, PLOT_WIDTH - 10, 10 + high),
        "".join(bars),
        '<text x="50" y="%d" font-size="11">%s</text>' % (PLOT_HEIGHT - 5, esc(days[0])),
        '<text x="%d" y="%d" font-size="11" text-anchor="end">%s</text>'
        % (PLOT_WIDTH - 10, PLOT_HEIGHT - 5, esc(days[-1])),
        "</svg>",
    ]


def _gaps(report):
    out = ["<h2>Gaps (%d)</h2><ul>" % len(report["gaps"])]
    out.extend(
        "<li>%s <b>%s</b> (%s): %s</li>" % (esc(g["day"]), esc(g["database"]), esc(g["target"]), esc(g["reason"]))
        for g in report["gaps"]
    )
    out.append("</ul>")
    if report["notes"]:
        out.append("<ul>%s</ul>" % "".join("<li>%s</li>" % esc(n) for n in report["notes"]))
    return out


def _archive(report):
    held = [
        (t, report["archive_tier"][t]["rehydrate"]) for t in report["targets"] if report["archive_tier"][t]["rehydrate"]
    ]
    if not held:
        return ["<h2>Archive tier</h2><p>Nothing of the window is in the Archive tier.</p>"]
    items = "".join("<li><b>%s</b>: %s</li>" % (esc(t), esc(note)) for t, note in held)
    return ["<h2>Archive tier</h2><p>To restore from there, rehydrate first:</p><ul>%s</ul>" % items]


def _history(report):
    rows = [
        (target, database, name, s)
        for target in report["targets"]
        for database, tables in sorted(report["history"].get(target, {}).items())
        for name, s in tables.items()
    ]
    if not rows:
        return []
    out = [
        '<h2>History archive</h2><table class="h"><tr><th>target</th><th>database</th><th>hypertable</th>'
        "<th>ranges</th><th>verified</th><th>from</th><th>to</th><th>holes</th></tr>"
    ]
    for target, database, name, s in rows:
        holes = "<br>".join(esc("%s .. %s: %s" % (h["start"], h["end"], h["reason"])) for h in s["holes"]) or "none"
        out.append(
            "<tr><td>%s</td><td>%s</td><td>%s</td><td>%d</td><td>%d</td><td>%s</td><td>%s</td><td>%s</td></tr>"
            % (
                esc(target),
                esc(database),
                esc(name),
                s["ranges"],
                s["verified"],
                esc(s["first"]),
                esc(s["last"]),
                holes,
            )
        )
    out.append("</table>")
    return out
