"""The history core's pure parts: names, types, manifests, versions, the state hint."""

import datetime
import json

import pyarrow as pa
import pytest
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _history as h
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _history_codec as hc
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _history_layout as hl
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _history_manifest as hm
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _history_retention as hr
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _history_sql as hs

UTC = datetime.timezone.utc
JAN5 = datetime.datetime(2026, 1, 5, tzinfo=UTC)
JAN6 = datetime.datetime(2026, 1, 6, tzinfo=UTC)


def test_layout_names_round_trip():
    folder = h.history_folder("timescaledb", "db01", "iot", "esp_telemetry")
    assert folder == "timescaledb/history/db01/iot/public.esp_telemetry"
    name = hl.object_name(folder, JAN5, JAN6, 3, hl.DATA_EXT)
    assert name == (
        "timescaledb/history/db01/iot/public.esp_telemetry/2026/01/20260105T000000Z_20260106T000000Z.v3.parquet"
    )
    assert hl.parse_leaf(name) == (JAN5, JAN6, 3, h.KIND_DATA)
    manifest = hl.object_name(folder, JAN5, JAN6, 12, hl.MANIFEST_EXT)
    assert hl.parse_leaf(manifest) == (JAN5, JAN6, 12, hl.KIND_MANIFEST)
    odd = datetime.datetime(2026, 1, 5, 0, 0, 0, 500000, tzinfo=UTC)
    assert hl.parse_leaf(hl.object_name(folder, odd, JAN6, 1, hl.DATA_EXT))[0] == odd
    for leaf in (
        "x.parquet",
        "20260105T000000Z_20260106T000000Z.v0.parquet",
        "20260105T000000Z_20260106T000000Z.parquet",
    ):
        assert hl.parse_leaf(leaf) is None


def test_range_month_is_the_start_month():
    start = datetime.datetime(2025, 12, 29, tzinfo=UTC)
    assert h.month_folder("f", start) == "f/2025/12"


@pytest.mark.parametrize("bad", ["", "a;b", "Esp Telemetry", "public.", 'x"y', "a.b.c", "1abc", '"open', '"a"b'])
def test_table_names_are_read_as_postgresql_reads_identifiers(bad):
    with pytest.raises(h.HistoryError):
        hl.split_table_name(bad)


@pytest.mark.parametrize(
    "name, parts, segment",
    [
        ("Esp_Telemetry", ("public", "esp_telemetry"), "public.esp_telemetry"),
        # Only ASCII letters fold, as PostgreSQL does in a UTF-8 database.
        ("Ärger_X", ("public", "Ärger_x"), "public.~c3~84rger_x"),
        ("user.order", ("user", "order"), "user.order"),
        ('"Plant A"."Telemetry"', ("Plant A", "Telemetry"), "Plant~20A.Telemetry"),
        ('"a.b".c', ("a.b", "c"), "a~2eb.c"),
        ('a."b.c"', ("a", "b.c"), "a.b~2ec"),
        ('public."x""y 🚀"', ("public", 'x"y 🚀'), "public.x~22y~20~f0~9f~9a~80"),
    ],
)
def test_quoted_names_have_their_own_history_folder(name, parts, segment):
    assert hl.split_table_name(name) == parts
    assert hl.split_table_name(hl.qualified(*parts)) == parts
    assert h.history_folder("p", "h1", "my db", name) == "p/history/h1/my~20db/" + segment
    assert h.legacy_folder("p", "my db", name) == "p/history/my~20db/" + segment


def test_keywords_are_quoted_in_keys():
    assert hl.qualified("user", "order") == '"user"."order"'
    assert hl.qualified("public", "readings") == "public.readings"


def test_the_longest_names_fit_the_layout():
    host = "h" * 63 + "." + "example" * 9  # a long FQDN: 127 characters
    a = h.history_folder("p", host, "d" * 63, '"%s"."%s"' % ("🚀" * 15 + "xyz", "é" * 31 + "x"))
    b = h.history_folder("p", host, "d" * 63, '"%s"."%s"' % ("🚀" * 15 + "xyz", "é" * 31 + "y"))
    assert a != b and len(a.rsplit("/", 1)[1]) <= 254 and "~~" in a
    assert len(hl.object_name(a, JAN5, JAN6, 1, hl.DATA_EXT)) < 1024


def test_table_names():
    assert hl.split_table_name("esp_telemetry") == ("public", "esp_telemetry")
    assert hl.split_table_name("iot.esp_telemetry") == ("iot", "esp_telemetry")


