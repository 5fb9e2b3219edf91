"""_log: text and JSON lines, one handler whatever the calls, scrubbing, progress, audit."""

import io
import json
import logging
import re

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _log
from obs_helpers import logger_to

TS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


def lines(stream):
    return stream.getvalue().splitlines()


def test_text_format():
    stream = io.StringIO()
    log = logger_to(stream, name="t-text")
    log.info("dump %s done", "iot", extra={"fields": {"database": "iot", "bytes": 3, "note": "two words", "ok": True}})
    log.warning("plain")
    first, second = lines(stream)
    assert re.fullmatch(TS + r' INFO dump iot done database=iot bytes=3 note="two words" ok=true', first), first
    assert re.fullmatch(TS + r" WARNING plain", second), second


def test_json_format_parses():
    stream = io.StringIO()
    log = logger_to(stream, fmt="json", name="t-json")
    log.info("dump %s done", "iot", extra={"fields": {"database": "iot", "bytes": 3, "msg": "clash"}})
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed")
    docs = [json.loads(line) for line in lines(stream)]
    assert len(docs) == 2
    assert set(docs[0]) == {"ts", "level", "msg", "database", "bytes", "msg_"}
    assert docs[0]["level"] == "INFO" and docs[0]["msg"] == "dump iot done"
    assert docs[0]["database"] == "iot" and docs[0]["bytes"] == 3 and docs[0]["msg_"] == "clash"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", docs[0]["ts"])
    assert docs[1]["level"] == "ERROR" and "RuntimeError: boom" in docs[1]["exc"]


def test_get_logger_is_idempotent_and_reconfigures():
    stream = io.StringIO()
    for _attempt in range(3):
        log = logger_to(stream, name="t-idem")
    assert len([h for h in log.handlers if isinstance(h, _log._Handler)]) == 1
    assert log.propagate is False
    log.info("once")
    assert len(lines(stream)) == 1
    log = logger_to(stream, fmt="json", name="t-idem")
    log.info("now json")
    assert len(log.handlers) == 1
    assert json.loads(lines(stream)[-1])["msg"] == "now json"


def test_default_stream_is_the_current_stderr(capsys):
    log = _log.get_logger(name="t-stderr")
    log.info("to stderr")
    assert "INFO to stderr" in capsys.readouterr().err


def test_unknown_format_is_refused():
    try:
        _log.get_logger(name="t-bad", fmt="xml")
    except ValueError as e:
        assert "text, json" in str(e)
    else:
        raise AssertionError("fmt=xml accepted")


def test_secret_fields_and_text_are_scrubbed():
    stream = io.StringIO()
    log = logger_to(stream, name="t-scrub")
    log.info(
        "connect postgresql://backup:pg-Secret-1@db1/iot password=hunter2 via https://acct.blob/c?sv=2024&sig=SiGnAtUrE",
        extra={
            "fields": {
                "db_password": "hunter2",
                "azure_account_key": "a2V5a2V5",
                "sas_token": "tok-123",
                "connection_string": "AccountKey=zzz",
                "client_secret": "cs-1",
                "nested": {"password": "n-pass", "fine": "visible"},
                "error": 'FATAL: bad "password": "hunter2" and AccountKey=abcd==;',
            }
        },
    )
    out = stream.getvalue()
    for secret in ("hunter2", "pg-Secret-1", "SiGnAtUrE", "a2V5a2V5", "tok-123", "zzz", "cs-1", "n-pass", "abcd=="):
        assert secret not in out, (secret, out)
    assert "visible" in out and "db_password=***" in out and "sig=***" in out


