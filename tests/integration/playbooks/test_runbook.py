"""The runbook is executable: every shell block of docs/RESTORE.md runs exactly as written, with
only the inventory and the host names of the example site replaced by the local ones, in the
order of the document, against the rig; after each, the real state is checked (rows in the
restored database, the databases on the server), not only the exit status.

Section 5 (restore without the collection) is run by tests/integration/fidelity, which fills in
its three placeholder lines, and the physical restore's two blocks by tests/integration/pitr
(on a host with pgBackRest, the target time replaced by its own); this test only checks that
they are covered."""

import os
import re
import subprocess

import pytest
import rig
from azure.storage.blob import BlobServiceClient, StandardBlobTier

pytestmark = pytest.mark.rig

HOST = "tsdb-local"
RUNBOOK = os.path.join(rig.REPO, "docs", "RESTORE.md")
# What an operator replaces: their inventory and their hosts. Nothing else.
SITE = {
    "inventories/<site>": "inventories/local",
    "db01.iot.example.com": HOST,
    "db02.iot.example.com": HOST,
}


def blocks():
    with open(RUNBOOK, encoding="utf-8") as f:
        text = f.read()
    return re.findall(r"```sh\n(.*?)```", text, re.S)


def site_block(block):
    for placeholder, value in SITE.items():
        block = block.replace(placeholder, value)
    return block


def run(block):
    env = dict(os.environ, **rig.load_env())
    env["ANSIBLE_CONFIG"] = os.path.join(rig.REPO, "ansible.cfg")
    env["PATH"] = os.path.join(rig.REPO, ".venv", "bin") + os.pathsep + env["PATH"]
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", site_block(block)],
        cwd=rig.REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr


def content():
    """Rows and a digest of the ordered content of every table of iot: the real data."""
    return rig.table_digest("iot")


def kept_copies():
    return sorted(d for d in rig.databases() if d.startswith("iot__pre_restore_"))


def archive_newest_set(env):
    """Moves the newest set's archive blob of tsdb-local/iot to the Archive tier, as the default
    lifecycle policy does after 365 days."""
    box = BlobServiceClient.from_connection_string(env["AZURE_STORAGE_CONNECTION_STRING"]).get_container_client(
        env["AZURE_STORAGE_CONTAINER"]
    )
    dumps = sorted(
        b.name for b in box.list_blobs(name_starts_with="backups/%s/iot/" % HOST) if b.name.endswith(".dump")
    )
    box.get_blob_client(dumps[-1]).set_standard_blob_tier(StandardBlobTier.ARCHIVE)
    return dumps[-1]


@pytest.fixture(scope="module")
def backed_up(agent_host):
    rc, out = rig.playbook("backup.yml", {})
    assert rc == 0, out[-3000:]
    yield content()
    for name in kept_copies():
        rig.drop_database(name)


def test_every_block_of_the_runbook_is_tested():
    found = blocks()
    assert len(found) >= 5, found
    assert "SET_URL=" in found[-1], "section 5 must stay the last block (tests/integration/fidelity runs it)"
    with open(os.path.join(rig.REPO, "tests", "integration", "fidelity", "test_fidelity.py")) as f:
        assert "## 5. Restore without the collection" in f.read()
    # Every other block is one of the steps below: a new block needs a step here.
    steps = ["list", "restore", "rebuild", "rehydrate", "physical", "physical-rebuild"]
    assert [step_of(b) for b in found[:-1]] == steps, found[:-1]
    with open(os.path.join(rig.REPO, "tests", "integration", "pitr", "test_pitr.py")) as f:
        pitr = f.read()
    assert 'run_runbook("physical", ' in pitr and 'run_runbook("physical-rebuild", ' in pitr


def step_of(block):
    if "restore_method=physical" in block:
        return "physical-rebuild" if "playbooks/setup.yml" in block else "physical"
    if "playbooks/backups.yml" in block:
        return "list"
    if "restore_rehydrate=true" in block:
        return "rehydrate"
    if "restore_source_host" in block:
        return "rebuild"
    if "playbooks/restore.yml" in block:
        return "restore"
    return "unknown"


def test_the_runbook_blocks_run_as_written(backed_up):
    by_step = {step_of(b): b for b in blocks()[:-1]}

    rc, out = run(by_step["list"])
    assert rc == 0, out[-3000:]
    assert "iot from %s:" % HOST in out and "BACKUP ID" in out, out[-3000:]
    # '*' marks the latest set, the one restore.yml takes.
    assert re.search(r"\* \d{8}T\d{6}Z", out), out[-3000:]

    before = kept_copies()
    rc, out = run(by_step["restore"])
    assert rc == 0, out[-3000:]
    assert content() == backed_up
    assert len(kept_copies()) == len(before) + 1, "the replaced database is kept"

    rc, out = run(by_step["rebuild"])
    assert rc == 0, out[-3000:]
    assert content() == backed_up

    # A set in the Archive tier: the plain restore stops, changes nothing and names the variable.
    archive_newest_set(rig.load_env())
    kept = kept_copies()
    rc, out = run(by_step["restore"])
    assert rc != 0 and "Nothing was restored" in out and "-e restore_rehydrate=true" in out, out[-3000:]
    assert kept_copies() == kept and content() == backed_up
    # The documented block: the first run starts the rehydration and stops, the same command
    # again restores (Azurite rehydrates at once; Azure takes hours).
    rc, out = run(by_step["rehydrate"])
    assert rc != 0 and "Run the same command again" in out, out[-3000:]
    rc, out = run(by_step["rehydrate"])
    assert rc == 0, out[-3000:]
    assert content() == backed_up
