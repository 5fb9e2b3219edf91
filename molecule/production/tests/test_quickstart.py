"""The README's production quick start, run exactly as written on the scenario's three hosts, and
docs/PRODUCTION.md's shell blocks around it (the inventory, the run, the rebuild of a host).

An operator's shell: a temporary copy of the checkout (its tracked and untracked files, no .git,
no environment of molecule's: the copy's ansible.cfg finds the copy's collection), cwd its root.
The blocks' commands run through `sh` as written, in the order of the documents, except:

- `--ask-vault-pass` becomes `--vault-password-file <file>` (no TTY here), and `ansible-vault
  encrypt` is given the same file;
- the operator's edits after `cp -r inventories/example inventories/mysite`: hosts.yml becomes the
  scenario's hosts (their names, ports, the docker connection) and vault.yml the scenario's
  secrets. group_vars/tsdb_hosts/main.yml and every playbook stay as the example has them. What
  the rig cannot provide (molecule.yml's header: the Azurite connection string, the ARM double,
  the wheelhouse) goes into hosts.yml: group vars of tsdb_hosts where main.yml leaves a variable
  unset, host vars where main.yml sets it (tsdb_azure_auth_mode: an inventory file's host vars
  take precedence over group_vars/, its group vars do not);
- the restore block's example host names become the scenario's (as tests/integration/playbooks/
  test_runbook.py does for docs/RESTORE.md).

It runs after test_production.py (the hosts are converged, backed up, restored once): setup.yml
from the copy must change nothing, backup.yml must add one set per host to the scenario's Azurite,
the drill and the rebuild of host 3 from host 1 must succeed. The checkout itself is left as it
was (git status), with no inventories/mysite in it.
"""

import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

import psycopg2
import pytest
import testinfra
import yaml
from azure.storage.blob import BlobServiceClient
from psycopg2 import sql

SCENARIO = pathlib.Path(__file__).resolve().parent.parent
ROOT = SCENARIO.parent.parent
MOLECULE = yaml.safe_load((SCENARIO / "molecule.yml").read_text())
INVENTORY = MOLECULE["provisioner"]["inventory"]
SETTINGS = INVENTORY["group_vars"]["tsdb_hosts"]
HOSTS = [p["name"] for p in MOLECULE["platforms"]]
SOURCE, TIMER, TARGET = HOSTS  # as test_production.py: host 3 is rebuilt from host 1
EXAMPLE = ROOT / "inventories" / "example"
# The example site's host names, in the order of hosts.yml: the restore block names two of them.
EXAMPLE_HOSTS = list(yaml.safe_load((EXAMPLE / "hosts.yml").read_text())["all"]["children"]["tsdb_hosts"]["hosts"])
DATABASE = SETTINGS["tsdb_backup_databases"][0]
CONTAINER = SETTINGS["tsdb_azure_container"]
PREFIX = SETTINGS["tsdb_azure_prefix"]
CONNECTION_STRING = SETTINGS["vault_tsdb_azure_connection_string"]
LOGIN = SETTINGS["tsdb_login_user"]
PASSWORD = SETTINGS["vault_tsdb_login_password"].replace("$$", "$")  # molecule.yml doubles a "$"
SET_SUFFIXES = (".dump", ".manifest.json", ".globals.sql")
TIMERS = ("tsdb-backup", "tsdb-backup-drill", "tsdb-history-archive", "tsdb-history-retention")
UNIT_DIR = "/etc/systemd/system"
RECAP = re.compile(
    r"^(?P<host>\S+)\s+: ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
    r"\s+failed=(?P<failed>\d+)",
    re.M,
)
COPY_CMD = re.compile(r"^cp -r inventories/example inventories/(?P<site>[\w.-]+)$")


# --- The documents' shell blocks -----------------------------------------------------------------


