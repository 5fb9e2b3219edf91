import os
import sys
import uuid

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import rig  # noqa: E402


@pytest.fixture(scope="session")
def env():
    return rig.load_env()


@pytest.fixture(scope="session")
def container(env):
    return env["TSDB_CONTAINER"]


@pytest.fixture(scope="session")
def pg(env):
    """Connection options as the modules take them."""
    return {"login_host": "127.0.0.1", "port": int(env["PGPORT"]), "login_password": env["PGPASSWORD"]}


@pytest.fixture(scope="session")
def engine_db():
    """A small IoT database: 4 pumps x 10 days every 5 min (11 daily chunks), space-partitioned
    diagnostics, FKs, a bigserial, NULLs and non-ASCII text."""
    name = "it_engine"
    rig.drop_database(name)
    rig.seed(name, devices=4, days=10, interval=300)
    yield name
    rig.drop_database(name)


@pytest.fixture
def backup_dir(container):
    path = "/var/backups/it/%s" % uuid.uuid4().hex[:8]
    rig.sh(container, "mkdir -p %s && chmod 0700 /var/backups/it %s" % (path, path))
    yield path
    rig.sh(container, "rm -rf %s" % path)


def files(container, path):
    """name -> octal mode of the files under path (in the container)."""
    out = rig.sh(container, "cd %s 2>/dev/null && find . -mindepth 1 -printf '%%P %%m\\n' || true" % path)
    return dict(line.split() for line in out.splitlines() if line.strip())
