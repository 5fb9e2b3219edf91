"""The scheduled run under systemd on the rig's TimescaleDB host: the storage goes away during
a run. Expected: the unit fails, the local backup is kept, last-run-success is 0 in the real
metrics file, the shipped alert rule fires on those series, a webhook arrives (runner and
OnFailure= unit), the journal shows progress before the failure; after the storage returns,
the next run uploads the kept backup (catch-up)."""

import http.server
import json
import os
import re
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "azure"))
import rig  # noqa: E402
from azure_helpers import PrivateAzurite  # noqa: E402

DB = "it_runner"
METRICS = "/var/lib/it-runner-metrics"
DROPIN = "/etc/systemd/system/tsdb-backup.service.d/it-runner.conf"
OVERRIDE = "/etc/tsdb-backup/it-runner.env"
NOTIFY = "/etc/tsdb-backup/notify.json"
RULES = os.path.join(rig.REPO, "extensions", "prometheus", "tsdb_backup.rules.yml")


class Hook(http.server.BaseHTTPRequestHandler):
    received = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Hook.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def journal(c, since):
    return rig.unit_journal(c, "tsdb-backup.service", since)


def start_run(c):
    rig.sh(c, "systemctl reset-failed tsdb-backup.service; systemctl start --no-block tsdb-backup.service")


