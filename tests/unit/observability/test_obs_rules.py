"""Alert rules: promtool checks them and runs their unit tests; they read only metrics _metrics
writes; and real output of a failed upload makes them fire."""

import io
import os
import subprocess

import yaml
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _log, _metrics, _notify
from obs_helpers import logger_to, parse_prom, promql_metric_names

PROMTOOL = "/usr/bin/promtool"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
RULES = os.path.join(REPO, "extensions", "prometheus", "tsdb_backup.rules.yml")
RULE_TESTS = os.path.join(REPO, "tests", "prometheus", "tsdb_backup.rules.test.yml")


def load(path):
    with open(path) as f:
        return yaml.safe_load(f)


def alerts():
    return [r for g in load(RULES)["groups"] for r in g["rules"] if "alert" in r]


def promtool(*args, cwd=REPO):
    proc = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, cwd=cwd, timeout=60, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def test_promtool_check_rules():
    rc, out = promtool("check", "rules", RULES)
    assert rc == 0 and "SUCCESS: %d rules found" % len(alerts()) in out, out


def test_promtool_test_rules():
    rc, out = promtool("test", "rules", os.path.relpath(RULE_TESTS, REPO))
    assert rc == 0 and "SUCCESS" in out, out


def test_every_alert_is_tested_firing_and_not_firing():
    cases = {}
    for test in load(RULE_TESTS)["tests"]:
        for case in test.get("alert_rule_test", []):
            cases.setdefault(case["alertname"], set()).add(bool(case["exp_alerts"]))
    assert {a["alert"]: {True, False} for a in alerts()} == cases


def test_rules_read_only_metrics_that_are_written(written_metric_names):
    for rule in alerts():
        names = promql_metric_names(rule["expr"])
        assert names, rule["alert"]
        assert names <= written_metric_names, (rule["alert"], names - written_metric_names)


def test_a_failed_upload_raises_alerts_a_webhook_and_leaves_progress_in_the_log(tmp_path, http_receiver):
    """The library side of issue 6's "done when": an upload dies midway; the log shows progress
    lines before the failure, the metrics the run writes make promtool fire the alerts, and the
    failure notification reaches a webhook. (The runner's own test kills a real upload.)"""
    stream = io.StringIO()
    log = logger_to(stream, name="t-done-when")
    clock = iter(float(t) for t in range(100))
    progress = _log.Progress(log, "upload iot", total_bytes=64 << 20, interval_seconds=1, clock=lambda: next(clock))
    source = tmp_path / "set.dump"
    source.write_bytes(os.urandom(1 << 20) * 64)
    sent, error = 0, None
    try:
        with open(source, "rb") as f:
            while True:
                block = f.read(4 << 20)
                if not block:
                    break
                if sent >= 32 << 20:
                    raise ConnectionResetError("upload killed midway")
                sent += len(block)
                progress(sent)
    except ConnectionResetError as e:
        error = str(e)
        progress.finish(error=error)
    out = stream.getvalue().splitlines()
    assert any("upload iot: " in line and "MiB done of 64.0 MiB" in line for line in out[:-1])
    assert "failed after 32.0 MiB" in out[-1] and "upload killed midway" in out[-1]

    textfile, state = str(tmp_path / "textfile"), str(tmp_path / "state")
    result = {"database": "iot", "success": False, "upload_bytes": sent, "pending_uploads": 1, "error": error}
    _metrics.write_run_metrics(textfile, state, "db1", "upload", [result])

    # Every series of the real files, held for 7 hours, through the shipped rules.
    series = []
    for name in sorted(os.listdir(textfile)):
        for (metric, labels), value in sorted(parse_prom(os.path.join(textfile, name))[0].items()):
            matchers = ",".join('%s="%s"' % kv for kv in sorted(labels) if kv[1])
            series.append({"series": "%s{%s}" % (metric, matchers), "values": "%rx420" % value})
    test = {
        "rule_files": [RULES],
        "evaluation_interval": "5m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "promql_expr_test": [
                    {
                        "expr": 'ALERTS{alertstate="firing"}',
                        "eval_time": "6h10m",
                        "exp_samples": [
                            {
                                "labels": 'ALERTS{alertname="TsdbBackupLastRunFailed",alertstate="firing",'
                                'run_type="upload",host="db1",database="iot",severity="warning"}',
                                "value": 1,
                            },
                            {
                                "labels": 'ALERTS{alertname="TsdbBackupUploadBacklog",alertstate="firing",'
                                'host="db1",database="iot",severity="warning"}',
                                "value": 1,
                            },
                        ],
                    }
                ],
            }
        ],
    }
    test_file = tmp_path / "failed_upload.test.yml"
    test_file.write_text(yaml.safe_dump(test))
    rc, out = promtool("test", "rules", str(test_file))
    assert rc == 0 and "SUCCESS" in out, out

    config = {"webhook_url": http_receiver.url + "/hooks/T0000/B0000/XXXXXXXXXXXXXXXXXXXXXXXX"}
    event = {
        "host": "db1",
        "run_type": "upload",
        "success": False,
        "summary": "1 of 1 database failed",
        "errors": ["iot: " + error],
        "when": _log.utc_iso(),
    }
    assert _notify.notify(config, event, log) == [
        {"channel": "webhook", "format": "slack", "ok": True, "status": 200, "error": None}
    ]
    (request,) = http_receiver.requests
    assert "tsdb-backup upload FAILED on db1" in request["json"]["text"]
    assert "iot: upload killed midway" in request["json"]["text"]