def test_column_plans():
    assert hs.column_plan("timestamptz", -1) == ("epoch_us", "timestamp[us, tz=UTC]")
    assert hs.column_plan("float4", -1) == ("native", "float32")
    numeric_10_2 = ((10 << 16) | 2) + 4
    assert hs.column_plan("numeric", numeric_10_2) == ("native", "decimal128(10, 2)")
    assert hs.column_plan("numeric", -1) == ("text", "string")
    assert hs.column_plan("jsonb", -1) == ("text", "string")
    assert hs.column_plan("", -1) == ("text", "string")  # domains, enums, arrays
    assert hc.arrow_type("decimal128(10, 2)") == pa.decimal128(10, 2)


def test_type_names_that_could_inject_sql_are_refused():
    assert hs._pg_type({"name": "a", "pg_type": "timestamp with time zone"})
    assert hs._pg_type({"name": "a", "pg_type": "numeric(10,2)[]"})
    for bad in ("text; DROP TABLE x", "text -- x", "text)"[:4] + "'"):
        with pytest.raises(h.HistoryError):
            hs._pg_type({"name": "a", "pg_type": bad})


def test_float_encoding_follows_the_data():
    n = 1000
    noisy = pa.array([i * 1.000123 for i in range(n)], pa.float32())
    quantized = pa.array([float(i % 20) for i in range(n)], pa.float32())
    table = pa.table({"time": pa.array(range(n), pa.int64()), "noisy": noisy, "quantized": quantized})
    options = hc.parquet_options(3, table)
    assert options["use_byte_stream_split"] == ["noisy"]
    assert options["use_dictionary"] == ["time", "quantized"]
    assert "use_byte_stream_split" not in hc.parquet_options(3, None)


def manifest(**extra):
    body = {
        "format": hm.HISTORY_FORMAT,
        "format_version": hm.HISTORY_VERSION,
        "database": "iot",
        "host": "db01",
        "hypertable": "public.esp_telemetry",
        "range": {"start": "2026-01-05T00:00:00Z", "end": "2026-01-06T00:00:00Z", "label": "x"},
        "version": 1,
        "generation": 1,
        "columns": [],
        "rows": 3,
        "content_hash": "42",
        "object": {"name": "x", "sha256": "ab", "size_bytes": 1},
        "covers": {"rows": 3, "content_hash": "42"},
    }
    body.update(extra)
    return body


def test_manifest_is_sealed():
    data = hm.encode_manifest(manifest())
    assert hm.parse_history_manifest(data)["rows"] == 3
    edited = json.loads(data)
    edited["covers"]["rows"] = 4
    with pytest.raises(h.HistoryError, match="altered"):
        hm.parse_history_manifest(json.dumps(edited))
    with pytest.raises(h.HistoryError, match="format_version"):
        hm.parse_history_manifest(hm.encode_manifest(manifest(format_version=9)))
    with pytest.raises(h.HistoryError, match="not an insa"):
        hm.parse_history_manifest(b'{"format": "other"}')


def test_versions():
    assert hm.next_version(None) == 1 and h.latest_version(None) is None
    entry = {"data": {1: {}, 2: {}, 3: {}}, "manifests": {1: {}, 3: {}}}
    assert h.latest_version(entry) == 3
    assert hm.next_version(entry) == 4
    orphan = {"data": {1: {}, 2: {}}, "manifests": {1: {}}}
    assert h.latest_version(orphan) == 1 and hm.next_version(orphan) == 3  # v2 failed: never reused


def test_retention_policies_are_validated():
    assert hr.normalize_policies([{"name": "esp_telemetry", "retention_days": 30}]) == [
        ("public.esp_telemetry", datetime.timedelta(days=30))
    ]
    for bad in ([], [{"name": "x"}], [{"name": "x", "retention_days": 0}]):
        with pytest.raises(h.HistoryError):
            hr.normalize_policies(bad)


def test_state_hint_round_trip(tmp_path):
    path = str(tmp_path / "state" / "iot.json")
    state = hm._State(path, "iot", "db01")
    assert state.get("public.t", "r1") is None
    state.keep("public.t", "r1", (10, "-5"))
    state.save(["public.t"])
    again = hm._State(path, "iot", "db01")
    assert again.get("public.t", "r1") == (10, "-5")
    # Tables not run this time keep their entries; tables run drop ranges no longer seen.
    again.keep("public.u", "r9", (1, "1"))
    again.save(["public.u"])
    third = hm._State(path, "iot", "db01")
    assert third.get("public.t", "r1") == (10, "-5") and third.get("public.u", "r9") == (1, "1")
    assert hm._State(path, "other", "db01").get("public.t", "r1") is None
    # Another host's state (or one of the layout without host) says nothing about this folder.
    assert hm._State(path, "iot", "db02").get("public.t", "r1") is None
    with open(path, "w") as f:
        f.write("{broken")
    broken = hm._State(path, "iot", "db01")
    assert broken.get("public.t", "r1") is None and "ignored" in broken.warning


def test_reference_time():
    assert hl.reference_time("2026-01-05T00:00:00Z") == JAN5
    assert hl.reference_time(JAN5.replace(tzinfo=None)) == JAN5
