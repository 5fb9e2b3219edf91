# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment:
    # Client-side encryption (docs/SECURITY.md). Keep in step with _encryption's argument specs:
    # DOCUMENTATION is recipients, IDENTITY the identity given at run time.
    DOCUMENTATION = r"""
options:
  encryption_recipients:
    description:
      - age recipients (public keys, C(age1...), as C(age-keygen) prints them) the set's stored form is encrypted to
        before it leaves the host. The archive and the globals are encrypted with C(age) as C(pg_dump) writes them,
        into C(<file>.age) beside them in the backup directory; only that form is uploaded, and it is removed once
        the set's manifest is in Azure. The local set stays readable on this host (local restores, verification).
      - The manifest records the recipients and the sha256 and size of each encrypted file beside the plaintext's;
        a download is checked against the first before anything reads it, a decryption against the second.
      - Any recipient's identity decrypts. New recipients apply to new sets; older sets keep theirs.
      - Empty - nothing is encrypted. Needs the C(age) binary on the host (Debian package C(age)) and one-file
        archives (C(dump_jobs=1)).
      - Hidden in the module's output and log (C(no_log)) - a private key given here by mistake is refused and never
        shown; the manifests and M(insa.timescaledb_backup.backup_info) name the recipients.
    type: list
    elements: str
    default: []
requirements:
  - the age binary (1.1 or newer) on the host when O(encryption_recipients) is set
"""

    HISTORY = r"""
options:
  encryption_recipients:
    description:
      - age recipients (public keys, C(age1...)) each history object is encrypted to before it leaves the host.
        With O(verify=true) its rows are first read back into PostgreSQL from the local file (no one on this host can
        read them from Azure), then it is encrypted in O(work_dir) and uploaded; the read-back after the upload checks
        the sha256 of the ciphertext.
      - The manifest's C(object) records the stored object's sha256 and size (what retention and every download
        check) and C(encryption) - the recipients and the plaintext's sha256 and size.
      - A range whose earlier generations are encrypted gets a new generation with every live row of the range (the
        host cannot read the earlier rows to leave them out); M(insa.timescaledb_backup.history_restore) inserts only
        the rows a table lacks.
      - Empty - objects are uploaded in clear. Needs the C(age) binary on the host. Hidden in the module's output
        and log (C(no_log)), as a private key given here by mistake would be.
    type: list
    elements: str
    default: []
"""

    IDENTITY = r"""
options:
  identity:
    description:
      - The content of an age identity file (C(AGE-SECRET-KEY-1...) lines, as C(age-keygen) writes), given at run time
        to read an encrypted set held only in its encrypted form (downloaded from Azure). It reaches C(age) through
        a pipe - never written to disk, never in argv, never in the module's output.
      - Checked first against the set's recipients - an identity for none of them is refused before anything is
        decrypted. Each file is decrypted beside its encrypted form and kept only when its sha256 is the manifest's.
      - Not needed for a set taken on this host (its plaintext is here) or for a set in clear.
    type: str
requirements:
  - the age and age-keygen binaries on the host when an encrypted set is decrypted
"""
