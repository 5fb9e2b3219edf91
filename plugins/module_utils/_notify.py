# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Notifications of failed (and optionally successful) runs: a webhook and e-mail.

Private to the collection. No Ansible imports, standard library only (urllib.request, smtplib,
email): the scheduled runner and the systemd ``OnFailure=`` notifier use it on the hosts.

``notify(config, event)`` sends one message per configured channel and returns one result per
channel; it never raises for a delivery problem, so a notification failure never hides the
failure it reports. Nothing secret leaves: the webhook URL (Slack and Teams URLs are bearer
secrets), the SMTP password, and every event field named like a secret are kept out of the
message and out of the log; free text (errors, journal lines) is scrubbed like the log is.

``main(argv)`` is the ``OnFailure=`` entry point: ``--config FILE --unit NAME [--host HOST]``
sends "unit NAME failed on HOST" with the unit's last journal lines.

Config (a dict, e.g. the JSON file the backup_agent role writes with mode 0600)::

    webhook_url: https://hooks.slack.com/services/...   # optional
    webhook_format: slack | teams | generic              # default slack
    webhook_timeout: 10                                  # seconds
    webhook_ca_file: /path/ca.pem                        # optional; the system trust store otherwise
    smtp:                                                # optional
      host: smtp.example.com
      port: 587            # default 587 with starttls, else 25
      starttls: true
      ca_file: /path/ca.pem  # optional; the system trust store otherwise
      username: ...        # optional; only ever sent after STARTTLS
      password: ...
      sender: tsdb-backup@example.com
      recipients: [ops@example.com]
      timeout: 10
    on_success: false      # also notify successful runs
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import email.message
import email.utils
import json
import os
import re
import smtplib
import socket
import ssl
import subprocess
import urllib.error
import urllib.parse
import urllib.request

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _errors, _log

WEBHOOK_FORMATS = ("slack", "teams", "generic")
DEFAULT_TIMEOUT = 10.0
MAX_ERRORS = 30
MAX_ERROR_CHARS = 2000
MAX_TEXT_CHARS = 12000
JOURNAL_LINES = 20
UNIT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9@._:\\\-]{0,254}$")
EVENT_KEYS = ("host", "run_type", "success", "summary", "errors", "when", "fields")


class NotifyConfigError(_errors.ConfigError, ValueError):
    """The notification config is unusable; the message says what to fix."""


def check_config(config):
    """Raises NotifyConfigError for a config that cannot work. Returns the config."""
    if not isinstance(config, dict):
        raise NotifyConfigError("notification config must be a dict")
    known = {"webhook_url", "webhook_format", "webhook_timeout", "webhook_ca_file", "smtp", "on_success"}
    unknown = sorted(set(config) - known)
    if unknown:
        raise NotifyConfigError("notification config: unknown keys %s" % ", ".join(unknown))
    url = config.get("webhook_url")
    if url:
        if urllib.parse.urlsplit(str(url)).scheme not in ("http", "https"):
            # Never echo the URL: it is the secret.
            raise NotifyConfigError("webhook_url must be an http:// or https:// URL")
        if config.get("webhook_format", "slack") not in WEBHOOK_FORMATS:
            raise NotifyConfigError(
                "webhook_format %r: expected one of %s" % (config.get("webhook_format"), ", ".join(WEBHOOK_FORMATS))
            )
    smtp = config.get("smtp")
    if smtp:
        if not isinstance(smtp, dict):
            raise NotifyConfigError("smtp must be a dict")
        unknown = sorted(
            set(smtp)
            - {"host", "port", "starttls", "ca_file", "username", "password", "sender", "recipients", "timeout"}
        )
        if unknown:
            raise NotifyConfigError("smtp: unknown keys %s" % ", ".join(unknown))
        if not smtp.get("host"):
            raise NotifyConfigError("smtp.host is required")
        recipients = smtp.get("recipients")
        if not isinstance(recipients, (list, tuple)) or not recipients or not all(recipients):
            raise NotifyConfigError("smtp.recipients must be a non-empty list of addresses")
        if smtp.get("username") and not smtp.get("starttls"):
            raise NotifyConfigError("smtp.username needs smtp.starttls: credentials are never sent unencrypted")
    return config


