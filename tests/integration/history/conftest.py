"""Fixtures of the history tests: the rig's settings, a private Azurite container per test
module (removed afterwards), and PostgreSQL connection settings for the core and the modules."""

import os
import sys
import uuid

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import history_helpers as hh  # noqa: E402
from azure.storage.blob import BlobServiceClient  # noqa: E402


@pytest.fixture(scope="module")
def env():
    return hh.rig.load_env()


@pytest.fixture(scope="module")
def params(env):
    return hh.pg_params(env)


@pytest.fixture(scope="module")
def container(env):
    name = "it-hist-" + uuid.uuid4().hex[:12]
    yield name
    client = BlobServiceClient.from_connection_string(env["AZURE_STORAGE_CONNECTION_STRING"]).get_container_client(name)
    if client.exists():
        client.delete_container()


@pytest.fixture(scope="module", autouse=True)
def _agent_installed(agent_host):
    """The history modules run with the backup agent's venv interpreter (pyarrow, Azure SDK)."""
    return agent_host
