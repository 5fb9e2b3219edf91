import pytest
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _restore

TOC = """;
; Archive created at 2026-11-27 02:00:00 UTC
;
4351; 0 0 ENCODING - ENCODING
4352; 1262 16384 DATABASE - iot postgres
2; 3079 16385 EXTENSION - timescaledb -
232; 1259 17201 TABLE public devices postgres
233; 1259 17210 TABLE public esp_telemetry postgres
4310; 0 16553 TABLE DATA _timescaledb_catalog hypertable postgres
4320; 0 17201 TABLE DATA public devices postgres
4330; 0 17300 TABLE DATA _timescaledb_internal _hyper_1_1_chunk postgres
"""


def test_parse_toc():
    toc = _restore.parse_toc(TOC)
    tables = [(e["schema"], e["name"]) for e in toc if e["kind"] == "TABLE"]
    assert tables == [("public", "devices"), ("public", "esp_telemetry")]
    data = [(e["schema"], e["name"]) for e in toc if e["kind"] == "TABLE DATA"]
    assert ("_timescaledb_catalog", "hypertable") in data and len(data) == 3


def test_compare_reports_each_difference():
    manifest = {
        "tables": {"public.a": {"rows": 3}, "public.b": {"rows": 1}},
        "hypertables": {"public.a": {"chunks": 2, "min_time": "t0", "max_time": "t1"}},
    }
    facts = {
        "tables": {"public.a": {"rows": 2}, "public.c": {"rows": 0}},
        "hypertables": {"public.a": {"chunks": 2, "min_time": "t0", "max_time": "t9"}},
    }
    diffs = _restore.compare(manifest, facts)
    got = {(d["table"], d["check"]): (d["expected"], d["found"]) for d in diffs}
    assert got == {
        ("public.a", "row count"): (3, 2),
        ("public.b", "table present"): ("present", "missing"),
        ("public.c", "table present"): ("absent", "present"),
        ("public.a", "max_time"): ("t1", "t9"),
    }
    assert (
        _restore.compare(
            manifest,
            {"tables": {"public.a": {"rows": 3}, "public.b": {"rows": 1}}, "hypertables": manifest["hypertables"]},
        )
        == []
    )


def test_scratch_names_respect_the_63_byte_limit():
    assert _restore.scratch_name("iot", "restore", "20261127T020000Z") == "iot__restore_20261127T020000Z"
    with pytest.raises(_restore.RestoreError, match="63"):
        _restore.scratch_name("x" * 40, "pre_restore", "20261127T020000Z")
