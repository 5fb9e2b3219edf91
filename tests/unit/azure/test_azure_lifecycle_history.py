"""Lifecycle rules keep dump sets and history apart: a rule's prefixMatch is a plain string prefix of
<container>/<blob name>, so no rule with a delete action may have a prefix that is a prefix of
<container>/<prefix>/history/ or starts with it; tiering history is allowed and its cost is said."""

import pytest
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _history_layout
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _lifecycle_rules as lc

ROOT = "tsdb-backups/timescaledb/history/"


def prepared(rules=None, prefix="timescaledb"):
    return lc.prepare_rules(rules, "tsdb-backups", prefix)


def rest(name, prefixes=None, actions=None, enabled=True):
    filters = {"blobTypes": ["blockBlob"]}
    if prefixes is not None:
        filters["prefixMatch"] = prefixes
    return {
        "name": name,
        "enabled": enabled,
        "type": "Lifecycle",
        "definition": {
            "actions": actions or {"baseBlob": {"delete": {"daysAfterModificationGreaterThan": 9}}},
            "filters": filters,
        },
    }


def test_the_history_folder_is_the_archive_s():
    assert lc.HISTORY_DIR == _history_layout.HISTORY_DIR
    assert lc.history_root("tsdb-backups", "timescaledb") == ROOT
    assert lc.history_root("tsdb-backups", "") == "tsdb-backups/history/"


def test_dumps_and_history_get_separate_rules():
    rules, settings, warnings = prepared(
        [
            {
                "target": "dumps",
                "hosts": ["db01", "db02", "db01"],
                "cool_after_days": 30,
                "delete_after_days": 400,
                "previous_versions_delete_after_days": 430,
            },
            {"target": "history", "cool_after_days": 60},
        ]
    )
    dumps, history = rules
    assert dumps["name"] == "tsdbbackuptsdbbackupstimescaledbdumps"
    assert dumps["definition"]["filters"]["prefixMatch"] == [
        "tsdb-backups/timescaledb/db01/",
        "tsdb-backups/timescaledb/db02/",
    ]
    assert dumps["definition"]["actions"] == {
        "baseBlob": {
            "tierToCool": {"daysAfterModificationGreaterThan": 30},
            "delete": {"daysAfterModificationGreaterThan": 400},
        },
        "version": {"delete": {"daysAfterCreationGreaterThan": 430}},
    }
    assert history["name"] == "tsdbbackuptsdbbackupstimescaledbhistory"
    assert history["definition"]["filters"]["prefixMatch"] == [ROOT]
    assert history["definition"]["actions"] == {"baseBlob": {"tierToCool": {"daysAfterModificationGreaterThan": 60}}}
    # Only the history rule's tiering is a cost for history_restore; Cool is readable.
    assert len(warnings) == 1 and "rule %s moves history objects" % history["name"] in warnings[0]
    assert "rehydrated" not in warnings[0] and settings[0]["hosts"] == ["db01", "db02"]


def test_a_dumps_rule_for_many_hosts_is_split_by_ten():
    hosts = ["db%02d" % n for n in range(23)]
    rules, _s, _w = prepared([{"name": "dumps", "target": "dumps", "hosts": hosts, "delete_after_days": 400}])
    assert [r["name"] for r in rules] == ["dumps", "dumps2", "dumps3"]
    assert [len(r["definition"]["filters"]["prefixMatch"]) for r in rules] == [10, 10, 3]
    # Fewer hosts later: the parts left over are ours to remove, others' rules are kept.
    fewer, settings, _w = prepared([{"name": "dumps", "target": "dumps", "hosts": hosts[:4], "delete_after_days": 400}])
    current = rules + [rest("dumpsarchive", ["logs/"])]
    merged = lc.merge_rules(current, fewer, families=lc.families(settings))
    assert [r["name"] for r in merged] == ["dumpsarchive", "dumps"]


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"target": "dumps", "delete_after_days": 9}, "target dumps needs hosts"),
        ({"target": "history", "hosts": ["db01"]}, "hosts go with target dumps only"),
        ({"target": "dumps", "hosts": ["history"]}, "history folder's name"),
        ({"target": "dumps", "hosts": ["../x"]}, "host"),
    ],
)
def test_bad_targets(rule, message):
    with pytest.raises((lc.LifecycleError, ValueError), match=message):
        prepared([rule])