def test_scrub_text_literals_and_idempotence():
    assert (
        _log.scrub_text("token=abc; url http://h/hook/SECRETPATH", ["SECRETPATH"]) == "token=***; url http://h/hook/***"
    )
    once = _log.scrub_text("PGPASSWORD=x1 Authorization: Bearer abcdefghijkl")
    assert "x1" not in once and "abcdefghijkl" not in once
    assert _log.scrub_text(once) == once


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_progress_lines_with_an_injected_clock():
    stream = io.StringIO()
    log = logger_to(stream, name="t-progress")
    clock = FakeClock()
    mib = 1024 * 1024
    progress = _log.Progress(log, "dump iot", total_bytes=40 * mib, interval_seconds=10, clock=clock)
    for second in range(1, 36):  # 1 MiB per second, a callback per second
        clock.now += 1
        progress(second * mib)
    assert progress.lines == 3  # at 10, 20 and 30 s: at most once per interval
    clock.now += 5
    progress.finish(40 * mib)
    progress.finish()  # only once
    out = [re.sub("^" + TS + " ", "", line) for line in lines(stream)]
    assert out == [
        "INFO dump iot: 10.0 MiB done of 40.0 MiB (25%), 1.0 MiB/s, ETA 30 s "
        "done_bytes=10485760 elapsed_seconds=10 total_bytes=41943040 rate_bytes_per_second=1048576 eta_seconds=30",
        "INFO dump iot: 20.0 MiB done of 40.0 MiB (50%), 1.0 MiB/s, ETA 20 s "
        "done_bytes=20971520 elapsed_seconds=20 total_bytes=41943040 rate_bytes_per_second=1048576 eta_seconds=20",
        "INFO dump iot: 30.0 MiB done of 40.0 MiB (75%), 1.0 MiB/s, ETA 10 s "
        "done_bytes=31457280 elapsed_seconds=30 total_bytes=41943040 rate_bytes_per_second=1048576 eta_seconds=10",
        "INFO dump iot: finished, 40.0 MiB in 40.0 s, 1.0 MiB/s "
        "done_bytes=41943040 elapsed_seconds=40 rate_bytes_per_second=1048576",
    ]


def test_progress_without_total_has_no_eta_and_reports_failure():
    stream = io.StringIO()
    log = logger_to(stream, fmt="json", name="t-progress-json")
    clock = FakeClock()
    progress = _log.Progress(log, "upload iot", interval_seconds=5, clock=clock, fields={"database": "iot"})
    clock.now += 5
    progress.advance(5 * 1024 * 1024)
    clock.now += 1
    progress.finish(error="connection reset; password=hunter2")
    first, last = (json.loads(line) for line in lines(stream))
    assert first["msg"] == "upload iot: 5.0 MiB done, 1.0 MiB/s"
    assert "eta_seconds" not in first and "total_bytes" not in first and first["database"] == "iot"
    assert last["level"] == "WARNING" and last["msg"].startswith("upload iot: failed after 5.0 MiB in 6.0 s")
    assert "hunter2" not in stream.getvalue()


def test_audit_line_text():
    stream = io.StringIO()
    log = logger_to(stream, name="t-audit")
    record = _log.audit(
        log, "prune", database="iot", backup_ids=["20261127T020000Z", "20261128T020000Z"], password="hunter2"
    )
    (line,) = lines(stream)
    assert re.fullmatch(
        TS + r" INFO AUDIT action=prune who=\S+@\S+ when=" + TS + r" database=iot "
        r"backup_ids=20261127T020000Z,20261128T020000Z password=\*\*\*",
        line,
    ), line
    assert record["who"] == _log.who() and record["password"] == "***"


def test_audit_line_json_scrubs_secrets():
    stream = io.StringIO()
    log = logger_to(stream, fmt="json", name="t-audit-json")
    _log.audit(
        log,
        "restore_swap",
        who="alice@control",
        database="iot",
        azure_storage_key="c2VjcmV0",
        access_token="eyJ-token",
        connection_string="DefaultEndpointsProtocol=https;AccountKey=c2VjcmV0;",
        detail="swapped iot_restore into iot using sig=abc123",
    )
    doc = json.loads(stream.getvalue())
    assert doc["audit"] is True and doc["msg"] == "AUDIT"
    assert doc["action"] == "restore_swap" and doc["who"] == "alice@control" and doc["database"] == "iot"
    assert doc["azure_storage_key"] == doc["access_token"] == doc["connection_string"] == "***"
    for secret in ("c2VjcmV0", "eyJ-token", "abc123"):
        assert secret not in stream.getvalue()


def test_plain_extra_keys_are_fields():
    stream = io.StringIO()
    log = logger_to(stream, name="t-extra")
    log.log(logging.INFO, "x", extra={"database": "iot"})
    assert lines(stream)[0].endswith("INFO x database=iot")
