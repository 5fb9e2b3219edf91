# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restoring a backup set into a database, TimescaleDB-correctly, and the beside-and-swap
restore that never leaves the operator without a working database.

Private to the collection. No Ansible imports: the scheduled runner (restore drill) uses this.

Parallel restore: TimescaleDB documents ``pg_restore -j`` as unsafe for its catalog
(timescale/timescaledb#698; on the rig plain ``-j 2`` broke 3 of 3 restores). With
``jobs > 1`` the pre-data section and the TimescaleDB catalog's data are restored serially
first; only then the remaining data and the post-data section run with ``-j``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import dataclasses
import hashlib
import os
import re
import tempfile
import threading
import time

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import (
    _dump,
    _errors,
    _lock,
    _pg,
    _privileges,
    _restore_extras,
    _restore_swap,
    _signals,
    _signing,
    _tsdb,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf

sql = _pg.sql  # query composition through _pg (None without psycopg2)

CATALOG_SCHEMAS = ("_timescaledb_catalog", "_timescaledb_config")
# TOC line: "<dump id>; <catalog oid> <object oid> <kind> <schema> <name> <owner>". Schema,
# name and owner are printed unquoted and may hold spaces, so entries are matched by the
# object's oid (recorded in the manifest), never by splitting the names.
TOC_RE = re.compile(r"^(\d+);\s+(\d+)\s+(\d+)\s+(.+)$")
TOC_KINDS = (
    "TABLE DATA",
    "SEQUENCE SET",
    "SEQUENCE OWNED BY",
    "MATERIALIZED VIEW DATA",
    "FK CONSTRAINT",
    "TABLE",
    "SEQUENCE",
)


# Raised by this file and by _restore_extras, which defines it (it is imported by this one).
RestoreError = _restore_extras.RestoreError


def parse_toc(text):
    """Entries of ``pg_restore --list``: dicts with line, dump_id, oid, kind and rest (what
    follows the kind: schema, name and owner, separated by spaces that names may also hold)."""
    entries = []
    for line in text.splitlines():
        m = TOC_RE.match(line)
        if not m:
            continue
        desc = m.group(4)
        kind = next((k for k in TOC_KINDS if desc.startswith(k + " ")), desc.split(" ", 1)[0])
        entries.append(
            {
                "line": line,
                "dump_id": int(m.group(1)),
                "oid": int(m.group(3)),
                "kind": kind,
                "rest": desc[len(kind) + 1 :],
            }
        )
    return entries


def in_schema(entry, schema):
    """True when a TOC entry belongs to ``schema`` (a name without spaces)."""
    return entry["rest"].startswith(schema + " ")


def missing_from_toc(manifest, toc):
    """Tables and hypertable references the manifest lists that the archive lacks, by oid.
    Manifests of older releases carry no oids: their (plain) names are compared instead."""
    table_oids = {e["oid"] for e in toc if e["kind"] == "TABLE"}
    legacy = {" ".join(e["rest"].split(" ")[:2]) for e in toc if e["kind"] == "TABLE"}
    missing = []
    for name, info in sorted(manifest["tables"].items()):
        found = info["oid"] in table_oids if "oid" in info else name.replace(".", " ", 1) in legacy
        if not found:
            missing.append(name)
    fk_oids = {e["oid"] for e in toc if e["kind"] == "FK CONSTRAINT"}
    for ref in manifest.get("hypertable_references") or []:
        if ref["oid"] not in fk_oids:
            missing.append("foreign key %s on %s" % (_pg.qualify_part(ref["name"]), ref["table"]))
    return missing


def list_archive(pg_restore, archive, params):
    out, _err = _pg.run_tool([pg_restore, "--list", archive], params)
    return out.decode("utf-8", "replace")


def scratch_name(database, purpose, backup_id):
    """``<db>__<purpose>_<backup id>`` within PostgreSQL's 63 bytes. A longer database name is
    cut (on a character boundary) and followed by ``~`` and 8 hex digits of its sha256, so two
    long names that share a beginning still get different scratch databases."""
    suffix = "__%s_%s" % (purpose, backup_id)
    name = database + suffix
    if len(name.encode("utf-8")) <= mf.MAX_NAME_BYTES:
        return name
    tag = "~" + hashlib.sha256(database.encode("utf-8")).hexdigest()[:8]
    room = mf.MAX_NAME_BYTES - len((tag + suffix).encode("utf-8"))
    if room < 1:
        raise RestoreError("purpose %r is too long for a scratch database name" % purpose, kind="config")
    head = database.encode("utf-8")[:room].decode("utf-8", "ignore")
    return head + tag + suffix


def check_extension_available(conn, manifest):
    version = (manifest.get("server") or {}).get("timescaledb_version")
    if not version:
        return None
    available = [
        r[0] for r in _pg.rows(conn, "SELECT version FROM pg_available_extension_versions WHERE name = 'timescaledb'")
    ]
    if version not in available:
        raise RestoreError(
            "the backup was taken with TimescaleDB %s, which this server does not have (available: %s). "
            "Install that version of the TimescaleDB package for PostgreSQL %s on this server, "
            "then run the restore again; nothing was changed."
            % (version, ", ".join(available) or "none", manifest["server"]["postgresql_version"].split(".")[0]),
            kind="config",
        )
    return version


class SizeWatcher:
    """Reports a restore's progress as the size of the target database against the size the
    source had when it was dumped (manifest ``database_size_bytes``): the same measure for a
    serial and a parallel pg_restore, which itself reports nothing. Best effort: a watcher
    that cannot connect stays silent and never fails the restore."""

    def __init__(self, params, target, reporter, interval_seconds=2.0):
        self.params = params
        self.target = target
        self.reporter = reporter
        self.interval_seconds = interval_seconds
        self.size = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="restore-progress", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb):
        self._stop.set()
        self._thread.join()
        self.reporter.finish(self.size, error=None if exc is None else (str(exc) or exc_type.__name__))

    def _run(self):
        try:
            conn = _pg.connect(self.params)
        except Exception:  # noqa: BLE001 - progress is optional
            return
        try:
            while True:
                stopped = self._stop.wait(self.interval_seconds)
                # One last measure after the restore ended: the final line carries the full size.
                self.size = int(_pg.scalar(conn, "SELECT pg_database_size(%s)", (self.target,)) or 0)
                if stopped:
                    break
                self.reporter(self.size)
        except Exception:  # noqa: BLE001 - stop watching; the restore reports its own errors
            return
        finally:
            conn.close()


def restore_into(params, archive, target, manifest, jobs=1, tools=None, create=True, analyze=True, progress=None):
    """Creates ``target`` and restores the archive into it. Returns timings and facts.
    On failure the half-restored target is dropped and the error re-raised.
    ``progress(label, total_bytes)``: an optional reporter factory (e.g. _log.Progress)."""
    timings = {}
    t0 = time.monotonic()
    conn = _pg.connect(params)
    try:
        server_major = int(_pg.scalar(conn, "SHOW server_version_num")) // 10000
        pg_restore = (tools or {}).get("pg_restore") or _pg.find_tool("pg_restore", server_major, params.pg_bin_dir)[0]
        version = check_extension_available(conn, manifest)
        if create:
            if _pg.database_exists(conn, target):
                raise RestoreError("database %s already exists; refusing to restore over it" % target, kind="conflict")
            _pg.create_database(conn, target, manifest.get("database_owner"))
    finally:
        conn.close()
    try:
        tconn = _pg.connect(params, target)
        try:
            if version:
                with tconn.cursor() as cur:
                    cur.execute("CREATE EXTENSION IF NOT EXISTS timescaledb VERSION %s", (version,))
                    cur.execute("SELECT timescaledb_pre_restore()")
        finally:
            tconn.close()
        watcher = contextlib.nullcontext()
        if progress is not None:
            reporter = progress("restore %s" % target, int(manifest.get("database_size_bytes") or 0))
            watcher = SizeWatcher(params, target, reporter)
        with watcher:
            _run_pg_restore(params, pg_restore, archive, target, jobs, manifest.get("hypertable_references") or [])
        timings["pg_restore_seconds"] = round(time.monotonic() - t0, 3)
        if analyze:
            # Still in restore mode: TimescaleDB's hooks are off, so ANALYZE of a hypertable is
            # PostgreSQL's (inherited statistics from a sample of its chunks) instead of every
            # chunk once more (the bench database: 0.4 s against 5.4 s for esp_telemetry).
            t1 = time.monotonic()
            _restore_extras.analyze(params, target, jobs)
            timings["analyze_seconds"] = round(time.monotonic() - t1, 3)
        tconn = _pg.connect(params, target)
        try:
            with tconn.cursor() as cur:
                if version:
                    cur.execute("SELECT timescaledb_post_restore()")
            _restore_extras.add_references(tconn, manifest)
            warnings = _restore_extras.apply_database_properties(tconn, target, manifest)
            facts = _tsdb.table_facts(tconn)
        finally:
            tconn.close()
    except BaseException:
        _drop_database(params, target)
        raise
    timings["restore_seconds"] = round(time.monotonic() - t0, 3)
    return {"timings": timings, "facts": facts, "target": target, "warnings": warnings}


def _drop_database(params, name):
    """Drops a database (if it exists) over a connection of its own."""
    conn = _pg.connect(params)
    try:
        _pg.drop_database(conn, name)
    finally:
        conn.close()


def _write_list(entries):
    f = tempfile.NamedTemporaryFile("w", suffix=".list")
    f.write("".join(e["line"] + "\n" for e in entries))
    f.flush()
    return f


def _run_pg_restore(params, pg_restore, archive, target, jobs, references=()):
    """pg_restore of everything but the foreign keys to hypertables (and their comments), which
    add_references adds after timescaledb_post_restore()."""
    skip_oids = {ref["oid"] for ref in references}
    skip_comments = [ref["comment_tag"] for ref in references if ref.get("comment") and ref.get("comment_tag")]
    base = [pg_restore, "--no-password", "--exit-on-error", "--dbname=%s" % target]
    if jobs <= 1 and not skip_oids:
        _pg.run_tool(base + [archive], params, dbname=target)
        return
    toc = parse_toc(list_archive(pg_restore, archive, params))
    keep = [e for e in toc if not _restore_extras.deferred(e, skip_oids, skip_comments)]
    with contextlib.ExitStack() as stack:
        keep_list = stack.enter_context(_write_list(keep))
        if jobs <= 1:
            _pg.run_tool(base + ["-L", keep_list.name, archive], params, dbname=target)
            return
        # Catalog and schema serially, then the bulk in parallel (see the module docstring).
        catalog = [e for e in keep if e["kind"] == "TABLE DATA" and any(in_schema(e, s) for s in CATALOG_SCHEMAS)]
        cat_list = stack.enter_context(_write_list(catalog))
        rest_list = stack.enter_context(_write_list([e for e in keep if e not in catalog]))
        parallel = ["-j", str(jobs)]
        _pg.run_tool(base + ["--section=pre-data", "-L", keep_list.name, archive], params, dbname=target)
        _pg.run_tool(base + ["--section=data", "-L", cat_list.name, archive], params, dbname=target)
        _pg.run_tool(base + ["--section=data"] + parallel + ["-L", rest_list.name, archive], params, dbname=target)
        _pg.run_tool(base + ["--section=post-data"] + parallel + ["-L", keep_list.name, archive], params, dbname=target)


def compare(manifest, facts):
    """Differences between what the manifest says the backup holds and what a database holds.
    Each is a dict: check, table, expected, found."""
    diffs = []
    tables = _keyed_like(manifest, facts["tables"])
    for name, info in sorted(manifest["tables"].items()):
        if name not in tables:
            diffs.append({"check": "table present", "table": name, "expected": "present", "found": "missing"})
        elif tables[name]["rows"] != info["rows"]:
            diffs.append({"check": "row count", "table": name, "expected": info["rows"], "found": tables[name]["rows"]})
    for name in sorted(set(tables) - set(manifest["tables"])):
        diffs.append({"check": "table present", "table": name, "expected": "absent", "found": "present"})
    present = {(r["table"], r["name"]) for r in facts.get("hypertable_references") or []}
    for ref in manifest.get("hypertable_references") or []:
        if (ref["table"], ref["name"]) not in present:
            diffs.append(
                {
                    "check": "foreign key " + ref["name"],
                    "table": ref["table"],
                    "expected": "present",
                    "found": "missing",
                }
            )
    hyper = _keyed_like(manifest, facts["hypertables"])
    for name, info in sorted((manifest.get("hypertables") or {}).items()):
        got = hyper.get(name)
        if got is None:
            diffs.append({"check": "hypertable", "table": name, "expected": "hypertable", "found": "not a hypertable"})
            continue
        for key in ("chunks", "min_time", "max_time"):
            if got.get(key) != info.get(key):
                diffs.append({"check": key, "table": name, "expected": info.get(key), "found": got.get(key)})
    return diffs


def _keyed_like(manifest, found):
    """``found`` (keyed by _pg.qualified) with the keys the manifest uses: manifests written
    before identifiers were quoted (no table oids) joined schema and name with a bare '.'."""
    if any("oid" in info for info in manifest["tables"].values()) or not manifest["tables"]:
        return found
    return {"%s.%s" % _pg.split_qualified(name): info for name, info in found.items()}


def describe_diffs(diffs, limit=10):
    return "; ".join(
        "%s %s: expected %s, found %s" % (d["table"], d["check"], d["expected"], d["found"]) for d in diffs[:limit]
    ) + (" (and %d more)" % (len(diffs) - limit) if len(diffs) > limit else "")


def data_directory_free(conn):
    """Free bytes where the server keeps its data, or None if that is not visible from here."""
    try:
        path = _pg.scalar(conn, "SHOW data_directory")
        return _dump.free_bytes(path)
    except Exception:  # noqa: BLE001 - not superuser, or a remote server: the check is skipped
        return None


def restore_backup(
    params,
    backup_set,
    manifest,
    target,
    strategy="beside",
    safety_backup=True,
    backup_dir=None,
    keep_replaced=True,
    jobs=1,
    roles=True,
    host_label=None,
    audit=None,
    progress=None,
    signing=None,
):
    """Restores a (verified) backup set as database ``target``; ``signing`` (a _signing.Policy)
    checks its manifest once more and signs the safety backup.

    beside:   restore into ``<target>__restore_<id>``, compare with the manifest, then swap;
              the old database becomes ``<target>__pre_restore_<id>`` (dropped if not kept).
    in_place: after the safety backup, drop ``target`` and restore into it (hosts without
              room for two copies).
    Any failure before the swap leaves ``target`` untouched and removes the half-restored copy.
    """
    jobs = effective_jobs(jobs)
    result = {"target": target, "strategy": strategy, "warnings": [], "safety_backup": None, "jobs": jobs}
    backup_id = manifest["backup_id"]
    check_trusted(manifest, signing, backup_set.manifest)
    owner = manifest.get("database_owner")
    with (
        _signals.terminate_raises(),
        _lock.reading_folder(backup_set.folder),  # no prune removes the set while it is restored
        _stopped(target, strategy, result),
        _privileges.advising("restore", params.user, database=target, owner=owner),
    ):
        # A restore of target killed in its swap left the live database aside: put it back first.
        result["warnings"] += _restore_swap.recover_killed(params, target)
        exists = _check_target(params, manifest, target, strategy)
        if roles:
            result["warnings"] += _restore_extras.restore_roles(params, backup_set.globals_sql)
        run = _Restore(params, backup_set, manifest, target, jobs, audit, progress, result)
        if strategy == "in_place":
            safety_seconds = None
            if exists and safety_backup:
                result["safety_backup"] = _safety_backup(params, target, _safety_dir(backup_dir), host_label, signing)
                result["warnings"] += result["safety_backup"].pop("warnings")
                safety_seconds = result["safety_backup"].pop("seconds")
            if exists:
                _drop_database(params, target)
                if audit:
                    audit("drop_database", database=target, reason="in_place restore of %s" % backup_id)
            run.restore_as(target)
            if safety_seconds is not None:
                result.setdefault("timings", {})["safety_backup_seconds"] = safety_seconds
            return result

        staging = scratch_name(target, "restore", backup_id)
        replaced = free_replaced_name(params, target, backup_id)
        _drop_database(params, staging)  # a leftover of an earlier failed attempt
        # The live database is only read until the swap: its safety backup runs beside the restore
        # of the copy, and the swap waits for it (a failed safety backup: no swap, the copy removed).
        wanted = exists and safety_backup
        safety_args = (params, target, _safety_dir(backup_dir) if wanted else None, host_label, signing)
        try:
            with _beside(wanted, _safety_backup, *safety_args) as safety:
                diffs = run.restore_as(staging)
            _take_safety_backup(safety, wanted, target, result)
        except BaseException:
            # Also an interrupt while the swap waited for the safety backup: the copy goes.
            _drop_database(params, staging)
            raise
        run.swap(staging, replaced, exists, keep_replaced, diffs)
    return result


def _take_safety_backup(safety, wanted, target, result):
    """The safety backup that ran beside the restore into ``result``; RestoreError when it failed
    (then there is no swap)."""
    if wanted and (safety.error is not None or safety.value is None):
        kind = _errors.kind_of(safety.error) if safety.error is not None else "service"
        raise RestoreError(
            "the safety backup of %s failed (%s); %s was left untouched and the restored copy removed"
            % (target, safety.error or "it ended without a result", target),
            kind=kind if kind in ("config", "service", "conflict") else "service",
        ) from safety.error
    if safety.value is not None:
        result["safety_backup"] = safety.value
        result["warnings"] += safety.value.pop("warnings")
        result.setdefault("timings", {})["safety_backup_seconds"] = safety.value.pop("seconds")


class _Beside:
    """The outcome of a function run in a thread beside the caller's block (see _beside)."""

    def __init__(self):
        self.value, self.error = None, None


@contextlib.contextmanager
def _beside(wanted, fn, *args):
    """Runs ``fn(*args)`` in a thread while the block runs, when ``wanted``; waits for it when the
    block ends or fails (a safety backup is never left half-written by a failed restore of the
    copy), not on an interrupt. Yields a _Beside whose ``value`` or ``error`` is set after the block."""
    outcome = _Beside()
    if not wanted:
        yield outcome
        return

    def work():
        try:
            outcome.value = fn(*args)
        except BaseException as e:  # noqa: BLE001 - handed to the caller after the block
            outcome.error = e

    # A daemon: a restore ended by SIGTERM does not wait for it (its pg_dump ends with the pipe).
    thread = threading.Thread(target=work, name="safety-backup", daemon=True)
    thread.start()
    try:
        yield outcome
    except Exception:
        thread.join()  # a failed restore of the copy: the safety backup still completes
        raise
    thread.join()  # an interrupt (SIGTERM, Ctrl-C) does not wait: its pg_dump ends with the process


@contextlib.contextmanager
def _stopped(target, strategy, result):
    """A restore stopped by SIGTERM or SIGHUP (see _signals) as a RestoreError saying where it stopped;
    the cleanup (removing a half-restored copy, putting the live database back) has run by then."""
    try:
        yield
    except _signals.Terminated as e:
        if e.__cause__ is not None:  # stopped during the swap: what was put back
            raise RestoreError("%s; %s" % (e, e.__cause__), kind="service") from None
        safety = result.get("safety_backup")
        if strategy == "in_place":
            where = "%s may have been dropped already (in_place): restore it from the safety backup %s" % (
                target,
                safety["backup_id"] if safety else "(none was taken)",
            )
        else:
            where = "%s was left untouched and the half-restored copy removed" % target
        raise RestoreError(
            "the restore was %s before the swap; %s: run it again" % (e, where), kind="service"
        ) from None


def effective_jobs(jobs):
    """pg_restore workers: ``jobs``, or for 0 one per core of this (the database) host, at most 8 -
    beyond that the serial catalog and pre-data part dominates and the server's I/O is shared."""
    if jobs is None or jobs < 0:
        raise RestoreError("jobs must be 0 (one per core) or more, not %r" % (jobs,), kind="config")
    return jobs if jobs >= 1 else max(1, min(8, os.cpu_count() or 1))


def free_replaced_name(params, target, backup_id):
    """Where the replaced database goes: ``<db>__pre_restore_<id>``, or with ``_2``, ``_3``... when
    an earlier restore of the same set kept a copy there - a kept copy is never overwritten, and
    restoring the same set twice must work (the runbook's commands are safe to run twice)."""
    conn = _pg.connect(params)
    try:
        for n in range(1, 100):
            name = scratch_name(target, "pre_restore", backup_id if n == 1 else "%s_%d" % (backup_id, n))
            if not _pg.database_exists(conn, name):
                return name
    finally:
        conn.close()
    raise RestoreError(
        "99 kept copies of %s from restores of %s exist (%s...): drop the ones you no longer need"
        % (target, backup_id, scratch_name(target, "pre_restore", backup_id)),
        kind="conflict",
    )


def _check_target(params, manifest, target, strategy):
    """Whether ``target`` exists; refuses early what cannot work (the TimescaleDB version, no
    room beside it). Returns True when it exists."""
    conn = _pg.connect(params)
    try:
        exists = _pg.database_exists(conn, target)
        check_extension_available(conn, manifest)
        if strategy == "beside":
            check_room(
                conn,
                manifest,
                "restoring beside %s" % target,
                "Free space, or use strategy in_place (after a safety backup) on this host.",
            )
    finally:
        conn.close()
    return exists


def check_room(conn, manifest, what, advice):
    """Refuses (RestoreError, service) a restore of a full copy into the server of ``conn`` when
    its data directory has less free than the set's database size and a tenth: ``what`` and
    ``advice`` say what needs it and what to do. Skipped where the space is not visible."""
    free = data_directory_free(conn)
    need = int(manifest.get("database_size_bytes") or 0)
    if free is not None and need and free < need * 1.1:
        raise RestoreError(
            "%s needs about %s free in the data directory, only %s is free; nothing was changed. %s"
            % (what, _dump.human(need * 1.1), _dump.human(free), advice),
            kind="service",
        )


def _safety_dir(backup_dir):
    if not backup_dir:
        raise RestoreError("a safety backup needs backup_dir (or set safety_backup: false)", kind="config")
    return backup_dir


def _safety_backup(params, target, backup_dir, host_label, signing=None):
    started = time.monotonic()
    safety = _dump.dump(
        params,
        target,
        backup_dir,
        host_label=host_label,
        extra_manifest={"purpose": mf.SAFETY_PURPOSE},
        signing=signing,
    )
    return {
        "backup_id": safety["manifest"]["backup_id"],
        "path": safety["backup_set"].archive,
        "manifest_path": safety["backup_set"].manifest,
        "warnings": safety.get("warnings") or [],
        "seconds": round(time.monotonic() - started, 3),
    }


@dataclasses.dataclass
class _Restore:
    """The steps of one restore_backup after its checks: restoring the set as a database, and
    the swap of a copy restored beside the target. Fills in ``result``."""

    params: _pg.ConnectionParams
    backup_set: mf.BackupSet
    manifest: dict
    target: str
    jobs: int
    audit: object  # None, or audit(action, **fields)
    progress: object  # None, or a reporter factory
    result: dict

    def restore_as(self, database):
        """restore_into ``database``; returns the differences from the manifest."""
        restored = restore_into(
            self.params, self.backup_set.archive, database, self.manifest, jobs=self.jobs, progress=self.progress
        )
        self.result["warnings"] += restored.pop("warnings")
        self.result.update(restored)
        self.result["differences"] = compare(self.manifest, restored["facts"])
        return self.result["differences"]

    def swap(self, staging, replaced, exists, keep_replaced, diffs):
        """The restored copy becomes the target, the target (if it exists) ``replaced``; a copy
        that does not match the manifest is dropped instead and the target left untouched."""
        params, target, audit, result = self.params, self.target, self.audit, self.result
        conn = _pg.connect(params)
        try:
            if diffs:
                _pg.drop_database(conn, staging)
                raise RestoreError(
                    "the restored copy does not match the manifest (%s); %s was left untouched and the copy removed"
                    % (describe_diffs(diffs), target),
                    kind="integrity",
                )
            t0 = time.monotonic()
            if exists and _pg.database_exists(conn, replaced):  # taken since the restore began
                _pg.drop_database(conn, staging)
                raise RestoreError(
                    "%s appeared during the restore; %s was left untouched and the copy removed: run it again"
                    % (replaced, target),
                    kind="conflict",
                )
            _restore_swap.Swap(params, staging, target, replaced, exists).run(conn)
            result["timings"]["swap_seconds"] = round(time.monotonic() - t0, 3)
            if audit:
                audit(
                    "restore_swap",
                    database=target,
                    backup_id=self.manifest["backup_id"],
                    replaced=replaced if exists else None,
                )
            result["replaced_database"] = replaced if exists else None
            if exists and not keep_replaced:
                _pg.drop_database(conn, replaced)
                result["replaced_database"] = None
                if audit:
                    audit("drop_database", database=replaced, reason="keep_replaced is false")
        finally:
            conn.close()


def backup_set_for(backup_dir, database, backup_id, signing=None):
    """The set and its (checked) manifest; raises ManifestError when it is not usable, and
    _signing.SignatureError when ``signing`` refuses it."""
    path = mf.BackupSet(backup_dir, database, backup_id).manifest
    manifest = mf.read_manifest(path)
    check_trusted(manifest, signing, path)
    return mf.BackupSet.from_manifest(backup_dir, manifest), manifest


def check_trusted(manifest, signing, path):
    """The signature status of a local set's manifest, checked against the host it claims (a local
    folder has no host of its own); SignatureError when the policy refuses it."""
    return (signing or _signing.UNCONFIGURED).check(
        manifest,
        manifest.get("host"),
        "backup %s of %s (%s)" % (manifest["backup_id"], manifest["database"], path),
    )
