"""What the production scenario stands in for on the control node, started by prepare.yml and
stopped by cleanup.yml (and by the next prepare), each by the PID it recorded:

- azurite: a private Azurite (the rig's pinned build) whose only account is the example
  inventory's storage account (insaiotbackups), on 127.0.0.1:10461, with its own data folder;
  the rig's shared Azurite on :10000 is never touched.
- webhook: a loopback HTTP receiver for the notifications (Slack format): every POST is
  appended to webhook.jsonl as {"path", "headers", "body"}; it answers 200.
- arm: tests/integration/azure/arm_double.py (Azure Resource Manager's management-policy
  endpoint) on 127.0.0.1:18462 for the lifecycle policy, with the example inventory's
  subscription, resource group and account; every request and the stored policy go to arm.json.

    python control_node.py start STATE_DIR      # stops what an earlier run left, starts all three
    python control_node.py stop STATE_DIR
"""

import http.server
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent.parent
AZURITE_BIN = "/var/cache/insa-timescaledb-backup-rig/azurite-3.35.0/node_modules/.bin/azurite-blob"
# The example inventory's storage account, with a key of the scenario's own (base64 of 64 bytes).
ACCOUNT = "insaiotbackups"
ACCOUNT_KEY = "bW9sZWN1bGUtcHJvZHVjdGlvbi1henVyaXRlLWtleS1ub3QtYS1zZWNyZXQtMDAwMDAwMDAwMDAwMDAwMDAwMDA="
PORTS = {"azurite": 10461, "webhook": 18461, "arm": 18462}
ARM = {"subscription": "00000000-0000-0000-0000-000000000000", "resource_group": "rg-iot-backups", "account": ACCOUNT}
ARM_TOKEN = "molecule-production-arm-token"  # noqa: S105 - the double's own test token


def listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def stop(state):
    for name in PORTS:
        pidfile = state / (name + ".pid")
        if not pidfile.exists():
            continue
        pid = int(pidfile.read_text())
        try:
            os.kill(pid, signal.SIGTERM)  # Azurite saves its metadata on SIGTERM
            for _attempt in range(60):
                time.sleep(0.25)
                os.kill(pid, 0)
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        pidfile.unlink()
        print("stopped %s (pid %d)" % (name, pid))


def start(state):
    stop(state)
    state.mkdir(parents=True, exist_ok=True)
    for name, port in PORTS.items():
        if listening(port):
            sys.exit("127.0.0.1:%d (%s) is taken by a process this scenario did not start" % (port, name))
    (state / "webhook.jsonl").write_text("")
    (state / "arm.json").write_text("{}")
    azurite_data = state / "azurite"
    if azurite_data.exists():
        subprocess.run(["rm", "-rf", str(azurite_data)], check=True)
    azurite_data.mkdir()
    commands = {
        "azurite": [
            AZURITE_BIN,
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(PORTS["azurite"]),
            "--location",
            str(azurite_data),
            "--skipApiVersionCheck",
            "--loose",
            "--disableTelemetry",
        ],
        "webhook": [sys.executable, __file__, "serve-webhook", str(state)],
        "arm": [sys.executable, __file__, "serve-arm", str(state)],
    }
    env = dict(os.environ, AZURITE_ACCOUNTS="%s:%s" % (ACCOUNT, ACCOUNT_KEY))
    for name, argv in commands.items():
        with open(state / (name + ".log"), "ab") as log:
            proc = subprocess.Popen(  # noqa: S603 - fixed argv
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
            )
        (state / (name + ".pid")).write_text(str(proc.pid))
        deadline = time.monotonic() + 30
        while not listening(PORTS[name]):
            if proc.poll() is not None or time.monotonic() > deadline:
                stop(state)
                sys.exit("%s did not start; see %s" % (name, state / (name + ".log")))
            time.sleep(0.1)
        print("started %s on 127.0.0.1:%d (pid %d)" % (name, PORTS[name], proc.pid))


def serve_webhook(state):
    out = state / "webhook.jsonl"

    class Receiver(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = body.decode("utf-8", "replace")
            with open(out, "a", encoding="utf-8") as f:
                f.write(json.dumps({"path": self.path, "headers": dict(self.headers), "body": parsed}) + "\n")
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    http.server.ThreadingHTTPServer(("127.0.0.1", PORTS["webhook"]), Receiver).serve_forever()


def serve_arm(state):
    sys.path.insert(0, str(ROOT / "tests" / "integration" / "azure"))
    from arm_double import ArmDouble  # noqa: PLC0415 - the test double of the integration tests

    def record(double):
        data = {"requests": double.requests, "rejected": double.rejected, "policy": double.policy}
        tmp = state / "arm.json.tmp"
        tmp.write_text(json.dumps(data))
        tmp.replace(state / "arm.json")

    double = ArmDouble(token=ARM_TOKEN, port=PORTS["arm"], on_request=record, **ARM).start()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            time.sleep(3600)
    finally:
        double.stop()


if __name__ == "__main__":
    command, folder = sys.argv[1], pathlib.Path(sys.argv[2])
    {"start": start, "stop": stop, "serve-webhook": serve_webhook, "serve-arm": serve_arm}[command](folder)