def wait_finished(c, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = rig.sh(c, "systemctl show -p ActiveState --value tsdb-backup.service").strip()
        if state in ("failed", "inactive"):
            return state
        time.sleep(0.5)
    raise AssertionError("tsdb-backup.service did not finish in %d s" % timeout)


def test_storage_lost_during_a_scheduled_run(agent, env, tmp_path):
    c = agent
    rig.drop_database(DB)
    # A dump of a few seconds, long enough to be caught running and held.
    rig.seed(DB, devices=10, days=30, interval=60)
    azurite = PrivateAzurite(str(tmp_path / "azurite")).start()
    server = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Hook.received.clear()
    conn = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=%s;BlobEndpoint=%s;" % (
        env["AZURE_STORAGE_KEY"],
        azurite.endpoint,
    )
    rig.write_file(
        c,
        OVERRIDE,
        "\n".join(
            [
                "TSDB_BACKUP_DATABASES=%s" % DB,
                'AZURE_STORAGE_CONNECTION_STRING="%s"' % conn,
                "AZURE_STORAGE_CONTAINER=it-runner",
                "TSDB_BACKUP_AZURE_CREATE_CONTAINER=true",
                "TSDB_BACKUP_AZURE_MAX_RETRIES=1",
                "TSDB_BACKUP_AZURE_RETRY_BACKOFF=1",
                "TSDB_BACKUP_METRICS_DIR=%s" % METRICS,
                "TSDB_BACKUP_NOTIFY_CONFIG=%s" % NOTIFY,
            ]
        )
        + "\n",
        mode="0600",
    )
    rig.write_file(
        c,
        NOTIFY,
        json.dumps({"webhook_url": "http://127.0.0.1:%d/hook" % server.server_port, "webhook_format": "generic"}),
        mode="0600",
    )
    rig.sh(
        c,
        "chown tsdb-backup: %s %s && install -d -o tsdb-backup -m 0755 %s && rm -f %s/*.prom"
        % (OVERRIDE, NOTIFY, METRICS, METRICS),
    )
    rig.sh(c, "mkdir -p %s" % os.path.dirname(DROPIN))
    rig.write_file(
        c,
        DROPIN,
        "[Unit]\nOnFailure=tsdb-backup-notify@%%n.service\n[Service]\n"
        "EnvironmentFile=%s\nReadWritePaths=%s\n" % (OVERRIDE, METRICS),
    )
    rig.sh(c, "systemctl daemon-reload")
    since = rig.sh(c, "date -u '+%Y-%m-%d %H:%M:%S'").strip()
    try:
        start_run(c)
        deadline = time.monotonic() + 120
        # The storage goes away while pg_dump runs, held (SIGSTOP) until it is gone: a set is
        # committed only after its dump, so nothing of this run's set can reach Azure.
        pid = ""
        while not pid:
            pid = rig.sh(c, "pgrep -n -x pg_dump || true").strip()
            if not pid:
                assert time.monotonic() < deadline, journal(c, since)
                assert "dump %s: finished" % DB not in journal(c, since), "the dump ended before it could be held"
                time.sleep(0.05)
        rig.sh(c, "kill -STOP %s" % pid)
        try:
            azurite.stop()
        finally:
            rig.sh(c, "kill -CONT %s" % pid, check=False)
        assert wait_finished(c) == "failed"
        log = journal(c, since)
        assert "upload %s: 1 set(s) sent" % DB not in log, log
        assert re.search(r"dump %s: .*MiB" % DB, log), log
        assert log.index("dump %s: finished" % DB) < log.index("ERROR upload %s" % DB), log

        # Metrics: real file, valid exposition format, last run failed, last success never.
        prom = rig.sh(c, "cat %s/tsdb_backup_backup.prom" % METRICS)
        check = subprocess.run(
            ["promtool", "check", "metrics"], input=prom, text=True, capture_output=True, check=False
        )
        assert check.returncode == 0, check.stderr
        line = next(
            ln
            for ln in prom.splitlines()
            if ln.startswith("tsdb_backup_last_run_success{") and 'database="%s"' % DB in ln
        )
        assert float(line.rsplit(" ", 1)[1]) == 0, line
        assert_alert_fires(prom, "TsdbBackupLastRunFailed", tmp_path)

        # Webhooks: the runner's own and the OnFailure= unit's; no secret in them.
        deadline = time.monotonic() + 30
        while len(Hook.received) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        bodies = json.dumps(Hook.received)
        assert len(Hook.received) >= 2, bodies
        assert DB in bodies and "upload" in bodies
        assert env["AZURE_STORAGE_KEY"] not in bodies and env["PGPASSWORD"] not in bodies

        # The local backup was kept; with the storage back, the next run uploads it too.
        kept = rig.sh(c, "ls /var/backups/tsdb/%s/ | grep manifest.json" % DB).split()
        assert len(kept) == 1
        azurite.start()
        since = rig.sh(c, "date -u '+%Y-%m-%d %H:%M:%S'").strip()
        start_run(c)
        assert wait_finished(c) == "inactive", journal(c, since)
        log = journal(c, since)
        assert "upload %s: 2 set(s) sent" % DB in log
        # The new set was read once: verified and sent to Azure while pg_dump wrote it.
        assert re.search(r"verify \S+: archive level ok \(\d+ checks; read while it was written\)", log), log
        assert re.search(r"upload \S+: archive committed from the blocks sent while it was written", log), log
    finally:
        azurite.stop()
        server.shutdown()
        rig.sh(
            c,
            "rm -f %s %s %s && rm -rf %s /var/backups/tsdb/%s && systemctl daemon-reload && "
            "systemctl reset-failed" % (DROPIN, OVERRIDE, NOTIFY, METRICS, DB),
            check=False,
        )
        rig.drop_database(DB)


def assert_alert_fires(prom, alert, tmp_path):
    """Feeds the real series into promtool with the shipped rules and expects `alert` to fire
    (promtool fails the test when the alert set differs)."""
    series = []
    for ln in prom.splitlines():
        if ln and not ln.startswith("#"):
            name_labels, value = ln.rsplit(" ", 1)
            series.append({"series": name_labels, "values": "%sx60" % float(value)})
    test = {
        "rule_files": [RULES],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [{"eval_time": "30m", "alertname": alert, "exp_alerts": []}],
            }
        ],
    }
    path = tmp_path / "probe.test.yml"
    path.write_text(json.dumps(test))
    out = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True, text=True, check=False)
    # With exp_alerts empty, promtool fails exactly when the alert fires, and prints what it got.
    text = out.stdout + out.stderr
    assert out.returncode != 0 and "alertname: %s" % alert in text and "got:[" in text, text
    assert 'database="%s"' % DB in text.split("got:[", 1)[1], text