def section(path, heading):
    """The text of the markdown section whose heading line is `heading`, to the next of its level."""
    body = (ROOT / path).read_text(encoding="utf-8")
    level = heading.split(" ", 1)[0]
    start = body.find("\n%s\n" % heading)
    assert start >= 0, "%s has no section %r" % (path, heading)
    end = body.find("\n%s " % level, start + 1)
    return body[start : end if end > 0 else len(body)]


def sh_blocks(text):
    return re.findall(r"^```sh\n(.*?)^```$", text, re.S | re.M)


def commands(block):
    """The block's commands as (words, the text as written): a backslash continues a line;
    comments and blank lines are dropped from the words (sh drops them from the text)."""
    found = []
    for text in re.split(r"(?<!\\)\n", block):
        words = " ".join(shlex.split(text.replace("\\\n", " "), comments=True))
        if words:
            found.append((words, text))
    return found


def readme_quick_start():
    """The README's production block; fails unless it is still cp + setup.yml + backup.yml."""
    blocks = sh_blocks(section("README.md", "## Production"))
    assert len(blocks) == 1, "README.md's Production section should hold one sh block, not %d" % len(blocks)
    lines = commands(blocks[0])
    words = [line[0] for line in lines]
    assert len(lines) == 3, words
    m = COPY_CMD.match(words[0])
    assert m, "the quick start no longer starts by copying inventories/example: %r" % words[0]
    site = m.group("site")
    for line, name in zip(words[1:], ("setup.yml", "backup.yml")):
        expected = "ansible-playbook -i inventories/%s playbooks/%s --ask-vault-pass" % (site, name)
        assert line == expected, "the quick start changed shape: %r, not %r" % (line, expected)
    return site, lines


def production_blocks(site):
    """docs/PRODUCTION.md's blocks of sections 3 (the inventory) and 5 (run it, rebuild a host),
    checked for the shape this test knows how to run."""
    (inventory,) = sh_blocks(section("docs/PRODUCTION.md", "## 3. The inventory"))
    run, restore = sh_blocks(section("docs/PRODUCTION.md", "## 5. Run it"))
    inventory, run, restore = commands(inventory), commands(run), commands(restore)
    folder = "inventories/%s" % site
    assert [line[0] for line in inventory] == [
        "cp -r inventories/example %s" % folder,
        "$EDITOR %s/hosts.yml" % folder,
        "$EDITOR %s/group_vars/tsdb_hosts/main.yml" % folder,
        "$EDITOR %s/group_vars/tsdb_hosts/vault.yml" % folder,
        "ansible-vault encrypt %s/group_vars/tsdb_hosts/vault.yml" % folder,
    ], inventory
    assert [line[0].split(" ", 1)[0] for line in run] == ["ansible-playbook"] * 3 + ["ansible"], run
    assert len(restore) == 1 and " playbooks/restore.yml " in restore[0][0], restore
    return inventory, run, restore


# --- The operator's edits ------------------------------------------------------------------------


def example_group_vars():
    merged = {}
    for path in sorted((EXAMPLE / "group_vars" / "tsdb_hosts").iterdir()):
        merged.update(yaml.safe_load(path.read_text()) or {})
    return merged


def site_hosts():
    """The hosts.yml an operator of this site writes: the example's shape, the scenario's hosts
    and connection, and what the rig has instead of Azure, Resource Manager and PyPI."""
    example = yaml.safe_load((EXAMPLE / "hosts.yml").read_text())
    group = example["all"]["children"]["tsdb_hosts"]
    main = example_group_vars()
    rig = {
        k: v
        for k, v in SETTINGS.items()
        if not k.startswith("vault_") and k not in group.get("vars", {}) and main.get(k, "<absent>") != v
    }
    assert rig, "the scenario has nothing of its own: molecule.yml's header lists what it has"
    host_level = {k: v for k, v in rig.items() if k in main}  # main.yml sets it: host vars win
    group_level = {k: v for k, v in rig.items() if k not in main}
    hosts = {h: dict(INVENTORY["host_vars"].get(h, {}), **host_level) for h in HOSTS}
    group_vars = dict(group.get("vars", {}), ansible_connection="community.docker.docker", **group_level)
    example["all"]["children"]["tsdb_hosts"] = {"hosts": hosts, "vars": group_vars}
    return "# The scenario's site (molecule/production/tests/test_quickstart.py).\n" + yaml.safe_dump(
        example, sort_keys=False
    )


