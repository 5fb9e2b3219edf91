# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The swap at the end of a beside restore: the restored copy takes the live database's name,
the live database moves aside. The only moment a restore touches the live database.

Every way out is accounted for. Whatever fails - ending the sessions, a rename, the
connection, Ctrl-C, SIGTERM (see _signals) - the live database gets its name and its
``datallowconn`` of before back, over a new connection, and the error says what happened and
in which state each database is. Only when the restored copy already carries the name (the
last rename went through) is the swap finished instead of undone.

A run killed outright (kill -9, the OOM killer, a reboot) can do none of that, so before its
first change the swap writes its journal into the cluster: a comment on the restored copy
(pg_shdescription, by oid, so it follows the renames). The next restore of the database reads
it (``recover_killed``) and puts things back, or finishes, the same way.

Private to the collection. No Ansible imports: the scheduled runner (restore drill) uses this.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import json

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _pg, _restore_extras

JOURNAL_MARK = "insa.timescaledb_backup swap in progress: "


@contextlib.contextmanager
def _connection(params):
    conn = _pg.connect(params)
    try:
        yield conn
    finally:
        conn.close()


class Swap:
    """One swap. ``step`` names what is being done (for the error), the flags what is done."""

    def __init__(self, params, staging, target, replaced, exists):
        self.params, self.staging, self.target, self.replaced, self.exists = params, staging, target, replaced, exists
        self.original = None  # the live database's datallowconn before the swap
        self.comment = None  # the restored copy's own COMMENT ON DATABASE, which the journal holds meanwhile
        self.step = None
        self.moved = False  # target renamed to replaced
        self.swapped = False  # staging renamed to target
        # The databases by oid: after a failure the catalog, not a flag, says where each is (an
        # interrupt can come after a rename took effect and before a flag was set).
        self.oids = None

    def run(self, conn):
        """Swaps; on any failure puts things back (or finishes) and raises RestoreError."""
        try:
            self._steps(conn)
        except BaseException as e:  # noqa: BLE001 - every failure, also KeyboardInterrupt and Terminated
            error = _restore_extras.RestoreError(self._recover(e), kind=_kind_of(e))
            if isinstance(e, Exception):
                raise error from None
            raise e from error  # an interrupt stays an interrupt; its cause says what was recovered

    def _steps(self, conn):
        self.step = "reading the databases' oids"
        self.oids = (_oid(conn, self.target) if self.exists else None, _oid(conn, self.staging))
        if self.exists:
            self.step = "reading the connection setting of %s" % self.target
            self.original = _pg.allows_connections(conn, self.target)
        self.step = "writing the swap's journal (a comment on %s)" % self.staging
        self._write_journal(conn)
        self.step = "closing the restored copy %s" % self.staging
        _pg.close_database(conn, self.staging)
        if self.exists:
            self.step = "ending the sessions on %s" % self.target
            _pg.close_database(conn, self.target)
            self.step = "renaming %s to %s" % (self.target, self.replaced)
            _pg.rename_database(conn, self.target, self.replaced)
            self.moved = True
        self.step = "renaming %s to %s" % (self.staging, self.target)
        _pg.rename_database(conn, self.staging, self.target)
        self.swapped = True
        self._finish(conn)

    def _finish(self, conn):
        self.step = "allowing connections to %s" % self.target
        _pg.open_database(conn, self.target)
        if self.exists:
            self.step = "restoring the connection setting of %s" % self.replaced
            _pg.set_allow_connections(conn, self.replaced, self.original is not False)
        self.step = "putting back the comment of %s in place of the swap's journal" % self.target
        _pg.comment_database(conn, self.target, self.comment)

    def _write_journal(self, conn):
        """What a later restore needs to put things back should this run be killed: the names, the
        oids, the live database's datallowconn and this session (alive = the swap is running)."""
        pid, started, self.comment = _pg.rows(
            conn,
            "SELECT pid, backend_start::text, shobj_description(%s, 'pg_database') FROM pg_stat_activity "
            "WHERE pid = pg_backend_pid()",
            (self.oids[1],),
        )[0]
        record = {
            "comment": self.comment,  # the restored database's own comment, given back at the end
            "target": self.target,
            "staging": self.staging,
            "replaced": self.replaced,
            "exists": bool(self.exists),
            "original": self.original,
            "live_oid": self.oids[0],
            "copy_oid": self.oids[1],
            "backend_pid": pid,
            "backend_start": started,
        }
        _pg.comment_database(conn, self.staging, JOURNAL_MARK + json.dumps(record, sort_keys=True))

    @classmethod
    def from_journal(cls, params, record):
        swap = cls(params, record["staging"], record["target"], record["replaced"], record["exists"])
        # A put-back from a journal only ever opens: a journal can be written by the copy's owner.
        swap.original = None
        swap.comment = record.get("comment")
        swap.oids = (record["live_oid"], record["copy_oid"])
        swap.step = "its session ended (killed, or the host went down) in the middle of the swap"
        return swap

    def recover(self, conn):
        """Puts a killed swap back (or finishes it); returns what happened. Raises RestoreError
        with the SQL to run by hand when that fails."""
        try:
            self._observe(conn)
            return self._finish_after(conn) if self.swapped else self._undo(conn)
        except Exception as e:  # noqa: BLE001 - said in the message, with what to run by hand
            raise _restore_extras.RestoreError(
                "a restore of %s was killed during its swap and putting things back failed (%s). %s"
                % (self.target, _describe(e), self._by_hand()),
                kind="service",
            ) from None

    def _recover(self, error):
        """Puts the live database back (or finishes the swap) over a new connection; returns the
        message saying what happened and where each database is."""
        what = "the swap of the restored copy into %s failed while %s (%s)" % (
            self.target,
            self.step,
            _describe(error),
        )
        try:
            with _connection(self.params) as conn:
                self._observe(conn)
                return "%s; %s" % (what, self._finish_after(conn) if self.swapped else self._undo(conn))
        except Exception as e:  # noqa: BLE001 - said in the message, with what to run by hand
            return "%s; putting things back failed too (%s). %s" % (what, _describe(e), self._by_hand())

    def _observe(self, conn):
        """Where the live database and the copy are now, from the catalog (by oid)."""
        if self.oids is None:
            return  # nothing was changed yet
        live, copy = self.oids
        if live is not None:
            self.moved = _name_of(conn, live) == self.replaced
        self.swapped = copy is not None and _name_of(conn, copy) == self.target

    def _finish_after(self, conn):
        self._finish(conn)
        kept = " and the database it replaced is %s" % self.replaced if self.exists else ""
        return "the restore itself went through: %s is the restored copy, open for connections%s" % (self.target, kept)

    def _undo(self, conn):
        if self.moved:
            try:
                _pg.rename_database(conn, self.replaced, self.target)
            except Exception:
                # Not back under its name: at least open for connections again, under the other one.
                with contextlib.suppress(Exception):
                    _pg.set_allow_connections(conn, self.replaced, self.original is not False)
                raise
            self.moved = False
        if self.exists:
            _pg.set_allow_connections(conn, self.target, self.original is not False)
        _pg.drop_database(conn, self.staging)
        if not self.exists:
            return "%s was not created and the restored copy %s was removed: run the restore again" % (
                self.target,
                self.staging,
            )
        return (
            "%s is back as it was (its name, its data, connections %s) and the restored copy %s was removed: "
            "run the restore again (end the sessions on %s first if they were in the way)"
            % (
                self.target,
                "allowed" if self.original is not False else "refused, as before",
                self.staging,
                self.target,
            )
        )

    def _by_hand(self):
        """What an operator runs when the live database could not be put back automatically."""
        allow = "true" if self.original is not False else "false"
        if self.moved:
            return (
                "The live database is now named %s and the restored copy %s: as a superuser run "
                "ALTER DATABASE %s RENAME TO %s; ALTER DATABASE %s WITH ALLOW_CONNECTIONS %s; then DROP DATABASE %s;"
                % (
                    _q(self.replaced),
                    _q(self.staging),
                    _q(self.replaced),
                    _q(self.target),
                    _q(self.target),
                    allow,
                    _q(self.staging),
                )
            )
        if self.exists:
            return (
                "The live database keeps its name %s but may refuse connections: as a superuser run "
                "ALTER DATABASE %s WITH ALLOW_CONNECTIONS %s; and DROP DATABASE %s; (the restored copy)"
                % (_q(self.target), _q(self.target), allow, _q(self.staging))
            )
        return "The restored copy is %s: DROP DATABASE %s; removes it." % (_q(self.staging), _q(self.staging))


