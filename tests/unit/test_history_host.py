"""Whose history a folder is: the host in the layout, the refusal of a manifest that records
another host, database or hypertable, the legacy layout (without host) read only for the host
named its owner, and the migration of that layout (planning, and a run against an in-memory store:
copies checked, manifest last, a second run copies nothing)."""

import datetime
import hashlib
import json
import os
import types

import pytest
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _azure, _runner_config
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _history as h
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _history_layout as hl
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _history_manifest as hm
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _history_migrate as hmig

UTC = datetime.timezone.utc
JAN5 = datetime.datetime(2026, 1, 5, tzinfo=UTC)
JAN6 = datetime.datetime(2026, 1, 6, tzinfo=UTC)
LABEL = "20260105T000000Z_20260106T000000Z"
TABLE = "public.esp_telemetry"


# ---------------------------------------------------------------------------------------------
# An in-memory container: what the history code asks of _azure.BlobStore


class FakeStore:
    def __init__(self, prefix="tsdb"):
        self.prefix = prefix
        self.container = "c"
        self.blobs = {}  # name -> (bytes, metadata)
        self.copies = []
        self.container_client = types.SimpleNamespace(list_blobs=self.list_blobs)

    def redact(self, e):
        return "%s" % e

    def url(self, name):
        return "https://acct/c/" + name

    def put(self, name, data, metadata=None):
        metadata = dict(metadata or {})
        metadata.setdefault("sha256", hashlib.sha256(data).hexdigest())
        self.blobs[name] = (data, metadata)

    def list_blobs(self, name_starts_with=None, include=None, results_per_page=None):
        return [
            types.SimpleNamespace(name=n, size=len(d), metadata=m)
            for n, (d, m) in sorted(self.blobs.items())
            if n.startswith(name_starts_with or "")
        ]

    def _listing(self, start):
        return {p.name: self.properties(p.name) for p in self.list_blobs(start)}

    def ensure_container(self, create=None, check_mode=False):
        return {"exists": True, "created": False}

    def properties(self, name):
        if name not in self.blobs:
            return None
        data, metadata = self.blobs[name]
        return {"name": name, "size": len(data), "sha256": metadata.get("sha256"), "metadata": dict(metadata)}

    def read_blob(self, name):
        return self.blobs[name][0]

    def copy_blob(self, source, name, metadata):
        assert name not in self.blobs
        self.copies.append((source, name))
        self.blobs[name] = (self.blobs[source][0], dict(metadata))
        return self.properties(name)

    def download_file(self, name, path, sha256):
        data = self.blobs[name][0]
        if hashlib.sha256(data).hexdigest() != sha256:
            raise _azure.IntegrityError("%s downloaded with another sha256" % name)
        with open(path, "wb") as f:
            f.write(data)

    def upload_file(self, item, metadata, tier, tags, block_size_mb, concurrency):
        with open(item["path"], "rb") as f:
            data = f.read()
        if item["name"] in self.blobs:
            return {"status": "skipped", "bytes": 0}, None
        self.put(item["name"], data, metadata)
        return {"status": "uploaded", "bytes": len(data)}, None


def manifest(host="db01", database="iot", hypertable=TABLE, version=1, generation=1, depends_on=None, obj=None):
    return {
        "format": hm.HISTORY_FORMAT,
        "format_version": hm.HISTORY_VERSION,
        "host": host,
        "database": database,
        "hypertable": hypertable,
        "range": {"start": "2026-01-05T00:00:00Z", "end": "2026-01-06T00:00:00Z", "label": LABEL},
        "version": version,
        "generation": generation,
        "columns": [],
        "rows": 3,
        "content_hash": "42",
        "object": obj or {"name": "%s.v%d.parquet" % (LABEL, version), "sha256": "ab", "size_bytes": 1},
        "covers": {"rows": 3, "content_hash": "42", "chunks": []},
        "depends_on": depends_on or [],
    }


