"""Helpers of the fidelity tests: the hard database of tests/fixtures/fidelity.sql under a name
that needs quoting, and its fingerprint (a module of its own: test files import it by name)."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "history"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "..", "collections"))
import fingerprint as fp  # noqa: E402
import rig  # noqa: E402
from psycopg2 import sql  # noqa: E402

FIXTURE = os.path.join(rig.REPO, "tests", "fixtures", "fidelity.sql")
# A database name with a space, a double quote, non-ASCII and an emoji: its folder and blob
# names are escaped, and every tool and playbook has to pass it through intact.
SOURCE = 'it fidélité "db" 🚀'


def create_database(name):
    rig.drop_database(name)
    rig.query("postgres", sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def load_fixture(name):
    create_database(name)
    conn = rig.connect(name)
    try:
        with open(FIXTURE, encoding="utf-8") as f, conn.cursor() as cur:
            cur.execute(f.read())
    finally:
        conn.close()


def fingerprint_of(name):
    conn = rig.connect(name)
    try:
        return fp.fingerprint(conn)
    finally:
        conn.close()
