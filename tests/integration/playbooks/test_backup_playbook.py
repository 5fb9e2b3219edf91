"""backup.yml end to end on the rig: setup.yml, then a run where one database is broken.
The good one is dumped, verified and in Azurite; the summary names the broken one; rc != 0."""

import http.server
import json
import os
import shlex
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import rig  # noqa: E402


def test_one_broken_database_does_not_stop_the_others():
    from azure.storage.blob import BlobServiceClient

    env = rig.load_env()
    good = "it_playbook"
    rig.drop_database(good)
    # Local sets of earlier runs would be caught up into this run's prefix too.
    rig.sh(env["TSDB_CONTAINER"], "rm -rf /var/backups/tsdb/%s" % good)
    rig.seed(good, devices=2, days=3, interval=600)
    try:
        rc, out = rig.playbook("setup.yml", {})
        assert rc == 0, out
        # A prefix of its own: the demo lists backups/ of the same container.
        prefix = "it-playbook-" + uuid.uuid4().hex[:6]
        rc, out = rig.playbook(
            "backup.yml", {"tsdb_backup_databases": [good, "it_no_such_db"], "tsdb_azure_prefix": prefix}
        )
        assert rc != 0, "a failed database must fail the run"
        table = out[out.index("HOST ") :]
        good_line = next(ln for ln in table.splitlines() if good in ln)
        bad_line = next(ln for ln in table.splitlines() if "it_no_such_db" in ln)
        # HOST DATABASE ID SIZE UNIT SECONDS VERIFIED UPLOADED, no ERROR: verified, one set uploaded.
        assert good_line.split()[-2:] == ["archive", "1"], good_line
        assert "does not exist" in bad_line
        assert "Backups failed on: tsdb-local" in out

        backup_id = good_line.split()[2]
        listing = rig.sh(env["TSDB_CONTAINER"], "stat -c '%%U %%a %%n' /var/backups/tsdb/%s/%s.*" % (good, backup_id))
        assert all(line.startswith("tsdb-backup 600 ") for line in listing.splitlines()), listing
        svc = BlobServiceClient.from_connection_string(env["AZURE_STORAGE_CONNECTION_STRING"])
        names = [
            b.name
            for b in svc.get_container_client(env["AZURE_STORAGE_CONTAINER"]).list_blobs(
                name_starts_with="%s/tsdb-local/%s/" % (prefix, good)
            )
        ]
        assert sorted(n.rsplit("/", 1)[1] for n in names if backup_id in n) == [
            backup_id + ".dump",
            backup_id + ".globals.sql",
            backup_id + ".manifest.json",
        ]
    finally:
        rig.drop_database(good)


# --- one pipeline: backup.yml and the nightly unit leave the same traces ----------------------

AGENT_ENV = "/etc/tsdb-backup/agent.env"
SAME_METRICS = "/var/lib/it-same-metrics"
SAME_NOTIFY = "/etc/tsdb-backup/it-same-notify.json"


class Hook(http.server.BaseHTTPRequestHandler):
    received = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        Hook.received.append(json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0)))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def series(c, job):
    """(name, labels) -> value of a run's metrics file, without the values of times and sizes."""
    text = rig.sh(c, "cat %s/tsdb_backup_%s.prom" % (SAME_METRICS, job))
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = None if "timestamp" in key or "duration" in key or "bytes" in key else value
    return out


def timer_run(c, job, databases, prefix):
    """What the agent's units run, with the role's settings files (one override: the list)."""
    script = (
        "set -a; . %s; . /etc/tsdb-backup/credentials.env; set +a; export TSDB_BACKUP_DATABASES=%s "
        "TSDB_BACKUP_AZURE_PREFIX=%s; runuser -u tsdb-backup -- /opt/tsdb-backup/venv/bin/python "
        "/opt/tsdb-backup/lib/tsdb_backup_run.py %s >/dev/null 2>&1; echo $?"
        % (AGENT_ENV, shlex.quote(json.dumps(databases)), prefix, "run" if job == "backup" else job)
    )
    return int(rig.sh(c, script).strip())


def playbook_run(c, job, databases, prefix):
    name = "backup.yml" if job == "backup" else "drill.yml"
    rc, _out = rig.playbook(name, {"tsdb_backup_databases": databases, "tsdb_azure_prefix": prefix})
    return rc


def traces(c, run, job, databases, prefix):
    rig.sh(c, "rm -f %s/*.prom" % SAME_METRICS)
    Hook.received.clear()
    status = run(c, job, databases, prefix)
    deadline = time.monotonic() + 30
    while not Hook.received and time.monotonic() < deadline:
        time.sleep(0.2)
    (message,) = Hook.received
    return status, series(c, job), {k: message[k] for k in ("host", "run_type", "success", "errors")}


def test_the_playbook_and_the_timer_leave_the_same_traces(agent_host):
    c = agent_host
    db = "it_same"
    rig.drop_database(db)
    rig.seed(db, devices=2, days=2, interval=900)
    server = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook = json.dumps(
        {
            "webhook_url": "http://127.0.0.1:%d/hook" % server.server_port,
            "webhook_format": "generic",
            "on_success": True,
        }
    )
    rig.write_file(c, SAME_NOTIFY, hook, mode="0600")
    saved = rig.sh(c, "cat %s" % AGENT_ENV)
    rig.sh(c, "chown tsdb-backup: %s && install -d -o tsdb-backup -m 0755 %s" % (SAME_NOTIFY, SAME_METRICS))
    # The settings the role writes, pointing both paths at a metrics directory and a webhook.
    rig.write_file(
        c,
        AGENT_ENV,
        saved + 'TSDB_BACKUP_METRICS_DIR="%s"\nTSDB_BACKUP_NOTIFY_CONFIG="%s"\n' % (SAME_METRICS, SAME_NOTIFY),
        mode="0640",
    )
    rig.sh(c, "chgrp tsdb-backup %s" % AGENT_ENV)
    prefix = "it-same-" + uuid.uuid4().hex[:6]
    try:
        cases = (
            ("backup", [db], True),
            ("backup", [db, "it_same_missing"], False),
            ("drill", [db], True),
            ("drill", [db, "it_same_missing"], False),
        )
        for job, databases, ok in cases:
            timer = traces(c, timer_run, job, databases, prefix)
            play = traces(c, playbook_run, job, databases, prefix)
            assert (timer[0] == 0, play[0] == 0) == (ok, ok), (job, databases, timer[0], play[0])
            assert timer[1] == play[1], "metrics differ:\n%s\n%s" % (timer[1], play[1])
            assert timer[2] == play[2] and timer[2]["success"] is ok, (timer[2], play[2])
            success = [v for k, v in timer[1].items() if k.startswith("tsdb_backup_host_last_run_success")]
            assert success == ["1.0" if ok else "0.0"], timer[1]
    finally:
        rig.write_file(c, AGENT_ENV, saved, mode="0640")
        rig.sh(c, "chgrp tsdb-backup %s; rm -rf %s %s" % (AGENT_ENV, SAME_METRICS, SAME_NOTIFY))
        server.shutdown()
        rig.drop_database(db)
