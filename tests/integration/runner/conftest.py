"""Fixtures of the scheduled-run tests: the rig's environment and a host set up by setup.yml."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import rig  # noqa: E402


@pytest.fixture(scope="session")
def agent(agent_host):
    return agent_host


@pytest.fixture(scope="session")
def env():
    return rig.load_env()
