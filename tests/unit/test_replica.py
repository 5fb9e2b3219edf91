"""_replica and _runner_replica without Azure: settings, which blobs a set's copy needs, the read
order and fallback, the run's summary and the coverage metric's count. The copies themselves are
tested against two Azurite instances (tests/integration/azure/test_azure_replicas.py)."""

import logging

import pytest
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _replica, _replica_read, _runner_replica
from ansible_collections.insa.timescaledb_backup.plugins.module_utils._azure_names import (
    ConfigError,
    IntegrityError,
    NotFoundError,
    ServiceError,
)


def test_replica_names_are_checked():
    ok = _replica.check_replicas([{"name": "dr-north", "auth_mode": "sas", "container": "c"}])
    assert ok == [{"name": "dr-north", "auth_mode": "sas", "container": "c"}]
    assert _replica.check_replicas(None) == []
    for bad, message in (
        ([{"auth_mode": "sas"}], "has no name"),
        ([{"name": "primary"}], "primary's"),
        ([{"name": "a"}, {"name": "a"}], "used twice"),
        ([{"name": "a/b"}], "replica name"),
        ([{"name": "a", "access_tier": "Archive"}], "access_tier must be one of Hot, Cool, Cold"),
        (["dr"], "must be a mapping"),
    ):
        with pytest.raises(ConfigError, match=message):
            _replica.check_replicas(bad)


def test_the_replica_spec_has_no_prefix_and_hides_secrets():
    options = _replica.replicas_argument_spec()["replicas"]["options"]
    assert "prefix" not in options and options["name"]["required"] and options["container"]["required"]
    assert all(options[k].get("no_log") for k in ("connection_string", "account_key", "sas_token", "client_secret"))


ENTRY = {
    "blobs": [
        {"kind": "archive", "part": None, "name": "p/h/iot/2026/11/X.dump", "sha256": "a" * 64, "size": 10},
        {"kind": "globals", "part": None, "name": "p/h/iot/2026/11/X.globals.sql", "sha256": "g" * 64, "size": 3},
        {"kind": "manifest", "part": None, "name": "p/h/iot/2026/11/X.manifest.json", "sha256": "m" * 64},
    ]
}


def test_a_set_copies_the_blobs_its_manifest_lists_with_their_digests():
    manifest = {"archive": {"sha256": "a" * 64, "size_bytes": 10}, "globals": {"sha256": "g" * 64, "size_bytes": 3}}
    blobs = _replica.set_blobs(ENTRY, manifest)
    assert [(info["name"].rsplit("/", 1)[-1], digest, size) for info, digest, size in blobs] == [
        ("X.dump", "a" * 64, 10),
        ("X.globals.sql", "g" * 64, 3),
    ]
    # An encrypted set: the stored form's digests count.
    encrypted = dict(manifest, encryption={"archive": {"sha256": "a" * 64, "size_bytes": 10}})
    encrypted["archive"] = {"sha256": "p" * 64, "size_bytes": 9}
    assert _replica.set_blobs(ENTRY, encrypted)[0][1] == "a" * 64
    with pytest.raises(IntegrityError, match=r"lacks or holds with another sha256 \(archive\)"):
        _replica.set_blobs(ENTRY, dict(manifest, archive={"sha256": "b" * 64}))


class _Store:
    def __init__(self, name, error=None):
        self.name, self.error, self.calls = name, error, []

    def download_file(self, name, path, sha256):
        self.calls.append(name)
        if self.error:
            raise self.error
        return 42

    def redact(self, e):
        return ("%s" % e).replace("sekret", "<redacted>")


def targets(*stores):
    return [_replica.Target(s.name, s) for s in stores]


def test_the_read_order_and_secondary():
    ts = targets(_Store("primary"), _Store("dr"), _Store("dr2"))
    assert [t.name for t in _replica_read.read_order(ts)] == ["primary", "dr", "dr2"]
    assert [t.name for t in _replica_read.read_order(ts, "secondary")] == ["dr", "primary", "dr2"]
    assert [t.name for t in _replica_read.read_order(ts, "dr2", fallback=False)] == ["dr2"]
    with pytest.raises(ConfigError, match="no such target; the targets are primary, dr, dr2"):
        _replica_read.read_order(ts, "nowhere")
    with pytest.raises(ConfigError, match="no replica is configured"):
        _replica_read.read_order(ts[:1], "secondary")


