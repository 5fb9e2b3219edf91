# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Signed manifests: Ed25519 signatures over backup and history manifests, and the trust store
that says which host's key may sign what.

Private to the collection. No Ansible imports: the scheduled runner uses this too.

Every host of the fleet holds a write credential for the whole container, so anything found in
it may have been planted by another host or with a leaked SAS. manifest_sha256 catches damage,
not forgery: anyone can recompute it. A signature can only come from the private key, which
never leaves its host (``<config dir>/signing-key.pem``, 0640 root:<backup group>).

The signature of a document (a manifest's dict) is::

    "signature": {"algorithm": "ed25519", "key_id": "<16 hex>", "value": "<base64>"}

over ``canonical(document)``: its sorted, compact JSON without ``signature`` and without
``manifest_sha256``. The seal (manifest_sha256, _manifest.seal) is computed AFTER signing and
covers the signature too: it stays the integrity check it was (a damaged signature is damage),
and the signature does not depend on it.

Public keys are written ``ed25519:<base64 of the raw 32 bytes>``; a key's id is the first 16 hex
digits of the sha256 of those raw bytes. The trust store maps a host label to the public keys
trusted to sign that host's sets (``{"db01": ["ed25519:..."]}``, keys starting with ``_`` are
comments). A set is trusted when its key is listed for the host the set claims AND the host it was
found under: a key of host A signing a set under host B's prefix is refused ("other-host").
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import binascii
import hashlib
import json
import os
import stat
import traceback

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _errors

try:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
except ImportError:
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_IMPORT_ERROR = None

CRYPTOGRAPHY_REQUIREMENT = "cryptography (2.6 or newer: Ed25519)"
ALGORITHM = "ed25519"
PUBLIC_PREFIX = "ed25519:"
SIGNATURE_KEY = "signature"
SEAL_KEY = "manifest_sha256"

TRUSTED, UNSIGNED, UNKNOWN_KEY, OTHER_HOST, BAD_SIGNATURE = (
    "trusted",
    "unsigned",
    "unknown-key",
    "other-host",
    "bad-signature",
)
# What backup_info and verify report when nothing is checked: visible, never silent.
NO_TRUST_STORE = "unsigned, no trust store"


class SigningConfigError(_errors.ConfigError):
    """A key or trust store that cannot be used: missing, unreadable, too open, malformed."""


class SignatureError(_errors.IntegrityError):
    """A document refused by the signature policy: forged, unsigned, or signed by a key that is
    not trusted for its host. Integrity: what is stored is not trusted to be what it claims."""

    def __init__(self, message, status=None):
        super(SignatureError, self).__init__(message)
        self.status = status or {}


def _require_cryptography():
    if not HAS_CRYPTOGRAPHY:
        raise SigningConfigError(
            "signed manifests need the Python library %s on this host (it comes with azure-storage-blob); "
            "install it into the agent's venv" % CRYPTOGRAPHY_REQUIREMENT
        )


# ---------------------------------------------------------------------------------------------
# Keys


def key_id(raw):
    """The id of a raw 32-byte public key: the first 16 hex digits of its sha256."""
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_text(raw):
    return PUBLIC_PREFIX + base64.b64encode(raw).decode("ascii")