def put_version(store, folder, version, payload, host="db01 (fqdn)", generation=1, depends_on=None):
    """A verified version as an earlier release wrote it: object, then manifest with metadata."""
    month = hl.month_folder(folder, JAN5)
    obj = "%s/%s.v%d.parquet" % (month, LABEL, version)
    sha = hashlib.sha256(payload).hexdigest()
    store.put(obj, payload, {"kind": hl.KIND_DATA, "database": "iot", "hypertable": TABLE})
    body = manifest(
        host=host,
        version=version,
        generation=generation,
        depends_on=depends_on,
        obj={"name": obj.rsplit("/", 1)[1], "sha256": sha, "size_bytes": len(payload)},
    )
    meta = {"kind": hl.KIND_MANIFEST, "database": "iot", "hypertable": TABLE, "object_sha256": sha}
    meta.update({"covers_rows": "3", "covers_hash": "42", "object_size": "%d" % len(payload)})
    store.put(obj.replace(".parquet", ".manifest.json"), hm.encode_manifest(body), meta)
    return {"version": version, "generation": generation, "name": obj, "sha256": sha, "size_bytes": len(payload)}


# ---------------------------------------------------------------------------------------------
# Layout


def test_each_host_has_its_own_history_folder():
    a = h.history_folder("tsdb", "db01", "iot", "esp_telemetry")
    b = h.history_folder("tsdb", "db02", "iot", "esp_telemetry")
    assert a == "tsdb/history/db01/iot/public.esp_telemetry" and b == "tsdb/history/db02/iot/public.esp_telemetry"
    assert h.legacy_folder("tsdb", "iot", "esp_telemetry") == "tsdb/history/iot/public.esp_telemetry"
    # A host named like the database does not reach into the legacy folder: the table segment differs.
    assert not h.history_folder("tsdb", "iot", "iot", TABLE).startswith(h.legacy_folder("tsdb", "iot", TABLE))


@pytest.mark.parametrize("bad", ["", "a/b", "..", "db01.", "x y", "-db"])
def test_the_host_segment_is_validated_as_the_backup_sets_do(bad):
    with pytest.raises(_azure.BlobNameError):
        h.history_folder("tsdb", bad, "iot", TABLE)
    with pytest.raises(_azure.BlobNameError):
        _azure.blob_name("tsdb", bad, "iot", "20260105T000000Z", ".dump")


def test_the_host_label_defaults_to_the_fqdn(monkeypatch):
    monkeypatch.setattr(hl.socket, "getfqdn", lambda: "db01.example.com")
    assert hl.host_label(None) == "db01.example.com" and hl.host_label("db01") == "db01"


def test_legacy_objects_are_trusted_only_by_the_host_named_their_owner():
    mine = h.Place.of("tsdb", "db01", "iot", "esp_telemetry", legacy_owner="db01")
    other = h.Place.of("tsdb", "db02", "iot", "esp_telemetry", legacy_owner="db01")
    nobody = h.Place.of("tsdb", "db02", "iot", "esp_telemetry", legacy_owner="")
    assert mine.legacy_trusted and not mine.legacy_unclaimed
    assert not other.legacy_trusted and not other.legacy_unclaimed
    assert not nobody.legacy_trusted and nobody.legacy_unclaimed
    assert mine.legacy == other.legacy == "tsdb/history/iot/public.esp_telemetry"
    with pytest.raises(_azure.BlobNameError):
        h.Place.of("tsdb", "db01", "iot", TABLE, legacy_owner="a/b")


def test_the_runner_reads_the_legacy_owner():
    config = _runner_config.load_config({"TSDB_BACKUP_DATABASES": "iot", "TSDB_HISTORY_LEGACY_OWNER": "db01"})
    assert config["history"]["legacy_owner"] == "db01"
    assert _runner_config.load_config({"TSDB_BACKUP_DATABASES": "iot"})["history"]["legacy_owner"] is None


# ---------------------------------------------------------------------------------------------
# Refusal


def place(host="db01", owner=None):
    return h.Place.of("tsdb", host, "iot", TABLE, legacy_owner=owner)


def manifest_name(folder, version=1):
    return "%s/%s.v%d.manifest.json" % (hl.month_folder(folder, JAN5), LABEL, version)


