# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment:
    # Signed manifests (docs/SIGNING.md). Keep in step with _signing.signing_argument_spec():
    # DOCUMENTATION is sign=True, TRUST trust=True, ALLOW_UNSIGNED allow_unsigned=True.
    DOCUMENTATION = r"""
options:
  signing_key_file:
    description:
      - This host's Ed25519 private key (PEM, PKCS8), which signs every manifest the module writes - backup sets,
        safety backups, history manifests. The manifest gets C(signature) (C(algorithm), C(key_id), C(value)) over
        its content; its C(manifest_sha256) is computed afterwards and covers the signature too.
      - The file must be mode C(0600) or C(0640) (never readable by others); role C(insa.timescaledb_backup.backup_agent)
        creates it (C(/etc/tsdb-backup/signing-key.pem), C(0640) root and the backup group).
      - Unset, manifests are written unsigned, as before signing existed.
    type: path
requirements:
  - cryptography (2.6 or newer, for Ed25519) when a signing option is set; it comes with azure-storage-blob
"""

    TRUST = r"""
options:
  trusted_signers_file:
    description:
      - 'A JSON file mapping host labels to the public keys trusted to sign that host''s sets,
        C({"db01": ["ed25519:<base64>"], "_comment": "..."}) (keys starting with C(_) are comments). Role
        C(insa.timescaledb_backup.backup_agent) writes C(/etc/tsdb-backup/trusted-signers.json) with the keys of every
        host of the play and C(tsdb_trusted_signers).'
      - With a trust store (this file and/or O(trusted_signers)), a manifest read from the container (or before a
        restore) is trusted only when its signature verifies with a key listed for the host it lies under and claims.
        A key listed for another host (C(other-host)), a key not listed at all (C(unknown-key)) and a signature that
        does not verify (C(bad-signature)) are refused as integrity errors; unsigned manifests are refused unless
        O(require_signatures=false) or, where the module has it, C(allow_unsigned=true).
      - Without a trust store nothing is checked (the behaviour before signing); the module reports
        C(unsigned, no trust store).
    type: path
  trusted_signers:
    description:
      - The same as O(trusted_signers_file), as a dict (host label -> list of C(ed25519:...) keys); both together
        are their union. For keys pinned in the inventory (C(tsdb_trusted_signers)), for example of a dead host whose
        backups are restored elsewhere.
    type: dict
  require_signatures:
    description:
      - Refuse unsigned manifests. Default - V(true) when a trust store is given, else V(false).
      - Retention of history never drops chunks on the word of an unsigned manifest while this is true.
    type: bool
"""

    ALLOW_UNSIGNED = r"""
options:
  allow_unsigned:
    description:
      - Accept an unsigned manifest (a set made before signing was enabled) this once, after you have checked where
        it comes from. Never accepts a bad signature or a key of another host.
    type: bool
    default: false
"""
