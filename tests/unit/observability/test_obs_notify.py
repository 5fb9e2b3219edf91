"""_notify against real servers on loopback: an HTTP receiver (http.server) and an SMTP server
(aiosmtpd), plain and with STARTTLS + AUTH; no secret reaches a message or the log."""

import email
import email.policy
import io
import json
import os
import socket
import ssl
import stat

import pytest
from aiosmtpd.smtp import AuthResult
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _notify
from obs_helpers import MailSink, logger_to, make_ca_and_server_cert, start_smtp

# Fake secrets, planted in the config and in the event; none may come out.
WEBHOOK_TOKEN = "XyZ9webhookTOKENsecret0001"
SMTP_PASSWORD = "smtp-Pa55-word-zz9"
DB_PASSWORD = "pg-hunter2-secret"
SAS_SIG = "SiGsasSIGNATUREvalue77"


def failure_event(webhook_url=""):
    return {
        "host": "db1.example",
        "run_type": "backup",
        "success": False,
        "summary": "1 of 2 databases failed",
        "errors": [
            "iot: pg_dump: connection to server failed: password=%s rejected" % DB_PASSWORD,
            "iot: upload to https://acct.blob.core.windows.net/backups/x?sv=2024-01-01&sig=%s failed" % SAS_SIG,
            "notify posted to %s earlier" % webhook_url,
            "<!channel> & <b>",
        ],
        "when": "2027-01-15T02:00:07Z",
        "fields": {
            "db_password": DB_PASSWORD,
            "azure_sas_token": "sv=x&sig=" + SAS_SIG,
            "backup_id": "20270115T020000Z",
        },
    }


def secrets_absent(text, webhook_url=""):
    for secret in (WEBHOOK_TOKEN, SMTP_PASSWORD, DB_PASSWORD, SAS_SIG) + ((webhook_url,) if webhook_url else ()):
        assert secret not in text, "secret %r leaked into: %s" % (secret, text)


def hook_url(receiver):
    return receiver.url + "/services/T0ABC/B0DEF/" + WEBHOOK_TOKEN


# -- webhook


def test_slack_webhook_receives_the_failure_without_secrets(http_receiver):
    url = hook_url(http_receiver)
    stream = io.StringIO()
    log = logger_to(stream, fmt="json", name="t-notify-slack")
    results = _notify.notify({"webhook_url": url}, failure_event(url), log)
    assert results == [{"channel": "webhook", "format": "slack", "ok": True, "status": 200, "error": None}]
    (req,) = http_receiver.requests
    assert req["path"] == "/services/T0ABC/B0DEF/" + WEBHOOK_TOKEN
    assert req["headers"]["Content-Type"].startswith("application/json")
    assert list(req["json"]) == ["text"]
    text = req["json"]["text"]
    assert text.startswith("tsdb-backup backup FAILED on db1.example: 1 of 2 databases failed\n")
    assert "host: db1.example" in text and "when: 2027-01-15T02:00:07Z" in text
    assert "backup_id: 20270115T020000Z" in text and "db_password: ***" in text
    assert "- iot: pg_dump: connection to server failed: password=*** rejected" in text
    assert "sig=***" in text
    assert "&lt;!channel&gt; &amp; &lt;b&gt;" in text  # no @channel ping from an error message
    secrets_absent(req["body"], url)
    secrets_absent(stream.getvalue(), url)
    logged = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert logged[-1]["msg"] == "notification sent" and logged[-1]["channel"] == "webhook"