def recover_killed(params, target):
    """Finds the journal of a swap into ``target`` whose run was killed (see the module's doc) and
    puts the live database back, or finishes the swap when the copy already has the name.
    Returns what was found and done (one message per journal); raises RestoreError (conflict)
    while that swap's session is still running."""
    messages = []
    with _connection(params) as conn:
        for oid, name, comment in _pg.database_comments(conn, JOURNAL_MARK):
            record = read_journal(comment, oid, target)
            if record is None or not _where_a_swap_leaves(conn, record, name):
                continue
            _refuse_while_running(conn, record, target, name)
            done = Swap.from_journal(params, record).recover(conn)
            messages.append("an earlier restore of %s was killed during its swap; %s" % (target, done))
    return messages


def _where_a_swap_leaves(conn, record, name):
    """Whether the databases are where this swap can have left them: the commented copy under its
    own name or (renamed) the target's, the live database under the target's or the aside name.
    A journal that a role with CREATEDB wrote on a database of its own fails this."""
    if name not in (record["staging"], record["target"]):
        return False
    live = _name_of(conn, record["live_oid"]) if record["live_oid"] is not None else None
    return record["live_oid"] is None or live in (record["target"], record["replaced"])


def _refuse_while_running(conn, record, target, name):
    """RestoreError (conflict) while the journal's server session still runs, or when this login
    cannot see it (another role's session without pg_read_all_stats)."""
    found = _pg.rows(conn, "SELECT backend_start::text FROM pg_stat_activity WHERE pid = %s", (record["backend_pid"],))
    if not found or (found[0][0] is not None and found[0][0] != record["backend_start"]):
        return  # that session is gone (its pid is free, or another session's now)
    raise _restore_extras.RestoreError(
        "a restore of %s may be swapping right now (server process %d, the journal on %s%s): wait for it to end, "
        "or, if its client is gone, end that session (SELECT pg_terminate_backend(%d);) and run the restore again"
        % (
            target,
            record["backend_pid"],
            name,
            "" if found[0][0] is not None else "; this login cannot see that session's start",
            record["backend_pid"],
        ),
        kind="conflict",
    )


