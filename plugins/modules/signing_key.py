#!/usr/bin/python
# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: signing_key
short_description: The host's Ed25519 key that signs its manifests - created once, never replaced
author:
  - INSA platform team (@insa)
version_added: 0.1.0
description:
  - Creates an Ed25519 private key (PEM, PKCS8) at O(path) when there is none, written with mode C(0640) and group
    O(group) before it holds the key; an existing key is never replaced (the sets it signed would lose their signer),
    only its group and mode are set.
  - Returns the public key as C(ed25519:<base64 of the raw 32 bytes>) and its id - what the trust store
    (C(trusted-signers.json), C(tsdb_trusted_signers)) lists. See docs/SIGNING.md.
  - The private key is never returned or logged.
extends_documentation_fragment: [insa.timescaledb_backup.attributes, insa.timescaledb_backup.attributes.check_mode,
  insa.timescaledb_backup.attributes.no_diff, insa.timescaledb_backup.attributes.idempotent]
attributes:
  check_mode:
    details: Reads an existing key and reports its public key; reports a missing one as a change, creating nothing.
options:
  path:
    description: Where the private key is (or is created). Its directory must exist.
    type: path
    required: true
  group:
    description: Group of the key file (the backup user's group, which reads it); unset, the group is left alone.
    type: str
requirements:
  - cryptography (2.6 or newer, for Ed25519)
seealso:
  - module: insa.timescaledb_backup.dump
"""

EXAMPLES = r"""
- name: The host's signing key
  insa.timescaledb_backup.signing_key:
    path: /etc/tsdb-backup/signing-key.pem
    group: tsdb-backup
  vars:
    ansible_python_interpreter: /opt/tsdb-backup/venv/bin/python
  register: signing
"""

RETURN = r"""
public_key:
  description: The public key, C(ed25519:<base64>); null in check mode when the key does not exist yet.
  returned: always
  type: str
  sample: ed25519:3QkYV1mGxq2vV0mC0F8y6h0a7F7J0zq7Yk1b6mX0c1M=
key_id:
  description: The key's id, the first 16 hex digits of the sha256 of the raw public key (manifests name it).
  returned: always
  type: str
  sample: 3f2a9c0d11e4b5a6
created:
  description: Whether the key was created by this run.
  returned: always
  type: bool
"""

import grp
import os
import stat

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _module_glue, _signing

KEY_MODE = 0o640


def settle(path, gid):
    """Sets the group and mode of an existing key; returns whether anything changed."""
    st = os.stat(path)
    changed = False
    if gid != -1 and st.st_gid != gid:
        os.chown(path, -1, gid)
        changed = True
    if stat.S_IMODE(st.st_mode) != KEY_MODE:
        os.chmod(path, KEY_MODE)
        changed = True
    return changed


def main():
    module = AnsibleModule(
        argument_spec=dict(path=dict(type="path", required=True), group=dict(type="str")),
        supports_check_mode=True,
    )
    _module_glue.require_lib(
        module,
        _signing.HAS_CRYPTOGRAPHY,
        _signing.CRYPTOGRAPHY_REQUIREMENT,
        _signing.CRYPTOGRAPHY_IMPORT_ERROR,
        reason="to create the host's signing key",
    )
    p = module.params
    gid = -1
    if p["group"]:
        try:
            gid = grp.getgrnam(p["group"]).gr_gid
        except KeyError:
            module.fail_json(
                msg="group %s does not exist: create the backup user first" % p["group"], error_kind="config"
            )
    exists = os.path.exists(p["path"])
    if module.check_mode and not exists:
        module.exit_json(changed=True, created=False, public_key=None, key_id=None)
    changed = False
    if exists and not module.check_mode:
        changed = _module_glue.run_module(module, None, settle, p["path"], gid)
    key, created = _module_glue.run_module(module, None, _signing.create_key_file, p["path"], gid, KEY_MODE)
    module.exit_json(changed=changed or created, created=created, public_key=key.public_text, key_id=key.key_id)


if __name__ == "__main__":
    main()
