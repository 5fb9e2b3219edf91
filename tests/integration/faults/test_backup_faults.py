"""Faults during the nightly backup (tsdb-backup.service under the container's systemd, the real
runner, pg_dump, Azurite): kill -9 of pg_dump and of the runner at several points, PostgreSQL
restarted mid-dump, the disk filling up during the dump, Azurite stopped, Azurite answering
500/503 intermittently (the fault proxy), and the timer's run and backup.yml at once.

After each fault: no half-written set is accepted (no manifest without its archive, locally or
in Azure), the next run succeeds, `*.partial` is gone, Azure's listing (read straight from
Azurite, the archive's bytes hashed) holds every set whole, and a set restored with pg_restore
holds exactly the rows of the database (table digest): rows lost = 0."""

import os
import subprocess
import threading

import faults_helpers as fh
import pytest
from faults_helpers import rig
from proxy import Rule

pytestmark = pytest.mark.rig

DB = "flt_backup"
HOST = fh.HOST


@pytest.fixture(scope="module")
def digest(agent):
    """The live database the backups are taken of, and its digest (it does not change)."""
    assert rig.sh(agent, "test -x /opt/tsdb-backup/venv/bin/python && echo ok").strip() == "ok"
    rig.drop_database(DB)
    rig.seed(DB, devices=10, days=10, interval=60)
    yield rig.table_digest(DB)
    rig.drop_database(DB)


@pytest.fixture
def case(agent, env, digest):
    made = []

    def make(**kwargs):
        made.append(fh.Case(agent, env, DB, **kwargs))
        made[-1].digest = digest
        return made[-1]

    yield make
    for one in made:
        one.cleanup()


def test_kill9_of_pg_dump_while_it_writes(case, digest):
    k = case()
    k.unit.start()
    # Fails the test if pg_dump had already finished.
    partial = fh.kill9_once_written(k.c, "%s/*.dump.partial" % k.folder, 64 * 1024, "pg_dump")
    assert k.unit.wait() == "failed"
    assert "pg_dump" in k.unit.journal()
    assert rig.sh(k.c, "pgrep -x pg_restore || true").strip() == "", "the read during the dump outlived it"
    # The runner saw pg_dump die: nothing of the set is kept or sent.
    assert k.local() == [] and k.partials() == [], fh.local_sets(k.c, k.folder)
    assert fh.azure_sets(k.env, k.container, HOST, DB) == {}
    assert partial.endswith(".partial")
    k.next_run_recovers(digest, 1)


def test_kill9_of_the_runner_while_pg_dump_runs(case, digest):
    k = case()
    lock = fh.TableLock(DB, "devices")
    try:
        k.unit.start()
        fh.wait_lock_waiter(DB)
        fh.kill9(k.c, k.unit.main_pid())
        assert k.unit.wait() == "failed"
        assert k.unit.result() == "signal"
    finally:
        lock.release()
    # pg_dump went with its unit (systemd ends the cgroup); the killed runner could not clean up.
    assert rig.sh(k.c, "pgrep -x pg_dump || true").strip() == ""
    assert k.local() == []
    assert k.partials(), "the killed run left no partial: the fault was not where the test meant it"
    assert fh.azure_sets(k.env, k.container, HOST, DB) == {}
    k.next_run_recovers(digest, 1)  # it removes the stale partial (under the folder's lock)


@pytest.mark.parametrize(
    "held",
    [r"\.dump\?.*comp=block", r"\.manifest\.json"],
    ids=["archive-upload-started", "archive-sent-manifest-not"],
)
def test_kill9_of_the_runner_during_the_upload(case, proxy, digest, held):
    k = case(azure_port=proxy.port)
    gate = threading.Event()
    proxy.add(Rule(method="PUT", path=held, action=("hold", gate), limit=1))
    try:
        k.unit.start()
        proxy.wait_held(timeout=120)
        # The archive's blocks go to Azure while pg_dump writes; a held block never holds up the
        # dump: the set is complete locally while its first block still waits.
        fh.wait_file_bytes(k.c, "%s/*.manifest.json" % k.folder, 1)
        fh.kill9(k.c, k.unit.main_pid())
        assert k.unit.wait() == "failed"
    finally:
        gate.set()
    first = k.local()
    assert len(first) == 1  # dumped (verified, or verified by the next run): kept locally
    remote = fh.azure_sets(k.env, k.container, HOST, DB)
    # Nothing in Azure claims the set: no manifest (the manifest goes last).
    assert all("manifest" not in blobs for blobs in remote.values()), remote
    if held.startswith(r"\.manifest"):
        assert set(remote[first[0]]) == {"archive", "globals"}, remote
    else:
        assert remote == {}, remote
    ids = k.next_run_recovers(digest, 2)
    assert first[0] in ids
    assert "2 set(s) sent" in k.unit.journal()


