"""Lifecycle rules: defaults, validation, early-deletion warnings, idempotent comparison,
merging with other teams' rules, tier by age."""

import pytest
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _lifecycle
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _lifecycle_rules as lc


def prepared(rules=None, container="tsdb-backups", prefix="timescaledb"):
    return lc.prepare_rules(rules, container, prefix)


def test_default_rule_keeps_history_forever():
    rules, settings, warnings = prepared()
    # The default rule covers the whole prefix, history included: tiering it is allowed, and said.
    assert len(warnings) == 1 and "moves history objects (tsdb-backups/timescaledb/history/)" in warnings[0]
    assert "Archive after 365 days" in warnings[0] and "rehydrated" in warnings[0]
    assert rules == [
        {
            "enabled": True,
            "name": "tsdbbackuptsdbbackupstimescaledb",
            "type": "Lifecycle",
            "definition": {
                "actions": {
                    "baseBlob": {
                        "tierToCool": {"daysAfterModificationGreaterThan": 30},
                        "tierToArchive": {
                            "daysAfterModificationGreaterThan": 365,
                            "daysAfterLastTierChangeGreaterThan": 7,
                        },
                    }
                },
                "filters": {"blobTypes": ["blockBlob"], "prefixMatch": ["tsdb-backups/timescaledb/"]},
            },
        }
    ]
    assert "delete" not in rules[0]["definition"]["actions"]["baseBlob"]
    assert settings[0]["delete_after_days"] is None


def test_a_rule_with_steps_gets_only_those():
    rules, _s, _w = prepared(
        [
            {
                "name": "drill",
                "prefix": "drill/",
                "cool_after_days": 7,
                "delete_after_days": 60,
                "archive_after_tier_change_days": 0,
            }
        ]
    )
    assert rules[0]["definition"]["actions"]["baseBlob"] == {
        "tierToCool": {"daysAfterModificationGreaterThan": 7},
        "delete": {"daysAfterModificationGreaterThan": 60},
    }
    assert rules[0]["definition"]["filters"]["prefixMatch"] == ["tsdb-backups/drill/"]
    whole, _s, _w = prepared([{"prefix": "", "archive_after_days": 10}])
    assert whole[0]["definition"]["filters"]["prefixMatch"] == ["tsdb-backups/"]


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"cool_after_days": 30, "archive_after_days": 30}, "archive_after_days \\(30\\) must be greater than cool"),
        ({"cold_after_days": 100, "archive_after_days": 90}, "cool < cold < archive < delete"),
        ({"archive_after_days": 365, "delete_after_days": 200}, "delete_after_days \\(200\\)"),
        ({"cool_after_days": -1}, "whole number"),
        ({"cool_after_days": 100000}, "whole number"),
        ({"cool_after_days": True}, "whole number"),
        ({"name": "bad-name", "cool_after_days": 1}, "letters and digits"),
    ],
)
def test_invalid_rules(rule, message):
    with pytest.raises(lc.LifecycleError, match=message):
        prepared([rule])


def test_duplicate_names():
    with pytest.raises(lc.LifecycleError, match="unique"):
        prepared([{"name": "a1", "prefix": "x"}, {"name": "a1", "prefix": "y"}])


def test_early_deletion_warnings():
    _r, _s, warnings = prepared(
        [
            {
                "prefix": "drill",
                "cool_after_days": 30,
                "cold_after_days": 45,
                "archive_after_days": 100,
                "delete_after_days": 200,
            }
        ]
    )
    assert len(warnings) == 3
    assert "15 days in Cool" in warnings[0] and "at least 30 days" in warnings[0]
    assert "55 days in Cold" in warnings[1] and "at least 90 days" in warnings[1]
    assert "100 days in Archive" in warnings[2] and "at least 180 days" in warnings[2]
    _r, _s, none = prepared(
        [
            {
                "prefix": "drill",
                "cool_after_days": 30,
                "cold_after_days": 60,
                "archive_after_days": 150,
                "delete_after_days": 330,
            }
        ]
    )
    assert none == []


def test_comparison_ignores_what_the_service_adds():
    rules, _s, _w = prepared()
    served = [
        dict(
            rules[0],
            definition=dict(
                rules[0]["definition"],
                filters={
                    "prefixMatch": ["tsdb-backups/timescaledb/"],
                    "blobTypes": ["blockBlob"],
                    "blobIndexMatch": None,
                },
            ),
        )
    ]
    served[0]["definition"]["actions"] = {
        "baseBlob": dict(rules[0]["definition"]["actions"]["baseBlob"], delete=None),
        "snapshot": None,
    }
    changed, diff = lc.compare(served, rules)
    assert changed is False and diff["before"] == diff["after"]
    other = [dict(rules[0], enabled=False)]
    assert lc.compare(other, rules)[0] is True


def test_merge_keeps_other_rules_unless_purged():
    ours, _s, _w = prepared()
    foreign = {"name": "logs", "enabled": True, "type": "Lifecycle", "definition": {}}
    old_ours = dict(ours[0], enabled=False)
    assert lc.merge_rules([foreign, old_ours], ours) == [foreign, ours[0]]
    assert lc.merge_rules([foreign, old_ours], ours, purge=True) == [ours[0]]
    assert lc.merge_rules([foreign, old_ours], ours, state="absent") == [foreign]
    assert lc.merge_rules([], ours) == ours


@pytest.mark.parametrize(
    ("age", "tier_change_age", "expected"),
    [
        (10, None, None),
        (31, None, "Cool"),
        (200, None, "Cold"),
        (400, None, "Archive"),
        (400, 3, "Cold"),  # rehydrated three days ago: not archived again yet
        (400, 8, "Archive"),
    ],
)
def test_target_tier_by_age(age, tier_change_age, expected):
    _r, settings, _w = prepared([{"cool_after_days": 30, "cold_after_days": 180, "archive_after_days": 365}])
    assert lc.target_tier(settings[0], age, tier_change_age) == expected


def test_arm_endpoint_must_be_https_except_loopback():
    assert _lifecycle.arm_call_options("https://management.azure.com") == {}
    assert _lifecycle.arm_call_options("http://127.0.0.1:8080") == {"enforce_https": False}
    with pytest.raises(lc.LifecycleError, match="loopback"):
        _lifecycle.arm_call_options("http://management.example.com")
