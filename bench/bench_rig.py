"""The rig as the benchmark sees it: the TimescaleDB host container of `make env-up`, Azurite,
and the playbooks run on the local inventory. Every command runs where production runs it
(client tools on the database host, as the server's major), over TCP like the collection.
For the fleet (run.py --fleet), more host containers beside it (tests/rig/extra-host.sh), on an
inventory that adds them to the local one."""

import json
import os
import platform
import subprocess
import tempfile

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
FLEET_BEGIN, FLEET_END = "<!-- make bench fleet: begin -->", "<!-- make bench fleet: end -->"
SCALE_BEGIN, SCALE_END = "<!-- make bench scale: begin -->", "<!-- make bench scale: end -->"
EXTRA_HOST = os.path.join(REPO, "tests", "rig", "extra-host.sh")


def container():
    return os.environ.get("TSDB_CONTAINER", "insa-tsdb-local")


class Host:
    """One database host of the bench: its inventory name, its container, its PostgreSQL port."""

    def __init__(self, name, container_name, port):
        self.name, self.container, self.port = name, container_name, int(port)

    def __repr__(self):
        return "%s (%s, port %d)" % (self.name, self.container, self.port)


def main_host():
    """The rig's own host, as .local/env.sh names it."""
    return Host(HOST, container(), os.environ.get("PGPORT", "15432"))


def _exec(script, user="root", env_names=(), check=True, host=None):
    # Values come from this process's environment (-e NAME): no secret in any argv.
    host = host or main_host()
    argv = [DOCKER, "exec", "-u", user, "-e", "PGPORT=%d" % host.port]
    for name in ("PGHOST", "PGUSER", "PGPASSWORD") + tuple(env_names):
        argv += ["-e", name]
    argv += [host.container, "bash", "-c", "set -euo pipefail; export PATH=%s:$PATH; %s" % (BIN, script)]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (script[:120], proc.returncode, proc.stderr[-2000:]))
    return proc.stdout


def pg_tool(script, host=None):
    return _exec(script, host=host)


def psql(sql, database="postgres", host=None):
    return _exec("psql -X -qAt -v ON_ERROR_STOP=1 -d %s -c %s" % (database, _quote(sql)), host=host)


def _quote(s):
    return "'" + s.replace("'", "'\\''") + "'"


def _env():
    env = dict(os.environ)
    env["ANSIBLE_CONFIG"] = os.path.join(REPO, "ansible.cfg")
    return env


