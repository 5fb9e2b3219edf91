"""backup_agent on the rig's TimescaleDB host: the real state after converge."""

import pathlib
import shlex

import pytest
import yaml

SCENARIO = pathlib.Path(__file__).resolve().parent.parent
ROOT = SCENARIO.parent.parent
SETTINGS = yaml.safe_load((SCENARIO / "vars" / "settings.yml").read_text())

USER = GROUP = "tsdb-backup"
CONFIG_DIR = "/etc/tsdb-backup"
CREDENTIALS = CONFIG_DIR + "/credentials.env"
AGENT_ENV = CONFIG_DIR + "/agent.env"
VENV = "/opt/tsdb-backup/venv"
SECRETS = [SETTINGS["molecule_db_password"], SETTINGS["molecule_azure_connection_string"]]
# Substrings of the secrets that no escaping changes: what a leak would contain.
MARKERS = ["molecule-pw-3f9c2a7e", "bW9sZWN1bGUtYXp1cmUta2V5LTdkMWU="]


def as_backup_user(command):
    """A shell command run as the backup user with exactly the agent's environment files."""
    script = 'set -a && . "$1" && . "$2" && set +a && ' + command
    return "runuser -u %s -- /bin/sh -c %s sh %s %s" % (USER, shlex.quote(script), AGENT_ENV, CREDENTIALS)


def test_user_and_group(host):
    group = host.group(GROUP)
    user = host.user(USER)
    assert group.exists
    assert user.exists
    assert user.group == GROUP
    assert user.home == "/var/lib/tsdb-backup"
    assert user.shell == "/usr/sbin/nologin"
    assert user.uid < 1000, "a system account"


@pytest.mark.parametrize("path", ["/var/backups/tsdb", "/var/lib/tsdb-backup", "/var/log/tsdb-backup"])
def test_private_directories(host, path):
    d = host.file(path)
    assert d.is_directory
    assert d.mode == 0o700
    assert d.user == USER
    assert d.group == GROUP


def test_config_directory(host):
    d = host.file(CONFIG_DIR)
    assert d.is_directory
    assert d.mode == 0o750
    assert (d.user, d.group) == ("root", GROUP)


def test_credentials_file(host):
    f = host.file(CREDENTIALS)
    assert f.is_file
    assert f.mode == 0o640
    assert (f.user, f.group) == ("root", GROUP)
    content = f.content_string
    assert content.startswith("#"), "begins with the ansible_managed comment"
    assert "PGPASSWORD=" in content
    assert "AZURE_STORAGE_CONNECTION_STRING=" in content


def test_credentials_round_trip(host):
    """The secrets come back unchanged through the shell's reading of the file (every
    character the file has to escape is in the test password)."""
    out = host.check_output(as_backup_user('printf %s "$PGPASSWORD"'))
    assert out == SETTINGS["molecule_db_password"]


def test_agent_env_has_settings_but_no_secret(host):
    f = host.file(AGENT_ENV)
    assert f.mode == 0o640
    assert (f.user, f.group) == ("root", GROUP)
    content = f.content_string
    assert 'PGHOST="127.0.0.1"' in content
    assert 'PGUSER="%s"' % SETTINGS["molecule_db_user"] in content
    assert 'TSDB_BACKUP_AZURE_AUTH_MODE="connection_string"' in content
    for secret in SECRETS:
        assert secret not in content


def test_no_secret_where_others_can_read(host):
    """Every file that holds a secret is unreadable for an unprivileged user (nobody)."""
    for marker in MARKERS:
        assert any(marker in s for s in SECRETS)
    patterns = " ".join("-e %s" % shlex.quote(m) for m in MARKERS)
    holders = host.run(
        "grep -r -l -I -F %s /etc /opt /var /tmp /run /home /root /srv 2>/dev/null" % patterns
    ).stdout.split()
    # The search works: it finds the credentials file.
    assert CREDENTIALS in holders
    readable = [f for f in holders if host.run("runuser -u nobody -- test -r %s" % shlex.quote(f)).rc == 0]
    assert readable == [], "files holding a secret that others can read"


def test_venv_belongs_to_root(host):
    for path in (VENV, VENV + "/bin", VENV + "/lib"):
        f = host.file(path)
        assert f.user == "root"
        assert not f.mode & 0o022, "%s is writable by others than root" % path