def config_secrets(config):
    """The literal strings of ``config`` that must never appear in a message or a log line."""
    secrets = []
    url = (config or {}).get("webhook_url")
    if url:
        url = str(url)
        parts = urllib.parse.urlsplit(url)
        secrets += [url, url.split("://", 1)[-1], parts.query]
        secrets += [p for p in parts.path.split("/") if len(p) >= 12]
        secrets += [v for _k, v in urllib.parse.parse_qsl(parts.query) if len(v) >= 6]
    smtp = (config or {}).get("smtp") or {}
    if isinstance(smtp, dict) and smtp.get("password"):
        secrets.append(str(smtp["password"]))
    return [s for s in secrets if s]


def _event_secrets(event):
    found = []

    def walk(value, secret):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, secret or _log.is_secret_name(k))
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v, secret)
        elif secret and value not in (None, "") and not isinstance(value, bool):
            found.append(str(value))

    walk(event, False)
    return found


def build_message(event, secrets=()):
    """The message of ``event`` as a dict: ``title``, ``lines`` (plain text), ``errors``,
    ``fields`` and the event's plain values, every string scrubbed."""
    secrets = list(secrets) + _event_secrets(event)

    def clean(value):
        return _log.scrub_text("" if value is None else str(value), secrets)

    success = bool(event.get("success"))
    host = clean(event.get("host") or socket.gethostname())
    run_type = clean(event.get("run_type") or "run")
    when = clean(event.get("when") or _log.utc_iso())
    status = "succeeded" if success else "FAILED"
    title = "tsdb-backup %s %s on %s" % (run_type, status, host)
    errors = event.get("errors") or []
    if isinstance(errors, str):
        errors = [errors]
    shown = [clean(e)[:MAX_ERROR_CHARS] for e in list(errors)[:MAX_ERRORS]]
    if len(errors) > MAX_ERRORS:
        shown.append("... %d more" % (len(errors) - MAX_ERRORS))
    fields = event.get("fields") or {}
    fields = _log.scrub_fields(fields, secrets) if isinstance(fields, dict) else {}
    summary = clean(event.get("summary")).strip()
    if "\n" in summary:  # e.g. one line per database: the title alone first, then the lines
        lines = [title] + summary.splitlines()
    else:
        lines = ["%s: %s" % (title, summary or status)]
    lines += ["host: %s" % host, "run: %s" % run_type, "when: %s" % when]
    lines += ["%s: %s" % (k, v) for k, v in sorted(fields.items())]
    if shown:
        lines.append("errors:")
        lines += ["- " + e for e in shown]
    return {
        "title": title,
        "host": host,
        "run_type": run_type,
        "success": success,
        "summary": clean(event.get("summary")),
        "when": when,
        "errors": shown,
        "fields": fields,
        "lines": lines,
    }


def _truncate(text):
    return text if len(text) <= MAX_TEXT_CHARS else text[: MAX_TEXT_CHARS - 20] + "\n... (truncated)"


