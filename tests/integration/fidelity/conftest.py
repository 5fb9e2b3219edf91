"""Fixtures of the fidelity tests: the fixture database under a name that needs quoting, a
private Azure prefix, and the database's fingerprint before anything is done to it."""

import os
import shlex
import sys
import uuid

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fidelity_helpers as fx  # noqa: E402
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf  # noqa: E402


@pytest.fixture(scope="module")
def env():
    return fx.rig.load_env()


@pytest.fixture(scope="module")
def prefix():
    return "it-fidelity-" + uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def source(agent_host):
    """The fixture database and its fingerprint, taken before any backup touched it. Its local
    sets (backup.yml's backup_dir) start empty, so catch-up uploads only this run's set."""
    local = "rm -rf " + shlex.quote("/var/backups/tsdb/" + mf.database_segment(fx.SOURCE))
    fx.rig.sh(agent_host, local)
    fx.load_fixture(fx.SOURCE)
    yield {"name": fx.SOURCE, "fingerprint": fx.fingerprint_of(fx.SOURCE)}
    fx.rig.drop_database(fx.SOURCE)
    fx.rig.sh(agent_host, local)
