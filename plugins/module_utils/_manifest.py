# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backup set and its manifest: the contract between dump, verify, upload, catalog,
restore and prune.

Private to the collection. No Ansible imports: the scheduled runner uses this too.

A backup set, one per database per run, in ``<backup_dir>/<database>/``::

    <backup_id>.dump            custom-format archive  (or <backup_id>.dir/ for directory format)
    <backup_id>.globals.sql     roles and memberships (pg_dumpall --globals-only --no-role-passwords)
    <backup_id>.manifest.json   this module's format; written last, so its presence means "complete"

``backup_id`` is UTC ``YYYYMMDDTHHMMSSZ``: it sorts by time as a string.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import hashlib
import json
import os
import re
import tempfile

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _age, _errors

MANIFEST_FORMAT = "insa.timescaledb_backup/manifest"
MANIFEST_VERSION = 1
# An encrypted set's manifest (its ``encryption``): collections that predate it refuse to read it
# rather than take its stored form for the plaintext.
MANIFEST_VERSION_ENCRYPTED = 2
ARCHIVE_SUFFIX = ".dump"
DIRECTORY_SUFFIX = ".dir"
GLOBALS_SUFFIX = ".globals.sql"
# The stored (encrypted) form of a file of the set, beside it (_encryption).
STORED_SUFFIX = ".age"
MANIFEST_SUFFIX = ".manifest.json"
PARTIAL_SUFFIX = ".partial"
LEGACY_MD5_SUFFIX = ".md5"

BACKUP_ID_RE = re.compile(r"^(\d{8}T\d{6}Z)$")
# Database names that stand for themselves in file and blob names. Any other name PostgreSQL
# accepts is written there escaped (see database_segment).
DATABASE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,62}$")
# PostgreSQL's NAMEDATALEN - 1: longer names are truncated by the server, so they never exist.
MAX_NAME_BYTES = 63
SEGMENT_ESCAPE = "~"
_SEGMENT_PLAIN = re.compile(r"[A-Za-z0-9_]")
CHUNK = 1024 * 1024


class ManifestError(_errors.IntegrityError):
    """A manifest is missing, unreadable, of an unknown format, or altered."""


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


