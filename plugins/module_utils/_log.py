# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Logging for the scheduled runs: text or JSON lines on stderr, progress, audit lines.

Private to the collection. No Ansible imports, standard library only: the scheduled runner
and the ``OnFailure=`` notifier use this on the database hosts.

- ``get_logger(fmt="text")`` writes ``2026-11-27T02:00:01Z INFO message key=value`` lines,
  ``fmt="json"`` one JSON object per line (``ts``, ``level``, ``msg`` and the extra fields).
  Both go to stderr, where systemd hands them to the journal.
- Extra fields come from ``extra={"fields": {...}}`` (or plain ``extra={...}`` keys).
- Nothing secret is logged: a field whose name contains password, secret, key, token,
  connection_string (see ``SECRET_NAME_RE``) is written as ``***``, and free text is
  scrubbed of ``password=...``-style assignments, URL credentials and SAS signatures.
- ``Progress`` turns "bytes written so far" callbacks into a line at most every
  ``interval_seconds``: done, total, rate, ETA.
- ``audit()`` writes one ``AUDIT action=... who=... when=...`` line per destructive action.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import getpass
import json
import logging
import os
import re
import socket
import sys
import threading
import time

DEFAULT_NAME = "tsdb-backup"
FORMATS = ("text", "json")
REDACTED = "***"
MIB = 1024 * 1024

# A field is secret when its name contains one of these (case-insensitive). The rule is
# deliberately broad: a false positive hides a harmless value, a false negative leaks one.
SECRET_NAME_RE = re.compile(r"password|passwd|secret|key|token|connection_string|credential|authorization", re.I)

_SECRET_WORDS = r"[A-Za-z_\-]*(?:password|passwd|pwd|secret|token|key|connection_string|credential)[A-Za-z_\-]*"  # noqa: S105 - a pattern, not a password
_TEXT_RULES = (
    # password=..., AccountKey=...;, "token": "...", api_key: ... (keeps the name, hides the value)
    (
        re.compile(
            r"(?i)(\"?\b" + _SECRET_WORDS + r"\"?\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|[^\s;&,\"']+)",
        ),
        r"\1" + REDACTED,
    ),
    # SAS signatures in URLs and connection strings: sig=..., SharedAccessSignature=...
    (re.compile(r"(?i)(\b(?:sig|sharedaccesssignature)=)([^\s;&\"']+)"), r"\1" + REDACTED),
    # credentials in URLs: scheme://user:password@host
    (re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]*:)([^/\s@]+)(@)"), r"\1" + REDACTED + r"\3"),
    # HTTP authorization values
    (re.compile(r"(?i)(\b(?:bearer|basic)\s+)([A-Za-z0-9._~+/=\-]{8,})"), r"\1" + REDACTED),
)

# Attributes every LogRecord has; anything else on a record is an extra field.
_RECORD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName", "fields"}
_BASE_KEYS = ("ts", "level", "msg")
_BARE_VALUE_RE = re.compile(r'^[^\s"]+$')


def is_secret_name(name):
    """True when a field called ``name`` must not be logged or sent."""
    return bool(SECRET_NAME_RE.search(str(name)))


