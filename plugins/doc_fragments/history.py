# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment:
    # Whose history a history module works on: the host part of the layout, and the owner of the
    # layout of earlier releases (docs/HISTORY.md, "Hosts").
    DOCUMENTATION = r"""
options:
  host_label:
    description:
      - The host whose history this is - the C(<host>) of the blob names
        C(<prefix>/history/<host>/<database>/<schema>.<hypertable>/...). The same label as the backup sets'
        (O(insa.timescaledb_backup.dump#module:host_label); the playbooks and the timers pass C(tsdb_backup_host_label)).
      - Every manifest read must record this host, the database and the hypertable of its folder; one that records
        another (copied or planted into this folder) is refused as an integrity error, never trusted.
      - Defaults to the host's FQDN.
    type: str
  legacy_owner:
    description:
      - The host label that owns the history written by earlier releases in the layout without host,
        C(<prefix>/history/<database>/<schema>.<hypertable>/...). When it equals O(host_label), those objects are read
        as this host's (versions in the host's folder come first) until they are migrated; on any other host they are
        ignored.
      - Unset, such objects are reported in a warning (or in the reason of a held-back slice) and ignored - never
        trusted by retention, never restored - since any host of the fleet may have written them.
      - The migration (C(tsdb-backup history-migrate) on the owner) copies them server-side into the owner's folder;
        see docs/HISTORY.md.
    type: str
"""
