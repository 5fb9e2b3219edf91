# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Encrypted backup sets (docs/SECURITY.md).

An encrypted set is a local set as any other - the plaintext archive and globals in the 0700
backup directory, which local restores and the verification read - plus its *stored form*: each
file encrypted with age to the set's recipients, ``<file>.age`` beside it. Only the stored form
leaves the host (under the plaintext's blob name); it is removed once the set's manifest is in
Azure. The signed manifest records, in ``encryption``, the recipients and the sha256 and size of
each stored file, beside the plaintext's own in ``archive`` and ``globals``: a download is
checked against the first before anything reads it, a decryption against the second.

A set downloaded without an identity holds only its stored form (and its manifest): the
``checksum`` verification checks it; anything that reads the archive first decrypts it
(``open_set``) with an identity given at run time.

Private to the collection. No Ansible imports: the scheduled runner uses this too.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import uuid

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _age, _errors
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf

STORED_SUFFIX = mf.STORED_SUFFIX
# What a manifest records of a one-file set, and which local file each entry is.
PARTS = ("archive", "globals")


def recipients_argument_spec():
    """The dump's option (doc fragment insa.timescaledb_backup.encryption)."""
    # no_log: a private key given here by mistake must never reach the journal or the output
    # (the recipients are public; the manifests and backup_info name them).
    return {"encryption_recipients": {"type": "list", "elements": "str", "default": [], "no_log": True}}


def identity_argument_spec():
    """The readers' option (doc fragment insa.timescaledb_backup.encryption.IDENTITY)."""
    return {"identity": {"type": "str", "no_log": True}}


def section(manifest):
    """The manifest's ``encryption`` (None: the set is stored in clear)."""
    return manifest.get("encryption") or None


def stored_path(path):
    return path + STORED_SUFFIX


def plain_path(bset, part):
    return bset.archive if part == "archive" else bset.globals_sql


def parts(bset, manifest):
    """[(part, plaintext path, stored path, plaintext {sha256, size}, stored {sha256, size})] of
    an encrypted set, [] for one in clear."""
    enc = section(manifest)
    if enc is None:
        return []
    found = []
    for part in PARTS:
        if part not in enc:
            continue
        plain = manifest.get(part) or {}
        path = plain_path(bset, part)
        found.append(
            (
                part,
                path,
                stored_path(path),
                {"sha256": plain.get("sha256"), "size": plain.get("size_bytes")},
                {"sha256": enc[part]["sha256"], "size": enc[part]["size_bytes"]},
            )
        )
    return found


def recipients_of(manifest):
    return list((section(manifest) or {}).get("recipients") or ())


def recipient_coverage(manifests):
    """Which sets each recipient's identity reads (what retiring an identity would lose):
    {recipients: [{recipient, id, sets, databases, oldest, newest}], in_clear, unread} over the
    manifests given (None: a set whose manifest was not read)."""
    found, in_clear, unread = {}, 0, 0
    for manifest in manifests:
        if manifest is None:
            unread += 1
            continue
        wanted = recipients_of(manifest)
        if not wanted:
            in_clear += 1
        for recipient in wanted:
            row = found.setdefault(
                recipient,
                {"recipient": recipient, "id": _age.recipient_id(recipient), "sets": 0, "databases": [], "ids": []},
            )
            row["sets"] += 1
            row["ids"].append(manifest["backup_id"])
            if manifest["database"] not in row["databases"]:
                row["databases"].append(manifest["database"])
    rows = []
    for row in found.values():
        ids = sorted(row.pop("ids"))
        rows.append(dict(row, databases=sorted(row["databases"]), oldest=ids[0], newest=ids[-1]))
    return {"recipients": sorted(rows, key=lambda r: r["newest"]), "in_clear": in_clear, "unread": unread}


class NotEncryptable(_errors.OperatorError):
    """A set in clear that cannot be encrypted before it is sent: only it is left unsent (the
    catch-up goes on with the others); the kind says why (config, service, integrity)."""


def encrypt_existing(bset, manifest, to, signing=None):
    """A set taken in clear, about to leave the host while encryption is on (turned on after it
    was taken): its stored form is written and its manifest rewritten as an encrypted set's
    (format_version 2, signed again with this host's key - ``signing``, a _signing.Policy).
    Nothing of it is in clear in Azure afterwards. Returns the new manifest; NotEncryptable
    (nothing changed) when it cannot be done."""
    what = "backup %s of %s is in clear and encryption is on" % (bset.backup_id, bset.database)
    if bset.directory_format:
        raise NotEncryptable(
            "%s, but it is a directory-format archive: it is not sent. Take a new backup (dump_jobs 1), or "
            "remove it" % what,
            kind="config",
        )
    if "signature" in manifest and getattr(signing, "signer", None) is None:
        raise NotEncryptable(
            "%s, but its manifest is signed and this run has no signing key to sign it again: it is not sent. "
            "Configure the signing key (tsdb_signing)" % what,
            kind="config",
        )
    need = sum((manifest.get(p) or {}).get("size_bytes") or 0 for p in PARTS) + 1024 * 1024
    free = _free_bytes(bset.folder)
    if free < need:
        raise NotEncryptable(
            "%s, but %d bytes are free for its encrypted form of %d: it is not sent" % (what, free, need),
            kind="service",
        )
    new = {k: v for k, v in manifest.items() if k not in ("manifest_sha256", "signature")}
    new["format_version"] = mf.MANIFEST_VERSION_ENCRYPTED
    try:
        new["encryption"] = encrypt_set(bset, manifest["archive"], manifest.get("globals"), to)
        mf.write_manifest(bset.manifest, new, signing)
    except (_errors.OperatorError, OSError) as e:
        for path in (stored_path(bset.archive), stored_path(bset.globals_sql)):
            for leftover in (path, path + mf.PARTIAL_SUFFIX):
                _unlink_quietly(leftover)
        raise NotEncryptable("%s, but encrypting it failed: %s" % (what, e), kind=_errors.kind_of(e)) from None
    return mf.read_manifest(bset.manifest)


def _free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def check_directory_format(to, directory_format):
    if to and directory_format:
        raise _errors.ConfigError(
            "encryption works with one-file archives: set dump_jobs to 1 (a directory-format archive is not "
            "encrypted), or turn encryption off"
        )


def encrypt_set(bset, plain, globals_info, to, encryptor=None):
    """Writes the stored form of a new set (archive and globals) and returns the manifest's
    ``encryption``. ``plain``/``globals_info``: the manifest's ``archive``/``globals``.
    ``encryptor``: the _age.Encryptor the dump fed this archive while it wrote it; its output
    counts when age took all of it, else the archive is encrypted again here."""
    enc = {"format": _age.FORMAT, "recipients": list(to)}
    archive_stored = stored_path(bset.archive)
    done = encryptor.finish(plain["size_bytes"]) if encryptor is not None else None
    if done is not None:
        encryptor.stored.rename(archive_stored)  # the upload may not have opened it yet
        stored = done["stored"]
    else:
        stored = encrypt_file(bset.archive, archive_stored, to, plain)
    enc["archive"] = _record(archive_stored, stored)
    if globals_info:
        globals_stored = stored_path(bset.globals_sql)
        enc["globals"] = _record(globals_stored, encrypt_file(bset.globals_sql, globals_stored, to, globals_info))
    return enc


def _record(path, stored):
    return {"file": os.path.basename(path), "sha256": stored["sha256"], "size_bytes": stored["size"]}


def encrypt_file(path, dest, to, expected):
    """Encrypts a file of the set into dest (through dest.partial); the plaintext read must be
    the one the manifest records. Returns the stored {sha256, size}."""
    partial = dest + mf.PARTIAL_SUFFIX
    if os.path.exists(partial):
        os.unlink(partial)  # a failed encryption during the dump
    plain, stored = _age.encrypt(_age.file_blocks(path), partial, to)
    if plain["sha256"] != expected["sha256"]:
        os.unlink(partial)
        raise _age.EncryptionError("%s changed while it was encrypted: not stored" % path)
    _finish(dest)
    return stored


def _finish(dest):
    os.rename(dest + mf.PARTIAL_SUFFIX, dest)


def remove_stored(bset, manifest):
    """Removes the stored form once the set is in Azure (the catalog then has its digests) - only
    where the plaintext is here: a set held only encrypted keeps its one local copy."""
    removed = []
    for _part, plain, stored, _p, _s in parts(bset, manifest):
        if os.path.exists(stored) and os.path.exists(plain):
            os.unlink(stored)
            removed.append(stored)
    if removed:
        mf.fsync_dir(bset.folder)
    return removed


def missing_plaintext(bset, manifest):
    """The parts of an encrypted set held only in their stored form."""
    return [p for p in parts(bset, manifest) if not os.path.exists(p[1]) and os.path.exists(p[2])]


def held_encrypted(backup_dir, manifest):
    """Whether a local set (of backup_dir, by its manifest) is here only in its encrypted form."""
    if not manifest or section(manifest) is None:
        return False
    return bool(missing_plaintext(mf.BackupSet.from_manifest(backup_dir, manifest), manifest))


def require_identity(bset, manifest, identity, action):
    """ConfigError unless ``identity`` decrypts for one of the set's recipients."""
    _require(
        "backup %s of %s" % (bset.backup_id, bset.database),
        "only its encrypted form is here: %s needs its identity" % action,
        recipients_of(manifest),
        identity,
    )


def _require(what, why, wanted, identity):
    ids = ", ".join(_age.recipient_id(r) for r in wanted)
    if not identity:
        raise _errors.ConfigError(
            "%s is encrypted (to recipient(s) %s) and %s. Give the identity file at run time (identity / "
            "restore_identity_file)" % (what, ids, why)
        )
    have = _age.identity_recipients(identity)
    if not set(have) & set(wanted):
        raise _errors.ConfigError(
            "the identity given decrypts for recipient(s) %s; %s was encrypted to %s: give the identity of one of those"
            % (", ".join(_age.recipient_id(r) for r in have), what, ids)
        )


def encrypt_object(path, to):
    """Encrypts a history object (a Parquet file of the 0700 work directory) into ``<path>.age``
    and removes the plaintext. Returns (stored path, stored {sha256, size}, the manifest's
    ``object.encryption``)."""
    stored_file = stored_path(path)
    plain, stored = _age.encrypt(_age.file_blocks(path), stored_file, to)
    os.unlink(path)
    record = {
        "format": _age.FORMAT,
        "recipients": list(to),
        "plaintext_sha256": plain["sha256"],
        "plaintext_size_bytes": plain["size"],
    }
    return stored_file, stored, record


def require_object_identity(objects, identity, what):
    """Before anything is created or loaded: ``identity`` reads every encrypted object of
    ``objects`` (manifests' ``object``), else ConfigError."""
    for obj in objects:
        enc = obj.get("encryption")
        if enc:
            _require(what, "reading its rows needs its identity", enc.get("recipients") or [], identity)


def open_object(path, obj, identity, what):
    """The plaintext of a downloaded history object (``obj``: its manifest's ``object``), checked
    against the manifest; ``path`` itself when it is in clear. The stored file is removed."""
    enc = obj.get("encryption")
    if not enc:
        return path
    _require(what, "reading its rows needs its identity", enc.get("recipients") or [], identity)
    plain_file = path + ".plain"
    if os.path.exists(plain_file):
        os.unlink(plain_file)
    _age.decrypt(path, plain_file, identity, {"sha256": enc["plaintext_sha256"], "size": enc["plaintext_size_bytes"]})
    os.unlink(path)
    return plain_file


def open_set(bset, manifest, identity, action="reading the archive"):
    """Makes an encrypted set readable: decrypts each part held only in its stored form (the
    plaintext checked against the manifest before it is renamed into place) and removes the
    stored file. Returns the plaintext paths written ([] when there was nothing to do)."""
    todo = missing_plaintext(bset, manifest)
    if not todo:
        return []
    require_identity(bset, manifest, identity, action)
    written = []
    for _part, plain_file, stored_file, plain, _stored in todo:
        # A name of its own: another reader of the set may be decrypting it too.
        partial = "%s.%s%s" % (plain_file, uuid.uuid4().hex[:8], mf.PARTIAL_SUFFIX)
        try:
            _age.decrypt(stored_file, partial, identity, plain)
            os.rename(partial, plain_file)  # the same checked content whoever renames last
        except FileNotFoundError:
            if not os.path.exists(plain_file):
                raise
            continue  # another reader decrypted it and removed the encrypted form meanwhile
        finally:
            if os.path.exists(partial):
                os.unlink(partial)
        _unlink_quietly(stored_file)
        written.append(plain_file)
    mf.fsync_dir(bset.folder)
    return written


def _unlink_quietly(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass  # another reader decrypted it first