def site_secrets():
    secrets = {
        k: v.replace("$$", "$") if isinstance(v, str) else v for k, v in SETTINGS.items() if k.startswith("vault_")
    }
    placeholders = {k for k in example_group_vars() if k.startswith("vault_")}
    assert placeholders <= set(secrets), "the example's vault.yml has secrets the test lacks"
    return yaml.safe_dump(secrets, sort_keys=False)


# --- The operator's shell ------------------------------------------------------------------------


def tree(top):
    """{relative path: bytes (a symlink: its target)} of the files under top."""
    found = {}
    for folder, dirs, files in os.walk(top):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, top)
            found[rel] = (
                ("-> " + os.readlink(path)).encode() if os.path.islink(path) else pathlib.Path(path).read_bytes()
            )
    return found


def checkout_copy(dest):
    """The checkout's files (tracked, and untracked but not ignored: the tree under test) in dest."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=str(ROOT),
        capture_output=True,
        check=True,
    ).stdout.decode()
    for rel in sorted(set(filter(None, listing.split("\0")))):
        src, dst = ROOT / rel, dest / rel
        if not os.path.lexists(src):  # deleted in the work tree
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), dst)
        else:
            shutil.copy2(src, dst)


def ignored(paths):
    """The paths the checkout's .gitignore ignores (what git status would not show)."""
    proc = subprocess.run(
        ["git", "check-ignore", "--no-index", "--stdin"],
        cwd=str(ROOT),
        input="\n".join(paths),
        capture_output=True,
        text=True,
        check=False,
    )
    return set(proc.stdout.splitlines())


def shell_env():
    """A clean operator's environment: the venv's tools on PATH, nothing of molecule's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "MOLECULE_"))}
    env["PATH"] = str(pathlib.Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


class Shell:
    """Runs documented commands through sh in the copy, as written but for the vault password."""

    def __init__(self, cwd, password_file):
        self.cwd = cwd
        self.option = "--vault-password-file %s" % shlex.quote(password_file)

    def run(self, text):
        """(rc, output) of one command: --ask-vault-pass given the file instead (ansible-vault
        encrypt, which would prompt for a new password, the file too)."""
        line = text.replace("--ask-vault-pass", self.option)
        line = re.sub(r"^ansible-vault encrypt ", "ansible-vault encrypt %s " % self.option, line)
        proc = subprocess.run(
            ["sh", "-c", line],
            cwd=self.cwd,
            env=shell_env(),
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        return proc.returncode, "$ %s\n%s%s" % (line, proc.stdout, proc.stderr)


def recap(output):
    return {
        m.group("host"): {k: int(v) for k, v in m.groupdict().items() if k != "host"} for m in RECAP.finditer(output)
    }


def per_host(output):
    """{host: its output} of an ad-hoc `ansible` run (the default callback: `host | STATUS | rc=N >>`)."""
    parts = re.split(r"^(\S+) \| \S+ \| rc=\d+ >>$", output, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


# --- How the test looks --------------------------------------------------------------------------


def root(name):
    return testinfra.get_host("docker://" + name)


def set_names():
    """{host: {backup id: suffixes}} of the dump sets in the scenario's Azurite."""
    box = BlobServiceClient.from_connection_string(CONNECTION_STRING).get_container_client(CONTAINER)
    found = {h: {} for h in HOSTS}
    for name in box.list_blob_names(name_starts_with=PREFIX + "/"):
        parts = name.split("/")  # <prefix>/<host>/<database>/<YYYY>/<MM>/<backup id><suffix>
        if len(parts) == 6 and parts[1] in found and parts[2] == DATABASE:
            for suffix in SET_SUFFIXES:
                if parts[5].endswith(suffix):
                    found[parts[1]].setdefault(parts[5][: -len(suffix)], set()).add(suffix)
    return found


