# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where the history archive keeps things: names of hypertables as PostgreSQL reads them, times
and ranges as labels, and the blob layout of objects and manifests (docs/HISTORY.md).

Private to the collection. No Ansible imports: the scheduled runner uses this too.
Part of the history archive (see _history).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import dataclasses
import datetime
import hashlib
import re
import socket

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _azure, _errors, _pg
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf

DATA_EXT = "parquet"
MANIFEST_EXT = "manifest.json"
HISTORY_DIR = "history"

KIND_DATA = "history_data"
KIND_MANIFEST = "history_manifest"

TIME_RE = r"\d{8}T\d{6}(?:\.\d{6})?Z"
LEAF_RE = re.compile(r"^(%s)_(%s)\.v([1-9]\d{0,8})\.(parquet|manifest\.json)$" % (TIME_RE, TIME_RE))


class HistoryError(_errors.OperatorError):
    """A history problem explained for an operator: what is wrong and what to do."""


# ---------------------------------------------------------------------------------------------
# Names and times


def utc(dt):
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone.utc)
    return dt.astimezone(datetime.timezone.utc)


def reference_time(now=None):
    """The injectable 'now': None means the clock; strings as _azure.parse_timestamp reads them."""
    if now is None:
        return mf.utcnow()
    return _azure.parse_timestamp(now)


def time_label(dt):
    dt = utc(dt)
    text = dt.strftime("%Y%m%dT%H%M%S")
    if dt.microsecond:
        text += ".%06d" % dt.microsecond
    return text + "Z"


def parse_time_label(text):
    fmt = "%Y%m%dT%H%M%S.%fZ" if "." in text else "%Y%m%dT%H%M%SZ"
    return datetime.datetime.strptime(text, fmt).replace(tzinfo=datetime.timezone.utc)


def range_label(start, end):
    return "%s_%s" % (time_label(start), time_label(end))


def split_table_name(name):
    """'esp_telemetry', 'public.esp_telemetry' or 'public."Plant A"' -> (schema, table), read the
    way PostgreSQL reads identifiers (bare parts fold to lower case)."""
    try:
        return _pg.split_qualified(name)
    except ValueError as e:
        raise HistoryError("hypertable %s" % e, kind="config") from None


def qualified(schema, table):
    return _pg.qualified(schema, table)


def table_segment(schema, table):
    """<schema>.<table> as one blob name segment. Parts are escaped (_manifest.escape_name): plain
    names stand for themselves, as in the layout of earlier releases, and no two names share a
    folder. Longer than Azure's 255 characters per segment (hierarchical namespace accounts), it
    is cut and ends in ``~~`` and 16 hex digits of its sha256 (no escape writes ``~~``)."""
    segment = "%s.%s" % (mf.escape_name(schema), mf.escape_name(table))
    if len(segment) <= _azure.MAX_SEGMENT:
        return segment
    head = re.sub(r"~[0-9a-f]?$", "", segment[:200])
    return "%s~~%s" % (head, hashlib.sha256(segment.encode("utf-8")).hexdigest()[:16])


def host_label(label=None):
    """The host's name in the history layout: the label given (tsdb_backup_host_label; the runner's
    TSDB_BACKUP_HOST_LABEL), else the FQDN - as the backup sets default it."""
    return label or socket.getfqdn()


def _segments(database, hypertable):
    """The validated <database> and <schema>.<table> segments."""
    schema, table = split_table_name(hypertable)
    return (
        _azure.validate_segment(mf.database_segment(database), "database"),
        _azure.validate_segment(table_segment(schema, table), "hypertable"),
    )


def history_folder(prefix, host, database, hypertable):
    """<prefix>/history/<host>/<database>/<schema>.<table> (no trailing '/'). The host segment is
    validated as the backup sets' is (_azure.blob_folder)."""
    host = _azure.validate_segment(host, "host")
    return _azure.join_name(_azure.validate_prefix(prefix), HISTORY_DIR, host, *_segments(database, hypertable))


def legacy_folder(prefix, database, hypertable):
    """<prefix>/history/<database>/<schema>.<table>: the layout of earlier releases, without the
    host. Read only, and only by the host the operator names as its owner (Place). Never confused
    with the host layout: there a database segment stands where a table segment stands here, and
    it is followed by a table segment, not by <YYYY>/<MM>."""
    return _azure.join_name(_azure.validate_prefix(prefix), HISTORY_DIR, *_segments(database, hypertable))


@dataclasses.dataclass(frozen=True)
class Place:
    """One host's history of one hypertable: its folder, whose manifests must name this host,
    database and hypertable, and the legacy folder (layout without host) - read as a fallback
    only when the operator named this host its owner (legacy_trusted)."""

    host: str
    database: str
    hypertable: str  # qualified, as manifests record it
    folder: str
    legacy: str
    legacy_trusted: bool = False
    legacy_owner: str = None

    @classmethod
    def of(cls, prefix, host, database, hypertable, legacy_owner=None):
        name = qualified(*split_table_name(hypertable))
        legacy_owner = legacy_owner or None
        if legacy_owner is not None:
            _azure.validate_segment(legacy_owner, "legacy owner (a host label)")
        return cls(
            host,
            database,
            name,
            history_folder(prefix, host, database, name),
            legacy_folder(prefix, database, name),
            legacy_owner == host,
            legacy_owner,
        )

    @property
    def legacy_unclaimed(self):
        """Whether legacy objects would be reported: nobody was named their owner."""
        return self.legacy_owner is None


def month_part(start):
    """<YYYY>/<MM> of a range start, below a history folder."""
    start = utc(start)
    return "%04d/%02d" % (start.year, start.month)


def month_folder(folder, start):
    return "%s/%s" % (folder, month_part(start))


def object_name(folder, start, end, version, ext):
    name = "%s/%s.v%d.%s" % (month_folder(folder, start), range_label(start, end), int(version), ext)
    return _azure.validate_blob_name(name)


def parse_leaf(name):
    """(start, end, version, kind) of a history blob name's last part, or None."""
    m = LEAF_RE.match(name.rsplit("/", 1)[-1])
    if not m:
        return None
    kind = KIND_DATA if m.group(4) == DATA_EXT else KIND_MANIFEST
    return parse_time_label(m.group(1)), parse_time_label(m.group(2)), int(m.group(3)), kind


# ---------------------------------------------------------------------------------------------
# Archive


def _iso(dt):
    return mf.isoformat(dt) if dt is not None else None
