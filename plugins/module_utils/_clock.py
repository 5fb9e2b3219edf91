# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
""" "Now" for history's cutoffs - which chunk ranges are closed (archivable) and which are due
(droppable) - from the database server, not from this host.

The data's timestamps are the server's; a host clock that runs ahead (a broken NTP, a VM
restored from a snapshot) would make open ranges look closed and retention drop ranges before
their time. So history takes the server's ``clock_timestamp()`` as "now", and refuses to act
at all (ClockError, kind ``clock``) when this host's clock and the server's disagree by more
than ``max_skew`` seconds: a clock that is wrong by that much is a fault to fix first, and
the message names both times.

Private to the collection. No Ansible imports: the scheduled runner uses this.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _errors, _pg
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf

DEFAULT_MAX_SKEW_SECONDS = 300


class ClockError(_errors.OperatorError):
    """This host's clock and the database server's disagree: nothing was archived or dropped."""

    kind = "clock"


def server_now(conn, max_skew=DEFAULT_MAX_SKEW_SECONDS):
    """The server's clock_timestamp() (UTC) over ``conn``, once this host's clock (mf.utcnow) is
    found within ``max_skew`` seconds of it; ClockError otherwise. The host is read before and
    after the query, so the query's own time never counts as skew."""
    if max_skew is None or float(max_skew) < 0:
        raise ClockError("max_clock_skew must be 0 seconds or more, not %r" % (max_skew,), kind="config")
    before = mf.utcnow()
    server = _pg.scalar(conn, "SELECT clock_timestamp()")
    after = mf.utcnow()
    server = server.astimezone(datetime.timezone.utc)
    host = before + (after - before) / 2
    skew = (host - server).total_seconds()
    if abs(skew) > float(max_skew) + (after - before).total_seconds() / 2:
        raise ClockError(
            "this host's clock says %s but the database server's says %s: the host is %s %s. Nothing was archived "
            "or dropped - which chunk ranges are closed or due depends on the time. Fix the clock that is wrong "
            "(timedatectl; chronyc tracking), or raise max_clock_skew (now %s s) if the difference is expected."
            % (_text(host), _text(server), _duration(abs(skew)), "ahead" if skew > 0 else "behind", _n(max_skew))
        )
    return server


def _text(moment):
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _n(value):
    value = float(value)
    return "%d" % value if value == int(value) else "%g" % value


def _duration(seconds):
    if seconds >= 86400:
        return "%.1f days" % (seconds / 86400)
    if seconds >= 3600:
        return "%.1f hours" % (seconds / 3600)
    return "%d s" % round(seconds)