def content(name):
    """Rows and an ordered digest of the application's tables on a host."""
    conn = psycopg2.connect(
        host="127.0.0.1", port=INVENTORY["host_vars"][name]["tsdb_port"], user=LOGIN, password=PASSWORD, dbname=DATABASE
    )
    try:
        with conn.cursor() as cur:
            found = {}
            for table in ("devices", "esp_telemetry", "diagnostic_results"):
                cur.execute(
                    sql.SQL(
                        "SELECT count(*), md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM {} t"
                    ).format(sql.Identifier(table))
                )
                found[table] = cur.fetchone()
            return found
    finally:
        conn.close()


def git_status():
    return subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        check=True,
    ).stdout


# --- The operator's session ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def quick_start():
    site, readme = readme_quick_start()
    inventory, run, restore = production_blocks(site)
    folder = "inventories/%s" % site
    assert not (ROOT / folder).exists(), "%s is in the checkout already" % folder
    s = {"status_before": git_status(), "sets_before": set_names()}
    with tempfile.TemporaryDirectory(prefix="insa-quickstart-") as tmp:
        checkout = pathlib.Path(tmp) / "checkout"
        checkout_copy(checkout)
        before = tree(checkout)
        password_file = pathlib.Path(tmp) / "vault-password"
        password_file.write_text("molecule-production-vault\n")
        password_file.chmod(0o600)
        shell = Shell(str(checkout), str(password_file))

        # The README's first line, section 3's too: the copy.
        assert inventory[0][0] == readme[0][0]
        s["cp"] = shell.run(readme[0][1])
        # Section 3's $EDITOR lines: hosts and secrets written, main.yml left as the example has it.
        if s["cp"][0] == 0:
            (checkout / folder / "hosts.yml").write_text(site_hosts())
            vault = checkout / folder / "group_vars" / "tsdb_hosts" / "vault.yml"
            vault.write_text(site_secrets())
            s["encrypt"] = shell.run(inventory[4][1])
            s["vault_head"] = vault.read_text()[:40]
        # The README's lines 2 and 3: setup.yml, backup.yml.
        s["setup"] = shell.run(readme[1][1])
        s["backup"] = shell.run(readme[2][1])
        s["sets_after"] = set_names()

        # Section 5's lines the README does not have: a drill now, the timers.
        extra = [t for w, t in run if w not in (readme[1][0], readme[2][0])]
        assert len(extra) == 2 and "playbooks/drill.yml" in extra[0], extra
        s["drill"] = shell.run(extra[0])
        s["timers"] = shell.run(extra[1])

        # Section 5's rebuild of a host from another's backups, on the scenario's host names.
        line = restore[0][1]
        for example_host, host in zip(EXAMPLE_HOSTS, HOSTS):
            line = line.replace(example_host, host)
        assert "restore_host=%s " % TARGET in line and "restore_source_host=%s " % SOURCE in line, line
        s["source_rows"] = content(SOURCE)
        s["restore"] = shell.run(line)
        s["target_rows"] = content(TARGET)

        after = tree(checkout)
        s["site"] = {rel: data for rel, data in after.items() if rel.startswith(folder + "/")}
        s["example"] = {rel: data for rel, data in before.items() if rel.startswith("inventories/example/")}
        s["changed"] = sorted(rel for rel in before if after.get(rel) != before[rel])
        new = [rel for rel in after if rel not in before and not rel.startswith(folder + "/")]
        s["new"] = sorted(set(new) - ignored(new))
    s["status_after"] = git_status()
    s["repo_has_site"] = (ROOT / folder).exists()
    s["folder"] = folder
    return s


def succeeded(result):
    rc, output = result
    return rc == 0, output[-6000:]