def _down(store):
    raise ServiceError("down")


def test_a_read_falls_back_and_says_why():
    ts = targets(_Store("primary"), _Store("dr"))

    def fn(store):
        if store.name == "primary":
            raise IntegrityError("damaged, key sekret")
        return {"from": store.name}

    result, name, tried = _replica_read.read_with_fallback(ts, fn)
    assert result == {"from": "dr"} and name == "dr"
    assert tried == [{"target": "primary", "error": "damaged, key <redacted>"}]
    with pytest.raises(NotFoundError, match="no target could provide it .primary: .*; dr: down"):
        _replica_read.read_with_fallback(ts, _down)
    # One target only: its own error, as it is.
    with pytest.raises(IntegrityError, match="damaged"):
        _replica_read.read_with_fallback(ts[:1], fn)
    # A bug is not a reason to read elsewhere.
    with pytest.raises(KeyError):
        _replica_read.read_with_fallback(ts, lambda s: {}["x"])


def test_the_fallback_reader_downloads_objects_from_the_next_target():
    primary, dr = _Store("primary", NotFoundError("gone")), _Store("dr")
    reader = _replica_read.FallbackReader(targets(primary, dr))
    assert reader.name == "primary"  # everything else is the first target's
    assert reader.download_file("obj", "/x", "s" * 64) == 42
    assert primary.calls == ["obj"] and dr.calls == ["obj"]
    assert reader.fallbacks == [{"target": "primary", "error": "gone", "blob": "obj", "read_from": "dr"}]
    with pytest.raises(NotFoundError, match="cannot be read: refused"):
        _replica_read.FallbackReader([_replica.Target("primary", error="refused"), _replica.Target("dr", dr)])


def test_the_summary_says_what_each_replica_got():
    ok = {"targets": {"dr": {"copy_success": True, "pending_sets": 0}}, "replicated": {"dr": ["a", "b"]}}
    assert _runner_replica.summary_suffix(ok) == "; replica dr: 2 copied"
    down = {"targets": {"dr": {"copy_success": False, "pending_sets": None}}, "replica_errors": {"dr": "cannot reach"}}
    assert _runner_replica.summary_suffix(down) == "; replica dr: FAILED, cannot reach"
    assert _runner_replica.summary_suffix({"targets": {"primary": {"uncovered_days": 0}}}) == ""


def test_a_replica_failure_is_recorded_not_raised(caplog):
    r = {"database": "iot", "success": True}
    result = dict(_replica.new_result(_replica.Target("dr"), "iot"), error="cannot reach dr", pending=None)
    with caplog.at_level(logging.INFO):
        _runner_replica._record(r, result, logging.getLogger("t"), "set")
    assert r["success"] is True and r["targets"]["dr"] == {"copy_success": False, "pending_sets": None}
    assert r["warnings"] == ["replica dr: copies stopped: cannot reach dr"]


def test_the_gap_metric_counts_from_the_first_covered_day():
    report = {
        "targets": ["primary", "dr"],
        "databases": {
            "iot": [
                {"day": "2026-11-01", "covered_in": []},
                {"day": "2026-11-02", "covered_in": ["primary", "dr"]},
                {"day": "2026-11-03", "covered_in": ["primary"]},
            ],
            "new": [{"day": "2026-11-01", "covered_in": []}],
        },
        "gaps": [
            {"day": "2026-11-01", "database": "iot", "target": "primary"},
            {"day": "2026-11-01", "database": "iot", "target": "dr"},
            {"day": "2026-11-03", "database": "iot", "target": "dr"},
            {"day": "2026-11-01", "database": "new", "target": "primary"},
        ],
    }
    assert _runner_replica.gaps_since_history_began(report) == {
        ("iot", "primary"): 0,
        ("iot", "dr"): 1,
        ("new", "primary"): 0,
        ("new", "dr"): 0,
    }
