# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment:
    # What the attributes every module declares mean (as community.crypto.attributes does). The
    # support most modules share comes from the named fragments below, referenced as
    # insa.timescaledb_backup.attributes.<lower-case name>; a module states any other support
    # itself, and its own details override the generic ones here.
    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
  idempotent:
    description: When run twice in a row outside check mode, with the same arguments, the second invocation indicates no change.
"""

    # Full check mode support: a module says in its own details what it checks and reports.
    CHECK_MODE = r"""
options: {}
attributes:
  check_mode:
    support: full
    details: Changes nothing in check mode and reports what a normal run would change.
"""

    # No diff mode support.
    NO_DIFF = r"""
options: {}
attributes:
  diff_mode:
    support: none
"""

    # Fully idempotent.
    IDEMPOTENT = r"""
options: {}
attributes:
  idempotent:
    support: full
"""

    # A module that only reads.
    INFO_MODULE = r"""
options: {}
attributes:
  check_mode:
    support: full
    details: Reads only, in check mode as in a normal run.
  diff_mode:
    support: N/A
    details: Changes nothing.
  idempotent:
    support: full
    details: Read-only; always C(changed=false).
"""
