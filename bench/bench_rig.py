"""The rig as the benchmark sees it: the TimescaleDB host container of `make env-up`, Azurite,
and the playbooks run on the local inventory. Every command runs where production runs it
(client tools on the database host, as the server's major), over TCP like the collection."""

import json
import os
import platform
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCKER = "docker"
HOST = "tsdb-local"  # the local inventory's host
BIN = "/usr/lib/postgresql/17/bin"
AGENT_PYTHON = "/opt/tsdb-backup/venv/bin/python"
AGENT_COLLECTIONS = "/opt/tsdb-backup/collections"
BACKUP_DIR = "/var/backups/tsdb"
# Scratch space inside the rig container (not on this host); /var/tmp because /tmp is a tmpfs.
WORK = "/var/tmp/insa-bench"  # noqa: S108
BEGIN, END = "<!-- make bench: begin -->", "<!-- make bench: end -->"


def container():
    return os.environ.get("TSDB_CONTAINER", "insa-tsdb-local")


def _exec(script, user="root", env_names=(), check=True):
    # Values come from this process's environment (-e NAME): no secret in any argv.
    argv = [DOCKER, "exec", "-u", user]
    for name in ("PGHOST", "PGPORT", "PGUSER", "PGPASSWORD") + tuple(env_names):
        argv += ["-e", name]
    argv += [container(), "bash", "-c", "set -euo pipefail; export PATH=%s:$PATH; %s" % (BIN, script)]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (script[:120], proc.returncode, proc.stderr[-2000:]))
    return proc.stdout


def pg_tool(script):
    return _exec(script)


def psql(sql, database="postgres"):
    return _exec("psql -X -qAt -v ON_ERROR_STOP=1 -d %s -c %s" % (database, _quote(sql)))


def _quote(s):
    return "'" + s.replace("'", "'\\''") + "'"


def _env():
    env = dict(os.environ)
    env["ANSIBLE_CONFIG"] = os.path.join(REPO, "ansible.cfg")
    return env


