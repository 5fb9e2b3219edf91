# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What keeps a night's run from leaving the host worse off: waiting (bounded) for the run lock
a long history run holds instead of skipping the backup, and reporting the backup sets that
have not reached Azure (a set that can never be uploaded is held locally, and with it the disk).
And what keeps it short: the archive is read by the verification and staged in Azure while
pg_dump writes it (dump_followers, staged_upload); after the dump only its sha256 is checked
again (verify's checksum level), nothing decompresses or sends it a second time.

Private to the collection. No Ansible imports: the scheduled runner uses this.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import socket
import threading
import time

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _encryption, _errors, _pg, _verify
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf

DEFAULT_LOCK_WAIT_MINUTES = 30
# The manifest's mark of a set the runner took: verify_leftovers verifies only those.
TAKEN_BY = "tsdb-backup run"
LEFTOVERS_PER_RUN = 3


class UploadIncomplete(_errors.OperatorError):
    """Sets failed to upload; ``uploaded_ids`` (when Azure could be listed) what prune may remove."""

    uploaded_ids = None


POLL_SECONDS = 5.0


def wait_for_lock(lock, wait_seconds, logger=None, poll_seconds=POLL_SECONDS):
    """Takes ``lock`` (a _lock.FileLock), waiting up to ``wait_seconds`` for its holder to finish.
    Returns None when held, else what an operator reads: who holds it and how long this waited.
    The holder is said once in the journal when the wait begins (and again if it changes)."""
    deadline = time.monotonic() + max(0.0, float(wait_seconds or 0))
    said = None
    while not lock.try_acquire():
        holder = lock.describe()
        left = deadline - time.monotonic()
        if left <= 0:
            waited = "; waited %s for it" % _minutes(wait_seconds) if wait_seconds else ""
            return "%s is %s%s" % (lock.path, holder, waited)
        if logger is not None and holder != said:
            logger.warning("%s is %s; waiting up to %s for it to finish", lock.path, holder, _minutes(left))
            said = holder
        time.sleep(min(poll_seconds, max(left, 0.01)))
    if said is not None and logger is not None:
        logger.info("%s taken after waiting for %s", lock.path, said.replace("held by ", "", 1))
    return None


def _minutes(seconds):
    seconds = float(seconds)
    return "%d min" % round(seconds / 60) if seconds >= 60 else "%d s" % round(seconds)


def note_unuploaded(r, pending, unusable, failures, logger=None, now=None):
    """Puts into the result ``r`` the local sets Azure does not hold: ``unuploaded_sets`` (the
    pending ones and those that cannot be sent: unverified, unreadable), the age of the oldest
    (``oldest_unuploaded_age_seconds``, 0 when none) and ``stuck_sets``: the ones whose upload
    failed this run or that cannot be sent, with the reason. Prune keeps them all (and the disk fills),
    so they are said in the journal too."""
    now = now or mf.utcnow()
    failed = {f["backup_id"]: f["error"] for f in failures or []}
    stuck = [{"backup_id": bid, "reason": why} for bid, why in sorted(failed.items())]
    stuck += [
        {"backup_id": u["backup_id"], "reason": u["error"]} for u in unusable or [] if u["backup_id"] not in failed
    ]
    ids = {e["backup_id"] for e in pending or []} | {u["backup_id"] for u in unusable or []}
    ages = []
    for bid in ids:
        try:
            ages.append((now - mf.backup_id_time(bid)).total_seconds())
        except ValueError:
            continue
    r["unuploaded_sets"] = len(ids)
    r["oldest_unuploaded_age_seconds"] = round(max(*ages, 0)) if ages else 0
    if stuck:
        r["stuck_sets"] = stuck
        if logger is not None:
            for s in stuck:
                logger.warning(
                    "upload %s: set %s is not in Azure and is kept locally until it is: %s",
                    r.get("database"),
                    s["backup_id"],
                    s["reason"],
                )
    return r


def verify_leftovers(config, database, logger, signing=None):
    """Verifies the sets this runner took that were never verified (a run killed between its
    dump and the end of its verification), at most LEFTOVERS_PER_RUN, so the catch-up can send
    them. Sets of the dump module stay as the operator left them; a failed verification is
    recorded and the set stays stuck, as before. A verification that cannot run is logged and
    the run goes on. Returns the ids verified ok."""
    done = []
    for entry in _leftovers(config["backup_dir"], database)[:LEFTOVERS_PER_RUN]:
        # A set downloaded here encrypted: this host has no identity, its encrypted form is what it checks.
        held_encrypted = _encryption.held_encrypted(config["backup_dir"], entry["manifest"])
        try:
            ver = _verify.verify(
                config["pg"],
                config["backup_dir"],
                database,
                entry["backup_id"],
                level="checksum" if held_encrypted else config["verify_level"],
                signing=signing,
            )
        except Exception as e:  # noqa: BLE001 - tonight's set must still be sent and pruned
            logger.warning("verify %s: a set left unverified by an interrupted run: %s", entry["backup_id"], e)
            continue
        if ver["ok"]:
            done.append(entry["backup_id"])
            logger.info(
                "verify %s: a set left unverified by an interrupted run: %s level ok", entry["backup_id"], ver["level"]
            )
        else:
            logger.warning(
                "verify %s: a set left unverified by an interrupted run fails: %s",
                entry["backup_id"],
                "; ".join(f["message"] for f in ver["failures"]),
            )
    return done


def _leftovers(backup_dir, database):
    """This runner's sets (TAKEN_BY in the manifest) without any verification record."""
    return [
        e
        for e in mf.list_local(backup_dir, database)
        if e["manifest"] is not None
        and e["manifest"].get("taken_by") == TAKEN_BY
        and _verify.read_record(mf.BackupSet.from_manifest(backup_dir, e["manifest"])) is None
    ]


def dump_followers(config, store, logger):
    """The ``followers`` of _dump.dump for the nightly run: the archive level's full read
    (_verify.ArchiveRead) and, when uploading, the staging of the archive's blocks in Azure
    (_azure.FollowingUpload), both while pg_dump writes. None when neither applies. A follower
    that cannot start is logged and left out: the steps after the dump then read the file."""
    reading = config["verify_level"] in ("archive", "restore")
    uploading = bool(config["upload"]) and store is not None and hasattr(store, "following_upload")
    if not (reading or uploading):
        return None

    def start(bset, growing, facts, stored=None):
        # stored: the encrypted archive as it is written; what leaves the host (_encryption).
        started = []
        try:
            if reading:
                pg_restore = _pg.find_tool("pg_restore", facts["server_major"], config["pg"].pg_bin_dir)[0]
                started.append(_verify.ArchiveRead(growing, pg_restore, config["pg"]).start())
            if uploading:
                name = store.archive_blob_name(config["host_label"] or socket.getfqdn(), bset)
                started.append(store.following_upload(name, stored or growing, facts["database_size_bytes"]).start())
        except Exception as e:  # noqa: BLE001 - the dump goes on; verify and upload read the file
            logger.warning("dump %s: reading the archive while it is written is off (%s)", bset.backup_id, e)
        return started

    return start


def joined(followers, kind):
    """The follower of that class among the dump's, joined (None when there is none)."""
    for follower in followers or ():
        if isinstance(follower, kind):
            return follower.join()
    return None


def _staged_blocks(followers, manifest, logger):
    """{blob name: blocks staged during the dump} when they are exactly the manifest's archive
    (an encrypted set's: its stored form)."""
    for follower in followers or ():
        if not hasattr(follower, "blob_name"):
            continue
        follower.join()
        archive = (manifest.get("encryption") or manifest)["archive"]
        if follower.read_whole(archive.get("sha256"), archive.get("size_bytes")):
            return {follower.blob_name: follower.result}
        logger.warning(
            "upload %s: staging the archive during the dump failed (%s); it is sent from the file",
            manifest["backup_id"],
            follower.error or "it read other bytes than the manifest's",
        )
    return {}


@contextlib.contextmanager
def staged_upload(config, store, manifest, logger, followers=None, r=None):
    """Sends the new set's archive and globals (never its manifest: without it the blobs are no
    backup to any reader) in a thread while the block runs - the verification. The archive's
    blocks are those the dump's FollowingUpload staged when it has them all (only the commit is
    left), else the file is read. The catch-up after it then sends only the manifest, and only
    for a verified set; a staging that fails is only logged: the catch-up sends what is missing,
    or says why not. ``r``: the database's result; its ``read_during_dump`` gets "upload" when
    the staged blocks were committed."""
    if not config["upload"] or store is None or not hasattr(store, "upload_backup_set"):
        yield
        return
    failed = []
    bset_id = manifest["backup_id"]

    def stage():
        try:
            staged = _staged_blocks(followers, manifest, logger)  # here: its tail overlaps the verification
            path = mf.BackupSet.from_manifest(config["backup_dir"], manifest).manifest
            sent = store.upload_backup_set(path, host=config["host_label"], stage=True, staged=staged)
            if any(b.get("staged_during_dump") for b in sent.get("blobs") or ()):
                logger.info("upload %s: archive committed from the blocks sent while it was written", bset_id)
                if r is not None:
                    r.setdefault("read_during_dump", []).append("upload")
        except Exception as e:  # noqa: BLE001 - the catch-up reports what matters
            failed.append(e)

    # A daemon: a run stopped (SIGTERM) during the verification does not wait for the upload.
    thread = threading.Thread(target=stage, name="staged-upload", daemon=True)
    thread.start()
    yield
    thread.join()
    if failed:
        logger.warning(
            "upload %s: sending the archive during its verification failed (%s); the catch-up retries",
            manifest["backup_id"],
            failed[0],
        )