def parse_public_key(text, where="trust store"):
    """The raw 32 bytes of ``ed25519:<base64>``; SigningConfigError saying what is wrong."""
    if not isinstance(text, str) or not text.startswith(PUBLIC_PREFIX):
        raise SigningConfigError(
            "%s: %r is not a public key; write it as ed25519:<base64 of 32 bytes> (what the setup summary prints)"
            % (where, text)
        )
    try:
        raw = base64.b64decode(text[len(PUBLIC_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise SigningConfigError("%s: %r is not 32 bytes of base64 after 'ed25519:'" % (where, text))
    return raw


class SigningKey:
    """A host's private key and what is derived from it."""

    def __init__(self, private_key, path=None):
        self._private = private_key
        self.path = path
        self.public_raw = private_key.public_key().public_bytes(
            encoding=serialization.Encoding.Raw, format=serialization.PublicFormat.Raw
        )
        self.public_text = public_key_text(self.public_raw)
        self.key_id = key_id(self.public_raw)

    def sign_bytes(self, data):
        return self._private.sign(data)


def check_key_file_mode(path, st):
    """A private key must be a regular file that nobody but its owner (and its group, reading)
    may touch: 0600 or 0640. Raises SigningConfigError with the fix."""
    mode = stat.S_IMODE(st.st_mode)
    if not stat.S_ISREG(st.st_mode):
        raise SigningConfigError("signing key %s is not a regular file" % path)
    if mode & 0o137:
        raise SigningConfigError(
            "signing key %s has mode %04o: a private key must not be writable by its group or readable by "
            "others; chmod 0640 %s (owner root, group of the backup user) or 0600" % (path, mode, path)
        )


def load_signing_key(path):
    """The private key in ``path`` (PEM, PKCS8, Ed25519), refused when its file is too open."""
    _require_cryptography()
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        raise SigningConfigError(
            "cannot read signing key %s: %s (the backup_agent role creates it; run setup.yml, or give the key "
            "of this host)" % (path, e.strerror)
        ) from None
    try:
        check_key_file_mode(path, os.fstat(fd))
        with os.fdopen(fd, "rb") as f:
            fd = None
            data = f.read()
    finally:
        if fd is not None:
            os.close(fd)
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        # The message of the library names the format problem, never the key material.
        raise SigningConfigError("signing key %s is not an unencrypted PEM private key: %s" % (path, e)) from None
    if not isinstance(private, Ed25519PrivateKey):
        raise SigningConfigError("signing key %s is not an Ed25519 key" % path)
    return SigningKey(private, path)


def new_private_key_pem():
    """A fresh Ed25519 private key as PEM (PKCS8, unencrypted: the file's mode protects it)."""
    _require_cryptography()
    return Ed25519PrivateKey.generate().private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )


def create_key_file(path, gid=-1, mode=0o640):
    """Writes a new key to ``path`` unless one is there (never replaced: sets signed with it would
    lose their signer). The file gets ``mode`` and group ``gid`` before it holds the key.
    Returns (SigningKey, created)."""
    if os.path.exists(path):
        return load_signing_key(path), False
    pem = new_private_key_pem()
    tmp = "%s.new.%d" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        if gid != -1:
            os.fchown(fd, -1, gid)
        os.fchmod(fd, mode)
        os.write(fd, pem)
        os.fsync(fd)
        os.close(fd)
        fd = None
        os.link(tmp, path)  # fails when another run created the key meanwhile: that one stays
    except FileExistsError:
        pass
    finally:
        if fd is not None:
            os.close(fd)
        os.unlink(tmp)
    return load_signing_key(path), True


# ---------------------------------------------------------------------------------------------
# Signatures


def canonical(document):
    """The bytes a signature covers: the document without its signature and its seal."""
    body = {k: v for k, v in document.items() if k not in (SIGNATURE_KEY, SEAL_KEY)}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("utf-8")


def sign(document, key):
    """A copy of ``document`` with its signature by ``key`` (a SigningKey). Seal it afterwards."""
    signed = {k: v for k, v in document.items() if k not in (SIGNATURE_KEY, SEAL_KEY)}
    signed[SIGNATURE_KEY] = {
        "algorithm": ALGORITHM,
        "key_id": key.key_id,
        "value": base64.b64encode(key.sign_bytes(canonical(signed))).decode("ascii"),
    }
    return signed


def _hosts_of(trust, kid):
    """The hosts whose list in the trust store holds the key ``kid``, and that key (raw). Keys are
    raw bytes (load_trust) or their ``ed25519:`` text."""
    hosts, raw = [], None
    for host, keys in sorted(trust.items()):
        for candidate in keys:
            if isinstance(candidate, str):
                candidate = parse_public_key(candidate)
            if key_id(candidate) == kid:
                hosts.append(host)
                raw = candidate
    return hosts, raw


def _verifies(raw, value, data):
    try:
        signature = base64.b64decode(value, validate=True)
        Ed25519PublicKey.from_public_bytes(raw).verify(signature, data)
        return True
    except (InvalidSignature, binascii.Error, ValueError, TypeError):
        return False


def check_signature(document, trust, host_label):
    """The signature status of ``document`` found under ``host_label``: {status, key_id,
    signer_host}. ``trust`` maps host label -> public keys (load_trust's raw bytes, or the
    ``ed25519:`` text). The key must be
    trusted for host_label and for the host the document claims (its 'host', when it has one).
    Never raises for a bad document: bad-signature is a status, refused by Policy."""
    sig = document.get(SIGNATURE_KEY)
    if sig is None:
        return {"status": UNSIGNED, "key_id": None, "signer_host": None}
    if not isinstance(sig, dict) or sig.get("algorithm") != ALGORITHM or not isinstance(sig.get("key_id"), str):
        return {"status": BAD_SIGNATURE, "key_id": None, "signer_host": None}
    kid = sig["key_id"]
    hosts, raw = _hosts_of(trust, kid)
    if raw is None:
        return {"status": UNKNOWN_KEY, "key_id": kid, "signer_host": None}
    _require_cryptography()
    if not _verifies(raw, sig.get("value"), canonical(document)):
        return {"status": BAD_SIGNATURE, "key_id": kid, "signer_host": ", ".join(hosts)}
    claimed = document.get("host") if isinstance(document.get("host"), str) else host_label
    if host_label in hosts and claimed in hosts:
        return {"status": TRUSTED, "key_id": kid, "signer_host": host_label}
    return {"status": OTHER_HOST, "key_id": kid, "signer_host": ", ".join(hosts)}


# ---------------------------------------------------------------------------------------------
# The trust store


def _trust_entries(mapping, where):
    """{host: [raw keys]} of a mapping host -> key or list of keys ('_...' keys are comments)."""
    if not isinstance(mapping, dict):
        raise SigningConfigError("%s must map host labels to lists of public keys" % where)
    trust = {}
    for host, keys in mapping.items():
        if not isinstance(host, str) or host.startswith("_"):
            continue
        keys = [keys] if isinstance(keys, str) else keys
        if not isinstance(keys, list):
            raise SigningConfigError("%s: the keys of host %s must be a list of 'ed25519:...' strings" % (where, host))
        trust.setdefault(host, [])
        for text in keys:
            raw = parse_public_key(text, "%s, host %s" % (where, host))
            if raw not in trust[host]:
                trust[host].append(raw)
    return trust


def load_trust(path=None, mapping=None):
    """The trust store of a JSON file and/or a dict (both: their union), or None when neither is
    given (no trust store: nothing is checked)."""
    if not path and not mapping:
        return None
    trust = {}
    if path:
        try:
            with open(path, "rb") as f:
                data = json.loads(f.read().decode("utf-8"))
        except OSError as e:
            raise SigningConfigError(
                "cannot read the trusted signers file %s: %s (setup.yml writes it)" % (path, e.strerror)
            ) from None
        except ValueError as e:
            raise SigningConfigError("the trusted signers file %s is not valid JSON: %s" % (path, e)) from None
        trust = _trust_entries(data, path)
    for host, keys in _trust_entries(mapping or {}, "trusted_signers").items():
        trust.setdefault(host, []).extend(k for k in keys if k not in trust.get(host, []))
    return trust


# ---------------------------------------------------------------------------------------------
# The policy


class Policy:
    """What a run signs with and what it trusts. ``trust`` None: no trust store, nothing refused
    (today's behaviour, reported as 'unsigned, no trust store'). ``require`` (default: true with
    a trust store) refuses unsigned documents unless ``allow_unsigned``; unknown keys, keys of
    another host and bad signatures are refused whenever there is a trust store - a bad
    signature even without one."""

    def __init__(self, signer=None, trust=None, require=None, allow_unsigned=False):
        self.signer = signer
        self.trust = trust
        self.require = (trust is not None) if require is None else bool(require)
        self.allow_unsigned = bool(allow_unsigned)

    @property
    def configured(self):
        return self.trust is not None

    def sign(self, document):
        return sign(document, self.signer) if self.signer is not None else document

    def status(self, document, host_label):
        """check_signature, or without a trust store the status that says so."""
        if self.trust is None:
            if SIGNATURE_KEY in document:
                kid = (document.get(SIGNATURE_KEY) or {}).get("key_id")
                return {"status": "signed, no trust store", "key_id": kid, "signer_host": None}
            return {"status": NO_TRUST_STORE, "key_id": None, "signer_host": None}
        return check_signature(document, self.trust, host_label)

    def check(self, document, host_label, what, allow_unsigned=False):
        """The status of ``document`` (``what``: 'backup 2026... of iot (url)'), or SignatureError
        saying why it is refused and what to do. ``allow_unsigned``: this caller accepts an
        unsigned document on its own proof (prune: the copy is the local set, seal for seal)."""
        found = self.status(document, host_label)
        status = found["status"]
        if status == UNSIGNED and self.require and not (self.allow_unsigned or allow_unsigned):
            raise SignatureError(
                "%s is unsigned: it was made before manifest signing was enabled, or forged by someone who can "
                "write to the container. Refused. If you have checked where it comes from, accept it deliberately "
                "with allow_unsigned: true (restore.yml: -e restore_allow_unsigned=true)" % what,
                found,
            )
        if status == UNKNOWN_KEY:
            raise SignatureError(
                "%s is signed by key %s, which the trust store does not list for any host: refused (forged, or "
                "signed by a host whose key is not pinned - add it to tsdb_trusted_signers if it is genuine)"
                % (what, found["key_id"]),
                found,
            )
        if status == OTHER_HOST:
            raise SignatureError(
                "%s lies under host %s but is signed by key %s, which is trusted for %s only: refused (a set "
                "planted under another host's prefix?)%s"
                % (what, host_label, found["key_id"], found["signer_host"], _claim(document, host_label)),
                found,
            )
        if status == BAD_SIGNATURE or (self.trust is None and not _plausible(document)):
            raise SignatureError(
                "%s has a signature that does not verify (key %s): it was altered after it was signed. Refused; "
                "it is not restored, trusted or counted as a copy" % (what, found.get("key_id") or "?"),
                dict(found, status=BAD_SIGNATURE),
            )
        return found


def _claim(document, host_label):
    claimed = document.get("host")
    return "; it claims host %s" % claimed if isinstance(claimed, str) and claimed != host_label else ""


def _plausible(document):
    """Without a trust store, a signature cannot be checked against a key, but a malformed one is
    still damage: refused."""
    sig = document.get(SIGNATURE_KEY)
    return sig is None or (isinstance(sig, dict) and sig.get("algorithm") == ALGORITHM and "value" in sig)


def describe(status):
    """One short line of a status dict: 'trusted (key 0123..., host db01)'."""
    if not status:
        return NO_TRUST_STORE
    parts = [status["status"]]
    if status.get("key_id"):
        parts.append("key %s" % status["key_id"])
    if status.get("signer_host"):
        parts.append("host %s" % status["signer_host"])
    return parts[0] if len(parts) == 1 else "%s (%s)" % (parts[0], ", ".join(parts[1:]))


def signing_argument_spec(sign=True, trust=True, allow_unsigned=False):
    """The signing options a module takes (documented by the insa.timescaledb_backup.signing
    doc fragments): a plain dict, like _azure_settings.azure_common_argument_spec."""
    spec = {}
    if sign:
        spec["signing_key_file"] = dict(type="path")
    if trust:
        spec.update(
            trusted_signers_file=dict(type="path"),
            trusted_signers=dict(type="dict"),
            require_signatures=dict(type="bool"),
        )
    if allow_unsigned:
        spec["allow_unsigned"] = dict(type="bool", default=False)
    return spec


def policy_from(settings):
    """The Policy of module params or the runner's config (keys of signing_argument_spec; missing
    keys are unset). A key file that is given must load."""
    key_file = settings.get("signing_key_file")
    return Policy(
        signer=load_signing_key(key_file) if key_file else None,
        trust=load_trust(settings.get("trusted_signers_file"), settings.get("trusted_signers")),
        require=settings.get("require_signatures"),
        allow_unsigned=settings.get("allow_unsigned") or False,
    )


# A store or a run without signing settings: signs nothing, refuses only malformed signatures.
UNCONFIGURED = Policy()
