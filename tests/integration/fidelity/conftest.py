"""Fixtures of the fidelity tests: the hard database of tests/fixtures/fidelity.sql under a name
that needs quoting, a private Azure prefix, and its fingerprint before anything is done to it."""

import os
import shlex
import sys
import uuid

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "history"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "..", "collections"))
import fingerprint as fp  # noqa: E402
import rig  # noqa: E402
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf  # noqa: E402
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


@pytest.fixture(scope="module")
def env():
    return rig.load_env()


@pytest.fixture(scope="module")
def prefix():
    return "it-fidelity-" + uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def source(agent_host):
    """The fixture database and its fingerprint, taken before any backup touched it. Its local
    sets (backup.yml's backup_dir) start empty, so catch-up uploads only this run's set."""
    local = "rm -rf " + shlex.quote("/var/backups/tsdb/" + mf.database_segment(SOURCE))
    rig.sh(agent_host, local)
    load_fixture(SOURCE)
    yield {"name": SOURCE, "fingerprint": fingerprint_of(SOURCE)}
    rig.drop_database(SOURCE)
    rig.sh(agent_host, local)
