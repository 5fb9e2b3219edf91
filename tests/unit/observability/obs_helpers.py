"""Helpers of the observability tests: real metrics output, PromQL metric names, and real
loopback servers (HTTP webhook receiver, SMTP with optional STARTTLS)."""

import datetime
import http.server
import ipaddress
import json
import re

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _log, _metrics

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z

# A result with every key _metrics knows, per run type: the metric names written from these
# are the names the dashboard and the rules may use.
FULL_RESULT = {
    "database": "iot",
    "success": True,
    "duration_seconds": 42.5,
    "archive_size_bytes": 123456789,
    "upload_bytes": 123456789,
    "upload_duration_seconds": 12.0,
    "pending_uploads": 0,
    "unuploaded_sets": 0,
    "oldest_unuploaded_age_seconds": 0.0,
    "verify_ok": True,
    "drill_ok": True,
    "oldest_unarchived_chunk_age_seconds": 86400.0,
    "retention_horizon_seconds": 30 * 86400.0,
    "chunks_held_back": 0,
    "hypertables": [
        {
            "hypertable": "public.telemetry",
            "oldest_unarchived_chunk_age_seconds": 86400.0,
            "retention_horizon_seconds": 30 * 86400.0,
        }
    ],
    "targets": {
        "primary": {"uncovered_days": 0},
        "dr": {
            "copy_success": True,
            "pending_sets": 0,
            "history_copy_success": True,
            "pending_history_objects": 0,
            "uncovered_days": 0,
        },
    },
    "error": None,
}


def parse_prom(path):
    """{(name, frozenset(labels)): value} of an exposition file, and {name: (help, type)}."""
    from prometheus_client.parser import text_string_to_metric_families

    with open(path) as f:
        text = f.read()
    samples, meta = {}, {}
    for family in text_string_to_metric_families(text):
        meta[family.name] = (family.documentation, family.type)
        for s in family.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in samples, "duplicate series %s in %s" % (key, path)
            samples[key] = s.value
    return samples, meta


def write_all_run_types(textfile_dir, state_dir, now=NOW):
    for run_type in _metrics.RUN_TYPES:
        _metrics.write_run_metrics(textfile_dir, state_dir, "db1.example", run_type, [dict(FULL_RESULT)], now=now)


_PROMQL_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "atan2",
    "inf",
    "nan",
}


def promql_metric_names(expr):
    """The metric names a PromQL expression (or Grafana variable query) reads: identifiers that
    are not functions, keywords, label names in matchers or grouping clauses, durations or strings."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\blabel_values\(\s*([^,()]*)(?:,[^()]*)?\)", r"\1", expr)  # Grafana: label_values(metric, label)
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range and subquery durations
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\$\{?\w+\}?", " ", expr)  # Grafana variables
    expr = re.sub(r"\b\d+(?:\.\d+)?(?:e[+-]?\d+)?[smhdwy]*\b", " ", expr)  # numbers and durations
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        rest = expr[m.end() :].lstrip()
        if rest.startswith("(") or m.group(0).lower() in _PROMQL_KEYWORDS:
            continue
        names.add(m.group(0))
    return names


def logger_to(stream, fmt="text", name="tsdb-backup-test"):
    return _log.get_logger(name=name, fmt=fmt, stream=stream)


# -- a real HTTP receiver on loopback


class Receiver(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        self.requests = []
        self.status = 200
        http.server.ThreadingHTTPServer.__init__(self, ("127.0.0.1", 0), ReceiverHandler)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.server_address[1]


class ReceiverHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        self.server.requests.append(
            {"path": self.path, "headers": dict(self.headers), "body": body.decode("utf-8"), "json": json.loads(body)}
        )
        self.send_response(self.server.status)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"ok" if self.server.status == 200 else b"no")

    def log_message(self, *args):
        pass


# -- a real SMTP server on loopback (aiosmtpd)


def make_ca_and_server_cert(folder):
    """A throwaway CA and a server certificate for 127.0.0.1 / localhost signed by it. Returns
    (ca_file, cert_file, key_file)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tsdb-backup test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = (str(folder / n) for n in ("ca.pem", "server.pem", "server.key"))
    with open(ca_file, "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(cert_file, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_file, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return ca_file, cert_file, key_file


class MailSink:
    """aiosmtpd handler keeping what it received."""

    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(
            {
                "mail_from": envelope.mail_from,
                "rcpt_tos": list(envelope.rcpt_tos),
                "content": envelope.original_content or envelope.content,
                "tls": session.ssl is not None,
                "authenticated": bool(session.authenticated),
                "login": getattr(session.auth_data, "login", None),
            }
        )
        return "250 OK"


def start_smtp(handler, **kwargs):
    """An aiosmtpd Controller on 127.0.0.1 at a free port chosen by the kernel."""
    from aiosmtpd.controller import Controller

    class _Controller(Controller):
        def _trigger_server(self):
            # The server is bound (port 0): learn the real port before the base class connects.
            self.port = self.server.sockets[0].getsockname()[1]
            Controller._trigger_server(self)

    controller = _Controller(handler, hostname="127.0.0.1", port=0, **kwargs)
    controller.start()
    return controller