def test_a_manifest_of_another_host_is_refused_naming_both():
    p = place("db01")
    name = manifest_name(p.folder)
    assert hm.check_owner(manifest(), p, name) is not None
    with pytest.raises(hm.ForeignManifest, match="records host db02.*history of host db01") as e:
        hm.check_owner(manifest(host="db02"), p, name)
    assert e.value.kind == "integrity" and isinstance(e.value, h.HistoryError)
    with pytest.raises(hm.ForeignManifest, match="database other.*database iot"):
        hm.check_owner(manifest(database="other"), p, name)
    with pytest.raises(hm.ForeignManifest, match="hypertable public.other"):
        hm.check_owner(manifest(hypertable="public.other"), p, name)
    # Another range's or version's manifest under this name.
    with pytest.raises(hm.ForeignManifest, match="range .* v2"):
        hm.check_owner(manifest(version=2), p, name)


def test_in_the_legacy_folder_the_owner_stands_for_the_host_but_the_database_still_counts():
    p = place("db01", owner="db01")
    name = manifest_name(p.legacy)
    assert hm.check_owner(manifest(host="db01.example.com"), p, name, legacy=True)
    with pytest.raises(hm.ForeignManifest):
        hm.check_owner(manifest(host="db01.example.com", database="iot2"), p, name, legacy=True)


def test_metadata_of_another_host_is_refused_before_a_decision_is_taken_on_it():
    store = FakeStore()
    p = place("db01")
    info = {"name": manifest_name(p.folder), "metadata": {"host": "db02", "database": "iot", "hypertable": TABLE}}
    with pytest.raises(hm.ForeignManifest, match="marked as host db02"):
        hm.check_metadata(store, info, p)
    info["metadata"]["host"] = "db01"
    hm.check_metadata(store, info, p)
    legacy = {"name": manifest_name(p.legacy), "legacy": True, "metadata": {"database": "iot", "hypertable": TABLE}}
    hm.check_metadata(store, legacy, p)
    # Metadata is ASCII: a name is compared as it was written there.
    odd = h.Place.of("tsdb", "db01", "iot", "Ärger")
    meta = {"host": "db01", "database": "iot", "hypertable": 'public."?rger"'}
    hm.check_metadata(store, {"name": manifest_name(odd.folder), "metadata": meta}, odd)


def test_read_owned_manifest_refuses_a_planted_copy():
    store = FakeStore()
    p1, p2 = place("db01"), place("db02")
    put_version(store, p2.folder, 1, b"host two", host="db02")
    planted = manifest_name(p1.folder)
    store.put(planted, store.read_blob(manifest_name(p2.folder)))
    with pytest.raises(hm.ForeignManifest, match="records host db02"):
        hm.read_owned_manifest(store, {"name": planted}, p1)
    assert hm.read_owned_manifest(store, {"name": manifest_name(p2.folder)}, p2)["host"] == "db02"


# ---------------------------------------------------------------------------------------------
# Listing with the legacy fallback


def test_the_legacy_versions_are_listed_only_for_their_owner_and_the_hosts_folder_comes_first():
    store = FakeStore()
    mine = place("db01", owner="db01")
    put_version(store, mine.legacy, 1, b"legacy one")
    put_version(store, mine.legacy, 2, b"legacy two")
    put_version(store, mine.folder, 2, b"host two", host="db01")
    rel = "2026/01/%s." % LABEL
    entry = hm.list_place(store, mine, rel)[LABEL]
    assert sorted(entry["manifests"]) == [1, 2]
    assert entry["manifests"][1].get("legacy") is True and entry["data"][1]["name"].startswith(mine.legacy + "/")
    assert "legacy" not in entry["manifests"][2] and entry["data"][2]["name"].startswith(mine.folder + "/")
    assert hm.list_place(store, place("db02", owner="db01"), rel) == {}
    assert hm.list_place(store, place("db01"), rel)[LABEL]["manifests"].keys() == {2}


def test_unclaimed_legacy_history_is_reported_and_claimed_or_disowned_history_is_not():
    store = FakeStore()
    put_version(store, place().legacy, 1, b"legacy one")
    note = hm.unclaimed_legacy(store, place("db02"))
    assert "layout without host" in note and "set legacy_owner" in note and "db02" in note
    assert hm.unclaimed_legacy(store, place("db02", owner="db01")) is None
    assert hm.unclaimed_legacy(store, place("db01", owner="db01")) is None
    assert hm.unclaimed_legacy(FakeStore(), place("db02")) is None


