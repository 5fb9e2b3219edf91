# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Encryption to public-key recipients with age (https://age-encryption.org/v1), through the
age binary (Debian's ``age`` package): the reference implementation, streaming, in a process of
its own (the second core while the dump runs), with a list argv.

A database host holds only recipients (``age1...``, public); the identities
(``AGE-SECRET-KEY-1...``) that decrypt stay with the operators. An identity given to a run
reaches age through a pipe (``-i /dev/fd/N``): it is never written to disk, never in argv, and
never in a message - age's own errors about it are not relayed.

age authenticates what it decrypts only against its own key: anyone holding a recipient can
encrypt other content to it. What proves a stored object is the sha256 the signed manifest
records, for the ciphertext (checked before anything reads it) and for the plaintext.

Private to the collection. No Ansible imports: the scheduled runner uses this too.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _errors, _follow

FORMAT = "age"
MAGIC = b"age-encryption.org/v1\n"
CHUNK = 1024 * 1024
# The identity is written into a pipe before age reads it: at most one page, what a pipe holds
# even when the user's pipe quota is spent (about fifty identities).
MAX_IDENTITY_BYTES = 4000
_BECH32 = "[02-9ac-hj-np-z]{58}"
RECIPIENT_RE = re.compile(r"^age1%s$" % _BECH32)
IDENTITY_RE = re.compile(r"^AGE-SECRET-KEY-1%s$" % _BECH32.upper())
INSTALL_HINT = "install the age package on this host (apt-get install age)"


class EncryptionError(_errors.IntegrityError):
    """age could not encrypt or decrypt what it was given."""


def find(binary="age"):
    """The path of the age binary (or age-keygen); ConfigError saying how to get it."""
    path = shutil.which(binary)
    if path is None:
        raise _errors.ConfigError("encryption needs %s, which is not on this host's PATH: %s" % (binary, INSTALL_HINT))
    return path


def recipients(values, where="encryption_recipients"):
    """The recipients of a setting, checked and without repeats (order kept); [] means off."""
    found = []
    for value in values or ():
        text = ("%s" % value).strip()
        if not RECIPIENT_RE.match(text):
            raise _errors.ConfigError(
                "%s: %r is not an age recipient (age1 followed by 58 characters, what age-keygen prints as "
                "'Public key'); give public keys only, never an AGE-SECRET-KEY" % (where, text[:12] + "..."),
            )
        if text not in found:
            found.append(text)
    return found


def recipient_id(recipient):
    """A short name for a recipient in messages and metrics."""
    return hashlib.sha256(recipient.encode("ascii")).hexdigest()[:16]


def identity_recipients(identity):
    """The recipients the identities of ``identity`` (the text of an age identity file) decrypt
    for. ConfigError when it holds no identity; nothing of its content is ever repeated."""
    keys = [ln.strip() for ln in (identity or "").splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not keys or not all(IDENTITY_RE.match(k) for k in keys):
        raise _errors.ConfigError(
            "the identity given is not an age identity file (lines AGE-SECRET-KEY-1..., as age-keygen writes); "
            "check the file passed as the identity"
        )
    if len(identity.encode("utf-8")) > MAX_IDENTITY_BYTES:
        raise _errors.ConfigError("the identity file is larger than %d bytes" % MAX_IDENTITY_BYTES)
    proc = subprocess.run(
        [find("age-keygen"), "-y"],
        input="\n".join(keys).encode("ascii") + b"\n",
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    if proc.returncode != 0:
        raise _errors.ConfigError("age-keygen -y cannot read the identity given; check the identity file")
    return proc.stdout.decode("ascii").split()


def looks_encrypted(path):
    """True when the file starts as an age file does."""
    with open(path, "rb") as f:
        return f.read(len(MAGIC)) == MAGIC


class _Tail(threading.Thread):
    """Follows what age writes straight into the destination file: hashes each new stretch (read
    back from the page cache) and tells ``growing`` the size, in large steps. No byte of the
    output passes through a pipe to Python, and a write that fails (a full disk) fails age
    itself, which then exits."""

    STEP = 4 * CHUNK

    def __init__(self, fd, done, growing):
        super().__init__(name="age-output", daemon=True)
        self.fd, self.done, self.growing = fd, done, growing
        self.digest, self.size, self.error = hashlib.sha256(), 0, None

    def run(self):
        try:
            while True:
                finished = self.done.is_set()  # before the size: a last stretch is never missed
                end = os.fstat(self.fd).st_size
                if end > self.size:
                    self._hash_to(end)
                    if self.growing is not None:
                        self.growing.grew(self.size)
                elif finished:
                    return
                else:
                    self.done.wait(0.02)
        except Exception as e:  # noqa: BLE001 - reported by _through
            self.error = e

    def _hash_to(self, end):
        while self.size < end:
            data = os.pread(self.fd, min(self.STEP, end - self.size), self.size)
            if not data:
                raise OSError("%d bytes of age's output vanished" % (end - self.size))
            self.digest.update(data)
            self.size += len(data)


class _Run:
    """One age process: its input written by ``write`` (a 1 MiB pipe), its output straight into
    ``dest`` (created 0600), followed by a _Tail. ``finish`` returns the digests of what went in
    (sha256 None unless ``hash_input``) and came out, or raises; on any failure ``dest`` is
    removed. ``growing`` (a _follow.GrowingFile of dest) hears each size and is closed at the end."""

    def __init__(self, argv, dest, growing=None, pass_fds=(), hash_input=True):
        self.argv, self.dest, self.growing = argv, dest, growing
        self.inward = hashlib.sha256() if hash_input else None
        self.size_in, self.broken, self.closed, self.proc = 0, False, False, None
        self.fd = os.open(dest, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        self.err = tempfile.TemporaryFile()
        self.done = threading.Event()
        self.tail = _Tail(self.fd, self.done, growing)
        try:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=self.fd, stderr=self.err, pass_fds=pass_fds, close_fds=True
            )
        except BaseException:
            self.abort()
            raise
        _widen(self.proc.stdin)
        self.tail.start()

    def write(self, data):
        """Feeds age; False once it stopped reading (finish says why)."""
        if self.broken or self.closed:
            return False
        try:
            self.proc.stdin.write(data)
        except BrokenPipeError:
            self.broken = True
            return False
        if self.inward is not None:
            self.inward.update(data)
        self.size_in += len(data)
        return True

    def finish(self):
        if self.closed:
            raise EncryptionError("age was stopped before its input was complete")
        ok = False
        try:
            _close_quietly(self.proc.stdin)
            self.proc.wait()
            self.done.set()
            self.tail.join()
            os.fsync(self.fd)
            self.err.seek(0)
            message = self.err.read().decode("utf-8", "replace")
            if self.proc.returncode != 0 or self.tail.error is not None:
                raise EncryptionError(_failure(self.argv, self.proc.returncode, message, self.tail.error))
            ok = True
        finally:
            self._close(ok)
        inward = self.inward.hexdigest() if self.inward is not None else None
        out = {"sha256": self.tail.digest.hexdigest(), "size": self.tail.size}
        return {"sha256": inward, "size": self.size_in}, out

    def abort(self):
        """Stops age and removes what it wrote (also after finish: then nothing is left to do)."""
        self._close(False)

    def _close(self, ok):
        if self.closed:
            return
        self.closed = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc is not None:
            _close_quietly(self.proc.stdin)
        self.done.set()
        if self.tail.is_alive():
            self.tail.join()
        os.close(self.fd)
        self.err.close()
        if self.growing is not None:
            self.growing.close(ok)
        if not ok and os.path.exists(self.dest):
            os.unlink(self.dest)


def _through(argv, blocks, dest, growing=None, pass_fds=()):
    """Runs age over ``blocks`` into ``dest`` (see _Run). Returns (in, out) {sha256, size}."""
    run = _Run(argv, dest, growing, pass_fds)
    try:
        for data in blocks:
            if not run.write(data):
                break
    except BaseException:
        run.abort()
        raise
    return run.finish()


def _widen(pipe):
    """A pipe of a MiB instead of 64 KiB: fewer wake-ups of age and of this process per block."""
    try:
        fcntl.fcntl(pipe.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), CHUNK)
    except OSError:
        pass  # a lower limit (fs.pipe-max-size): the default pipe works, only slower


def _close_quietly(stream):
    try:
        stream.close()
    except BrokenPipeError:
        pass


def _failure(argv, returncode, stderr, tail_error):
    if tail_error is not None:
        return "reading back age's output failed: %s" % tail_error
    if "-d" not in argv:
        lines = [ln for ln in stderr.splitlines() if ln.strip() and "report unexpected" not in ln]
        return "age exited with status %s: %s" % (returncode, " ".join(lines[-3:]) or "no message")
    # Decryption: age's wording can quote the input; say only what the operator acts on.
    if "no identity matched" in stderr:
        return "the identity given matches none of the recipients it was encrypted to"
    return (
        "age could not decrypt it (exit %s): the encrypted file is damaged or not age-encrypted, or this host's age "
        "cannot use the identity given (check the identity file, and that age 1.1 or newer is installed)" % returncode
    )


def file_blocks(path):
    """A file's content in CHUNK blocks."""
    with open(path, "rb") as f:
        while True:
            data = f.read(CHUNK)
            if not data:
                return
            yield data


def _encrypt_argv(to):
    if not to:
        raise _errors.ConfigError("encryption needs at least one recipient")
    argv = [find()]
    for recipient in to:
        argv += ["-r", recipient]  # public keys: nothing secret in argv
    return argv


def encrypt(blocks, dest, to, growing=None):
    """Encrypts ``blocks`` to the recipients ``to`` into ``dest``. Returns (plain, stored): the
    {sha256, size} of the plaintext read and of the ciphertext written."""
    return _through(_encrypt_argv(to), blocks, dest, growing)


def decrypt(source, dest, identity, expected):
    """Decrypts the file ``source`` into ``dest`` with ``identity`` (the text of an identity
    file), which must give the plaintext of ``expected`` {sha256, size}; nothing is kept
    otherwise. Returns the plaintext's size."""
    raw = identity.encode("utf-8")
    if len(raw) > MAX_IDENTITY_BYTES:
        raise _errors.ConfigError("the identity file is larger than %d bytes" % MAX_IDENTITY_BYTES)
    r, w = os.pipe()
    try:
        os.write(w, raw)
        os.close(w)
        w = None
        _plain_in, plain = _through([find(), "-d", "-i", "/dev/fd/%d" % r], file_blocks(source), dest, pass_fds=(r,))
    finally:
        os.close(r)
        if w is not None:
            os.close(w)
    if plain["sha256"] != expected["sha256"] or plain["size"] != expected["size"]:
        os.unlink(dest)
        raise EncryptionError(
            "%s decrypts to %d bytes with sha256 %s, not to the %s bytes with sha256 %s its manifest records: "
            "not kept; the object was encrypted from other content"
            % (source, plain["size"], plain["sha256"], expected["size"], expected["sha256"])
        )
    return plain["size"]


class Encryptor:
    """Encrypts an archive fed block by block by the loop that writes it (the dump's own copy of
    pg_dump's output), into ``dest`` - a _follow.GrowingFile, ``stored``, that the upload
    follows. No second read of the archive, no thread of its own: age is many times faster than
    pg_dump. ``feed`` never raises; ``finish(size)`` gives the plain and stored {sha256, size}
    (plain sha256 None: it is the dump's own) or None when age failed (``error``): the caller
    encrypts the file again."""

    def __init__(self, to, dest):
        self.stored = _follow.GrowingFile(dest)
        self.error = None
        self._run = _Run(_encrypt_argv(to), dest, self.stored, hash_input=False)

    def feed(self, data):
        self._run.write(data)

    def finish(self, size):
        """The digests once the archive of ``size`` bytes was fed whole, else None."""
        try:
            plain, stored = self._run.finish()
        except EncryptionError as e:
            self.error = e
            return None
        if plain["size"] != size:
            self.error = EncryptionError("age was fed %d bytes of the %d of the archive" % (plain["size"], size))
            return None  # its output is replaced by the encryption of the file
        return {"plain": plain, "stored": stored}

    def cancel(self):
        self._run.abort()
