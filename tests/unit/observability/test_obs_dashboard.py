"""Grafana dashboard: importable structure, and every query reads only metrics that
_metrics really writes (computed from its output, not listed here)."""

import json
import os

import pytest
from obs_helpers import promql_metric_names

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
DASHBOARD = os.path.join(REPO, "extensions", "grafana", "tsdb_backup.json")
DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}


@pytest.fixture(scope="module")
def dashboard():
    with open(DASHBOARD) as f:
        return json.load(f)


def all_panels(dashboard):
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def test_importable_structure(dashboard):
    assert dashboard["id"] is None and dashboard["uid"] and dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)
    (ds_input,) = dashboard["__inputs"]
    assert ds_input == {
        "name": "DS_PROMETHEUS",
        "label": "Prometheus",
        "description": ds_input["description"],
        "type": "datasource",
        "pluginId": "prometheus",
        "pluginName": "Prometheus",
    }
    required = {r["id"] for r in dashboard["__requires"]}
    used = {p["type"] for p in all_panels(dashboard)} - {"row"}
    assert used <= required and "prometheus" in required
    ids = [p["id"] for p in all_panels(dashboard)]
    assert len(ids) == len(set(ids))
    for panel in all_panels(dashboard):
        pos = panel["gridPos"]
        assert set(pos) == {"h", "w", "x", "y"} and pos["x"] + pos["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DS and panel["title"] and panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs))
        for target in panel["targets"]:
            assert target["datasource"] == DS and target["expr"].strip(), panel["title"]


def test_panels_do_not_overlap(dashboard):
    cells = set()
    for panel in all_panels(dashboard):
        pos = panel["gridPos"]
        mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & mine, panel["title"]
        cells |= mine


def test_queries_read_only_metrics_that_are_written(dashboard, written_metric_names):
    queries = [(p["title"], t["expr"]) for p in all_panels(dashboard) for t in p.get("targets", [])]
    for var in dashboard["templating"]["list"]:
        assert var["datasource"] == DS
        queries.append((var["name"], var["definition"]))
    for title, expr in queries:
        names = promql_metric_names(expr)
        assert names, (title, expr)
        assert names <= written_metric_names, (title, names - written_metric_names)


def test_the_issue_panels_are_there(dashboard):
    """Last backup age per host/database, sizes and durations over time, upload backlog,
    drill results, history risk."""
    exprs = " ".join(t["expr"] for p in all_panels(dashboard) for t in p.get("targets", []))
    used = promql_metric_names(exprs)
    for metric in (
        "tsdb_backup_last_success_timestamp_seconds",
        "tsdb_backup_archive_size_bytes",
        "tsdb_backup_duration_seconds",
        "tsdb_backup_upload_duration_seconds",
        "tsdb_backup_pending_uploads",
        "tsdb_backup_drill_success",
        "tsdb_backup_oldest_unarchived_chunk_age_seconds",
        "tsdb_backup_retention_horizon_seconds",
    ):
        assert metric in used, metric
    per_host_age = [
        t
        for p in all_panels(dashboard)
        for t in p.get("targets", [])
        if t["expr"].startswith("time() - max by (host, database) (tsdb_backup_last_success_timestamp_seconds")
    ]
    assert per_host_age, "no last-backup-age panel per host and database"


def test_promql_name_extraction():
    assert promql_metric_names(
        'time() - max by (host, database) (a_b{run_type="backup", host=~"$host"}) > 26 * 3600'
    ) == {"a_b"}
    assert promql_metric_names("x / on (host, hypertable) group_left () y unless z offset 5m") == {"x", "y", "z"}
    assert promql_metric_names("sum(rate(c_total[$__rate_interval])) by (job) and bool d") == {"c_total", "d"}
    assert promql_metric_names('label_values(m{host=~"$host"}, database)') == {"m"}