def test_venv_has_the_pinned_runtime_requirements(host):
    wanted = {}
    for line in (ROOT / "requirements" / "runtime.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            wanted[name.lower().replace("_", "-")] = version
    installed = {}
    for line in host.check_output(VENV + "/bin/python -m pip freeze --disable-pip-version-check").splitlines():
        if "==" in line:
            name, version = line.split("==")
            installed[name.lower().replace("_", "-")] = version
    assert {n: installed.get(n) for n in wanted} == wanted
    host.check_output(VENV + "/bin/python -m pip check --disable-pip-version-check")


def test_backup_user_imports_the_libraries(host):
    out = host.check_output(
        as_backup_user(
            VENV + "/bin/python -c 'import azure.storage.blob, azure.identity, azure.mgmt.storage, psycopg2; "
            "print(psycopg2.__version__.split()[0], azure.storage.blob.__version__)'"
        )
    )
    assert out.split()[0] == "2.9.13"


def test_postgresql_17_with_timescaledb(host):
    assert host.package("postgresql-17").is_installed
    assert host.package("postgresql-17-timescaledb").is_installed
    assert host.service("postgresql@17-main").is_running
    query = "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
    database = shlex.quote(SETTINGS["molecule_db_name"])
    version = host.check_output("runuser -u postgres -- psql -X -At -d {} -c {}".format(database, shlex.quote(query)))
    assert version.startswith("2.")


def test_backup_user_dumps_a_hypertable(host):
    """The backup user is a database client: its settings log in and pg_dump works."""
    out = host.check_output(as_backup_user("pg_dump -w --schema-only"))
    assert "CREATE TABLE public.readings" in out
    rows = host.check_output(as_backup_user("psql -X -w -At -c 'SELECT count(*) FROM readings'"))
    assert int(rows) > 0


# --- metrics: published into node_exporter's directory without owning it -----------------------

TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"  # prepare.yml creates it as Debian's package does
METRICS_DIR = "/var/lib/tsdb-backup-metrics"
METRICS_FILES = ["tsdb_backup_%s.prom" % t for t in ("backup", "upload", "prune", "drill", "retention", "history")]
METRICS_FILES.append("tsdb_backup_status.prom")


def test_node_exporter_directory_keeps_its_owner_and_mode(host):
    d = host.file(TEXTFILE_DIR)
    assert (d.user, d.group, d.mode) == ("root", "root", 0o755)


def test_metrics_are_on_and_written_into_the_agents_own_directory(host):
    assert 'TSDB_BACKUP_METRICS_DIR="%s"' % METRICS_DIR in host.file(AGENT_ENV).content_string
    d = host.file(METRICS_DIR)
    assert (d.user, d.group, d.mode) == (USER, GROUP, 0o755)
    unit = host.file("/etc/systemd/system/tsdb-backup.service").content_string
    (paths,) = [line.split("=", 1)[1].split() for line in unit.splitlines() if line.startswith("ReadWritePaths=")]
    assert METRICS_DIR in paths and TEXTFILE_DIR not in paths


@pytest.mark.parametrize("name", METRICS_FILES)
def test_every_metrics_file_is_linked_and_never_dangles(host, name):
    link = host.file("%s/%s" % (TEXTFILE_DIR, name))
    assert link.is_symlink
    assert link.linked_to == "%s/%s" % (METRICS_DIR, name)
    target = host.file(link.linked_to)
    assert target.is_file
    assert (target.user, target.mode) == (USER, 0o644)


def test_a_run_publishes_through_the_links(host):
    """The runner's own writer, as the backup user: node_exporter's user (here nobody) reads
    the new file through the link, and node_exporter's directory gains no file of ours."""
    code = (
        "import sys; sys.path.insert(0, '/opt/tsdb-backup/collections'); "
        "from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _metrics; "
        "_metrics.write_run_metrics('%s', '/var/lib/tsdb-backup', 'molecule', 'backup', "
        "[{'database': 'molecule', 'success': True}])" % METRICS_DIR
    )
    host.check_output("runuser -u %s -- %s/bin/python -c %s" % (USER, VENV, shlex.quote(code)))
    text = host.check_output("runuser -u nobody -- cat %s/tsdb_backup_backup.prom" % TEXTFILE_DIR)
    assert 'tsdb_backup_last_run_success{database="molecule",host="molecule",run_type="backup"} 1.0' in text
    assert sorted(host.check_output("ls -A %s" % TEXTFILE_DIR).split()) == sorted(METRICS_FILES)