def test_teams_and_generic_formats(http_receiver):
    url = hook_url(http_receiver)
    for fmt in ("teams", "generic"):
        (result,) = _notify.notify({"webhook_url": url, "webhook_format": fmt}, failure_event(url))
        assert result["ok"], result
    teams, generic = (r["json"] for r in http_receiver.requests)
    card = teams["attachments"][0]
    assert teams["type"] == "message" and card["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert card["content"]["type"] == "AdaptiveCard"
    assert card["content"]["body"][0]["text"] == "tsdb-backup backup FAILED on db1.example"
    assert generic["success"] is False and generic["host"] == "db1.example" and generic["run_type"] == "backup"
    assert generic["summary"] == "1 of 2 databases failed" and len(generic["errors"]) == 4
    assert generic["fields"]["db_password"] == "***" and generic["fields"]["azure_sas_token"] == "***"
    for req in http_receiver.requests:
        secrets_absent(req["body"], url)


def test_success_is_sent_only_when_asked(http_receiver):
    event = dict(failure_event(), success=True, errors=[], summary="2 databases backed up")
    assert _notify.notify({"webhook_url": http_receiver.url + "/hook"}, event) == []
    assert http_receiver.requests == []
    (result,) = _notify.notify({"webhook_url": http_receiver.url + "/hook", "on_success": True}, event)
    assert result["ok"]
    assert http_receiver.requests[0]["json"]["text"].startswith("tsdb-backup backup succeeded on db1.example")


def test_webhook_failures_are_reported_not_raised(http_receiver):
    url = hook_url(http_receiver)
    http_receiver.status = 500
    stream = io.StringIO()
    log = logger_to(stream, name="t-notify-500")
    (result,) = _notify.notify({"webhook_url": url}, failure_event(url), log)
    assert result == {
        "channel": "webhook",
        "format": "slack",
        "ok": False,
        "status": 500,
        "error": "HTTP 500 Internal Server Error",
    }
    # A port nobody listens on (bound, never listening): connection refused, reported.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = "http://127.0.0.1:%d/services/%s" % (s.getsockname()[1], WEBHOOK_TOKEN)
        (result,) = _notify.notify({"webhook_url": dead}, failure_event(dead), log)
    assert result["ok"] is False and result["status"] is None and "Connection refused" in result["error"]
    secrets_absent(json.dumps(result), dead)
    secrets_absent(stream.getvalue(), dead)
    assert "notification failed" in stream.getvalue()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"webhook_url": "file:///etc/passwd"}, "http:// or https://"),
        ({"webhook_url": "https://h/x", "webhook_format": "discord"}, "webhook_format 'discord'"),
        ({"smtp": {"host": "h", "recipients": []}}, "recipients"),
        ({"smtp": {"host": "h", "recipients": ["a@b"], "username": "u", "password": "p"}}, "needs smtp.starttls"),
        ({"webhook": "https://h/x"}, "unknown keys webhook"),
    ],
)
def test_bad_config_is_a_result_not_an_exception(config, message):
    (result,) = _notify.notify(config, failure_event())
    assert result["channel"] == "config" and result["ok"] is False and message in result["error"]


# -- SMTP


def received_mail(sink):
    (msg,) = sink.messages
    return msg, email.message_from_bytes(msg["content"], policy=email.policy.default)


def test_mail_without_tls():
    sink = MailSink()
    server = start_smtp(sink)
    try:
        smtp = {"host": "127.0.0.1", "port": server.port, "sender": "backup@db1.example", "recipients": ["ops@ex.org"]}
        (result,) = _notify.notify({"smtp": smtp}, failure_event())
    finally:
        server.stop()
    assert result == {"channel": "smtp", "ok": True, "error": None}
    msg, mail = received_mail(sink)
    assert msg["mail_from"] == "backup@db1.example" and msg["rcpt_tos"] == ["ops@ex.org"] and not msg["tls"]
    assert mail["Subject"] == "[tsdb-backup] tsdb-backup backup FAILED on db1.example"
    assert mail["To"] == "ops@ex.org" and mail["X-TSDB-Backup-Success"] == "false"
    body = mail.get_content().replace("\r\n", "\n")  # CRLF on the wire
    assert body.startswith("tsdb-backup backup FAILED on db1.example: 1 of 2 databases failed\n")
    assert "- iot: pg_dump: connection to server failed: password=*** rejected" in body
    assert "<!channel> & <b>" in body  # mail is plain text: nothing to escape
    secrets_absent(msg["content"].decode("utf-8", "replace"))


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    return make_ca_and_server_cert(tmp_path_factory.mktemp("tls"))


