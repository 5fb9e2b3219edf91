"""Integration tests of the Azure Blob tier against the rig's real Azurite (127.0.0.1:10000).

The settings come from .local/env.sh, parsed by the azure_env fixture (no sourced shell needed).
Modules run for real through `ansible localhost -c local`, with the environment stripped of
AZURE_* variables so that only what a test passes counts. State is asserted with the SDK, on the
service side. Every test works in a container of its own, removed afterwards.
"""

import os
import sys
import uuid

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import azure_helpers as h  # noqa: E402
from azure.storage.blob import BlobServiceClient  # noqa: E402


@pytest.fixture(scope="session")
def azure_env():
    env = h.rig.load_env()
    for key in (
        "AZURE_STORAGE_CONNECTION_STRING",
        "AZURE_STORAGE_ACCOUNT",
        "AZURE_STORAGE_KEY",
        "AZURE_STORAGE_BLOB_ENDPOINT",
    ):
        assert env.get(key), "%s missing from %s: run `make env-up`" % (key, h.rig.ENV_FILE)
    return env


@pytest.fixture(scope="session")
def service(azure_env):
    return BlobServiceClient.from_connection_string(azure_env["AZURE_STORAGE_CONNECTION_STRING"])


@pytest.fixture
def container(service):
    """A fresh container name (not created: tests create it or ask the module to)."""
    name = "it-az-" + uuid.uuid4().hex[:12]
    yield name
    client = service.get_container_client(name)
    if client.exists():
        client.delete_container()


@pytest.fixture
def cs_args(azure_env, container):
    """Module arguments for auth_mode=connection_string into the test's container."""
    return {
        "auth_mode": "connection_string",
        "connection_string": azure_env["AZURE_STORAGE_CONNECTION_STRING"],
        "container": container,
        "create_container": True,
        "max_retries": 1,
        "retry_backoff": 0,
    }
