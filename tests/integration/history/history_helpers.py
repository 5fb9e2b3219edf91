"""Helpers of the history tests: connection settings from the rig, Azure stores on the rig's
Azurite (and one that points at a closed loopback port, for outages), reading the archive back
with pyarrow, and running the history modules through Ansible with the venv interpreter."""

import json
import os
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import rig  # noqa: E402

REPO = rig.REPO
sys.path.insert(0, os.path.join(REPO, "collections"))
import pyarrow.parquet as pq  # noqa: E402
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _azure, _history, _pg  # noqa: E402

VENV_PYTHON = "/opt/tsdb-backup/venv/bin/python"
HOST = "tsdb-local"
# The history tests' host label (the <host> of the history layout), passed explicitly: the
# default, the FQDN, would be the container's name when a module runs and this machine's in-process.
HOST_LABEL = "tsdb-local"


def pg_params(env):
    return _pg.ConnectionParams(
        login_host="127.0.0.1", port=int(env["PGPORT"]), login_user=env["PGUSER"], login_password=env["PGPASSWORD"]
    )


def store_config(env, container, prefix):
    return {
        "auth_mode": "connection_string",
        "connection_string": env["AZURE_STORAGE_CONNECTION_STRING"],
        "container": container,
        "prefix": prefix,
        "create_container": True,
        "max_retries": 1,
        "retry_backoff": 0,
        "timeout": 10,
    }


def open_store(env, container, prefix):
    return _azure.open_store(store_config(env, container, prefix))


def closed_port():
    """A loopback port nobody listens on (bound, then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def unreachable_store(env, container, prefix):
    """The same account, container and prefix behind a loopback port that refuses connections:
    an Azure outage as the code sees one (connection refused, no retries)."""
    return _azure.open_store(
        {
            "auth_mode": "account_key",
            "account_name": env["AZURE_STORAGE_ACCOUNT"],
            "account_key": env["AZURE_STORAGE_KEY"],
            "account_url": "http://127.0.0.1:%d/%s" % (closed_port(), env["AZURE_STORAGE_ACCOUNT"]),
            "container": container,
            "prefix": prefix,
            "max_retries": 0,
            "retry_backoff": 0,
            "timeout": 2,
        }
    )


def blobs(store, start=None):
    """name -> properties (with metadata) of every blob under the store's prefix."""
    prefix = start or (store.prefix + "/" if store.prefix else None)
    return {
        p.name: store.blob_info(p)
        for p in store.container_client.list_blobs(name_starts_with=prefix, include=["metadata"])
    }


def manifests(store, database, hypertable, host=HOST_LABEL):
    """Every sealed manifest of a host's archive of a hypertable, oldest range and version first
    (read eight at a time)."""
    folder = _history.history_folder(store.prefix, host, database, hypertable)
    names = [n for n in sorted(blobs(store, folder + "/")) if n.endswith(".manifest.json")]
    with ThreadPoolExecutor(max_workers=8) as pool:
        out = list(pool.map(lambda n: _history.read_manifest_blob(store, n), names))
    return sorted(out, key=lambda m: (m["range"]["start"], m["version"]))


def history_view(all_manifests):
    """What the archive holds for each range: the newest version of each generation."""
    ranges = {}
    for m in all_manifests:
        newest = ranges.setdefault(m["range"]["label"], {})
        if m["generation"] not in newest or newest[m["generation"]]["version"] < m["version"]:
            newest[m["generation"]] = m
    return {label: [gens[g] for g in sorted(gens)] for label, gens in ranges.items()}


def read_object(store, database, manifest, folder, columns=None):
    """The rows of an archived object as a pyarrow Table (downloaded, sha256 checked), from the
    folder of the host the manifest records."""
    name = "%s/%s" % (
        _history.month_folder(
            _history.history_folder(store.prefix, manifest["host"], database, manifest["hypertable"]),
            _history.parse_time_label(manifest["range"]["label"].split("_")[0]),
        ),
        manifest["object"]["name"],
    )
    path = os.path.join(folder, manifest["object"]["sha256"] + ".parquet")
    if not os.path.exists(path):
        store.download_file(name, path, manifest["object"]["sha256"])
    return pq.read_table(path, columns=columns)


def run_module(module, args, check=False, diff=False, python=VENV_PYTHON):
    """Runs insa.timescaledb_backup.<module> on the rig's TimescaleDB container with the venv
    interpreter (pyarrow, Azure SDK); returns the module's result."""
    env = dict(os.environ)
    env.update(rig.load_env())
    for key in list(env):
        if key.startswith("AZURE_"):
            env.pop(key)  # only what the test passes counts
    env.update(
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
    )
    argv = [
        os.path.join(REPO, ".venv", "bin", "ansible"),
        HOST,
        "-i",
        os.path.join(REPO, "inventories", "local"),
        "-e",
        "ansible_python_interpreter=%s" % python,
        "-m",
        "insa.timescaledb_backup." + module,
        "-a",
        json.dumps(args),
    ]
    if check:
        argv.append("--check")
    if diff:
        argv.append("--diff")
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False)
    try:
        return json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"][HOST]
    except (ValueError, KeyError, IndexError):
        raise AssertionError(
            "ansible produced no result (rc %d):\n%s\n%s" % (proc.returncode, proc.stdout, proc.stderr)
        ) from None