def read_journal(comment, oid, target):
    """The journal in a database's comment when it is one of ``target``'s and holds together: on the
    restored copy itself, with the names a swap into ``target`` uses. None otherwise."""
    try:
        record = json.loads(comment[len(JOURNAL_MARK) :])
    except ValueError:
        return None
    if not isinstance(record, dict) or record.get("target") != target or record.get("copy_oid") != oid:
        return None
    # A long target's scratch names are shortened (scratch_name): the marks, not the whole name.
    staging, replaced = str(record.get("staging", "")), str(record.get("replaced", ""))
    names_fit = "__restore_" in staging and "__pre_restore_" in replaced and target not in (staging, replaced)
    typed = (
        isinstance(record.get("exists"), bool)
        and record.get("original") in (True, False, None)
        and isinstance(record.get("backend_pid"), int)
        and isinstance(record.get("backend_start"), str)
        and (record.get("comment") is None or isinstance(record.get("comment"), str))
        and (record.get("live_oid") is None or isinstance(record.get("live_oid"), int))
    )
    return record if names_fit and typed else None


def _oid(conn, name):
    return _pg.scalar(conn, "SELECT oid FROM pg_database WHERE datname = %s", (name,))


def _name_of(conn, oid):
    return _pg.scalar(conn, "SELECT datname FROM pg_database WHERE oid = %s", (oid,))


def _q(name):
    return _pg.qualify_part(name)


def _describe(error):
    text = str(error).strip().splitlines()
    return "%s: %s" % (error.__class__.__name__, text[0]) if text else error.__class__.__name__


def _kind_of(error):
    kind = getattr(error, "kind", None)
    return kind if kind in ("conflict", "config", "service") else "service"
