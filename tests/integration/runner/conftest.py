"""Fixtures of the scheduled-run tests: the rig's environment and a host set up by setup.yml."""

import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import rig  # noqa: E402


@pytest.fixture(scope="session")
def agent(env):
    c = env["TSDB_CONTAINER"]
    if rig.sh(c, "test -e /opt/tsdb-backup/lib/tsdb_backup_run.py && echo yes || echo no").strip() != "yes":
        rc = subprocess.run(
            [os.path.join(rig.REPO, ".venv/bin/ansible-playbook"), "-i", "inventories/local", "playbooks/setup.yml"],
            cwd=rig.REPO,
            env=dict(os.environ, **env),
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert rc.returncode == 0, rc.stdout[-3000:]
    return c


@pytest.fixture(scope="session")
def env():
    return rig.load_env()
