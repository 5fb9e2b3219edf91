import datetime

import pytest
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _prune

NOW = datetime.datetime(2026, 11, 27, 12, 0, tzinfo=datetime.timezone.utc)


def entries(*days_ago, broken=()):
    out = []
    for d in sorted(days_ago, reverse=True):
        bid = (NOW - datetime.timedelta(days=d)).strftime("%Y%m%dT%H%M%SZ")
        out.append({"backup_id": bid, "manifest": None if d in broken else {"backup_id": bid}, "error": "bad"})
    return out


def ids(items):
    return [i["backup_id"] for i in items]


def test_keep_days_removes_only_old_uploaded_sets():
    e = entries(40, 35, 10, 1)
    delete, keep = _prune.plan(e, keep_days=30, uploaded_ids={x["backup_id"] for x in e}, now=NOW)
    assert ids(delete) == ids(e[:2])


def test_not_uploaded_is_kept_unless_forced():
    e = entries(40, 35, 1)
    delete, keep = _prune.plan(e, keep_days=30, uploaded_ids={e[1]["backup_id"]}, now=NOW)
    assert ids(delete) == [e[1]["backup_id"]]
    assert {k["backup_id"]: k["reason"] for k in keep}[e[0]["backup_id"]] == "not yet uploaded to Azure"
    delete, _keep = _prune.plan(e, keep_days=30, uploaded_ids=set(), force=True, now=NOW)
    assert ids(delete) == ids(e[:2])


def test_newest_verified_survives_everything():
    e = entries(50, 40, 35)
    verified = {e[0]["backup_id"]}
    delete, keep = _prune.plan(e, keep_days=1, now=NOW, verified=lambda x: x["backup_id"] in verified, force=True)
    assert e[0]["backup_id"] not in ids(delete)
    assert ids(delete) == ids(e[1:])


def test_keep_last_and_unreadable_manifests():
    e = entries(9, 8, 7, 6, broken=(8,))
    delete, keep = _prune.plan(e, keep_last=2, now=NOW)
    assert ids(delete) == [e[0]["backup_id"]]
    assert any("manifest unreadable" in k["reason"] for k in keep)


def test_no_rule_is_an_error():
    with pytest.raises(ValueError, match="never guesses"):
        _prune.plan(entries(1), now=NOW)
