import pytest
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _restore, _restore_extras

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
281; 1259 17901 TABLE public ev ent postgres
282; 1259 17902 TABLE my schema x y postgres
3906; 2606 18711 FK CONSTRAINT public ev ent ev ent_t_dev_fkey postgres
"""


def test_parse_toc_keys_entries_by_oid_not_by_splitting_names():
    toc = _restore.parse_toc(TOC)
    tables = {e["oid"]: e["rest"] for e in toc if e["kind"] == "TABLE"}
    assert tables == {
        17201: "public devices postgres",
        17210: "public esp_telemetry postgres",
        17901: "public ev ent postgres",
        17902: "my schema x y postgres",
    }
    data = [e for e in toc if e["kind"] == "TABLE DATA"]
    assert len(data) == 3 and [e["dump_id"] for e in data if _restore.in_schema(e, "_timescaledb_catalog")] == [4310]
    assert [(e["kind"], e["oid"]) for e in toc if e["kind"].endswith("CONSTRAINT")] == [("FK CONSTRAINT", 18711)]


def test_missing_from_toc_matches_oids_and_legacy_names():
    toc = _restore.parse_toc(TOC)
    manifest = {
        "tables": {'public."ev ent"': {"rows": 1, "oid": 17901}, '"my schema"."x y"': {"rows": 0, "oid": 17902}},
        "hypertable_references": [{"oid": 18711, "table": 'public."ev ent"', "name": "ev ent_t_dev_fkey"}],
    }
    assert _restore.missing_from_toc(manifest, toc) == []
    manifest["tables"]["public.gone"] = {"rows": 0, "oid": 99}
    manifest["hypertable_references"].append({"oid": 98, "table": "public.gone", "name": "fk"})
    assert _restore.missing_from_toc(manifest, toc) == ["public.gone", "foreign key fk on public.gone"]
    # A manifest of an earlier release: plain names, no oids.
    assert _restore.missing_from_toc({"tables": {"public.devices": {"rows": 1}, "public.x": {"rows": 0}}}, toc) == [
        "public.x"
    ]


def test_reference_statement_requotes_names_and_refuses_anything_but_a_foreign_key():
    ref = {
        "table": 'public."ev ent"',
        "name": 'ev "ent" fk',
        "definition": 'FOREIGN KEY (t, "dév") REFERENCES "My"."hyper; table"(t, "dév") ON DELETE CASCADE NOT VALID',
    }
    text = repr(_restore_extras.reference_statement(ref))  # a psycopg2 Composed: names stay identifiers
    assert "Identifier('public', 'ev ent')" in text and 'ev "ent" fk' in text
    for bad in (
        "FOREIGN KEY (t) REFERENCES m(t); DROP TABLE x",
        "CHECK (true)",
        "FOREIGN KEY (t) REFERENCES m(t) -- x",
        "FOREIGN KEY (t) REFERENCES m(t) ON DELETE SET DEFAULT /* */",
    ):
        with pytest.raises(_restore.RestoreError, match="not a plain FOREIGN KEY"):
            _restore_extras.reference_statement(dict(ref, definition=bad))


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
    long_a, long_b = "x" * 40 + "a", "x" * 40 + "b"
    a = _restore.scratch_name(long_a, "pre_restore", "20261127T020000Z")
    b = _restore.scratch_name(long_b, "pre_restore", "20261127T020000Z")
    assert a != b and len(a.encode()) == len(b.encode()) == 63 and a.endswith("__pre_restore_20261127T020000Z")
    emoji = _restore.scratch_name("🚀" * 15, "restore", "20261127T020000Z")
    assert len(emoji.encode()) <= 63 and emoji.startswith("🚀") and "\ufffd" not in emoji


def test_a_deferred_key_takes_its_comment_along():
    toc = _restore.parse_toc(
        "3906; 2606 18711 FK CONSTRAINT public ev ent ev ent_t_dev_fkey postgres\n"
        '4001; 0 0 COMMENT public CONSTRAINT "ev ent_t_dev_fkey" ON "ev ent" postgres\n'
        '4002; 0 0 COMMENT public CONSTRAINT "ev ent_pkey" ON "ev ent" postgres\n'
    )
    tags = ['public CONSTRAINT "ev ent_t_dev_fkey" ON "ev ent"']
    assert [e["dump_id"] for e in toc if _restore_extras.deferred(e, {18711}, tags)] == [3906, 4001]


def test_jobs_zero_is_one_worker_per_core_at_most_eight(monkeypatch):
    monkeypatch.setattr(_restore.os, "cpu_count", lambda: 2)
    assert _restore.effective_jobs(0) == 2
    monkeypatch.setattr(_restore.os, "cpu_count", lambda: 64)
    assert _restore.effective_jobs(0) == 8
    monkeypatch.setattr(_restore.os, "cpu_count", lambda: None)
    assert _restore.effective_jobs(0) == 1
    assert _restore.effective_jobs(3) == 3
    with pytest.raises(_restore.RestoreError) as e:
        _restore.effective_jobs(-1)
    assert e.value.kind == "config" and "one per core" in str(e.value)


class _Stop(Exception):
    pass


def _beside_restore(monkeypatch, tmp_path, safety):
    """restore_backup over an existing database with its steps replaced by records of the calls."""
    from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf

    calls = []
    monkeypatch.setattr(_restore, "check_trusted", lambda *a: None)
    monkeypatch.setattr(_restore._restore_swap, "recover_killed", lambda params, target: [])
    monkeypatch.setattr(_restore, "_check_target", lambda *a: True)
    monkeypatch.setattr(_restore, "free_replaced_name", lambda params, target, bid: target + "__pre_restore_" + bid)
    monkeypatch.setattr(_restore, "_drop_database", lambda params, name: calls.append(("drop", name)))
    monkeypatch.setattr(_restore, "_safety_backup", safety)

    def restore_as(self, database):
        calls.append(("restore_as", database))
        return []

    monkeypatch.setattr(_restore._Restore, "restore_as", restore_as)
    monkeypatch.setattr(_restore._Restore, "swap", lambda self, *a: calls.append(("swap",) + a[:2]))
    bset = mf.BackupSet(str(tmp_path), "iot", "20261127T020000Z")
    params = type("P", (), {"user": "tsdb_backup"})()
    manifest = {"backup_id": bset.backup_id, "database": "iot"}
    return calls, lambda: _restore.restore_backup(params, bset, manifest, "iot", backup_dir=str(tmp_path), roles=False)


def test_the_safety_backup_runs_beside_the_copy_and_the_swap_waits_for_it(monkeypatch, tmp_path):
    import threading

    copy_restored = threading.Event()

    def safety(params, target, backup_dir, host_label, signing=None):
        # Running while the copy is restored: it sees the restore begin, and the swap not yet.
        assert copy_restored.wait(5)
        assert ("swap", "iot__restore_20261127T020000Z", "iot__pre_restore_20261127T020000Z") not in calls
        return {"backup_id": "20261127T030000Z", "path": "a", "manifest_path": "m", "warnings": ["w"], "seconds": 1.5}

    calls, run = _beside_restore(monkeypatch, tmp_path, safety)
    real = _restore._Restore.restore_as

    def restore_as(self, database):
        out = real(self, database)
        copy_restored.set()
        return out

    monkeypatch.setattr(_restore._Restore, "restore_as", restore_as)
    result = run()
    assert calls[-1] == ("swap", "iot__restore_20261127T020000Z", "iot__pre_restore_20261127T020000Z")
    assert result["safety_backup"]["backup_id"] == "20261127T030000Z" and "w" in result["warnings"]
    assert result["timings"]["safety_backup_seconds"] == 1.5


def test_a_failed_safety_backup_means_no_swap_and_no_copy(monkeypatch, tmp_path):
    from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _dump

    def safety(*_args, **_kwargs):
        raise _dump.BackupError("no space left for the safety backup", kind="service")

    calls, run = _beside_restore(monkeypatch, tmp_path, safety)
    with pytest.raises(_restore.RestoreError, match="safety backup of iot failed .*no space left.*left untouched"):
        run()
    assert not [c for c in calls if c[0] == "swap"]
    assert calls[-1] == ("drop", "iot__restore_20261127T020000Z")  # the restored copy removed