def test_objects_relied_on_are_found_in_this_place_only():
    p = place("db01", owner="db01")
    folder = hl.month_folder(p.folder, JAN5)
    entry = {"data": {1: {"name": hl.month_folder(p.legacy, JAN5) + "/x.v1.parquet"}}}
    ref = {"version": 1, "name": "elsewhere/history/db02/iot/t/2026/01/x.v1.parquet", "sha256": "ab"}
    assert hm.resolve_ref(entry, ref, folder)["name"] == entry["data"][1]["name"]
    assert hm.resolve_ref({"data": {}}, ref, folder)["name"] == folder + "/x.v1.parquet"


def test_the_state_hint_of_another_host_is_ignored(tmp_path):
    path = str(tmp_path / "state.json")
    state = hm._State(path, "iot", "db01")
    state.keep(TABLE, LABEL, (3, "42"))
    state.save([TABLE])
    with open(path) as f:
        assert json.load(f)["host"] == "db01"
    assert hm._State(path, "iot", "db01").get(TABLE, LABEL) == (3, "42")
    assert hm._State(path, "iot", "db02").get(TABLE, LABEL) is None


# ---------------------------------------------------------------------------------------------
# Migration


def test_legacy_ranges_take_only_the_layout_without_host():
    root = hmig.legacy_root("tsdb", "iot")
    leaf = "%s.v1.parquet" % LABEL
    info = {"size": 1, "sha256": "ab", "metadata": {}}
    listing = {
        "%s/%s/2026/01/%s" % (root, TABLE, leaf): info,
        # the host layout of a host named "iot": one level more
        "%s/iot/%s/2026/01/%s" % (root, TABLE, leaf): info,
        # a range filed under another month than its start
        "%s/%s/2026/02/%s" % (root, TABLE, leaf): info,
        "%s/%s/2026/01/notes.txt" % (root, TABLE): info,
    }
    ranges = hmig.legacy_ranges(listing, root)
    assert list(ranges) == [(TABLE, LABEL)]
    assert ranges[(TABLE, LABEL)]["data"][1]["name"] == "%s/%s/2026/01/%s" % (root, TABLE, leaf)


def info(sha, host=None, name="n"):
    metadata = {"object_sha256": sha}
    if host:
        metadata["host"] = host
    return {"name": name, "sha256": sha, "metadata": metadata}


def test_migration_planning():
    legacy = {
        "data": {1: info("a"), 2: info("b"), 3: info("c"), 4: info("d"), 5: info("e")},
        "manifests": {1: info("a"), 2: info("b"), 3: info("c"), 5: info("e")},
    }
    present = {
        "data": {1: info("a"), 2: info("b"), 3: info("x")},
        "manifests": {1: info("a", host="db01"), 2: info("b", host="db02")},
    }
    steps, attempts = hmig.plan_range(legacy, present, "db01")
    # v1 done; v2 marked as another host's; v3 another object there; v5 to copy; v4 a failed attempt
    assert steps == [(1, "done"), (2, "conflict"), (3, "conflict"), (5, "copy")] and attempts == [4]
    # An object already copied (an interrupted run) is checked and kept, not copied again.
    steps, _a = hmig.plan_range(
        {"data": {1: info("a")}, "manifests": {1: info("a")}}, {"data": {1: info("a")}, "manifests": {}}, "db01"
    )
    assert steps == [(1, "copy")]
    assert hmig.plan_range({"data": {1: info("a")}, "manifests": {1: info("a")}}, None, "db01")[0] == [(1, "copy")]


def test_the_migrated_manifest_records_the_host_and_its_origin():
    old = hm.parse_history_manifest(
        hm.encode_manifest(manifest(host="db01.example.com", depends_on=[{"version": 1, "name": "old/x.v1.parquet"}]))
    )
    new = hmig.migrated_manifest(old, "db01", "old/x.v2.manifest.json", {1: "new/x.v1.parquet"}, JAN6)
    again = hm.parse_history_manifest(hm.encode_manifest(new))
    assert again["host"] == "db01" and again["depends_on"][0]["name"] == "new/x.v1.parquet"
    assert again["migrated_from"] == {
        "manifest": "old/x.v2.manifest.json",
        "manifest_sha256": old["manifest_sha256"],
        "host": "db01.example.com",
        "at": "2026-01-06T00:00:00Z",
    }


