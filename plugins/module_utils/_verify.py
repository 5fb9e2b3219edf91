# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Verifying a backup set at three levels, each including the ones before it.

checksum  the manifest is intact and belongs to this archive; archive size and sha256 match
          (and a legacy ``.md5`` beside the archive, as the old shell scripts wrote, matches).
archive   ``pg_restore --list`` reads the table of contents and every table of the manifest
          is in it; then ``pg_restore`` reads the whole archive (decompressing every block) -
          in the nightly run while pg_dump writes it (ArchiveRead), counted only for the bytes
          whose sha256 the manifest records.
restore   a real restore into a scratch database, counts and hypertable ranges compared with
          the manifest; the scratch database is dropped afterwards, also on failure.

Private to the collection. No Ansible imports: the scheduled runner uses this too.
The result of the last verification is kept in ``<id>.verify.json`` beside the set: prune
and upload catch-up trust a set only once it has been verified.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import os
import tempfile
import time

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import (
    _encryption,
    _follow,
    _lock,
    _pg,
    _privileges,
    _restore,
    _signing,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf

LEVELS = ("checksum", "archive", "restore")
VERIFY_SUFFIX = ".verify.json"
READ_BLOCK = 1024 * 1024


class ArchiveRead(_follow.Follower):
    """``pg_restore --file=/dev/null`` over a one-file archive as pg_dump writes it: the archive
    level's full read, done during the dump. After join(): ``result`` True, or ``error`` (a
    ToolError with pg_restore's reason, or why the reading stopped)."""

    name = "verify-read"

    def __init__(self, growing, pg_restore, params):
        super().__init__(growing, READ_BLOCK)
        self.pg_restore, self.params = pg_restore, params

    def work(self, blocks):
        with tempfile.TemporaryFile() as err:
            argv = [self.pg_restore, "--file=/dev/null"]
            proc = _pg.spawn_tool(argv, self.params, None, err, stdout_pipe=False, stdin_pipe=True)
            try:
                for block in blocks:
                    proc.stdin.write(block)
                proc.stdin.close()
            except BrokenPipeError:
                pass  # pg_restore stopped reading: its status says why
            except BaseException:
                proc.kill()
                raise
            finally:
                proc.wait()
            if proc.returncode != 0:
                err.seek(0)
                raise _pg.tool_error(argv, proc.returncode, err.read().decode("utf-8", "replace"))
        return True


def record_path(backup_set):
    return os.path.join(backup_set.folder, backup_set.backup_id + VERIFY_SUFFIX)


def read_record(backup_set):
    try:
        with open(record_path(backup_set), "rb") as f:
            return json.loads(f.read())
    except (OSError, ValueError):
        return None


def is_verified(backup_set, manifest, minimum="checksum"):
    """True when the last verification passed at ``minimum`` or a higher level, for this
    very archive (same sha256)."""
    rec = read_record(backup_set)
    return bool(
        rec
        and rec.get("ok")
        and rec.get("archive_sha256") == manifest["archive"]["sha256"]
        and LEVELS.index(rec.get("level", "checksum")) >= LEVELS.index(minimum)
    )


class Checks:
    def __init__(self):
        self.items = []
        self.signature = None  # the manifest's signature status, once checked
        self.read_during_dump = False  # the full read was the dump's (ArchiveRead)

    def add(self, check, ok, message, expected=None, found=None):
        self.items.append({"check": check, "ok": bool(ok), "message": message, "expected": expected, "found": found})
        return ok

    @property
    def ok(self):
        return all(i["ok"] for i in self.items)

    def failures(self):
        return [i for i in self.items if not i["ok"]]


def _legacy_md5(path):
    """The digest of a ``<archive>.md5`` file (``md5sum`` output or a bare digest)."""
    with open(path) as f:
        text = f.read().strip()
    return text.split()[0].lower() if text else ""


def md5_file(path):
    h = hashlib.md5()  # noqa: S324 - the legacy scripts' format, checked, not trusted for security
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(mf.CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def verify_checksum(backup_dir, database, backup_id, checks, signing=None):
    """Returns (backup_set, manifest) or (set, None) when the manifest is unusable. ``signing``
    (a _signing.Policy): its verdict on the manifest's signature is a check too."""
    bset = mf.BackupSet(backup_dir, database, backup_id)
    if not os.path.exists(bset.manifest):
        checks.add("manifest", False, "manifest %s is missing: this is not a complete backup" % bset.manifest)
        return bset, None
    try:
        manifest = mf.read_manifest(bset.manifest)
    except mf.ManifestError as e:
        checks.add("manifest", False, str(e))
        return bset, None
    checks.add("manifest", True, "manifest intact")
    check_signature(manifest, signing, bset.manifest, checks)
    paired = manifest["backup_id"] == backup_id and manifest["database"] == database
    checks.add(
        "manifest pairing",
        paired,
        "manifest belongs to this backup" if paired else "manifest describes another backup",
        expected="%s/%s" % (database, backup_id),
        found="%s/%s" % (manifest["database"], manifest["backup_id"]),
    )
    bset = mf.BackupSet.from_manifest(backup_dir, manifest)
    # A part is checked in the form it is here: its plaintext when it has one (what restores
    # read; its encrypted form is checked by the upload's read-back and by every download), else
    # its encrypted form (a set downloaded without an identity) - no key needed.
    stored = {p[0]: p for p in _encryption.parts(bset, manifest)}
    if os.path.exists(bset.archive):
        archive = manifest["archive"]
        _check_file(checks, "archive", bset.archive, {"sha256": archive["sha256"], "size": archive["size_bytes"]})
        if "archive" in stored and os.path.exists(stored["archive"][2]):
            # Not yet uploaded: its size at least (a truncated encrypted form could never be sent).
            size, want = os.path.getsize(stored["archive"][2]), stored["archive"][4]["size"]
            checks.add(
                "encrypted archive size",
                size == want,
                "encrypted archive size matches"
                if size == want
                else "the encrypted archive is %d bytes, the manifest says %d" % (size, want),
                expected=want,
                found=size,
            )
    elif "archive" in stored and os.path.exists(stored["archive"][2]):
        _check_file(checks, "encrypted archive", stored["archive"][2], stored["archive"][4])
    else:
        checks.add("archive present", False, "archive %s is missing" % bset.archive)
        return bset, manifest
    if not os.path.exists(bset.globals_sql) and "globals" in stored and os.path.exists(stored["globals"][2]):
        _check_file(checks, "encrypted globals", stored["globals"][2], stored["globals"][4])
    elif not os.path.exists(bset.globals_sql):
        checks.add("globals present", False, "globals file %s is missing" % bset.globals_sql)
    if os.path.exists(bset.globals_sql):
        gdigest, _gsize = mf.sha256_file(bset.globals_sql)
        want = manifest.get("globals", {}).get("sha256")
        checks.add("globals sha256", gdigest == want, "globals file matches", expected=want, found=gdigest)
    if os.path.exists(bset.legacy_md5) and not os.path.isdir(bset.archive):
        want = _legacy_md5(bset.legacy_md5)
        got = md5_file(bset.archive)
        checks.add("legacy md5", got == want, "legacy .md5 matches", expected=want, found=got)
    return bset, manifest


def _check_file(checks, what, path, want):
    """The size and sha256 checks of one file (an archive, or a stored form) against ``want``
    {sha256, size}."""
    digest, size = mf.archive_digest(path)
    checks.add(
        "%s size" % what,
        size == want["size"],
        "%s size matches" % what
        if size == want["size"]
        else "%s is %d bytes, the manifest says %d (%s)"
        % (what, size, want["size"], "truncated" if size < want["size"] else "grown"),
        expected=want["size"],
        found=size,
    )
    checks.add(
        "%s sha256" % what,
        digest == want["sha256"],
        "%s sha256 matches" % what if digest == want["sha256"] else "%s content differs from the manifest" % what,
        expected=want["sha256"],
        found=digest,
    )


def verify_legacy(path):
    """A backup of the old shell scripts: ``<file>`` plus ``<file>.md5``, no manifest."""
    checks = Checks()
    if not os.path.exists(path):
        checks.add("archive present", False, "%s is missing" % path)
    elif not os.path.exists(path + mf.LEGACY_MD5_SUFFIX):
        checks.add("legacy md5", False, "%s has no .md5 beside it" % path)
    else:
        want = _legacy_md5(path + mf.LEGACY_MD5_SUFFIX)
        got = md5_file(path)
        checks.add("legacy md5", got == want, "md5 matches" if got == want else "md5 differs", expected=want, found=got)
    return {"ok": checks.ok, "level": "checksum", "checks": checks.items, "failures": checks.failures(), "legacy": True}


def check_signature(manifest, signing, path, checks):
    """The 'signature' check: passes for a trusted set, and without a trust store (saying so:
    'unsigned, no trust store'); fails for a set the policy refuses, with the reason."""
    policy = signing or _signing.UNCONFIGURED
    try:
        status = policy.check(manifest, manifest.get("host"), "manifest %s" % path)
    except _signing.SignatureError as e:
        checks.add("signature", False, str(e), found=e.status.get("status"))
        checks.signature = e.status
        return
    checks.add("signature", True, _signing.describe(status), found=status["status"])
    checks.signature = status


def verify_archive(params, bset, manifest, checks, pg_restore, streamed=None):
    """The archive level's checks. ``streamed``: a joined ArchiveRead of the dump; it stands for
    the full read only when it read exactly the archive the manifest (and the file) has."""
    try:
        toc = _restore.parse_toc(_restore.list_archive(pg_restore, bset.archive, params))
    except _pg.ToolError as e:
        checks.add("archive toc", False, "pg_restore cannot read the table of contents: %s" % e)
        return
    try:
        missing = _restore.missing_from_toc(manifest, toc)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        checks.add("archive toc", False, "the manifest's table list is malformed (%s: %s)" % (e.__class__.__name__, e))
        return
    wanted = len(manifest["tables"]) + len(manifest.get("hypertable_references") or [])
    checks.add(
        "archive toc",
        not missing,
        "every table of the manifest is in the archive"
        if not missing
        else "in the manifest but not in the archive: %s" % ", ".join(missing),
        expected=wanted,
        found=wanted - len(missing),
    )
    archive = manifest["archive"]
    if streamed is not None and streamed.read_whole(archive["sha256"], archive["size_bytes"]):
        checks.add("archive readable", True, "pg_restore read the whole archive while it was written")
        checks.read_during_dump = True
        return
    try:  # also when the read during the dump failed: only the file's own read is a verdict
        _pg.run_tool([pg_restore, "--file=/dev/null", bset.archive], params)
        checks.add("archive readable", True, "pg_restore read the whole archive")
    except _pg.ToolError as e:
        checks.add("archive readable", False, "pg_restore cannot read the whole archive: %s" % e)


def verify_restore(params, bset, manifest, checks, jobs=1, progress=None):
    scratch = _restore.scratch_name(manifest["database"], "verify", manifest["backup_id"])
    conn = _pg.connect(params)
    try:
        _pg.drop_database(conn, scratch)
        _restore.check_room(
            conn,
            manifest,
            "a restore test of %s (scratch database %s)" % (manifest["backup_id"], scratch),
            "Free space in the data directory, or verify at level archive on this host.",
        )
    finally:
        conn.close()
    try:
        restored = _restore.restore_into(
            params, bset.archive, scratch, manifest, jobs=jobs, analyze=False, progress=progress
        )
    except (_pg.PgError, _restore.RestoreError) as e:
        if _privileges.denial(e):
            raise  # not a verdict on the backup: verify says what to grant
        checks.add("restore", False, "restore into scratch database %s failed: %s" % (scratch, e))
        return None
    finally:
        conn = _pg.connect(params)
        try:
            _pg.drop_database(conn, scratch)
        finally:
            conn.close()
    diffs = _restore.compare(manifest, restored["facts"])
    checks.add(
        "restore",
        not diffs,
        "restored %d tables; counts and hypertable ranges match the manifest" % len(restored["facts"]["tables"])
        if not diffs
        else "restored data differs from the manifest: %s" % _restore.describe_diffs(diffs),
        expected=None if not diffs else [d["expected"] for d in diffs],
        found=None if not diffs else [d["found"] for d in diffs],
    )
    return restored


def verify(
    params,
    backup_dir,
    database,
    backup_id,
    level="checksum",
    jobs=1,
    record=True,
    progress=None,
    signing=None,
    streamed=None,
    identity=None,
):
    """Verifies one backup set. Returns a dict: ok, level, checks, failures, duration, signature.
    ``progress``: reporter factory for the restore level's restore (see _restore.restore_into);
    ``signing``: the _signing.Policy whose verdict on the manifest's signature is a check;
    ``streamed``: the dump's joined ArchiveRead (see verify_archive); ``identity``: the text of
    an age identity file, for the levels that read an encrypted set held only in its stored form.
    Holds the folder's readers lock: no prune removes the set while it is read."""
    if level not in LEVELS:
        raise ValueError("level must be one of %s" % ", ".join(LEVELS))
    with _lock.reading_folder(os.path.join(backup_dir, mf.database_segment(database))):
        return _verify_set(
            params, backup_dir, database, backup_id, level, jobs, record, progress, signing, streamed, identity
        )


def _verify_set(
    params, backup_dir, database, backup_id, level, jobs, record, progress, signing, streamed=None, identity=None
):
    t0 = time.monotonic()
    checks = Checks()
    bset, manifest = verify_checksum(backup_dir, database, backup_id, checks, signing)
    restored = decrypted = None
    if manifest and checks.ok and level in ("archive", "restore"):
        # Only what the checks above proved is decrypted, and only its plaintext's digest is kept.
        decrypted = _encryption.open_set(bset, manifest, identity, "verify at level %s" % level)
        if decrypted:
            checks.add("decryption", True, "decrypted with the identity given; the plaintext matches the manifest")
        major = int(manifest["server"]["server_version_num"]) // 10000
        pg_restore = _pg.find_tool("pg_restore", major, params.pg_bin_dir if params else None)[0]
        verify_archive(params, bset, manifest, checks, pg_restore, streamed)
        if checks.ok and level == "restore":
            owner = manifest.get("database_owner")
            with _privileges.advising("verify-restore", params.user, database=database, owner=owner):
                restored = verify_restore(params, bset, manifest, checks, jobs=jobs, progress=progress)
    result = {
        "ok": checks.ok,
        "level": level,
        "backup_id": backup_id,
        "database": database,
        "checks": checks.items,
        "failures": checks.failures(),
        "duration_seconds": round(time.monotonic() - t0, 3),
        "signature": checks.signature,
    }
    if decrypted:
        result["decrypted"] = decrypted  # the encrypted form is gone: the plaintext is here now
    if checks.read_during_dump:
        result["read_during_dump"] = True  # the nightly run's, never the verify module's
    if restored:
        result["restore_timings"] = restored["timings"]
    if record and manifest and os.path.isdir(bset.folder):
        rec = {
            "ok": checks.ok,
            "level": level,
            "verified_at": mf.isoformat(mf.utcnow()),
            "archive_sha256": manifest["archive"]["sha256"],
            "failures": [f["message"] for f in checks.failures()],
        }
        mf.atomic_write_bytes(record_path(bset), (json.dumps(rec, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return result