def test_postgresql_restarted_mid_dump(case, digest):
    k = case()
    lock = fh.TableLock(DB, "devices")
    try:
        k.unit.start()
        fh.wait_lock_waiter(DB)
        rig.sh(k.c, "systemctl restart postgresql")
        assert k.unit.wait() == "failed"
    finally:
        lock.release()
    log = k.unit.journal()
    assert "ERROR dump %s" % DB in log, log
    assert k.local() == [] and k.partials() == []
    assert fh.azure_sets(k.env, k.container, HOST, DB) == {}
    rig.sh(k.c, "pg_isready -q -h 127.0.0.1 -p %s -t 60" % k.env["PGPORT"])
    k.next_run_recovers(digest, 1)


def test_disk_full_during_the_dump(case, digest):
    k = case(base=fh.SMALL)
    assert k.unit.run() == "inactive", k.unit.journal()  # a good set first: it must survive
    good = k.local()
    lock = fh.TableLock(DB, "devices")
    try:
        k.unit.start()
        fh.wait_lock_waiter(DB)
        # The small tmpfs fills up while pg_dump waits; then it writes.
        rig.sh(k.c, "dd if=/dev/zero of=%s/fill bs=1M status=none || true; df --output=avail %s" % (fh.SMALL, fh.SMALL))
    finally:
        lock.release()
    try:
        assert k.unit.wait() == "failed"
        log = k.unit.journal()
        assert "No space left on device" in log, log
        assert k.partials() == []
        assert k.local() == good  # the earlier set is kept, whole
        assert k.azure(expect=good) == good
    finally:
        rig.sh(k.c, "rm -f %s/fill" % fh.SMALL)
    k.next_run_recovers(digest, 2)


def test_azurite_stopped(case, digest):
    k = case(settings={"TSDB_BACKUP_AZURE_MAX_RETRIES": "1"})  # refused connections: no use waiting
    fh.azurite("stop")
    try:
        assert k.unit.run() == "failed"
        log = k.unit.journal()
        assert "ERROR upload %s" % DB in log, log
        kept = k.local()
        assert len(kept) == 1  # the local set stays until Azure holds it
    finally:
        fh.azurite("start")
    assert fh.azure_sets(k.env, k.container, HOST, DB) == {}
    ids = k.next_run_recovers(digest, 2)
    assert kept[0] in ids


def test_azurite_answering_500_and_503_intermittently(case, proxy, digest):
    k = case(azure_port=proxy.port)
    proxy.add(Rule(every=5, action=("status", 503)))
    proxy.add(Rule(every=7, action=("status", 500)))
    assert k.unit.run() == "inactive", k.unit.journal()
    injected = [e for e in proxy.seen() if e[2] in (500, 503)]
    assert {500, 503} <= {e[2] for e in injected}, proxy.log
    ids = k.local()
    assert len(ids) == 1
    assert k.azure(expect=ids) == ids
    assert fh.restored_digest(k.c, k.env, k.folder, ids[-1]) == digest


def test_the_timer_and_backup_yml_at_once(case, digest):
    k = case()
    lock = fh.TableLock(DB, "devices")  # holds the timer's run in pg_dump while the playbook starts
    try:
        k.unit.start()
        fh.wait_lock_waiter(DB)
        env = dict(os.environ)
        env.update(rig.load_env())
        play = subprocess.Popen(
            [
                os.path.join(rig.REPO, ".venv", "bin", "ansible-playbook"),
                "-i",
                "inventories/local",
                "playbooks/backup.yml",
                "-e",
                '{"tsdb_backup_databases": ["%s"], "tsdb_backup_dir": "%s", "tsdb_azure_container": "%s", '
                '"tsdb_backup_lock_wait_minutes": 2}' % (DB, k.dir, k.container),
            ],
            cwd=rig.REPO,
            env=dict(env, ANSIBLE_CONFIG=os.path.join(rig.REPO, "ansible.cfg")),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        # The playbook's agent_run (pipelined: its command line is the venv's interpreter alone)
        # is on the host while the timer's run still holds the run lock in pg_dump.
        fh.wait_pid(k.c, "^/opt/tsdb-backup/venv/bin/python$", timeout=120, exact=False)
        assert k.unit.state() == "activating"
    finally:
        lock.release()
    assert k.unit.wait() == "inactive", k.unit.journal()
    out = play.communicate(timeout=300)[0]
    assert play.returncode == 0, out[-3000:]
    ids = k.local()
    assert len(ids) == 2, ids  # two whole sets, one after the other
    # One after the other: the timer's set is the first, and the playbook's dump began only once
    # the timer's run had sent its set (it waited on the run lock, which is released after that).
    log = k.unit.journal()
    assert "dump %s: backup %s" % (DB, ids[0]) in log, log
    sent = [ln for ln in log.splitlines() if "upload %s: " % DB in ln and " sent" in ln][-1]
    assert ids[1] >= sent.split()[0].replace("-", "").replace(":", ""), (ids, sent)
    assert k.azure(expect=ids) == ids
    assert k.partials() == []
    assert fh.restored_digest(k.c, k.env, k.folder, ids[-1]) == digest
