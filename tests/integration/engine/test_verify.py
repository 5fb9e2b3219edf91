"""insa.timescaledb_backup.verify catches every corruption the issue lists, precisely."""

import json

import pytest
import rig


@pytest.fixture(scope="module")
def two_backups(container, pg, engine_db):
    """Two real sets of the engine database in a private directory (copied per test)."""
    src = "/var/backups/it/verify-src"
    rig.sh(container, "rm -rf %s && mkdir -p -m 0700 %s" % (src, src))
    ids = []
    for _attempt in range(2):
        res = rig.ansible_module("dump", dict(pg, database=engine_db, backup_dir=src))
        assert res.get("failed") is not True, res
        ids.append(res["backup_id"])
    yield src, ids
    rig.sh(container, "rm -rf %s" % src)


@pytest.fixture
def copy(container, two_backups, backup_dir):
    src, ids = two_backups
    rig.sh(container, "cp -a %s/. %s/" % (src, backup_dir))
    return ids


def verify(pg, backup_dir, db, bid, level="archive"):
    return rig.ansible_module("verify", dict(pg, backup_dir=backup_dir, database=db, backup_id=bid, level=level))


def failed_checks(res):
    assert res.get("failed") is True, res
    return {f["check"]: f for f in res["failures"]}


def test_intact_set_passes_and_is_recorded(container, pg, engine_db, backup_dir, copy):
    res = rig.ansible_module(
        "verify", dict(pg, backup_dir=backup_dir, database=engine_db, backup_id=copy[0]), check=True
    )
    assert res["ok"] is True and res["changed"] is False
    record = "%s/%s/%s.verify.json" % (backup_dir, engine_db, copy[0])
    assert rig.sh(container, "test -e %s && echo yes || echo no" % record).strip() == "no", "check mode recorded"
    res = verify(pg, backup_dir, engine_db, copy[0])
    assert res["ok"] is True and res["changed"] is False
    assert json.loads(rig.sh(container, "cat %s" % record))["ok"] is True
    assert verify(pg, backup_dir, engine_db, copy[0])["changed"] is False


def test_truncation(container, pg, engine_db, backup_dir, copy):
    path = "%s/%s/%s.dump" % (backup_dir, engine_db, copy[0])
    rig.sh(container, "truncate -s -1000 %s" % path)
    f = failed_checks(verify(pg, backup_dir, engine_db, copy[0], level="checksum"))
    assert "truncated" in f["archive size"]["message"]
    assert f["archive size"]["expected"] - f["archive size"]["found"] == 1000


def test_single_flipped_byte(container, pg, engine_db, backup_dir, copy):
    path = "%s/%s/%s.dump" % (backup_dir, engine_db, copy[0])
    rig.sh(
        container,
        "python3 - <<'EOF'\nf = open('%s', 'r+b'); f.seek(5000); b = f.read(1); f.seek(5000); "
        "f.write(bytes([b[0] ^ 1])); f.close()\nEOF" % path,
    )
    f = failed_checks(verify(pg, backup_dir, engine_db, copy[0], level="checksum"))
    assert set(f) == {"archive sha256"}
    assert f["archive sha256"]["expected"] != f["archive sha256"]["found"]


def test_missing_manifest(container, pg, engine_db, backup_dir, copy):
    rig.sh(container, "rm %s/%s/%s.manifest.json" % (backup_dir, engine_db, copy[0]))
    f = failed_checks(verify(pg, backup_dir, engine_db, copy[0]))
    assert "is missing" in f["manifest"]["message"]


def test_altered_manifest(container, pg, engine_db, backup_dir, copy):
    path = "%s/%s/%s.manifest.json" % (backup_dir, engine_db, copy[0])
    # Someone "fixes" a count by hand: the JSON stays valid, the seal no longer matches.
    rig.sh(
        container,
        "python3 - <<'EOF'\nimport json\np = '%s'\nm = json.load(open(p))\n"
        "m['tables']['public.devices']['rows'] += 1\njson.dump(m, open(p, 'w'))\nEOF" % path,
    )
    f = failed_checks(verify(pg, backup_dir, engine_db, copy[0]))
    assert "altered" in f["manifest"]["message"]


def test_manifest_paired_with_the_wrong_archive(container, pg, engine_db, backup_dir, copy):
    # The second backup's archive under the first backup's name: same database, other data.
    d = "%s/%s" % (backup_dir, engine_db)
    rig.sh(container, "cp %s/%s.dump %s/%s.dump" % (d, copy[1], d, copy[0]))
    f = failed_checks(verify(pg, backup_dir, engine_db, copy[0], level="checksum"))
    assert "archive sha256" in f


def test_manifest_of_another_backup(container, pg, engine_db, backup_dir, copy):
    d = "%s/%s" % (backup_dir, engine_db)
    rig.sh(container, "cp %s/%s.manifest.json %s/%s.manifest.json" % (d, copy[1], d, copy[0]))
    f = failed_checks(verify(pg, backup_dir, engine_db, copy[0], level="checksum"))
    assert f["manifest pairing"]["expected"].endswith(copy[0])
    assert f["manifest pairing"]["found"].endswith(copy[1])


def test_legacy_md5_of_the_old_scripts(container, pg, backup_dir):
    legacy = "%s/iot_20261001.sql.gz" % backup_dir
    rig.sh(container, "echo 'select 1;' | gzip > %s && md5sum %s > %s.md5" % (legacy, legacy, legacy))
    ok = rig.ansible_module("verify", {"legacy_path": legacy})
    assert ok["ok"] is True, ok
    rig.sh(container, "echo 'select 2;' | gzip > %s" % legacy)
    assert "legacy md5" in failed_checks(rig.ansible_module("verify", {"legacy_path": legacy}))