def test_the_site_is_the_example_but_hosts_and_secrets(quick_start):
    ok, out = succeeded(quick_start["cp"])
    assert ok, out
    folder = quick_start["folder"]
    site = {rel[len(folder) + 1 :]: data for rel, data in quick_start["site"].items()}
    example = {rel[len("inventories/example/") :]: data for rel, data in quick_start["example"].items()}
    assert sorted(site) == sorted(example)
    edited = sorted(rel for rel in site if site[rel] != example[rel])
    assert edited == ["group_vars/tsdb_hosts/vault.yml", "hosts.yml"], edited


def test_no_file_of_the_checkout_was_edited_or_added(quick_start):
    """Playbooks, roles, ansible.cfg, the example: as they were; nothing new outside the site's
    inventory that git would show."""
    assert quick_start["changed"] == []
    assert quick_start["new"] == []


def test_the_vault_is_encrypted_with_ansible_vault(quick_start):
    ok, out = succeeded(quick_start["encrypt"])
    assert ok, out
    assert quick_start["vault_head"].startswith("$ANSIBLE_VAULT;1.1;AES256"), quick_start["vault_head"]


def test_setup_from_the_copy_succeeds_and_changes_nothing(quick_start):
    """The hosts were converged from the scenario's inventory, which is the example's: setup.yml
    from the copy finds everything as it would have made it."""
    ok, out = succeeded(quick_start["setup"])
    assert ok, out
    stats = recap(quick_start["setup"][1])
    assert set(HOSTS) <= set(stats), out
    for h in HOSTS:
        assert (stats[h]["failed"], stats[h]["unreachable"], stats[h]["changed"]) == (0, 0, 0), (h, stats[h], out)


def test_backup_from_the_copy_adds_a_complete_set_per_host_to_azure(quick_start):
    ok, out = succeeded(quick_start["backup"])
    assert ok, out
    stats = recap(quick_start["backup"][1])
    for h in HOSTS:
        assert (stats[h]["failed"], stats[h]["unreachable"]) == (0, 0), (h, stats.get(h))
        new = {i: s for i, s in quick_start["sets_after"][h].items() if i not in quick_start["sets_before"][h]}
        assert len(new) == 1, (h, new)
        ((backup_id, suffixes),) = new.items()
        assert suffixes == set(SET_SUFFIXES), (h, backup_id, suffixes)
        # The same set on the host, of its own database.
        local = root(h).file("%s/%s/%s.manifest.json" % (SETTINGS["tsdb_backup_dir"], DATABASE, backup_id))
        assert local.exists, (h, backup_id)
        manifest = json.loads(local.content_string)
        assert (manifest["host"], manifest["database"], manifest["backup_id"]) == (h, DATABASE, backup_id)


@pytest.mark.parametrize("name", HOSTS)
def test_the_units_and_timers_are_installed(quick_start, name):
    host = root(name)
    for unit in TIMERS:
        for kind in (".service", ".timer"):
            assert host.file("%s/%s%s" % (UNIT_DIR, unit, kind)).is_file, unit + kind
        assert host.service(unit + ".timer").is_enabled, unit
    ok, out = succeeded(quick_start["timers"])
    assert ok, out
    listed = per_host(quick_start["timers"][1]).get(name, "")
    for unit in TIMERS:
        assert unit + ".timer" in listed, (name, unit, out)


def test_the_drill_from_the_copy_succeeds(quick_start):
    ok, out = succeeded(quick_start["drill"])
    assert ok, out
    stats = recap(quick_start["drill"][1])
    assert all((stats[h]["failed"], stats[h]["unreachable"]) == (0, 0) for h in HOSTS), stats


def test_the_rebuild_from_the_copy_gives_host3_host1s_rows(quick_start):
    ok, out = succeeded(quick_start["restore"])
    assert ok, out
    assert quick_start["target_rows"] == quick_start["source_rows"]
    assert all(table[0] > 0 for table in quick_start["source_rows"].values()), quick_start["source_rows"]


def test_the_checkout_is_left_as_it_was(quick_start):
    assert not quick_start["repo_has_site"], "%s in the checkout" % quick_start["folder"]
    assert quick_start["status_after"] == quick_start["status_before"]
