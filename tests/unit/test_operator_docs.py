"""The operator documentation says what the code does: docs/HISTORY.md's blob names are what
_history_layout builds, its inventory example is what history_guard and the runner accept, its
reason codes are the ones retention reports; docs/OBSERVABILITY.md names only real variables,
metrics and alerts; every role has a README that names only variables that exist."""

import datetime
import json
import os
import re

import pytest
import yaml
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _history_layout as hl
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _history_retention as hr
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _metrics
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
    rows = table_rows(section("docs/HISTORY.md", "Layout"), "| prefix | database | hypertable |")
    assert len(rows) >= 3
    for prefix, database, hypertable, span, version, name in rows:
        start, end = (day(t.strip()) for t in span.split(" to "))
        ext = hl.MANIFEST_EXT if name.endswith(hl.MANIFEST_EXT) else hl.DATA_EXT
        folder = hl.history_folder(prefix, database, hypertable)
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
            "<prefix>/%s/<database segment>/<schema.table segment>/<YYYY>/<MM>/<from>_<to>.v<N>.%s"
            % (
                hl.HISTORY_DIR,
                ext,
            )
            in layout
        )


def inventory_example():
    (block,) = [b for b in code_blocks(section("docs/HISTORY.md", "Setting it up (role history_guard)"), "yaml")]
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