def playbook(name, extra, json_output=False):
    env = _env()
    if json_output:
        env.update(ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_LOAD_CALLBACK_PLUGINS="1")
    argv = [os.path.join(REPO, ".venv", "bin", "ansible-playbook"), "-i", "inventories/local", "playbooks/" + name]
    proc = subprocess.run(
        argv + ["-e", json.dumps(extra)], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError("%s failed:\n%s" % (name, (proc.stdout + proc.stderr)[-4000:]))
    return proc.stdout


def _task_result(out, prefix):
    for play in json.loads(out[: out.rindex("}") + 1])["plays"]:
        for task in play["tasks"]:
            if task["task"]["name"].startswith(prefix):
                return task["hosts"][HOST]
    raise RuntimeError("no task %r in the run" % prefix)


def site(database, azure_container):
    return {"tsdb_backup_databases": [database], "tsdb_azure_container": azure_container}


def setup_agent(database, azure_container):
    """The timer backs up the bench database into the bench container while the bench runs."""
    playbook("setup.yml", site(database, azure_container))


def restore_agent():
    playbook("setup.yml", {})


def backup_playbook(database, azure_container, **settings):
    out = playbook("backup.yml", dict(site(database, azure_container), **settings), json_output=True)
    return _task_result(out, "Back up ")["results"][0]


def restore_playbook(source, target, azure_container):
    """Runs restore.yml; returns its phases in seconds (download, then the restore module's timings)."""
    extra = dict(site(source, azure_container))
    extra.update(restore_host=HOST, restore_database=target, restore_source_database=source, restore_confirm=True)
    out = playbook("restore.yml", extra, json_output=True)
    download = _task_result(out, "Download from Azure the backup")
    restored = _task_result(out, "Verify, take a safety backup")
    phases = {"download": download.get("duration") or 0.0}
    phases.update({k[: -len("_seconds")]: v for k, v in (restored.get("timings") or {}).items()})
    return phases


SDK_DEFAULT_UPLOAD = r"""
import os, sys
from azure.storage.blob import BlobServiceClient
service = BlobServiceClient.from_connection_string(os.environ["AZURE_STORAGE_CONNECTION_STRING"])
box = service.get_container_client(sys.argv[2])
if not box.exists():
    box.create_container()
with open(sys.argv[1], "rb") as f:
    box.upload_blob("old-pipeline/" + os.path.basename(sys.argv[1]), f, overwrite=True)
"""


def sdk_default_upload(path, azure_container):
    """What `az storage blob upload` did for the old scripts: the SDK with its defaults."""
    _exec(
        "%s -c %s %s %s" % (AGENT_PYTHON, _quote(SDK_DEFAULT_UPLOAD), _quote(path), _quote(azure_container)),
        env_names=("AZURE_STORAGE_CONNECTION_STRING",),
    )


def start_unit(unit):
    _exec("systemctl start %s" % unit)


def newest_manifest(database):
    path = _exec("ls -1 %s/%s/*.manifest.json | grep -v '\\.verify\\.' | tail -1" % (BACKUP_DIR, database)).strip()
    return json.loads(_exec("cat %s" % path))


def newest_archive(database):
    m = newest_manifest(database)
    return "%s/%s/%s.dump" % (BACKUP_DIR, database, m["backup_id"])


def serial_pg_restore(archive, target):
    """TimescaleDB's documented procedure, serial: the baseline of every restore figure."""
    import time

    steps = {}
    drop_databases(target)
    t0 = time.monotonic()
    _exec(
        "createdb %s && psql -X -q -v ON_ERROR_STOP=1 -d %s -c 'CREATE EXTENSION timescaledb' "
        "-c 'SELECT timescaledb_pre_restore()' >/dev/null" % (target, target)
    )
    steps["create + pre_restore"] = time.monotonic() - t0
    t0 = time.monotonic()
    _exec("pg_restore --no-password -d %s %s" % (target, archive))
    steps["pg_restore"] = time.monotonic() - t0
    t0 = time.monotonic()
    _exec("psql -X -q -v ON_ERROR_STOP=1 -d %s -c 'SELECT timescaledb_post_restore()' >/dev/null" % target)
    steps["post_restore"] = time.monotonic() - t0
    return steps


def drop_databases(*names, like=None):
    names = list(names)
    if like:
        found = psql("SELECT datname FROM pg_database WHERE starts_with(datname, %s)" % _literal(like))
        names += [n for n in found.splitlines() if n]
    for name in names:
        psql('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name.replace('"', '""'))


def _literal(s):
    return "'" + s.replace("'", "''") + "'"


def ensure_dataset(database, size_gb, reseed):
    """The IoT dataset at a size, generated once and deterministically (setseed, fixed end)."""
    devices = max(1, int(round(100 * size_gb / 2.0)))
    marker = "insa bench dataset: %d devices, 30 days every 28 s" % devices
    comment = psql(
        "SELECT coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database WHERE datname = %s"
        % _literal(database)
    ).strip()
    if reseed or comment != marker:
        drop_databases(database)
        subprocess.run(
            [
                os.path.join(REPO, ".venv", "bin", "python"),
                os.path.join(REPO, "tests", "rig", "seed_iot.py"),
                "--dbname",
                database,
                "--devices",
                str(devices),
                "--days",
                "30",
                "--interval",
                "28",
                "--diag-days",
                "90",
                "--seed",
                "0.42",
                "--end",
                "2026-11-01T00:00:00Z",
            ],
            check=True,
        )
        psql("COMMENT ON DATABASE %s IS %s" % (database, _literal(marker)))
    size = psql("SELECT pg_size_pretty(pg_database_size(%s))" % _literal(database)).strip()
    rows = psql("SELECT count(*) FROM esp_telemetry", database).strip()
    return "%s rows of esp_telemetry (%d devices, 30 one-day chunks), database %s" % (
        "{:,}".format(int(rows)),
        devices,
        size,
    )


RSS_SCRIPT = r"""
import os, resource, sys
sys.path.insert(0, %(collections)r)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _azure
store = _azure.open_store({"auth_mode": "connection_string",
                           "connection_string": os.environ["AZURE_STORAGE_CONNECTION_STRING"],
                           "container": %(container)r, "prefix": "bench-rss", "create_container": True})
what = sys.argv[1]
if what == "upload":
    store.upload_backup_set(sys.argv[2], host="bench-rss")
elif what == "download":
    store.download_backup(sys.argv[2], sys.argv[3], host="bench-rss", backup_id=sys.argv[4])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def transfer_rss(database, azure_container):
    """Peak RSS of a whole upload and a whole download of the newest set, and of a process that
    only opens the store (the baseline: Python, the SDK and the collection)."""
    script = RSS_SCRIPT % {"collections": AGENT_COLLECTIONS, "container": azure_container}
    m = newest_manifest(database)
    manifest = "%s/%s/%s.manifest.json" % (BACKUP_DIR, database, m["backup_id"])
    dl = WORK + "-dl"
    _exec("rm -rf %s && install -d -m 0700 -o tsdb-backup %s" % (dl, dl))

    def run(*args):
        return int(
            _exec(
                "%s -c %s %s" % (AGENT_PYTHON, _quote(script), " ".join(_quote(a) for a in args)),
                user="tsdb-backup",
                env_names=("AZURE_STORAGE_CONNECTION_STRING",),
            )
            .strip()
            .splitlines()[-1]
        )

    facts = {"rss_open store only": run("open"), "rss_upload": run("upload", manifest)}
    facts["rss_download"] = run("download", dl, database, m["backup_id"])
    _exec("rm -rf %s" % dl)
    return facts


def machine():
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    return "%d cores, %.0f GB RAM, %s %s, rig container %s" % (
        os.cpu_count(),
        mem_kb / 1024 / 1024,
        platform.system(),
        platform.release(),
        container(),
    )


def human(n):
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return "%.1f %s" % (n, unit) if unit != "B" else "%d B" % n
        n /= 1000.0
    return str(n)


def write_doc(path, report):
    """Replaces the generated block of docs/PERFORMANCE.md; the analysis around it stays."""
    text = open(path).read() if os.path.exists(path) else "# Performance\n\n%s\n%s\n" % (BEGIN, END)
    head, rest = text.partition(BEGIN)[0], text.partition(BEGIN)[2]
    tail = rest.partition(END)[2]
    with open(path + ".tmp", "w") as f:
        f.write(head + BEGIN + "\n" + report + "\n" + END + tail)
    os.replace(path + ".tmp", path)