def _slack_escape(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def webhook_payload(message, fmt="slack"):
    """The JSON document posted for ``message`` in ``fmt`` (slack, teams, generic)."""
    text = _truncate("\n".join(message["lines"]))
    if fmt == "slack":
        # Slack and Mattermost incoming webhooks; escaped so an error cannot @-mention a channel.
        return {"text": _slack_escape(text)}
    if fmt == "teams":
        # Teams Workflows ("When a Teams webhook request is received"): an Adaptive Card message.
        return {
            "type": "message",
            "text": text,
            "attachments": [
                {
                    "contentType": "application/vnd.microsoft.card.adaptive",
                    "content": {
                        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                        "type": "AdaptiveCard",
                        "version": "1.4",
                        "body": [
                            {
                                "type": "TextBlock",
                                "text": message["title"],
                                "weight": "Bolder",
                                "size": "Medium",
                                "color": "Good" if message["success"] else "Attention",
                                "wrap": True,
                            },
                            {"type": "TextBlock", "text": _truncate("\n\n".join(message["lines"][1:])), "wrap": True},
                        ],
                    },
                }
            ],
        }
    doc = dict((k, message[k]) for k in ("title", "host", "run_type", "success", "summary", "when", "errors", "fields"))
    doc["text"] = text
    return doc


def _http_opener(ca_file=None):
    """An opener for http and https only (urllib's default one also opens file:, ftp: and data:
    URLs), honouring the environment's proxy settings; https is verified against ``ca_file`` or
    the system trust store."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=ca_file or None)),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPRedirectHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


def send_webhook(url, payload, timeout=DEFAULT_TIMEOUT, secrets=(), ca_file=None):
    """POSTs ``payload`` as JSON. Returns ``(ok, status, error)``; never raises for delivery."""
    secrets = list(secrets) + config_secrets({"webhook_url": url})
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        return False, None, "webhook_url must be an http:// or https:// URL"
    body = json.dumps(payload).encode("utf-8")
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked above: http(s) only
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json; charset=utf-8", "User-Agent": "insa.timescaledb_backup"},
    )
    try:
        with _http_opener(ca_file).open(request, timeout=timeout) as response:
            response.read(65536)
            return True, response.status, None
    except urllib.error.HTTPError as e:
        return False, e.code, _log.scrub_text("HTTP %d %s" % (e.code, e.reason), secrets)
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        return False, None, _log.scrub_text("%s: %s" % (type(e).__name__, reason), secrets)


def build_mail(message, sender, recipients):
    mail = email.message.EmailMessage()
    mail["Subject"] = "[tsdb-backup] %s" % message["title"]
    mail["From"] = sender
    mail["To"] = ", ".join(recipients)
    mail["Date"] = email.utils.formatdate(usegmt=True)
    domain = sender.rpartition("@")[2] or "localhost"
    mail["Message-ID"] = email.utils.make_msgid("tsdb-backup", domain=domain)
    mail["X-TSDB-Backup-Host"] = message["host"]
    mail["X-TSDB-Backup-Run-Type"] = message["run_type"]
    mail["X-TSDB-Backup-Success"] = "true" if message["success"] else "false"
    mail.set_content(_truncate("\n".join(message["lines"])) + "\n")
    return mail


def send_mail(smtp, message, secrets=()):
    """Sends ``message`` through the SMTP server ``smtp`` (a config dict). Returns
    ``(ok, error)``; never raises for delivery."""
    secrets = list(secrets) + config_secrets({"smtp": smtp})
    starttls = bool(smtp.get("starttls"))
    port = int(smtp.get("port") or (587 if starttls else 25))
    timeout = float(smtp.get("timeout") or DEFAULT_TIMEOUT)
    sender = smtp.get("sender") or "tsdb-backup@%s" % socket.gethostname()
    recipients = list(smtp["recipients"])
    try:
        mail = build_mail(message, sender, recipients)
        with smtplib.SMTP(smtp["host"], port, timeout=timeout) as client:
            client.ehlo()
            if starttls:
                context = ssl.create_default_context(cafile=smtp.get("ca_file") or None)
                client.starttls(context=context)
                client.ehlo()
            if smtp.get("username"):
                client.login(str(smtp["username"]), str(smtp.get("password") or ""))
            refused = client.send_message(mail, from_addr=sender, to_addrs=recipients)
        if refused:
            return False, "recipients refused: %s" % ", ".join(sorted(refused))
        return True, None
    except (smtplib.SMTPException, OSError, ssl.SSLError, ValueError) as e:
        return False, _log.scrub_text("%s: %s" % (type(e).__name__, e), secrets)


def notify(config, event, logger=None):
    """Notifies ``event`` (host, run_type, success, summary, errors, when; optional ``fields``)
    through every channel of ``config``. Sends only failures unless ``on_success``. Returns one
    dict per channel: ``channel``, ``ok``, ``error`` (and ``status`` for the webhook)."""
    results = []
    try:
        config = check_config(config or {})
    except NotifyConfigError as e:
        if logger is not None:
            logger.error("notification not sent: %s", e)
        return [{"channel": "config", "ok": False, "error": str(e)}]
    if event.get("success") and not config.get("on_success"):
        return results
    secrets = config_secrets(config)
    message = build_message(event, secrets)
    if config.get("webhook_url"):
        fmt = config.get("webhook_format") or "slack"
        ok, status, error = send_webhook(
            config["webhook_url"],
            webhook_payload(message, fmt),
            timeout=float(config.get("webhook_timeout") or DEFAULT_TIMEOUT),
            secrets=secrets,
            ca_file=config.get("webhook_ca_file"),
        )
        results.append({"channel": "webhook", "format": fmt, "ok": ok, "status": status, "error": error})
    if config.get("smtp"):
        ok, error = send_mail(config["smtp"], message, secrets)
        results.append({"channel": "smtp", "ok": ok, "error": error})
    if logger is not None:
        for r in results:
            if r["ok"]:
                logger.info("notification sent", extra={"fields": {"channel": r["channel"], "title": message["title"]}})
            else:
                logger.warning("notification failed", extra={"fields": {"channel": r["channel"], "error": r["error"]}})
    return results


def journal_tail(unit, lines=JOURNAL_LINES, secrets=()):
    """The unit's last ``lines`` journal lines, scrubbed; a one-line explanation when the
    journal cannot be read."""
    try:
        proc = subprocess.run(
            ["journalctl", "-u", unit, "-n", str(int(lines)), "--no-pager", "-o", "cat"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            timeout=15,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as e:
        return ["(journal not available: %s)" % _log.scrub_text(e, secrets)]
    out = proc.stdout.decode("utf-8", "replace").splitlines()
    if proc.returncode != 0 and not out:
        err = proc.stderr.decode("utf-8", "replace").strip()
        return ["(journalctl exited %d: %s)" % (proc.returncode, _log.scrub_text(err, secrets))]
    return [_log.scrub_text(line, secrets) for line in out[-int(lines) :]]


def main(argv=None):
    """``OnFailure=`` entry point; returns the exit status (0: every channel delivered or none
    configured, 1: a channel failed, 2: bad arguments or config)."""
    parser = argparse.ArgumentParser(
        prog="tsdb-backup-notify", description="Notify that a systemd unit of tsdb-backup failed."
    )
    parser.add_argument("--config", required=True, help="JSON notification config (webhook_url, smtp, ...)")
    parser.add_argument("--unit", required=True, help="the unit that failed, e.g. tsdb-backup.service")
    parser.add_argument("--host", default=None, help="host name in the message (default: this host's FQDN)")
    parser.add_argument("--run-type", default=None, help="run type in the message (default: the unit name)")
    parser.add_argument("--journal-lines", type=int, default=JOURNAL_LINES)
    parser.add_argument("--log-format", choices=_log.FORMATS, default="text")
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    logger = _log.get_logger(fmt=args.log_format)
    if not UNIT_RE.match(args.unit):
        logger.error("--unit %r is not a systemd unit name", args.unit)
        return 2
    try:
        with open(args.config, "rb") as f:
            config = check_config(json.loads(f.read().decode("utf-8")))
    except (OSError, ValueError) as e:
        logger.error("cannot use notification config %s: %s", args.config, _log.scrub_text(e))
        return 2
    if os.stat(args.config).st_mode & 0o004:
        logger.warning("%s is readable by everyone; it holds secrets: chmod 0600", args.config)
    secrets = config_secrets(config)
    host = args.host or socket.getfqdn()
    event = {
        "host": host,
        "run_type": args.run_type or args.unit,
        "success": False,
        "summary": "unit %s failed on %s" % (args.unit, host),
        "errors": journal_tail(args.unit, args.journal_lines, secrets),
        "when": _log.utc_iso(),
    }
    results = notify(config, event, logger)
    if not results:
        logger.warning("no notification channel configured in %s", args.config)
    return 0 if all(r["ok"] for r in results) else 1