def new_backup_id(now=None):
    return (now or utcnow()).astimezone(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def backup_id_time(backup_id):
    """The UTC datetime a backup id stands for."""
    return datetime.datetime.strptime(validate_backup_id(backup_id), "%Y%m%dT%H%M%SZ").replace(
        tzinfo=datetime.timezone.utc
    )


def validate_backup_id(backup_id):
    if not isinstance(backup_id, str) or not BACKUP_ID_RE.fullmatch(backup_id):
        raise ValueError(
            "invalid backup id %r: expected UTC time as YYYYMMDDTHHMMSSZ, e.g. 20261127T020000Z" % (backup_id,)
        )
    return backup_id


def validate_database_name(name):
    """Any name PostgreSQL accepts for a database: 1 to 63 bytes of UTF-8, no NUL."""
    if not isinstance(name, str) or not name or "\0" in name or len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise ValueError(
            "invalid database name %r: a PostgreSQL database name has 1 to %d bytes (UTF-8) and no NUL"
            % (name, MAX_NAME_BYTES)
        )
    return name


def database_segment(name):
    """The database's name in file and blob names. A name of letters, digits, '_', '-', '.' stands
    for itself; any other (spaces, quotes, '/', non-ASCII, emoji...) is written with every byte
    outside [A-Za-z0-9_] as ``~XX`` (UTF-8, lower-case hex). Plain names never contain '~' and
    escaped ones always do, so two databases never share a folder."""
    validate_database_name(name)
    if _plain_database(name):
        return name
    return escape_name(name)


def _plain_database(name):
    # No '..' and no trailing '.': blob name segments allow neither.
    return bool(DATABASE_RE.fullmatch(name)) and ".." not in name and not name.endswith(".")


def escape_name(text):
    """text with every UTF-8 byte outside [A-Za-z0-9_] written as ``~XX``."""
    return "".join(
        chr(b) if _SEGMENT_PLAIN.match(chr(b)) else "%s%02x" % (SEGMENT_ESCAPE, b) for b in text.encode("utf-8")
    )


def database_from_segment(segment):
    """The database name a folder or blob segment stands for, or None if it is not one."""
    if SEGMENT_ESCAPE not in segment:
        return segment if _plain_database(segment) else None
    if not re.fullmatch(r"(?:[A-Za-z0-9_]|~[0-9a-f]{2})+", segment):
        return None
    raw = bytearray()
    for plain, escaped in re.findall(r"([A-Za-z0-9_])|~([0-9a-f]{2})", segment):
        raw.append(ord(plain) if plain else int(escaped, 16))
    try:
        name = raw.decode("utf-8")
        return name if database_segment(name) == segment else None
    except ValueError:  # not UTF-8, or not a database name: someone else's folder
        return None


def isoformat(dt):
    return dt.astimezone(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


class BackupSet:
    """Paths of one backup set. Does no I/O."""

    def __init__(self, backup_dir, database, backup_id, directory_format=False):
        self.backup_dir = backup_dir
        self.database = validate_database_name(database)
        self.backup_id = validate_backup_id(backup_id)
        self.directory_format = directory_format

    @property
    def folder(self):
        return os.path.join(self.backup_dir, database_segment(self.database))

    def _path(self, suffix):
        return os.path.join(self.folder, self.backup_id + suffix)

    @property
    def archive(self):
        return self._path(DIRECTORY_SUFFIX if self.directory_format else ARCHIVE_SUFFIX)

    @property
    def globals_sql(self):
        return self._path(GLOBALS_SUFFIX)

    @property
    def manifest(self):
        return self._path(MANIFEST_SUFFIX)

    @property
    def legacy_md5(self):
        return self.archive + LEGACY_MD5_SUFFIX

    def all_paths(self):
        """Everything that belongs to the set, in the order prune removes it (manifest last
        would leave a set that looks complete; so the manifest goes first)."""
        return [
            self.manifest,
            self.archive,
            self.globals_sql,
            self.legacy_md5,
            self.archive + STORED_SUFFIX,
            self.globals_sql + STORED_SUFFIX,
        ]

    @classmethod
    def from_manifest(cls, backup_dir, manifest):
        return cls(
            backup_dir,
            manifest["database"],
            manifest["backup_id"],
            directory_format=manifest["dump"]["format"] == "directory",
        )


class HashingWriter:
    """File-like writer that hashes what passes through it (one pass over the data)."""

    def __init__(self, fileobj):
        self._f = fileobj
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data):
        self._f.write(data)
        self.sha256.update(data)
        self.size += len(data)
        return len(data)


def sha256_file(path, chunk=CHUNK):
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


def sha256_directory(path):
    """Digest of a directory-format archive: sha256 over 'name sha256 size' lines, sorted.
    Returns (digest, total size, {name: sha256})."""
    files = {}
    total = 0
    for name in sorted(os.listdir(path)):
        digest, size = sha256_file(os.path.join(path, name))
        files[name] = digest
        total += size
    lines = "".join("%s %s\n" % (n, files[n]) for n in sorted(files))
    return hashlib.sha256(lines.encode("utf-8")).hexdigest(), total, files


def archive_digest(path):
    """(sha256, size) of a custom-format file or a directory-format folder."""
    if os.path.isdir(path):
        digest, size, _files = sha256_directory(path)
        return digest, size
    return sha256_file(path)


def _canonical(manifest):
    body = dict(manifest)
    body.pop("manifest_sha256", None)
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("utf-8")


def seal(manifest):
    """Adds manifest_sha256, a digest of the rest (the signature included, see _signing): catches a
    manifest damaged or edited after the fact - though not a forged one, which anyone can re-seal."""
    manifest = dict(manifest)
    manifest["manifest_sha256"] = hashlib.sha256(_canonical(manifest)).hexdigest()
    return manifest


def atomic_write_bytes(path, data, mode=0o600, suffix=PARTIAL_SUFFIX):
    """Temp file in the target directory, mode set before content, fsync, rename, fsync dir.
    ``suffix`` names the temp file (``*.partial`` by default: never a name a reader picks up)."""
    folder = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=suffix, dir=folder)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
        fsync_dir(folder)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def fsync_path(path):
    """fsync of a file, or of a folder (so that a rename in it survives a crash)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


fsync_dir = fsync_path


def dumps(manifest, signing=None):
    """The manifest's bytes: signed first when ``signing`` (a _signing.Policy) has a key, then
    sealed, so that manifest_sha256 covers the signature too."""
    if signing is not None:
        manifest = signing.sign(manifest)
    return (json.dumps(seal(manifest), sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def write_manifest(path, manifest, signing=None):
    return atomic_write_bytes(path, dumps(manifest, signing))


def parse_manifest(data, source="manifest"):
    """Parses and checks a manifest (bytes or str). Raises ManifestError with the reason."""
    manifest = load_document(
        data, source, MANIFEST_FORMAT, (MANIFEST_VERSION, MANIFEST_VERSION_ENCRYPTED), "manifest", ManifestError
    )
    if (manifest["format_version"] == MANIFEST_VERSION_ENCRYPTED) != bool(manifest.get("encryption")):
        raise ManifestError(
            "%s has format_version %s %s an encryption section: it was not written by this collection"
            % (source, manifest["format_version"], "without" if manifest.get("encryption") is None else "with")
        )
    if manifest.get("encryption"):
        check_encryption(manifest["encryption"], ("archive", "globals"), source, ManifestError)
    expected = manifest.get("manifest_sha256")
    actual = hashlib.sha256(_canonical(manifest)).hexdigest()
    if expected != actual:
        raise ManifestError(
            "%s was altered after it was written (manifest_sha256 %s, content hashes to %s)"
            % (source, expected, actual)
        )
    require_keys(manifest, ("backup_id", "database", "archive", "tables", "dump"), source, ManifestError)
    return manifest


def load_document(data, source, fmt, version, what, error):
    """A JSON document of this collection (a backup or history manifest) of format ``fmt`` and
    ``version``, before its seal is checked. Raises ``error`` saying what is wrong with it."""
    try:
        document = json.loads(data)
    except ValueError as e:
        raise error("%s is not valid JSON: %s" % (source, e)) from None
    if not isinstance(document, dict) or document.get("format") != fmt:
        raise error("%s is not an insa.timescaledb_backup %s" % (source, what))
    found = document.get("format_version")
    versions = version if isinstance(version, tuple) else (version,)
    if found not in versions:
        raise error(
            "%s has format_version %r; this collection reads version %s"
            % (source, found, " and ".join("%d" % v for v in versions))
        )
    return document


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def check_encryption(enc, parts, source, error, digests=("sha256", "size_bytes")):
    """An ``encryption`` section (a set's, or a history object's) as this collection writes it;
    ``error`` says what is wrong otherwise: nothing read from storage is used unchecked."""
    recipients = enc.get("recipients") if isinstance(enc, dict) else None
    if not isinstance(enc, dict) or enc.get("format") != "age" or not isinstance(recipients, list) or not recipients:
        raise error("%s: its encryption section is not age encryption to a list of recipients" % source)
    if not all(isinstance(r, str) and _age.RECIPIENT_RE.match(r) for r in recipients):
        raise error("%s: its encryption section names something else than age recipients" % source)
    for part in parts:
        entry = enc.get(part) if part else enc
        if entry is None and part == "globals":
            continue
        sha, size = (entry or {}).get(digests[0]), (entry or {}).get(digests[1])
        if not (isinstance(sha, str) and _SHA256.match(sha) and isinstance(size, int) and size >= 0):
            raise error("%s: its encryption section lacks the sha256 and size of %s" % (source, part or "the object"))


def require_keys(document, keys, source, error):
    for key in keys:
        if key not in document:
            raise error("%s lacks %r" % (source, key))


def read_manifest(path):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ManifestError("cannot read manifest %s: %s" % (path, e.strerror)) from None
    return parse_manifest(data, source=path)


SAFETY_PURPOSE = "safety-before-restore"


def is_safety_backup(entry):
    """A set restore took of the database it replaced (manifest 'purpose', or blob metadata)."""
    return (entry.get("purpose") or (entry.get("manifest") or {}).get("purpose")) == SAFETY_PURPOSE


def select_backup(entries, backup_id=None, as_of=None, include_safety=False):
    """The one way a backup is chosen (verify, restore, drill, download, catalog): by id, the
    newest taken at or before ``as_of`` (a datetime), or the newest. Never a set whose manifest
    failed to parse ('manifest' None) or that is incomplete ('complete' False); safety backups
    only by id or with include_safety. Returns the entry or None."""
    usable = sorted(
        (e for e in entries if e.get("complete", True) and ("manifest" not in e or e["manifest"] is not None)),
        key=lambda e: e["backup_id"],
    )
    if backup_id and backup_id != "latest":
        if as_of is not None:
            raise ValueError("give backup_id or a time to select by, not both")
        validate_backup_id(backup_id)
        matches = [e for e in usable if e["backup_id"] == backup_id]
        return matches[-1] if matches else None
    if not include_safety:
        usable = [e for e in usable if not is_safety_backup(e)]
    if as_of is not None:
        usable = [e for e in usable if backup_id_time(e["backup_id"]) <= as_of]
    return usable[-1] if usable else None


def _found_where_it_belongs(manifest, database, backup_id, path):
    """A manifest is used only in its own place: every path of a set (and so what prune deletes,
    what upload sends, what restore reads) is derived from the manifest's database and id, so
    one copied or planted into another folder must not speak for that folder."""
    if (manifest["database"], manifest["backup_id"]) != (database, backup_id):
        raise ManifestError(
            "%s describes backup %s of database %s, not the set its name and folder say (%s of %s): "
            "not used (moved or planted?); move it back or remove it"
            % (path, manifest["backup_id"], manifest["database"], backup_id, database)
        )
    return manifest


def list_local(backup_dir, database=None):
    """Complete backup sets under backup_dir (those with a readable manifest), oldest first.

    Returns a list of dicts: backup_id, database, manifest_path, manifest (or None) and
    error (why a set is not usable). Partial files are not backups and are not listed.
    """
    found = []
    if not os.path.isdir(backup_dir):
        return found
    segments = [database_segment(database)] if database else sorted(os.listdir(backup_dir))
    for segment in segments:
        db = database_from_segment(segment)
        folder = os.path.join(backup_dir, segment)
        if db is None or not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            if not name.endswith(MANIFEST_SUFFIX):
                continue
            backup_id = name[: -len(MANIFEST_SUFFIX)]
            if not BACKUP_ID_RE.fullmatch(backup_id):
                continue
            path = os.path.join(folder, name)
            entry = {"backup_id": backup_id, "database": db, "manifest_path": path, "manifest": None, "error": None}
            try:
                entry["manifest"] = _found_where_it_belongs(read_manifest(path), db, backup_id, path)
            except ManifestError as e:
                entry["error"] = str(e)
            found.append(entry)
    found.sort(key=lambda e: (e["backup_id"], e["database"]))
    return found
