# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment:
    # PostgreSQL connection options shared by every module of the collection that talks to a
    # server. Keep in step with postgres_common_argument_spec() in module_utils/_pg.py.
    DOCUMENTATION = r"""
options:
  login_host:
    description:
      - Host of the PostgreSQL server, or a directory holding its Unix socket.
      - Modules run on the database host, where the matching C(pg_dump)/C(pg_restore) live.
    type: str
    default: 127.0.0.1
    aliases: [host]
  port:
    description: Port of the PostgreSQL server.
    type: int
    default: 5432
    aliases: [login_port]
  login_user:
    description: Role to connect as. Dumps need read access to every table; restores need C(CREATEDB) and ownership rights.
    type: str
    default: postgres
    aliases: [user]
  login_password:
    description:
      - Password of O(login_user). Passed to libpq through the environment of the client tools, never in their arguments.
      - Prefer O(passfile) on hosts where the password should not live in inventory.
    type: str
    aliases: [password]
  passfile:
    description: A libpq password file (mode C(0600)), used as C(PGPASSFILE).
    type: path
  sslmode:
    description: libpq C(sslmode).
    type: str
    default: prefer
    choices: [disable, allow, prefer, require, verify-ca, verify-full]
  maintenance_db:
    description: Database to connect to for cluster-level work (listing, creating, renaming and dropping databases).
    type: str
    default: postgres
  pg_bin_dir:
    description:
      - Directory of C(pg_dump), C(pg_dumpall), C(pg_restore) and C(psql).
      - By default C(/usr/lib/postgresql/<server major>/bin), then newer installed majors, then E(PATH).
      - The tools must be at least the server's major version.
    type: path
requirements:
  - psycopg2 (C(python3-psycopg2) on Debian/Ubuntu) on the database host
  - PostgreSQL client tools of the server's major version or newer on the database host
"""