@pytest.mark.parametrize(
    "rule",
    [
        {"delete_after_days": 400},  # the whole prefix: history too
        {"prefix": "", "archive_after_days": 10, "delete_after_days": 400},  # the whole container
        {"target": "history", "delete_after_days": 4000},
        {"target": "history", "previous_versions_delete_after_days": 30},
        {"prefix": "timescaledb/history/iot", "delete_after_days": 400},  # a part of history
    ],
)
def test_a_delete_rule_that_reaches_history_is_refused_before_anything_is_sent(rule):
    with pytest.raises(lc.LifecycleError) as info:
        prepared([dict(rule, name="mine")])
    message = str(info.value)
    assert info.value.kind == "config"
    assert "rule mine (" in message and "would delete history objects under %s" % ROOT in message
    assert "target dumps" in message


def test_deletes_elsewhere_are_allowed():
    # Another prefix (a drill's), a host folder: neither reaches <prefix>/history/.
    for rule in ({"prefix": "drill", "delete_after_days": 60}, {"prefix": "timescaledb/h", "delete_after_days": 60}):
        rules, _s, warnings = prepared([rule])
        assert warnings == [] and rules[0]["definition"]["actions"]["baseBlob"]["delete"]
    # Absent: only names count, nothing is refused.
    assert (
        lc.prepare_rules([{"name": "old", "delete_after_days": 1}], "tsdb-backups", "timescaledb", state="absent")[2]
        == []
    )


@pytest.mark.parametrize(
    ("prefixes", "reaching"),
    [
        (None, ["(none: every blob of the account)"]),
        ([], ["(none: every blob of the account)"]),
        (["tsdb"], ["tsdb"]),  # a plain prefix: matches the container tsdb-backups too
        (["tsdb-backups"], ["tsdb-backups"]),
        (["tsdb-backups/"], ["tsdb-backups/"]),
        (["tsdb-backups/timescaledb"], ["tsdb-backups/timescaledb"]),
        (["tsdb-backups/timescaledb/h"], ["tsdb-backups/timescaledb/h"]),
        (["logs/", "tsdb-backups/timescaledb/history/iot/"], ["tsdb-backups/timescaledb/history/iot/"]),
        (["tsdb-backups/timescaledb/db01/", "logs/"], None),
        (["tsdb-backups/timescaledb/h/"], None),
        (["tsdb-backups/timescaledbx/"], None),
        (["other/timescaledb/history/"], None),
        (["tsdb-backups/Timescaledb/history/"], None),  # case-sensitive
    ],
)
def test_which_prefixes_reach_history(prefixes, reaching):
    found = lc.history_violations([rest("r1", prefixes)], "tsdb-backups", "timescaledb")
    assert (found[0]["prefix_match"] if found else None) == reaching


def test_every_delete_action_counts_and_disabled_rules_too():
    tier = {"baseBlob": {"tierToCool": {"daysAfterModificationGreaterThan": 9}}}
    snapshot = {"snapshot": {"delete": {"daysAfterCreationGreaterThan": 9}}}
    version = dict(tier, version={"delete": {"daysAfterCreationGreaterThan": 9}})
    served = {"baseBlob": {"tierToCool": {"daysAfterModificationGreaterThan": 9}, "delete": None}}
    rules = [
        rest("tiers", ["tsdb-backups/"], tier),
        rest("snapshots", ["tsdb-backups/"], snapshot),
        rest("versions", ["tsdb-backups/"], version, enabled=False),
        rest("served", ["tsdb-backups/"], served),
    ]
    found = lc.history_violations(rules, "tsdb-backups", "timescaledb")
    assert [(v["rule"], v["actions"], v["enabled"]) for v in found] == [
        ("snapshots", ["snapshot.delete"], True),
        ("versions", ["version.delete"], False),
    ]
    with pytest.raises(lc.LifecycleError) as info:
        lc.refuse_history_deletes(rules, "tsdb-backups", "timescaledb", existing=True)
    assert "rule snapshots (snapshot.delete; prefixMatch tsdb-backups/)" in str(info.value)
    assert "rule versions (version.delete; prefixMatch tsdb-backups/; disabled)" in str(info.value)
    assert "state: absent with its name" in str(info.value)


def test_archiving_history_says_what_history_restore_then_needs():
    _r, _s, warnings = prepared(
        [{"target": "history", "cool_after_days": 30, "cold_after_days": 120, "archive_after_days": 400}]
    )
    assert len(warnings) == 1
    assert "Cool after 30 days, Cold after 120 days, Archive after 400 days" in warnings[0]
    assert "history_restore fails on them until they are rehydrated" in warnings[0] and "15 hours" in warnings[0]
