"""One play of one task, run locally by ansible-playbook with the json callback: how the unit
tests evaluate the roles' own templates and expressions with the real Jinja and filters."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def playbook_binary():
    """The venv's ansible-playbook (or the PATH's); skips the test without one."""
    binary = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    if not os.path.exists(binary):
        binary = shutil.which("ansible-playbook")
    if binary is None:
        pytest.skip("ansible-playbook is not installed")
    return binary


def run_one_task(tmp, inventory, play):
    """Runs ``play`` (one task) against ``inventory`` (a dict) in ``tmp``; returns that task's
    results by host."""
    binary = playbook_binary()
    (tmp / "inventory.yml").write_text(yaml.safe_dump(inventory, sort_keys=False))
    (tmp / "play.yml").write_text(yaml.safe_dump([play]))
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"),
        ANSIBLE_LOCAL_TEMP=str(tmp),
        ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json",
        ANSIBLE_NOCOLOR="1",
    )
    proc = subprocess.run(
        [binary, "-i", str(tmp / "inventory.yml"), str(tmp / "play.yml")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    (task,) = json.loads(proc.stdout)["plays"][0]["tasks"]
    return task["hosts"]
