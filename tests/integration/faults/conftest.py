"""The fault suite's fixtures. The suite runs on a rig instance of its own (tests/rig/faults-rig.sh:
container insa-tsdb-faults, PostgreSQL 127.0.0.1:15532, Azurite 127.0.0.1:10532, state in
.local/faults), brought up for the session and stopped at its end, so that it can run while
`make test` uses the shared rig. It must run in a pytest process of its own (tests/run-all.sh
does): the helpers read that instance's env.sh, not the shared one's."""

import os
import subprocess
import sys
import warnings

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
import rig  # noqa: E402
from proxy import FaultProxy  # noqa: E402

SCRIPT = os.path.join(rig.REPO, "tests", "rig", "faults-rig.sh")
LOCAL_DIR = os.environ.get("FAULTS_LOCAL_DIR") or os.path.join(rig.REPO, ".local", "faults")
PROXY_PORT = int(os.environ.get("FAULTS_PROXY_PORT", "10533"))


def pytest_collection_modifyitems(config, items):
    """Collected together with other tests (`pytest tests/integration`), the suite steps aside: it
    needs a pytest process of its own (tests/run-all.sh gives it one)."""
    mine = [i for i in items if str(i.path).startswith(HERE + os.sep)]
    if mine and len(mine) < len(items):
        config.hook.pytest_deselected(items=mine)
        items[:] = [i for i in items if i not in mine]
        warnings.warn(
            "tests/integration/faults deselected: it runs on a rig instance of its own, in a pytest process "
            "of its own (pytest tests/integration/faults; make test runs it beside the integration stage)",
            pytest.PytestWarning,
            stacklevel=1,
        )


@pytest.fixture(scope="session", autouse=True)
def faults_rig():
    """Brings the suite's instance up (idempotent) and points rig.py at its env.sh; stops it at
    the end unless FAULTS_KEEP_RIG=1."""
    env = dict(os.environ, FAULTS_LOCAL_DIR=LOCAL_DIR)
    up = subprocess.run([SCRIPT, "up"], env=env, capture_output=True, text=True, timeout=300, check=False)
    assert up.returncode == 0, up.stdout + up.stderr
    rig.ENV_FILE = os.path.join(LOCAL_DIR, "env.sh")
    os.environ["RIG_ENV_FILE"] = rig.ENV_FILE
    yield rig.load_env()
    if os.environ.get("FAULTS_KEEP_RIG") != "1":
        subprocess.run([SCRIPT, "down"], env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="session")
def env(faults_rig):
    return faults_rig


@pytest.fixture(scope="session")
def agent(faults_rig, agent_host):
    """The suite's container with setup.yml applied (the agent's venv, units, key). Its timers are
    stopped: the suite starts the units itself, and an hourly archive must not take the run lock
    in the middle of a test."""
    rig.sh(
        agent_host,
        "systemctl stop tsdb-backup.timer tsdb-history-archive.timer tsdb-history-retention.timer "
        "tsdb-backup-drill.timer 2>/dev/null; true",
    )
    return agent_host


@pytest.fixture
def proxy(env):
    """The fault proxy on 127.0.0.1:10533 in front of the suite's Azurite."""
    upstream = int(env["AZURE_STORAGE_BLOB_ENDPOINT"].rsplit(":", 1)[1].split("/")[0])
    p = FaultProxy(PROXY_PORT, upstream).start()
    yield p
    p.stop()