def scrub_text(text, secrets=()):
    """``text`` without literal ``secrets`` and without values of secret-looking assignments."""
    if text is None:
        return text
    text = str(text)
    for secret in sorted({str(s) for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    for pattern, replacement in _TEXT_RULES:
        text = pattern.sub(replacement, text)
    return text


def scrub_fields(fields, secrets=()):
    """A copy of ``fields`` (dict, list or scalar, nested) with secret-named values replaced by
    ``***`` and strings scrubbed with ``scrub_text``."""
    if isinstance(fields, dict):
        return {
            str(k): (REDACTED if is_secret_name(k) and v is not None else scrub_fields(v, secrets))
            for k, v in fields.items()
        }
    if isinstance(fields, (list, tuple, set, frozenset)):
        return [scrub_fields(v, secrets) for v in fields]
    if isinstance(fields, str):
        return scrub_text(fields, secrets)
    return fields


def utc_iso(epoch=None, milliseconds=False):
    """``2026-11-27T02:00:01Z`` (UTC) for a Unix time, now by default."""
    epoch = time.time() if epoch is None else epoch
    dt = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc)
    if milliseconds:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (dt.microsecond // 1000)
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def _record_fields(record):
    fields = {}
    for k, v in record.__dict__.items():
        if k not in _RECORD_ATTRS and not k.startswith("_"):
            fields[k] = v
    extra = getattr(record, "fields", None)
    if isinstance(extra, dict):
        fields.update(extra)
    return scrub_fields(fields)


def _text_value(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return ("%.3f" % value).rstrip("0").rstrip(".")
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    elif isinstance(value, dict):
        value = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    value = str(value)
    return value if _BARE_VALUE_RE.match(value) else json.dumps(value)


class TextFormatter(logging.Formatter):
    """``2026-11-27T02:00:01Z INFO message key=value ...`` (UTC), traceback on following lines."""

    def format(self, record):
        line = "%s %s %s" % (utc_iso(record.created), record.levelname, scrub_text(record.getMessage()))
        fields = _record_fields(record)
        if fields:
            line += " " + " ".join("%s=%s" % (k, _text_value(v)) for k, v in fields.items())
        if record.exc_info:
            line += "\n" + scrub_text(self.formatException(record.exc_info))
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (UTC, milliseconds), ``level``, ``msg``, the extra fields
    (a field named like a base key gets a trailing ``_``), ``audit: true`` on audit lines and
    ``exc`` with the traceback."""

    def format(self, record):
        doc = {"ts": utc_iso(record.created, milliseconds=True), "level": record.levelname}
        doc["msg"] = scrub_text(record.getMessage())
        if getattr(record, "_audit", False):
            doc["audit"] = True
        for k, v in _record_fields(record).items():
            doc[k + "_" if k in doc or k in _BASE_KEYS else k] = v
        if record.exc_info:
            doc["exc"] = scrub_text(self.formatException(record.exc_info))
        # ASCII: valid JSON whatever the encoding of stderr (a C locale escapes, never breaks, it).
        return json.dumps(doc, default=str, separators=(",", ":"))


class _Handler(logging.StreamHandler):
    """A stream handler that writes to the current ``sys.stderr`` unless given a stream, so a
    redirected stderr (tests, wrappers) is honoured."""

    def __init__(self, stream=None):
        self._follow_stderr = stream is None
        logging.StreamHandler.__init__(self, stream or sys.stderr)

    def emit(self, record):
        if self._follow_stderr:
            self.stream = sys.stderr
        logging.StreamHandler.emit(self, record)


def get_logger(name=DEFAULT_NAME, fmt="text", stream=None, level=logging.INFO):
    """The logger ``name`` writing ``fmt`` (``text`` or ``json``) lines to ``stream`` (stderr by
    default). Calling it again reconfigures the same single handler: never duplicates."""
    if fmt not in FORMATS:
        raise ValueError("log format %r: expected one of %s" % (fmt, ", ".join(FORMATS)))
    logger = logging.getLogger(name)
    handler = None
    for h in logger.handlers:
        if isinstance(h, _Handler):
            handler = h
            break
    if handler is None:
        handler = _Handler(stream)
        logger.addHandler(handler)
    else:
        # Not setStream(): it flushes the old stream, which may be closed by now.
        with handler.lock:
            handler._follow_stderr = stream is None
            handler.stream = stream or sys.stderr
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logger.setLevel(level)
    logger.propagate = False
    return logger


def log_fields(logger, msg, level=logging.INFO, **fields):
    """Logs ``msg`` with ``fields`` as extra fields (``key=value`` in text, keys in JSON)."""
    logger.log(level, msg, extra={"fields": fields})


def _mib(n):
    return "%.1f MiB" % (n / MIB)


class Progress:
    """Reports progress of a long transfer. ``progress(done_bytes)`` (what ``_dump.dump`` calls
    with the bytes written so far) logs at most once per ``interval_seconds``::

        dump iot: 512.0 MiB done of 2048.0 MiB (25%), 51.2 MiB/s, ETA 30 s

    without a total there is no percentage and no ETA. ``finish()`` logs the final line,
    ``finish(error=...)`` a failure line. Thread-safe; ``clock`` is injectable for tests."""

    def __init__(self, logger, label, total_bytes=None, interval_seconds=10.0, clock=time.monotonic, fields=None):
        self.logger = logger
        self.label = label
        self.total_bytes = total_bytes if total_bytes and total_bytes > 0 else None
        self.interval_seconds = float(interval_seconds)
        self.clock = clock
        self.fields = dict(fields or {})
        self.started = clock()
        self.last_logged = self.started
        self.done_bytes = 0
        self.lines = 0
        self.finished = False
        self._lock = threading.Lock()

    def __call__(self, done_bytes):
        with self._lock:
            self.done_bytes = done_bytes
            now = self.clock()
            if now - self.last_logged >= self.interval_seconds:
                self.last_logged = now
                self._log_progress(now)

    def advance(self, n_bytes):
        """For callers that report increments (e.g. blocks uploaded) rather than totals."""
        with self._lock:
            done = self.done_bytes + n_bytes
        self(done)

    def _rate(self, now):
        elapsed = now - self.started
        return (self.done_bytes / elapsed if elapsed > 0 else 0.0), elapsed

    def _log_progress(self, now):
        rate, elapsed = self._rate(now)
        parts = [_mib(self.done_bytes) + " done"]
        fields = dict(self.fields, done_bytes=self.done_bytes, elapsed_seconds=round(elapsed, 1))
        if self.total_bytes:
            parts[0] += " of %s (%d%%)" % (_mib(self.total_bytes), min(100, 100 * self.done_bytes // self.total_bytes))
            fields["total_bytes"] = self.total_bytes
        parts.append("%.1f MiB/s" % (rate / MIB))
        fields["rate_bytes_per_second"] = round(rate)
        if self.total_bytes and rate > 0 and self.done_bytes < self.total_bytes:
            eta = int(-(-(self.total_bytes - self.done_bytes) // rate))
            parts.append("ETA %d s" % eta)
            fields["eta_seconds"] = eta
        self.lines += 1
        self.logger.info("%s: %s", self.label, ", ".join(parts), extra={"fields": fields})

    def finish(self, done_bytes=None, error=None):
        """Logs the final line once: bytes, time, average rate; a warning when ``error``."""
        with self._lock:
            if self.finished:
                return
            self.finished = True
            if done_bytes is not None:
                self.done_bytes = done_bytes
            rate, elapsed = self._rate(self.clock())
            fields = dict(
                self.fields,
                done_bytes=self.done_bytes,
                elapsed_seconds=round(elapsed, 1),
                rate_bytes_per_second=round(rate),
            )
            summary = "%s in %.1f s, %.1f MiB/s" % (_mib(self.done_bytes), elapsed, rate / MIB)
            self.lines += 1
            if error is None:
                self.logger.info("%s: finished, %s", self.label, summary, extra={"fields": fields})
            else:
                fields["error"] = scrub_text(error)
                self.logger.warning("%s: failed after %s", self.label, summary, extra={"fields": fields})


def who():
    """``user@host`` of this process; ``sudo`` invocations name the real user too."""
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry for the uid (containers)
        user = "uid%d" % os.getuid()
    sudo_user = os.environ.get("SUDO_USER")
    if sudo_user and sudo_user != user:
        user = "%s(sudo:%s)" % (user, sudo_user)
    return "%s@%s" % (user, socket.gethostname())


def audit(logger, action, **fields):
    """One audit line for a destructive action (restore swap, prune, chunk drop)::

        2026-11-27T02:00:01Z INFO AUDIT action=prune who=root@db1 when=2026-11-27T02:00:01Z database=iot ...

    JSON lines carry ``"audit": true``. ``who`` and ``when`` may be given (e.g. the operator
    behind a playbook run); secret-named fields are ``***``. Returns the fields logged."""
    record = {"action": action}
    record["who"] = fields.pop("who", None) or who()
    record["when"] = fields.pop("when", None) or utc_iso()
    record.update(scrub_fields(fields))
    logger.info("AUDIT", extra={"fields": record, "_audit": True})
    return record
