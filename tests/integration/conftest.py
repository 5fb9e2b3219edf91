"""Fixtures shared by every integration test directory."""

import os
import subprocess

import pytest
import rig


@pytest.fixture(scope="session")
def agent_host():
    """The rig's TimescaleDB host with playbooks/setup.yml applied (backup agent venv with the
    runtime requirements, units, timers), as the product installs it. Applied once per session
    when missing; tests that run modules with the venv interpreter or start the units need it."""
    env = rig.load_env()
    c = env["TSDB_CONTAINER"]
    # Installed, and for the tests' container (a demo run points the agent at its own).
    same_container = "grep -qx 'AZURE_STORAGE_CONTAINER=\"%s\"' /etc/tsdb-backup/agent.env && " % rig.TEST_CONTAINER
    ready = rig.sh(
        c,
        same_container + "test -x /opt/tsdb-backup/venv/bin/python && /opt/tsdb-backup/venv/bin/python -c "
        "'import pyarrow, azure.storage.blob, prometheus_client' && test -e /opt/tsdb-backup/lib/tsdb_backup_run.py "
        "&& echo yes || echo no",
    ).strip()
    if ready != "yes":
        proc = subprocess.run(
            [os.path.join(rig.REPO, ".venv/bin/ansible-playbook"), "-i", "inventories/local", "playbooks/setup.yml"],
            cwd=rig.REPO,
            env=dict(os.environ, **env),
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return c