def start_tls_smtp(tls_files, sink):
    _ca, cert, key = tls_files
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = auth_data.login == b"backup" and auth_data.password == SMTP_PASSWORD.encode()
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    return start_smtp(
        sink, tls_context=server_ctx, require_starttls=True, auth_require_tls=True, authenticator=authenticator
    )


def test_mail_with_starttls_and_login(tls_files):
    sink = MailSink()
    server = start_tls_smtp(tls_files, sink)
    stream = io.StringIO()
    log = logger_to(stream, name="t-notify-tls")
    smtp = {
        "host": "127.0.0.1",
        "port": server.port,
        "starttls": True,
        "ca_file": tls_files[0],
        "username": "backup",
        "password": SMTP_PASSWORD,
        "sender": "backup@db1.example",
        "recipients": ["ops@ex.org", "dba@ex.org"],
        "timeout": 5,
    }
    try:
        (ok,) = _notify.notify({"smtp": smtp}, failure_event(), log)
        (wrong,) = _notify.notify({"smtp": dict(smtp, password="not-" + SMTP_PASSWORD)}, failure_event(), log)
    finally:
        server.stop()
    assert ok == {"channel": "smtp", "ok": True, "error": None}
    msg, mail = received_mail(sink)
    assert msg["tls"] and msg["authenticated"] and msg["login"] == b"backup"
    assert msg["rcpt_tos"] == ["ops@ex.org", "dba@ex.org"]
    assert mail["Subject"] == "[tsdb-backup] tsdb-backup backup FAILED on db1.example"
    secrets_absent(msg["content"].decode("utf-8", "replace"))
    assert wrong["ok"] is False and "SMTPAuthenticationError" in wrong["error"]
    secrets_absent(wrong["error"])
    secrets_absent(stream.getvalue())


def test_starttls_checks_the_certificate(tls_files):
    """Without the test CA the server's certificate is not trusted: the mail is not sent."""
    sink = MailSink()
    server = start_tls_smtp(tls_files, sink)
    try:
        smtp = {"host": "127.0.0.1", "port": server.port, "starttls": True, "recipients": ["ops@ex.org"]}
        (result,) = _notify.notify({"smtp": smtp}, failure_event())
    finally:
        server.stop()
    assert result["ok"] is False and "CERTIFICATE_VERIFY_FAILED" in result["error"]
    assert sink.messages == []


def test_one_channel_failing_does_not_stop_the_other(http_receiver):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        smtp = {"host": "127.0.0.1", "port": s.getsockname()[1], "recipients": ["ops@ex.org"], "timeout": 2}
        results = _notify.notify({"smtp": smtp, "webhook_url": http_receiver.url + "/h"}, failure_event())
    assert [(r["channel"], r["ok"]) for r in results] == [("webhook", True), ("smtp", False)]


# -- the OnFailure= entry point


def write_config(tmp_path, config):
    path = tmp_path / "notify.json"
    path.write_text(json.dumps(config))
    os.chmod(path, 0o600)
    return str(path)


