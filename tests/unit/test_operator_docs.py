"""The operator documentation says what the code does: docs/HISTORY.md's blob names are what
_history_layout builds, its inventory example is what history_guard and the runner accept, its
reason codes are the ones retention reports; docs/OBSERVABILITY.md names only real variables,
metrics and alerts; every role has a README that names only variables that exist."""

import datetime
import json
import os
import re
import subprocess

import local_play
import pytest
import yaml
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _history_layout as hl
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _history_retention as hr
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _metrics, _pitr
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _runner_config as rc

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UTC = datetime.timezone.utc
ROLES = sorted(d for d in os.listdir(os.path.join(ROOT, "roles")) if os.path.isdir(os.path.join(ROOT, "roles", d)))


def text(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


def section(doc, heading):
    """The text of a '## heading' section, up to the next heading of the same level."""
    body = text(doc)
    start = body.index("\n## %s\n" % heading)
    end = body.find("\n## ", start + 1)
    return body[start : end if end > 0 else len(body)]


def code_blocks(markdown, lang):
    return re.findall(r"```%s\n(.*?)```" % lang, markdown, re.S)


def table_rows(markdown, header_start):
    """The rows of the first markdown table whose header starts with header_start, as cell lists
    (backquotes stripped)."""
    lines = markdown.splitlines()
    i = next(n for n, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[i + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip().strip("`") for c in line.strip().strip("|").split("|")])
    return rows


def options(role):
    spec = yaml.safe_load(text("roles/%s/meta/argument_specs.yml" % role))
    return spec["argument_specs"]["main"]["options"]


def alerts():
    rules = yaml.safe_load(text("extensions/prometheus/tsdb_backup.rules.yml"))
    return {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}


# --- docs/HISTORY.md -----------------------------------------------------------------------


def day(text_value):
    return datetime.datetime.strptime(text_value, "%Y-%m-%d").replace(tzinfo=UTC)


def test_history_blob_examples_are_what_the_layout_builds():
    rows = table_rows(section("docs/HISTORY.md", "Layout"), "| prefix | host | database | hypertable |")
    assert len(rows) >= 3
    for prefix, host, database, hypertable, span, version, name in rows:
        start, end = (day(t.strip()) for t in span.split(" to "))
        ext = hl.MANIFEST_EXT if name.endswith(hl.MANIFEST_EXT) else hl.DATA_EXT
        folder = hl.history_folder(prefix, host, database, hypertable)
        assert hl.object_name(folder, start, end, int(version), ext) == name
        assert hl.parse_leaf(name) == (
            start,
            end,
            int(version),
            hl.KIND_DATA if ext == hl.DATA_EXT else hl.KIND_MANIFEST,
        )


def test_history_layout_lines_name_the_parts_the_code_joins():
    layout = code_blocks(section("docs/HISTORY.md", "Layout"), "")[0]
    for ext in (hl.DATA_EXT, hl.MANIFEST_EXT):
        assert (
            "<prefix>/%s/<host>/<database segment>/<schema.table segment>/<YYYY>/<MM>/<from>_<to>.v<N>.%s"
            % (
                hl.HISTORY_DIR,
                ext,
            )
            in layout
        )


def inventory_example():
    (block,) = code_blocks(section("docs/HISTORY.md", "Setting it up (role history_guard)"), "yaml")
    return yaml.safe_load(block)


def test_history_inventory_example_is_accepted_by_the_role_and_the_runner():
    example = inventory_example()
    spec = options("history_guard")
    assert set(example) <= set(spec)
    # Every key of the role's own default items, no other.
    default_keys = {k for item in spec["history_guard_retention"]["default"] for k in item}
    for item in example["history_guard_retention"]:
        assert set(item) == default_keys == {"hypertable", "retention_days"}
    # What the role writes into history.env, read back the way the timer reads it.
    env = {
        "TSDB_BACKUP_DATABASES": json.dumps(["iot"]),
        "TSDB_HISTORY_DATABASE": example["history_guard_database"],
        "TSDB_HISTORY_RETENTION": json.dumps(example["history_guard_retention"]),
        "TSDB_HISTORY_GRACE_HOURS": str(example["history_guard_grace_hours"]),
    }
    history = rc.load_config(env)["history"]
    assert history["retention"] == example["history_guard_retention"]
    assert history["database"] == "iot" and history["grace_hours"] == 1
    assert [n for n, _d in hr.normalize_policies(history["retention"])] == [
        "public.esp_telemetry",
        "public.diagnostic_results",
    ]


def test_the_module_key_name_is_refused_by_the_timer():
    with pytest.raises(rc.ConfigError):
        rc.load_config(
            {
                "TSDB_BACKUP_DATABASES": '["iot"]',
                "TSDB_HISTORY_RETENTION": json.dumps([{"name": "esp_telemetry", "retention_days": 30}]),
            }
        )


def test_history_reason_codes_are_the_ones_retention_reports():
    rows = table_rows(
        section("docs/HISTORY.md", "Retention: what is dropped, and what is held back"), "| `reason_code`"
    )
    codes = {v for k, v in vars(hr).items() if k.startswith("HELD_")}
    assert {r[0] for r in rows} == codes


def test_history_names_real_metrics_and_alerts():
    body = text("docs/HISTORY.md")
    assert set(re.findall(r"\b(tsdb_backup_[a-z_]+)\{", body)) | set(
        re.findall(r"`(tsdb_backup_[a-z_]+_(?:back|seconds))`", body)
    ) <= set(_metrics.metric_names())
    assert set(re.findall(r"\b(TsdbBackup[A-Za-z]+)\b", body)) <= alerts()
    assert "tsdb_backup_chunks_held_back" in body and "TsdbBackupRetentionHeldBack" in body


# --- docs/OBSERVABILITY.md -----------------------------------------------------------------

# Files named like metrics or variables: tsdb_backup_status.prom, tsdb_backup_notify.py, ...
NOT_A_NAME = r"(?![\w-]*\.(?:prom|py|json)\b)"
# Words of that form that are not variables: a library, the inventory group, the default login
# (and the stem of tsdb_backup_*.prom).
NOT_VARIABLES = {"prometheus_client", "tsdb_hosts", "tsdb_backup"}


def monitoring_variables():
    play = text("playbooks/monitoring.yml")
    return set(re.findall(r"\b(prometheus_[a-z_]+) \| default\(", play)) | {"prometheus_target"}


def test_observability_names_only_real_variables():
    body = text("docs/OBSERVABILITY.md")
    known = (
        set(options("backup_agent")) | set(options("tsdb")) | set(_metrics.metric_names()) | set(_pitr.metric_names())
    )
    known |= monitoring_variables() | NOT_VARIABLES | {"backup_agent_prometheus_rules_dir"}  # named as removed
    named = set(re.findall(r"\b((?:backup_agent|tsdb|prometheus)_[a-z_]*[a-z])\b" + NOT_A_NAME, body))
    assert sorted(named - known) == []
    # The operator's variables of the role's metrics and notifications are all explained.
    for name in options("backup_agent"):
        if name.startswith(("backup_agent_metrics_", "backup_agent_notify_", "backup_agent_log_format")):
            assert "`%s`" % name in body, name
    for name in monitoring_variables():
        assert "`%s`" % name in body, name


def test_observability_lists_every_alert_and_only_real_ones():
    section_text = section("docs/OBSERVABILITY.md", "Alert rules (on the Prometheus server)")
    rows = table_rows(section_text, "| Alert |")
    assert {r[0] for r in rows} == alerts()
    assert set(re.findall(r"\b(TsdbBackup[A-Za-z]+)\b", text("docs/OBSERVABILITY.md"))) <= alerts()


def test_observability_metric_reference_is_complete():
    rows = table_rows(section("docs/OBSERVABILITY.md", "Metrics"), "| Metric | Labels |")
    assert sorted(r[0] for r in rows) == sorted(_metrics.metric_names())


def test_the_operator_part_comes_before_the_python_api():
    body = text("docs/OBSERVABILITY.md")
    developers = body.index("\n## For developers")
    assert body.find("\n## ", developers + 1) == -1, "the developers' section is the last"
    assert "_metrics.write_run_metrics(" not in body[:developers]


# --- roles/<role>/README.md ----------------------------------------------------------------

ROLE_TOKEN = re.compile(
    r"\b((?:tsdb|%s)_[a-z0-9_]*[a-z0-9])\b" % "|".join(r for r in ROLES if r != "tsdb") + NOT_A_NAME
)
# What the roles' files read from the site's settings (as tests/unit/test_one_settings.py finds it).
SETTING = re.compile(r"\b(tsdb_(?:login|port|passfile|sslmode|backup|azure|drill|restore|history)\w*)\b(?!\.[a-z])")


def readme(role):
    return text("roles/%s/README.md" % role)


def old_names():
    tsdb_vars = yaml.safe_load(text("roles/tsdb/vars/main.yml"))
    return set(tsdb_vars["__tsdb_renamed"]) | set(tsdb_vars["__tsdb_removed"])


def role_reads(role):
    """The tsdb_* settings the role's tasks, templates, defaults and vars read."""
    found = set()
    for base, _dirs, files in os.walk(os.path.join(ROOT, "roles", role)):
        for name in files:
            path = os.path.join(base, name)
            if name == "README.md" or path.endswith(os.path.join("meta", "argument_specs.yml")):
                continue
            with open(path, encoding="utf-8") as f:
                found |= set(SETTING.findall(f.read()))
    return found & set(options("tsdb"))


def test_every_role_has_a_short_readme():
    for role in ROLES:
        lines = readme(role).splitlines()
        assert lines[0] == "# Role `insa.timescaledb_backup.%s`" % role
        assert len(lines) <= 125, (role, len(lines))
        for heading in ("What it does on the host", "Variables", "Example", "Requirements", "What it never does"):
            assert "\n## %s\n" % heading in readme(role), (role, heading)
        assert "ansible-doc -t role insa.timescaledb_backup.%s" % role in readme(role)


@pytest.mark.parametrize("role", ROLES)
def test_a_role_readme_names_only_variables_that_exist(role):
    known = {name for r in ROLES for name in options(r)} | NOT_VARIABLES | set(_metrics.metric_names())
    known |= set(_pitr.metric_names())
    if role == "tsdb":
        known |= old_names()  # the README explains that old names stop the play
    assert sorted(set(ROLE_TOKEN.findall(readme(role))) - known) == []


@pytest.mark.parametrize("role", ROLES)
def test_a_role_readme_names_every_option_and_every_shared_setting_it_reads(role):
    body = readme(role)
    missing = [name for name in sorted(set(options(role)) | role_reads(role)) if "`%s`" % name not in body]
    assert missing == []


def example_plays(role):
    (block,) = code_blocks(section("roles/%s/README.md" % role, "Example"), "yaml")
    return yaml.safe_load(block)


@pytest.mark.parametrize("role", ROLES)
def test_a_role_readme_example_applies_the_role_by_its_full_name(role):
    plays = example_plays(role)
    names = [entry["role"] for play in plays for entry in play.get("roles", [])]
    assert "insa.timescaledb_backup.%s" % role in names
    assert all(n.startswith("insa.timescaledb_backup.") and n.split(".")[-1] in ROLES for n in names)


def test_the_role_readme_examples_pass_a_syntax_check(tmp_path):
    playbook = tmp_path / "examples.yml"
    playbook.write_text(yaml.safe_dump([play for role in ROLES for play in example_plays(role)]))
    binary = local_play.playbook_binary()
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_LOCAL_TEMP=str(tmp_path))
    proc = subprocess.run(
        [binary, "--syntax-check", "-i", "localhost,", str(playbook)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_project_readme_links_every_role_readme():
    body = text("README.md")
    for role in ROLES:
        assert "(roles/%s/README.md)" % role in body, role
