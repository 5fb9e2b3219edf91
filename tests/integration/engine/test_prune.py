"""insa.timescaledb_backup.prune on real backup sets in the container."""

import rig
from conftest import files


def ids_on_disk(container, backup_dir, db):
    return sorted(
        {
            f.split("/")[1].split(".")[0]
            for f in files(container, backup_dir)
            if f.count("/") == 1 and not f.endswith(".lock")
        }
    )


def test_check_mode_real_run_rerun(container, pg, engine_db, backup_dir):
    made = []
    for _attempt in range(3):
        res = rig.ansible_module("dump", dict(pg, database=engine_db, backup_dir=backup_dir))
        assert res.get("failed") is not True, res
        made.append(res["backup_id"])
    newest = made[-1]
    # Only the newest is verified and only the oldest is "uploaded".
    ok = rig.ansible_module("verify", dict(pg, backup_dir=backup_dir, database=engine_db, backup_id=newest))
    assert ok["ok"] is True
    args = dict(backup_dir=backup_dir, database=engine_db, keep_days=0, uploaded_backup_ids=[made[0]])

    res = rig.ansible_module("prune", args, check=True)
    assert res["changed"] is True
    assert [d["backup_id"] for d in res["deleted"]] == [made[0]]
    reasons = {k["backup_id"]: k["reason"] for k in res["kept"]}
    assert reasons == {made[1]: "not yet uploaded to Azure", newest: "newest verified backup"}
    assert ids_on_disk(container, backup_dir, engine_db) == made, "check mode removed files"

    res = rig.ansible_module("prune", args)
    assert res["changed"] is True
    assert ids_on_disk(container, backup_dir, engine_db) == made[1:]
    assert not [f for f in files(container, backup_dir) if made[0] in f], "a removed set left files behind"

    res = rig.ansible_module("prune", args)
    assert res["changed"] is False
    assert ids_on_disk(container, backup_dir, engine_db) == made[1:]

    # force removes what is not uploaded, but never the newest verified set.
    res = rig.ansible_module("prune", dict(args, force=True))
    assert ids_on_disk(container, backup_dir, engine_db) == [newest]


def test_upload_required_needs_the_uploaded_ids(pg, backup_dir):
    res = rig.ansible_module("prune", dict(backup_dir=backup_dir, database="it_engine", keep_last=1))
    assert res["failed"] is True and "uploaded_backup_ids" in res["msg"]
