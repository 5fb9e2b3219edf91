# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backing up one database: pre-flight, snapshot-consistent pg_dump, globals, manifest.

Private to the collection. No Ansible imports: the scheduled runner uses this too.

Order of events (why it is safe):
1. A lock per database folder, so two runs never write the same set; stale ``*.partial``
   files of crashed runs are removed under that lock.
2. One connection opens a REPEATABLE READ transaction and exports its snapshot. pg_dump
   reads that snapshot (``--snapshot``); the row counts and time ranges are taken in the
   same snapshot, so the manifest describes exactly what the archive holds even while
   telemetry keeps arriving.
3. The archive streams from pg_dump's stdout through sha256 into ``<id>.dump.partial``
   (one pass); fsync; rename. The globals follow the same path. Followers (``_follow``: the
   nightly run's verification read and upload) read the partial file as it grows.
4. The manifest is written last (atomically): a set without a manifest is not a backup.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import dataclasses
import hashlib
import os
import re
import shutil
import socket
import stat
import tempfile
import threading
import time

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import (
    _age,
    _encryption,
    _errors,
    _follow,
    _lock,
    _pg,
    _privileges,
    _tsdb,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf

COMPRESSIONS = ("zstd", "lz4", "gzip", "none")
# zstd level 1: pg_dump 17's level-1 archive of the bench dataset (docs/PERFORMANCE.md) was both
# smaller (440 MB against 472 MB at level 3, 448 MB for the old gzip -6 pipeline) and a third
# faster (6.8-7.6 s against 10.5 s; the uncompressed floor 7.2 s): at level 3 pg_dump's one
# compressing thread is the bottleneck of the whole backup.
DEFAULT_LEVELS = {"zstd": 1, "lz4": 1, "gzip": 6, "none": 0}
# How large an archive is relative to pg_database_size when nothing better is known
# (measured on the rig: zstd:3 ≈ 0.14 of the database, uncompressed ≈ 0.6).
SIZE_RATIO = {"zstd": 0.35, "lz4": 0.5, "gzip": 0.35, "none": 1.0}
READ_CHUNK = 1024 * 1024
# How long a failed dump waits for its followers to stop (an upload's block in flight).
STOP_WAIT_SECONDS = 10


class BackupError(_errors.OperatorError):
    """A backup cannot be taken; the message says why and what to do."""


FolderReaders, reading_folder = _lock.FolderReaders, _lock.reading_folder


class FolderLock(_lock.FileLock):
    """An exclusive, non-blocking lock on a backup folder (``.lock``): backup and prune of one
    folder never run at the same time."""

    def __init__(self, folder):
        super(FolderLock, self).__init__(os.path.join(folder, ".lock"))

    def __enter__(self):
        if not self.try_acquire():
            raise BackupError(
                "another backup or prune of %s is running (lock %s held); wait for it to finish"
                % (os.path.dirname(self.path), self.path),
                kind="conflict",
            )
        return self


def check_backup_dir(backup_dir, create_db_folder=True, database=None):
    """The backup directory must exist, belong to us and be 0700. Returns the db folder."""
    try:
        st = os.stat(backup_dir)
    except OSError:
        raise BackupError(
            "backup directory %s does not exist: create it with mode 0700 owned by the backup user "
            "(the backup_agent role does this)" % backup_dir,
            kind="config",
        ) from None
    if not stat.S_ISDIR(st.st_mode):
        raise BackupError("backup_dir %s is not a directory" % backup_dir, kind="config")
    mode = stat.S_IMODE(st.st_mode)
    if mode != 0o700:
        raise BackupError(
            "backup directory %s has mode %04o; backups hold all your data, so it must be 0700: chmod 0700 %s"
            % (backup_dir, mode, backup_dir),
            kind="config",
        )
    if st.st_uid != os.geteuid():
        raise BackupError(
            "backup directory %s is owned by uid %d, but backups run as uid %d: chown it to the backup user"
            % (backup_dir, st.st_uid, os.geteuid()),
            kind="config",
        )
    if database is None:
        return None
    folder = os.path.join(backup_dir, mf.database_segment(database))
    if not os.path.isdir(folder):
        if not create_db_folder:
            return folder
        os.mkdir(folder, 0o700)
    os.chmod(folder, 0o700)
    return folder


def dump_workers(setting):
    """pg_dump workers for a dump_jobs setting: 0 is one per core (at most 8: past that the
    server's I/O, not the client, is the limit). More than one means the directory format, the
    only one pg_dump writes in parallel; one is a single custom-format file."""
    setting = int(setting)
    if setting == 0:
        return max(1, min(os.cpu_count() or 1, 8))
    return max(1, setting)


def compression_arg(compression, level=None):
    if compression not in COMPRESSIONS:
        raise BackupError("compression must be one of %s" % ", ".join(COMPRESSIONS), kind="config")
    if compression == "none":
        return "none"
    return "%s:%d" % (compression, DEFAULT_LEVELS[compression] if level is None else level)


def estimate_size(backup_dir, database, db_size, compression):
    """Bytes the archive is expected to need: 1.25 × the last archive of this database, or a
    ratio of pg_database_size when there is none yet."""
    previous = [e for e in mf.list_local(backup_dir, database) if e["manifest"]]
    if previous:
        return int(previous[-1]["manifest"]["archive"]["size_bytes"] * 1.25) + 16 * 1024 * 1024
    return int(db_size * SIZE_RATIO[compression]) + 16 * 1024 * 1024


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def clean_partials(folder):
    """Removes what crashed or killed runs left behind (only under the folder lock)."""
    removed = []
    for name in sorted(os.listdir(folder)):
        if name.endswith(mf.PARTIAL_SUFFIX):
            path = os.path.join(folder, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
            removed.append(path)
    return removed


# pg_dump writes lz4 and zstd archives from PostgreSQL 16 on; gzip (and none) with every version.
NEWER_COMPRESSIONS = ("zstd", "lz4")
NEWER_COMPRESSIONS_SINCE = 16


def effective_compression(requested, pg_dump_version, level=None):
    """(compression, level, warning): what this pg_dump can write. zstd and lz4 need pg_dump 16
    or newer (PostgreSQL 14 and 15 are supported with their own tools): an older one writes gzip
    at its default level instead, and the warning names the setting that chooses it."""
    major = re.match(r"\d+", pg_dump_version or "")
    if requested not in NEWER_COMPRESSIONS or major is None or int(major.group()) >= NEWER_COMPRESSIONS_SINCE:
        return requested, level, None
    return (
        "gzip",
        None,
        "pg_dump %s cannot write %s archives (pg_dump %d or newer can): this backup is compressed with gzip "
        "instead. Set tsdb_backup_compression: gzip in the inventory to choose it, or install the client tools "
        "of PostgreSQL %d or newer on this host"
        % (pg_dump_version, requested, NEWER_COMPRESSIONS_SINCE, NEWER_COMPRESSIONS_SINCE),
    )


def preflight(params, database, backup_dir, compression="zstd", directory_format=False):
    """Everything that can be checked before writing: directory, connection, authentication,
    database, versions, tools and space. Returns facts for the dump and for check mode (among
    them the compression this pg_dump writes, and warnings)."""
    with _privileges.advising("dump", params.user, database=database):
        return _preflight(params, database, backup_dir, compression)


def _preflight(params, database, backup_dir, compression):
    check_backup_dir(backup_dir)
    conn = _pg.connect(params)
    try:
        if not _pg.database_exists(conn, database):
            raise BackupError(
                "database %r does not exist on %s:%s; existing databases: %s"
                % (
                    database,
                    params.host,
                    params.port,
                    ", ".join(
                        r[0]
                        for r in _pg.rows(conn, "SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1")
                    ),
                ),
                kind="not_found",
            )
    finally:
        conn.close()
    conn = _pg.connect(params, database)
    try:
        facts = _pg.server_facts(conn)
    finally:
        conn.close()
    pg_dump, pg_dump_version = _pg.find_tool("pg_dump", facts["server_major"], params.pg_bin_dir)
    pg_dumpall, _v = _pg.find_tool("pg_dumpall", facts["server_major"], params.pg_bin_dir)
    compression, _level, warning = effective_compression(compression, pg_dump_version)
    estimate = estimate_size(backup_dir, database, facts["database_size_bytes"], compression)
    free = free_bytes(backup_dir)
    if free < estimate:
        raise BackupError(
            "not enough space in %s: %s free, the backup of %s needs about %s (database %s). "
            "Free space, prune old backups, or move backup_dir."
            % (backup_dir, human(free), database, human(estimate), human(facts["database_size_bytes"])),
            kind="service",
        )
    facts.update(
        pg_dump=pg_dump,
        pg_dump_version=pg_dump_version,
        pg_dumpall=pg_dumpall,
        compression=compression,
        warnings=[warning] if warning else [],
        estimate_bytes=estimate,
        free_bytes=free,
    )
    return facts


def human(n):
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return ("%d %s" if unit == "B" else "%.1f %s") % (n, unit)
        n /= 1024.0
    return "%.1f TiB" % n  # pragma: no cover


def _stream_to_file(proc, partial, progress=None, growing=None, encryptor=None):
    """Copies pg_dump's stdout into partial, hashing as it goes; tells ``growing`` (a
    _follow.GrowingFile) each flushed size and feeds ``encryptor`` (an _age.Encryptor) each
    block. Returns (sha256, size)."""
    fd = os.open(partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "wb") as f:
        writer = mf.HashingWriter(f)
        while True:
            block = proc.stdout.read(READ_CHUNK)
            if not block:
                break
            writer.write(block)
            if encryptor is not None:
                encryptor.feed(block)
            if growing is not None:
                f.flush()
                growing.grew(writer.size)
            if progress:
                progress(writer.size)
        f.flush()
        os.fsync(f.fileno())
    return writer.sha256.hexdigest(), writer.size


@dataclasses.dataclass
class _DumpJob:
    """What the steps of one dump share: the server, the set being written and how pg_dump
    writes it."""

    params: _pg.ConnectionParams
    facts: dict
    database: str
    bset: mf.BackupSet
    compression: str
    level: object  # None: the compression's default level
    jobs: int
    progress: object  # None, or called with the bytes written
    growing: object = None  # a _follow.GrowingFile when followers read the archive as it is written
    encryption: list = dataclasses.field(default_factory=list)  # age recipients of the stored form
    encryptor: object = None  # the _age.Encryptor fed the archive as it is written

    @property
    def directory_format(self):
        return self.bset.directory_format


def dump(
    params,
    database,
    backup_dir,
    compression="zstd",
    compression_level=None,
    directory_format=False,
    jobs=1,
    host_label=None,
    backup_id=None,
    progress=None,
    extra_manifest=None,
    facts=None,
    signing=None,
    followers=None,
    encryption=None,
):
    """Takes one backup set. Returns the sealed manifest, the paths and warnings (a compression
    this pg_dump cannot write, replaced by gzip). ``facts`` is the result of ``preflight`` when
    the caller already ran it; ``signing`` (a _signing.Policy with a key) signs the manifest.
    ``followers``: called with (backup set, _follow.GrowingFile, facts) for a one-file archive,
    returns the started _follow.Follower list that reads it as it is written (the result's
    ``followers``; the caller joins them). A failed dump cancels and joins them.
    ``encryption``: the age recipients the set's stored form is encrypted to (_encryption); the
    followers then get ``stored``, the GrowingFile of the encrypted archive, as a keyword."""
    _encryption.check_directory_format(encryption, directory_format)
    started = mf.utcnow()
    t0 = time.monotonic()
    with _privileges.advising("dump", params.user, database=database):
        facts = facts or preflight(params, database, backup_dir, compression, directory_format)
        if encryption and facts["free_bytes"] < 2 * facts["estimate_bytes"]:
            raise BackupError(
                "not enough space in %s: %s free, the encrypted backup of %s needs about %s (the archive and its "
                "encrypted form are both here until the upload). Free space, prune old backups, or move backup_dir."
                % (backup_dir, human(facts["free_bytes"]), database, human(2 * facts["estimate_bytes"])),
                kind="service",
            )
        compression, compression_level, warning = effective_compression(
            compression, facts["pg_dump_version"], compression_level
        )
        folder = check_backup_dir(backup_dir, database=database)
        chosen = backup_id
        backup_id = backup_id or mf.new_backup_id(started)
        bset = mf.BackupSet(backup_dir, database, backup_id, directory_format=directory_format)
        with FolderLock(folder):
            stale = clean_partials(folder)
            if chosen is None:
                started, bset = _next_free_id(bset, started)
            if os.path.exists(bset.manifest) or os.path.exists(bset.archive):
                raise BackupError(
                    "a backup %s of %s already exists in %s" % (bset.backup_id, database, folder), kind="conflict"
                )
            job = _DumpJob(params, facts, database, bset, compression, compression_level, jobs, progress)
            job.encryption = list(encryption or ())
            started_followers = _start_followers(job, followers)
            try:
                result, globals_sql = _write_files(job, folder)
                manifest = _new_manifest(job, host_label, started, round(time.monotonic() - t0, 3), result, globals_sql)
                if job.encryption:
                    manifest["format_version"] = mf.MANIFEST_VERSION_ENCRYPTED
                    manifest["encryption"] = _encryption.encrypt_set(
                        bset, manifest["archive"], manifest["globals"], job.encryption, job.encryptor
                    )
                if extra_manifest:
                    manifest.update(extra_manifest)
                mf.write_manifest(bset.manifest, manifest, signing)
            except BaseException:
                _stop_followers(job, started_followers)
                _remove_set_files(bset)
                raise
    return {
        "manifest": mf.read_manifest(bset.manifest),
        "backup_set": bset,
        "stale_partials_removed": stale,
        "warnings": [warning] if warning else [],
        "followers": started_followers,
    }


def _start_followers(job, followers):
    """The followers of a one-file archive (none for a directory: pg_dump writes its files),
    the encryption's first: the others may follow its output."""
    if (followers is None and not job.encryption) or job.directory_format:
        return []
    job.growing = _follow.GrowingFile(job.bset.archive + mf.PARTIAL_SUFFIX)
    try:
        kwargs = {}
        if job.encryption:
            dest = _encryption.stored_path(job.bset.archive) + mf.PARTIAL_SUFFIX
            job.encryptor = _age.Encryptor(job.encryption, dest)
            kwargs["stored"] = job.encryptor.stored
        return list(followers(job.bset, job.growing, job.facts, **kwargs)) if followers else []
    except BaseException:
        job.growing.cancel()
        if job.encryptor is not None:
            job.encryptor.cancel()
        raise


def _stop_followers(job, started):
    if job.growing is not None:
        job.growing.cancel()
    if job.encryptor is not None:
        job.encryptor.cancel()
    for follower in started:
        follower.cancel()
        follower.join(STOP_WAIT_SECONDS)  # daemon threads: a stopped run must not wait on Azure


def _next_free_id(bset, started):
    """Ids have one-second resolution: a backup started in the same second as the previous
    one waits for the next second rather than fail. Returns (start time, set)."""
    while os.path.exists(bset.manifest) or os.path.exists(bset.archive):
        time.sleep(0.1)
        started = mf.utcnow()
        bset = mf.BackupSet(
            bset.backup_dir, bset.database, mf.new_backup_id(started), directory_format=bset.directory_format
        )
    return started, bset


def _write_files(job, folder):
    """The archive (through ``*.partial``, renamed when complete) and the globals; on any
    failure neither is left behind. Returns (what _dump_in_snapshot found, the globals)."""
    bset = job.bset
    archive_partial = bset.archive + mf.PARTIAL_SUFFIX
    try:
        result = _dump_in_snapshot(job, archive_partial)
        globals_sql, _err = _pg.run_tool(
            [
                job.facts["pg_dumpall"],
                "--globals-only",
                "--no-role-passwords",
                "--no-password",
                "-l",
                job.params.maintenance_db,
            ],
            job.params,
        )
        mf.atomic_write_bytes(bset.globals_sql, globals_sql)
        if job.growing is not None:
            job.growing.rename(bset.archive)  # followers that have not opened it yet find it
        else:
            os.rename(archive_partial, bset.archive)
        mf.fsync_dir(folder)
    except BaseException:
        _remove_set_files(bset)
        raise
    return result, globals_sql


def _remove_set_files(bset):
    """What a failed dump leaves of its set (never the manifest: there is none yet)."""
    for p in (
        bset.archive,
        bset.globals_sql,
        _encryption.stored_path(bset.archive),
        bset.globals_sql + mf.STORED_SUFFIX,
    ):
        for path in (p, p + mf.PARTIAL_SUFFIX):
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.exists(path):
                os.unlink(path)


def _new_manifest(job, host_label, started, duration, result, globals_sql):
    facts, bset = job.facts, job.bset
    manifest = {
        "format": mf.MANIFEST_FORMAT,
        "format_version": mf.MANIFEST_VERSION,
        "backup_id": bset.backup_id,
        "host": host_label or socket.getfqdn(),
        "database": job.database,
        "created_by": "insa.timescaledb_backup",
        "started_at": mf.isoformat(started),
        "finished_at": mf.isoformat(mf.utcnow()),
        "duration_seconds": duration,
        "server": {
            "postgresql_version": facts["postgresql_version"],
            "server_version_num": facts["server_version_num"],
            "timescaledb_version": facts["timescaledb_version"],
        },
        "database_owner": facts.get("database_owner"),
        "database_properties": facts.get("database_properties"),
        "extensions": facts["extensions"],
        "database_size_bytes": facts["database_size_bytes"],
        "dump": {
            "tool": "pg_dump",
            "tool_version": facts["pg_dump_version"],
            "format": "directory" if job.directory_format else "custom",
            "compression": compression_arg(job.compression, job.level),
            "jobs": job.jobs if job.directory_format else 1,
            "snapshot_consistent": True,
        },
        "archive": {
            "file": os.path.basename(bset.archive),
            "size_bytes": result["size"],
            "sha256": result["sha256"],
        },
        "globals": {
            "file": os.path.basename(bset.globals_sql),
            "size_bytes": len(globals_sql),
            "sha256": hashlib.sha256(globals_sql).hexdigest(),
        },
        "tables": result["facts"]["tables"],
        "hypertables": result["facts"]["hypertables"],
        # Restored after timescaledb_post_restore(), not by pg_restore (see _restore).
        "hypertable_references": result["facts"]["hypertable_references"],
    }
    if job.directory_format:
        manifest["archive"]["files"] = result["files"]
    return manifest


def _dump_in_snapshot(job, partial):
    snap_conn = _pg.connect(job.params, job.database, autocommit=False)
    try:
        with snap_conn.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            cur.execute("SELECT pg_export_snapshot()")
            snapshot = cur.fetchone()[0]
        err = tempfile.TemporaryFile()
        proc = _pg.spawn_tool(
            _pg_dump_argv(job, snapshot, partial), job.params, job.database, err, stdout_pipe=not job.directory_format
        )
        # The counts run in the exported snapshot while pg_dump streams; both read the same data.
        counts = _SnapshotCounts(snap_conn)
        try:
            digest, size = _pg_dump_output(job, proc, partial)
        finally:
            counts.join()
        err.seek(0)
        errtext = err.read().decode("utf-8", "replace")
        err.close()
        if proc.returncode != 0:
            failed = BackupError(
                "pg_dump of %s failed (exit %d): %s" % (job.database, proc.returncode, _pg.stderr_tail(errtext)),
                kind="service",
            )
            failed.stderr = errtext  # all of it: a refused privilege is explained from it (_privileges)
            raise failed
        if _errors.is_insufficient_privilege(counts.error):
            raise counts.error
        if counts.error is not None:
            raise BackupError("counting rows in the dump's snapshot failed: %s" % counts.error, kind="service")
        if job.growing is not None:
            job.growing.close(True)  # the stream is a complete archive: followers read to its end
        files = None
        if job.directory_format:
            for name in os.listdir(partial):
                mf.fsync_path(os.path.join(partial, name))
            digest, size, files = mf.sha256_directory(partial)
        return {"sha256": digest, "size": size, "files": files, "facts": counts.facts, "snapshot": snapshot}
    finally:
        snap_conn.rollback()
        snap_conn.close()


def _pg_dump_argv(job, snapshot, partial):
    argv = [
        job.facts["pg_dump"],
        "--format=directory" if job.directory_format else "--format=custom",
        "--compress=%s" % compression_arg(job.compression, job.level),
        "--snapshot=%s" % snapshot,
        "--no-password",
        "--dbname=%s" % job.database,
    ]
    if job.directory_format:
        argv += ["--jobs=%d" % max(1, int(job.jobs)), "--file=%s" % partial]
    return argv


def _pg_dump_output(job, proc, partial):
    """Waits for pg_dump; a custom-format archive streams from its stdout into partial on the
    way. Returns (sha256, size) of the stream, (None, None) for a directory. Kills it on error."""
    try:
        if job.directory_format:
            proc.wait()
            return None, None
        digest, size = _stream_to_file(proc, partial, job.progress, job.growing, job.encryptor)
        proc.wait()
        return digest, size
    except BaseException:
        proc.kill()
        proc.wait()
        raise


class _SnapshotCounts:
    """_tsdb.table_facts of the snapshot's connection, taken in a thread from construction on;
    after join(), ``facts`` or ``error`` (reported with the dump's own status)."""

    def __init__(self, conn):
        self.conn = conn
        self.facts = None
        self.error = None
        self._thread = threading.Thread(target=self._count, name="snapshot-counts")
        self._thread.start()

    def _count(self):
        try:
            self.facts = _tsdb.table_facts(self.conn)
        except Exception as e:  # noqa: BLE001 - reported below, with the dump's own status
            self.error = e

    def join(self):
        self._thread.join()
