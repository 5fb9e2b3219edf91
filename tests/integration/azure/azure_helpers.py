"""Helpers of the Azure tier's integration tests: run modules through Ansible, build backup
sets, look at Azurite's state, run a private Azurite."""

import base64
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import rig  # noqa: E402

REPO = rig.REPO
sys.path.insert(0, os.path.join(REPO, "collections"))
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _azure, _verify  # noqa: E402
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf  # noqa: E402

PYTHON = os.path.join(REPO, ".venv", "bin", "python")
ANSIBLE = os.path.join(REPO, ".venv", "bin", "ansible")
AZURITE_BIN = "/var/cache/insa-timescaledb-backup-rig/azurite-3.35.0/node_modules/.bin/azurite-blob"
HOST = "it-host.example"
MIB = 1024 * 1024


def module_argv(module, args, check=False, diff=False):
    argv = [
        ANSIBLE,
        "localhost",
        "-c",
        "local",
        "-i",
        "localhost,",
        "-m",
        "insa.timescaledb_backup." + module,
        "-a",
        json.dumps(args),
        "-e",
        "ansible_python_interpreter=" + PYTHON,
    ]
    if check:
        argv.append("--check")
    if diff:
        argv.append("--diff")
    return argv


def module_env(extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_")}
    env.update(
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_LOCALHOST_WARNING="0",
    )
    env.update(extra or {})
    return env


def parse_result(proc, secrets=()):
    for secret in secrets:
        if secret:
            assert secret not in proc.stdout and secret not in proc.stderr, "a secret appears in ansible's output"
    try:
        return json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    except (ValueError, KeyError, IndexError):
        msg = "ansible gave no result (rc %s):\n%s\n%s" % (proc.returncode, proc.stdout, proc.stderr)
        raise AssertionError(msg) from None


def run_module(module, args, check=False, diff=False, env=None, secrets=(), timeout=300):
    """Runs insa.timescaledb_backup.<module> on localhost; returns its result. Fails the test if a
    secret of args (or of `secrets`) shows up anywhere in ansible's output."""
    proc = subprocess.run(
        module_argv(module, args, check, diff),
        cwd=REPO,
        env=module_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    hidden = [args.get(k) for k in _azure.SECRET_KEYS] + [args.get("arm_access_token")] + list(secrets)
    result = parse_result(proc, hidden)
    if result.get("failed"):
        print("%s failed: %s" % (module, result.get("msg")))  # shown by pytest when the test fails
    return result


def run_tasks(tasks, env=None, secrets=(), timeout=300):
    """Runs several module calls in one ansible-playbook (one start-up instead of several) when
    no assertion has to happen between them. tasks: (module, args[, {"check": bool, "diff": bool}]).
    Every task runs, failing or not; returns the results in order."""
    play = [
        {
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "vars": {"ansible_python_interpreter": PYTHON},
            "tasks": [],
        }
    ]
    for number, task in enumerate(tasks):
        module, args = task[0], task[1]
        options = task[2] if len(task) > 2 else {}
        play[0]["tasks"].append(
            {
                "name": "task %d" % number,
                "insa.timescaledb_backup." + module: args,
                "ignore_errors": True,
                "check_mode": bool(options.get("check")),
                "diff": bool(options.get("diff")),
            }
        )
    fd, path = tempfile.mkstemp(suffix=".yml", prefix="azure-it-")
    with os.fdopen(fd, "w") as f:
        json.dump(play, f)  # JSON is YAML
    try:
        proc = subprocess.run(
            [ANSIBLE + "-playbook", "-i", "localhost,", path],
            cwd=REPO,
            env=module_env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    finally:
        os.unlink(path)
    hidden = list(secrets)
    for task in tasks:
        hidden += [task[1].get(k) for k in _azure.SECRET_KEYS] + [task[1].get("arm_access_token")]
    for secret in hidden:
        if secret:
            assert secret not in proc.stdout and secret not in proc.stderr, "a secret appears in ansible's output"
    try:
        played = json.loads(proc.stdout)["plays"][0]["tasks"]
        results = [t["hosts"]["localhost"] for t in played]
    except (ValueError, KeyError, IndexError):
        msg = "ansible-playbook gave no result (rc %s):\n%s\n%s" % (proc.returncode, proc.stdout, proc.stderr)
        raise AssertionError(msg) from None
    assert len(results) == len(tasks), results
    for task, result in zip(tasks, results):
        if result.get("failed"):
            print("%s failed: %s" % (task[0], result.get("msg")))
    return results


def assert_clean_failure(result, *fragments):
    assert result.get("failed") is True, result
    msg = result["msg"]
    assert "Traceback (most recent call last)" not in json.dumps(result), result
    for fragment in fragments:
        assert fragment in msg, "%r not in %r" % (fragment, msg)
    return msg


def write_random(path, size, chunk=4 * MIB):
    """size bytes of os.urandom in chunks; returns (sha256, size)."""
    writer_hash = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, chunk))
            f.write(block)
            writer_hash.update(block)
            left -= len(block)
    return writer_hash.hexdigest(), size


def make_backup_set(backup_dir, database, backup_id, size=64 * 1024, host=HOST, directory_format=False, verified=True):
    """A well-formed backup set (random archive content: the Azure tier never looks inside),
    with a manifest shaped like the dump module's, written through _manifest; verified (at the
    checksum level, by _verify itself) unless told otherwise."""
    bset = mf.BackupSet(backup_dir, database, backup_id, directory_format=directory_format)
    os.makedirs(bset.folder, mode=0o700, exist_ok=True)
    archive = {"file": os.path.basename(bset.archive)}
    if directory_format:
        os.mkdir(bset.archive, 0o700)
        for name, part in (("toc.dat", 4096), ("3001.dat.zst", size // 2), ("3002.dat.zst", size - size // 2)):
            write_random(os.path.join(bset.archive, name), part)
        digest, total, files = mf.sha256_directory(bset.archive)
        archive.update({"size_bytes": total, "sha256": digest, "files": files})
    else:
        digest, total = write_random(bset.archive, size)
        archive.update({"size_bytes": total, "sha256": digest})
    roles = ("-- roles of %s\nCREATE ROLE app_%s;\n" % (backup_id, database)).encode()
    mf.atomic_write_bytes(bset.globals_sql, roles)
    manifest = {
        "format": mf.MANIFEST_FORMAT,
        "format_version": mf.MANIFEST_VERSION,
        "backup_id": backup_id,
        "host": host,
        "database": database,
        "created_by": "insa.timescaledb_backup",
        "server": {"postgresql_version": "17.6", "server_version_num": 170006, "timescaledb_version": "2.19.3"},
        "dump": {"tool": "pg_dump", "format": "directory" if directory_format else "custom"},
        "archive": archive,
        "globals": {
            "file": os.path.basename(bset.globals_sql),
            "size_bytes": len(roles),
            "sha256": hashlib.sha256(roles).hexdigest(),
        },
        "tables": {"public.metrics": {"rows": 1000}},
        "hypertables": {},
    }
    mf.write_manifest(bset.manifest, manifest)
    if verified:
        assert _verify.verify(None, backup_dir, database, backup_id, level="checksum")["ok"]
    return bset


def blob_names(service, container, prefix=None):
    client = service.get_container_client(container)
    if not client.exists():
        return []
    return sorted(b.name for b in client.list_blobs(name_starts_with=prefix))


def blob_state(service, container):
    """name -> (etag, last_modified, size) of every committed blob: compare before/after a run."""
    client = service.get_container_client(container)
    if not client.exists():
        return {}
    return {b.name: (b.etag, b.last_modified, b.size) for b in client.list_blobs()}


def store_for(azure_env, container, **extra):
    config = {
        "auth_mode": "connection_string",
        "connection_string": azure_env["AZURE_STORAGE_CONNECTION_STRING"],
        "container": container,
        "create_container": True,
        "max_retries": 1,
        "retry_backoff": 0,
    }
    config.update(extra)
    return _azure.open_store(config, environ={})


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateAzurite:
    """A second Azurite on its own loopback port and data folder, started and stopped by PID -
    the shared one on :10000 is never touched."""

    def __init__(self, location, port=None, extra_args=(), scheme="http"):
        self.location = location
        self.port = port or free_port()
        self.extra_args = list(extra_args)
        self.scheme = scheme
        self.proc = None

    @property
    def endpoint(self):
        return "%s://127.0.0.1:%d/devstoreaccount1" % (self.scheme, self.port)

    def start(self, timeout=30):
        os.makedirs(self.location, exist_ok=True)
        log = open(os.path.join(self.location, "azurite.log"), "ab")
        self.proc = subprocess.Popen(
            [
                AZURITE_BIN,
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(self.port),
                "--location",
                self.location,
                "--skipApiVersionCheck",
                "--loose",
                "--disableTelemetry",
            ]
            + self.extra_args,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("private Azurite exited; see %s/azurite.log" % self.location)
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError("private Azurite did not listen on 127.0.0.1:%d" % self.port)

    def replica(self, container, name="dr", **extra):
        """A replica setting (the collection's ``replicas`` item) for this Azurite as another
        account: connection string, its own container, no retries (a test that stops it must
        not wait)."""
        key = rig.load_env()["AZURE_STORAGE_KEY"]
        connection_string = "DefaultEndpointsProtocol=%s;AccountName=devstoreaccount1;AccountKey=%s;BlobEndpoint=%s;"
        connection_string %= (self.scheme, key, self.endpoint)
        setting = {
            "name": name,
            "auth_mode": "connection_string",
            "connection_string": connection_string,
            "container": container,
            "create_container": True,
            "max_retries": 0,
            "retry_backoff": 0,
        }
        setting.update(extra)
        return setting

    def stop(self):
        """SIGTERM to our PID (Azurite then saves its metadata; a SIGKILL can lose the container
        created a moment before), SIGKILL if it lingers."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self.proc = None


def self_signed_certificate(folder):
    """A certificate for 127.0.0.1 (Azurite's HTTPS, which its OAuth needs). Returns (cert, key)."""
    cert, key = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            key,
            "-out",
            cert,
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def fake_jwt(audience="https://storage.azure.com", lifetime=3600):
    """A well-formed, unsigned Entra-style access token: Azurite's `--oauth basic` checks the
    issuer, audience and lifetime, not the signature."""
    now = int(time.time())
    claims = {
        "aud": audience,
        "iss": "https://sts.windows.net/00000000-0000-0000-0000-000000000001/",
        "iat": now - 60,
        "nbf": now - 60,
        "exp": now + lifetime,
        "oid": "it-identity",
        "tid": "it-tenant",
    }

    def b64(data):
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return "%s.%s.%s" % (b64({"alg": "RS256", "typ": "JWT"}), b64(claims), "c2lnbmF0dXJl")


def fake_az_cli(folder, token):
    """An `az` on PATH that answers `az account get-access-token` like the Azure CLI (and logs
    its calls): DefaultAzureCredential's AzureCliCredential gets a token without any network."""
    bindir = os.path.join(folder, "bin")
    os.makedirs(bindir, exist_ok=True)
    answer = json.dumps(
        {
            "accessToken": token,
            "expires_on": int(time.time()) + 3600,
            "tokenType": "Bearer",
            "subscription": "sub-0001",
            "tenant": "it-tenant",
        }
    )
    path = os.path.join(bindir, "az")
    with open(path, "w") as f:
        f.write("#!/bin/sh\necho \"$@\" >> %s/az.calls\ncat <<'JSON'\n%s\nJSON\n" % (folder, answer))
    os.chmod(path, 0o700)
    return bindir