def playbook(name, extra, json_output=False, inventory=("inventories/local",), forks=None):
    env = _env()
    if json_output:
        env.update(ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_LOAD_CALLBACK_PLUGINS="1")
    argv = [os.path.join(REPO, ".venv", "bin", "ansible-playbook"), "playbooks/" + name]
    for source in inventory:
        argv += ["-i", source]
    if forks:
        argv += ["--forks", str(forks)]
    proc = subprocess.run(
        argv + ["-e", json.dumps(extra)], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError("%s failed:\n%s" % (name, (proc.stdout + proc.stderr)[-4000:]))
    return proc.stdout


def _task_results(out, prefix):
    """The results of the first task named prefix..., by host."""
    for play in json.loads(out[: out.rindex("}") + 1])["plays"]:
        for task in play["tasks"]:
            if task["task"]["name"].startswith(prefix):
                return task["hosts"]
    raise RuntimeError("no task %r in the run" % prefix)


def _task_result(out, prefix):
    return _task_results(out, prefix)[HOST]


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


class Fleet:
    """The rig's host and n - 1 more host containers beside it (insa-tsdb-bench2.., PostgreSQL on
    127.0.0.1:15632..; tests/rig/extra-host.sh), on one inventory: the local one plus a file that
    adds the others to tsdb_hosts (so inventories/local/group_vars apply to them too, the same
    Azurite included) and defines the groups bench_one (the rig's host) and bench_fleet (all).
    A context manager: the extra containers are removed at its end, also on failure or Ctrl-C."""

    def __init__(self, n, first_port=15632):
        self.main = main_host()
        self.extras = [Host("tsdb-bench%d" % i, "insa-tsdb-bench%d" % i, first_port + i - 2) for i in range(2, n + 1)]
        self.hosts = [self.main] + self.extras
        self.forks = max(5, n)  # Ansible's default is 5: one fork per host, never fewer
        self.tmp, self.inventory = None, ()

    def _script(self, action, host, check=True):
        argv = [EXTRA_HOST, action, host.container] + ([str(host.port)] if action == "up" else [])
        # The rig's own host and port, which the script refuses to touch.
        env = dict(os.environ, TSDB_CONTAINER=self.main.container, TSDB_PORT=str(self.main.port))
        proc = subprocess.run(argv, env=env, check=False)
        if check and proc.returncode != 0:
            raise RuntimeError("%s %s %s failed (%d)" % (EXTRA_HOST, action, host.container, proc.returncode))

    def __enter__(self):
        try:
            for host in self.extras:
                self._script("down", host)  # what a killed run left behind: start from a new container
                self._script("up", host)
            self.tmp = tempfile.mkdtemp(prefix="insa-bench-fleet-")
            path = os.path.join(self.tmp, "fleet.yml")
            with open(path, "w") as f:
                json.dump(self._inventory(), f, indent=2)  # JSON is YAML
            self.inventory = (os.path.join(REPO, "inventories", "local"), path)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        for host in self.extras:
            self._script("down", host, check=False)
        if self.tmp:
            for name in os.listdir(self.tmp):
                os.remove(os.path.join(self.tmp, name))
            os.rmdir(self.tmp)
            self.tmp = None
        return False

    def _inventory(self):
        extras = {
            h.name: {
                "ansible_connection": "community.docker.docker",
                "ansible_host": h.container,
                "ansible_python_interpreter": "/usr/bin/python3",
                "tsdb_port": h.port,
            }
            for h in self.extras
        }
        return {
            "all": {
                "children": {
                    "tsdb_hosts": {"hosts": extras},
                    "bench_one": {"hosts": {self.main.name: None}},
                    "bench_fleet": {"hosts": {h.name: None for h in self.hosts}},
                }
            }
        }


def setup_fleet(database, azure_container, fleet):
    """setup.yml on every host of the fleet: the agent, its timers, the trust store of all keys."""
    extra = dict(site(database, azure_container), tsdb_backup_target="bench_fleet")
    playbook("setup.yml", extra, inventory=fleet.inventory, forks=fleet.forks)


def stop_timers(host):
    """Stops the agent's timers on a host (setup.yml starts them again)."""
    _exec(
        "systemctl stop tsdb-backup.timer tsdb-history-archive.timer tsdb-history-retention.timer "
        "tsdb-backup-drill.timer 2>/dev/null || true",
        host=host,
    )


def fleet_backup_playbook(database, azure_container, fleet, group):
    """backup.yml on the hosts of one group of the fleet inventory, in one play (forks >= hosts).
    Returns the agent's result (the first database's) by host."""
    extra = dict(site(database, azure_container), tsdb_backup_target=group)
    out = playbook("backup.yml", extra, json_output=True, inventory=fleet.inventory, forks=fleet.forks)
    return {name: r["results"][0] for name, r in _task_results(out, "Back up ").items()}


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


def newest_manifest(database, host=None):
    path = _exec(
        "ls -1 %s/%s/*.manifest.json | grep -v '\\.verify\\.' | tail -1" % (BACKUP_DIR, database), host=host
    ).strip()
    return json.loads(_exec("cat %s" % path, host=host))


def newest_archive(database):
    """The newest custom-format archive (the serial baseline restores one file; a run without the
    timer path may have a directory-format set of backup.yml -j as its newest)."""
    paths = _exec("ls -1r %s/%s/*.manifest.json | grep -v '\\.verify\\.'" % (BACKUP_DIR, database)).split()
    for path in paths:
        manifest = json.loads(_exec("cat %s" % path))
        if (manifest.get("dump") or {}).get("format", "custom") == "custom":
            return "%s/%s/%s" % (BACKUP_DIR, database, manifest["archive"]["file"])
    raise RuntimeError("no custom-format backup of %s in %s" % (database, BACKUP_DIR))


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


def drop_databases(*names, like=None, host=None):
    names = list(names)
    if like:
        found = psql("SELECT datname FROM pg_database WHERE starts_with(datname, %s)" % _literal(like), host=host)
        names += [n for n in found.splitlines() if n]
    for name in names:
        psql('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name.replace('"', '""'), host=host)


def _literal(s):
    return "'" + s.replace("'", "''") + "'"


def ensure_dataset(database, size_gb, reseed, host=None):
    """The IoT dataset at a size, generated once and deterministically (setseed, fixed end): the
    same rows on every host."""
    host = host or main_host()
    devices = max(1, int(round(100 * size_gb / 2.0)))
    marker = "insa bench dataset: %d devices, 30 days every 28 s" % devices
    comment = psql(
        "SELECT coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database WHERE datname = %s"
        % _literal(database),
        host=host,
    ).strip()
    if reseed or comment != marker:
        drop_databases(database, host=host)
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
            env=dict(os.environ, PGPORT=str(host.port)),
            check=True,
        )
        psql("COMMENT ON DATABASE %s IS %s" % (database, _literal(marker)), host=host)
    size = psql("SELECT pg_size_pretty(pg_database_size(%s))" % _literal(database), host=host).strip()
    rows = psql("SELECT count(*) FROM esp_telemetry", database, host=host).strip()
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


def write_doc(path, report, begin=BEGIN, end=END):
    """Replaces one generated block of docs/PERFORMANCE.md (between begin and end; appended when
    the file has none); the analysis around it stays."""
    text = open(path).read() if os.path.exists(path) else "# Performance\n"
    if begin not in text:
        text = text.rstrip("\n") + "\n\n%s\n%s\n" % (begin, end)
    head, rest = text.partition(begin)[0], text.partition(begin)[2]
    tail = rest.partition(end)[2]
    with open(path + ".tmp", "w") as f:
        f.write(head + begin + "\n" + report + "\n" + end + tail)
    os.replace(path + ".tmp", path)