@pytest.mark.parametrize("owner, match", [(None, "no legacy owner"), ("db02", "belongs to db02")])
def test_the_migration_runs_only_on_the_owner(owner, match):
    with pytest.raises(h.HistoryError, match=match) as e:
        h.migrate_legacy("iot", FakeStore(), host_label="db01", legacy_owner=owner)
    assert e.value.kind == "config"


def legacy_store():
    """Two generations of one range and a failed attempt, in the layout without host."""
    store = FakeStore()
    legacy = place().legacy
    gen1 = put_version(store, legacy, 1, b"generation one")
    put_version(store, legacy, 2, b"generation two", generation=2, depends_on=[gen1])
    store.put("%s/%s.v3.parquet" % (hl.month_folder(legacy, JAN5), LABEL), b"failed attempt")
    return store


def test_the_migration_copies_checks_writes_the_manifest_last_and_is_idempotent(tmp_path):
    store = legacy_store()
    before = dict(store.blobs)
    res = h.migrate_legacy("iot", store, host_label="db01", legacy_owner="db01", work_dir=str(tmp_path), now=JAN6)
    assert res["complete"] and res["changed"] and res["attempts_left"] == 1
    assert [m["version"] for m in res["migrated"]] == [1, 2] and res["bytes_copied"] == 28
    host = hl.month_folder(place().folder, JAN5)
    assert sorted(dst for _src, dst in store.copies) == ["%s/%s.v%d.parquet" % (host, LABEL, v) for v in (1, 2)]
    assert all(store.blobs[n] == b for n, b in before.items()), "legacy objects stay as they were"
    # The migrated versions are this host's: read as such without the legacy fallback.
    p = place("db01")
    entry = hm.list_place(store, p, "2026/01/%s." % LABEL)[LABEL]
    assert sorted(entry["manifests"]) == [1, 2] and sorted(entry["data"]) == [1, 2]
    m2 = hm.read_owned_manifest(store, entry["manifests"][2], p)
    assert m2["depends_on"][0]["name"] == "%s/%s.v1.parquet" % (host, LABEL)
    assert entry["manifests"][2]["metadata"]["host"] == "db01"
    with pytest.raises(hm.ForeignManifest):
        hm.read_owned_manifest(store, entry["manifests"][2], place("db02"))

    again = h.migrate_legacy("iot", store, host_label="db01", legacy_owner="db01", work_dir=str(tmp_path))
    assert again["already"] == 2 and again["migrated"] == [] and not again["changed"] and again["complete"]
    assert len(store.copies) == 2, "a second run copies nothing"
    assert os.listdir(str(tmp_path)) == []


def test_a_copy_that_does_not_match_its_manifest_gets_no_manifest(tmp_path, monkeypatch):
    store = legacy_store()
    real_copy = store.copy_blob

    def damaging_copy(source, name, metadata):
        out = real_copy(source, name, metadata)
        store.blobs[name] = (b"damaged", store.blobs[name][1])
        return out

    monkeypatch.setattr(store, "copy_blob", damaging_copy)
    res = h.migrate_legacy("iot", store, host_label="db01", legacy_owner="db01", work_dir=str(tmp_path))
    assert not res["complete"] and res["migrated"] == []
    assert {f["version"] for f in res["failures"]} == {1, 2} and "never trusted" in res["failures"][0]["error"]
    assert not [n for n in store.blobs if n.startswith(place().folder) and n.endswith(".manifest.json")]


def test_a_legacy_manifest_of_another_database_is_refused_not_migrated(tmp_path):
    store = FakeStore()
    legacy = place().legacy
    put_version(store, legacy, 1, b"one")
    name = manifest_name(legacy)
    store.put(name, hm.encode_manifest(dict(hm.parse_history_manifest(store.read_blob(name)), database="iot2")))
    res = h.migrate_legacy("iot", store, host_label="db01", legacy_owner="db01", work_dir=str(tmp_path))
    assert [r["version"] for r in res["refused"]] == [1] and "database iot2" in res["refused"][0]["error"]
    assert store.copies == [] and not res["complete"]