def fake_journalctl(tmp_path, monkeypatch, script):
    """journalctl is a local tool, not the network: a stand-in on PATH prints known lines and
    records its arguments."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    tool = bindir / "journalctl"
    tool.write_text('#!/bin/sh\necho "$@" > %s/journalctl.args\n%s\n' % (tmp_path, script))
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", "%s:%s" % (bindir, os.environ["PATH"]))


def test_main_sends_unit_failure_with_scrubbed_journal(tmp_path, monkeypatch, capsys, http_receiver):
    url = hook_url(http_receiver)
    fake_journalctl(
        tmp_path,
        monkeypatch,
        "printf '%s\\n' 'dump iot: 10.0 MiB done of 40.0 MiB (25%), 1.0 MiB/s, ETA 30 s' "
        "'upload failed: https://a.blob/c?sig=" + SAS_SIG + "' 'PGPASSWORD=" + DB_PASSWORD + " pg_dump exited 1'",
    )
    config = write_config(tmp_path, {"webhook_url": url, "on_success": False})
    rc = _notify.main(["--config", config, "--unit", "tsdb-backup.service", "--host", "db1.example"])
    assert rc == 0
    assert (tmp_path / "journalctl.args").read_text().split() == [
        "-u",
        "tsdb-backup.service",
        "-n",
        "20",
        "--no-pager",
        "-o",
        "cat",
    ]
    (req,) = http_receiver.requests
    text = req["json"]["text"]
    assert text.startswith("tsdb-backup tsdb-backup.service FAILED on db1.example: unit tsdb-backup.service failed")
    assert "- dump iot: 10.0 MiB done of 40.0 MiB (25%), 1.0 MiB/s, ETA 30 s" in text
    assert "sig=***" in text and "PGPASSWORD=*** pg_dump exited 1" in text
    secrets_absent(req["body"], url)
    err = capsys.readouterr().err
    assert "notification sent" in err
    secrets_absent(err, url)


def test_main_without_journal_and_with_a_failing_channel(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no journalctl at all
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = "http://127.0.0.1:%d/services/%s" % (s.getsockname()[1], WEBHOOK_TOKEN)
        config = write_config(tmp_path, {"webhook_url": url})
        assert _notify.main(["--config", config, "--unit", "tsdb-backup.service"]) == 1
    err = capsys.readouterr().err
    assert "notification failed" in err and "Connection refused" in err
    secrets_absent(err, url)


def test_main_refuses_bad_arguments(tmp_path, capsys):
    config = write_config(tmp_path, {"webhook_url": "ftp://x/y"})
    assert _notify.main(["--config", config, "--unit", "tsdb-backup.service"]) == 2
    assert _notify.main(["--config", str(tmp_path / "missing.json"), "--unit", "x.service"]) == 2
    assert _notify.main(["--config", config, "--unit", "--help-me"]) == 2
    assert _notify.main(["--unit", "x.service"]) == 2
    assert "ftp://x/y" not in capsys.readouterr().err


def test_a_multi_line_summary_follows_the_title(http_receiver):
    event = dict(failure_event(), summary="iot: FAILED, dump failed: boom\nfleet: ok, backup 20270115T020000Z")
    (result,) = _notify.notify({"webhook_url": http_receiver.url + "/h", "webhook_format": "generic"}, event)
    assert result["ok"]
    text = http_receiver.requests[0]["json"]["text"]
    assert text.startswith(
        "tsdb-backup backup FAILED on db1.example\niot: FAILED, dump failed: boom\nfleet: ok, backup 20270115T020000Z\n"
    )


def test_https_webhook_verified_against_the_given_ca(tls_files, http_receiver):
    ca, cert, key = tls_files
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    http_receiver.socket = context.wrap_socket(http_receiver.socket, server_side=True)
    url = hook_url(http_receiver).replace("http://", "https://")
    (untrusted,) = _notify.notify({"webhook_url": url}, failure_event(url))
    (trusted,) = _notify.notify({"webhook_url": url, "webhook_ca_file": ca}, failure_event(url))
    assert untrusted["ok"] is False and "CERTIFICATE_VERIFY_FAILED" in untrusted["error"]
    secrets_absent(untrusted["error"], url)
    assert trusted == {"channel": "webhook", "format": "slack", "ok": True, "status": 200, "error": None}
    (req,) = http_receiver.requests
    assert req["json"]["text"].startswith("tsdb-backup backup FAILED on db1.example")
