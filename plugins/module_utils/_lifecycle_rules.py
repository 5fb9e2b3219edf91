# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Lifecycle rules of the backup blobs, as data: tier to Cool / Cold / Archive after N days since
the last modification, optionally delete dump sets (default: never - history is kept forever).

A rule targets one part of the layout (docs/AZURE.md):
- ``dumps``: the dump sets of the hosts it names, ``<container>/<prefix>/<host>/``;
- ``history``: the history archive, ``<container>/<prefix>/history/``, which may be the only copy
  of dropped chunks - never deleted, tiering allowed with a warning about what it costs;
- ``prefix``: everything under ``<container>/<prefix>/`` (history included).

A lifecycle rule's prefixMatch is a plain, case-sensitive string prefix of
``<container>/<blob name>`` (no wildcards), and a rule without one matches every blob of the
account; filters cannot exclude. So a rule reaches the history objects when one of its prefixes
is a prefix of ``<container>/<prefix>/history/`` or starts with it. No rule with a delete
action (base blob, snapshot or version) may: ours are refused before anything is sent, and a
policy that would still hold such a rule of someone else's is refused with the rule's name.

Rules are handled in the REST shape of Azure's management policy (camelCase keys), which is
what the SDK sends, what the diff shows and what the ARM test double checks.

Private to the collection. No Ansible imports, no SDK (_lifecycle talks to Azure).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import re

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _azure

POLICY_NAME = "default"
# The order blobs go through; each later step needs more days than the one before.
STEPS = (
    ("cool_after_days", "tierToCool", "Cool"),
    ("cold_after_days", "tierToCold", "Cold"),
    ("archive_after_days", "tierToArchive", "Archive"),
    ("delete_after_days", "delete", None),
)
# Days a blob is billed in a tier at least (moving or deleting it earlier costs the rest).
EARLY_DELETION_DAYS = {"Cool": 30, "Cold": 90, "Archive": 180}
TIER_RANK = {"Hot": 0, "Cool": 1, "Cold": 2, "Archive": 3}
# The steps of a rule that names none: history is kept forever.
DEFAULT_STEPS = {"cool_after_days": 30, "archive_after_days": 365}
# A blob rehydrated for a restore is not archived again before this many days.
DEFAULT_ARCHIVE_AFTER_TIER_CHANGE_DAYS = 7
MAX_DAYS = 99999
RULE_NAME_RE = re.compile(r"^[A-Za-z0-9]{1,256}$")
# The folder of the history archive under the prefix (_history_layout.HISTORY_DIR; a unit test
# keeps the two equal).
HISTORY_DIR = "history"
TARGETS = ("prefix", "dumps", "history")
# Azure accepts at most 10 prefixes per rule: a dumps rule for more hosts is split.
MAX_PREFIXES = 10
# The delete actions of a rule, by the part of a blob they act on.
DELETE_ACTIONS = (("baseBlob", "delete"), ("snapshot", "delete"), ("version", "delete"))


class LifecycleError(_azure.AzureTierError):
    """A rule is invalid, or Azure Resource Manager refused or failed."""


def rule_argument_spec():
    """Suboptions of a module's 'rules' list (a plain dict)."""
    return dict(
        name=dict(type="str"),
        target=dict(type="str", choices=list(TARGETS), default="prefix"),
        hosts=dict(type="list", elements="str"),
        prefix=dict(type="str"),
        cool_after_days=dict(type="int"),
        cold_after_days=dict(type="int"),
        archive_after_days=dict(type="int"),
        delete_after_days=dict(type="int"),
        previous_versions_delete_after_days=dict(type="int"),
        archive_after_tier_change_days=dict(type="int", default=DEFAULT_ARCHIVE_AFTER_TIER_CHANGE_DAYS),
        enabled=dict(type="bool", default=True),
    )


def default_rule_name(container, prefix, target="prefix"):
    suffix = "" if target == "prefix" else target
    base = "tsdbbackup" + re.sub(r"[^A-Za-z0-9]", "", "%s%s" % (container, prefix))
    return base[: 256 - len(suffix)] + suffix


def history_root(container, prefix):
    """What prefixMatch compares for every history object: '<container>/<prefix>/history/'."""
    return "%s/%s/" % (container, _azure.join_name(prefix, HISTORY_DIR))


def _hosts(rule):
    hosts = []
    for host in rule.get("hosts") or []:
        _azure.validate_segment(host, "host")
        if host == HISTORY_DIR:
            raise LifecycleError(
                "rule %s: host %r is the history folder's name; dump sets of a host labelled so would "
                "share <prefix>/history/ with the history archive - give the host another label"
                % (rule.get("name") or "(unnamed)", host),
                kind="config",
            )
        if host not in hosts:
            hosts.append(host)
    return hosts


def normalize_rule(rule, container, default_prefix):
    """A rule as plain settings. A rule that names no step gets DEFAULT_STEPS (Cool after 30
    days, Archive after 365, never delete); the prefix defaults to default_prefix, the name to
    one derived from container, prefix and target."""
    out = {key: rule.get(key) for key, _action, _tier in STEPS}
    out["previous_versions_delete_after_days"] = rule.get("previous_versions_delete_after_days")
    if all(value is None for value in out.values()):
        out.update(DEFAULT_STEPS)
    out["archive_after_tier_change_days"] = rule.get(
        "archive_after_tier_change_days", DEFAULT_ARCHIVE_AFTER_TIER_CHANGE_DAYS
    )
    out["enabled"] = rule.get("enabled", True) is not False
    out["target"] = rule.get("target") or "prefix"
    if out["target"] not in TARGETS:
        raise LifecycleError("rule target must be one of %s" % ", ".join(TARGETS), kind="config")
    prefix = rule.get("prefix")
    out["prefix"] = _azure.validate_prefix(default_prefix if prefix is None else prefix)
    out["container"] = _azure.validate_container_name(container)
    out["name"] = rule.get("name") or default_rule_name(container, out["prefix"], out["target"])
    out["hosts"] = _hosts(dict(rule, name=out["name"]))
    if out["target"] == "dumps" and not out["hosts"]:
        raise LifecycleError(
            "rule %s: target dumps needs hosts (the host labels of the dump sets, <prefix>/<host>/): a rule "
            "on the whole prefix would reach the history archive too" % out["name"],
            kind="config",
        )
    if out["target"] != "dumps" and out["hosts"]:
        raise LifecycleError("rule %s: hosts go with target dumps only" % out["name"], kind="config")
    return out


def _check_days(name, key, value):
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_DAYS:
        raise LifecycleError(
            "rule %s: %s must be a whole number of days from 0 to %d" % (name, key, MAX_DAYS), kind="config"
        )


def validate_rule(rule):
    """Raises LifecycleError for what Azure would refuse or what is certainly wrong; returns
    warnings for what costs money (early deletion, history in a colder tier)."""
    name = rule["name"]
    if not RULE_NAME_RE.match(name or ""):
        raise LifecycleError("rule name %r: Azure accepts 1-256 letters and digits only" % (name,), kind="config")
    days = []
    for key, _action, tier in STEPS:
        if rule.get(key) is not None:
            _check_days(name, key, rule[key])
            days.append((key, rule[key], tier))
    for key in ("previous_versions_delete_after_days", "archive_after_tier_change_days"):
        if rule.get(key) is not None:
            _check_days(name, key, rule[key])
    if not days and rule.get("previous_versions_delete_after_days") is None:
        raise LifecycleError(
            "rule %s has no action: set at least one of %s" % (name, ", ".join(k for k, _a, _t in STEPS)), kind="config"
        )
    for (key_a, day_a, _ta), (key_b, day_b, _tb) in zip(days, days[1:]):
        if day_b <= day_a:
            raise LifecycleError(
                "rule %s: %s (%d) must be greater than %s (%d); the order is cool < cold < archive < delete"
                % (name, key_b, day_b, key_a, day_a),
                kind="config",
            )
    warnings = []
    for (key_a, day_a, tier_a), (key_b, day_b, _tb) in zip(days, days[1:]):
        minimum = EARLY_DELETION_DAYS.get(tier_a)
        if minimum and day_b - day_a < minimum:
            warnings.append(
                "rule %s: blobs stay %d days in %s (%s=%d, %s=%d) but %s is billed for at least %d days: "
                "an early deletion charge applies"
                % (name, day_b - day_a, tier_a, key_a, day_a, key_b, day_b, tier_a, minimum)
            )
    return warnings


def prefix_matches(rule):
    """The prefixMatch strings of normalized settings."""
    base = rule["container"] + "/" + (rule["prefix"] + "/" if rule["prefix"] else "")
    if rule["target"] == "history":
        return [base + HISTORY_DIR + "/"]
    if rule["target"] == "dumps":
        return [base + host + "/" for host in rule["hosts"]]
    return [base]


def build_rules(rule):
    """The management policy rules (REST shape) for normalized settings: one, or for a dumps rule
    of more than MAX_PREFIXES hosts one per ten hosts (named <name>, <name>2, <name>3 ...)."""
    base_blob = {}
    for key, action, tier in STEPS:
        if rule.get(key) is None:
            continue
        condition = {"daysAfterModificationGreaterThan": rule[key]}
        if tier == "Archive" and rule.get("archive_after_tier_change_days"):
            condition["daysAfterLastTierChangeGreaterThan"] = rule["archive_after_tier_change_days"]
        base_blob[action] = condition
    actions = {"baseBlob": base_blob} if base_blob else {}
    if rule.get("previous_versions_delete_after_days") is not None:
        actions["version"] = {"delete": {"daysAfterCreationGreaterThan": rule["previous_versions_delete_after_days"]}}
    prefixes = prefix_matches(rule)
    chunks = [prefixes[i : i + MAX_PREFIXES] for i in range(0, len(prefixes), MAX_PREFIXES)]
    return [
        {
            "enabled": bool(rule.get("enabled", True)),
            "name": rule["name"] + (str(number + 1) if number else ""),
            "type": "Lifecycle",
            "definition": {
                "actions": copy.deepcopy(actions),
                "filters": {"blobTypes": ["blockBlob"], "prefixMatch": chunk},
            },
        }
        for number, chunk in enumerate(chunks)
    ]


def build_rule(rule):
    """The one management policy rule (REST shape) of settings with at most MAX_PREFIXES prefixes."""
    return build_rules(rule)[0]


def prepare_rules(rules, container, default_prefix, state="present"):
    """Normalizes, validates and builds a list of rules; refuses a rule that would delete history
    objects (state present: only names count for state absent). Returns (rest rules, settings,
    warnings)."""
    settings = [normalize_rule(r, container, default_prefix) for r in (rules or [{}])]
    warnings = []
    for s in settings:
        warnings.extend(validate_rule(s))
    built = [rest for s in settings for rest in build_rules(s)]
    names = [r["name"] for r in built]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise LifecycleError("rule names must be unique; repeated: %s" % ", ".join(duplicates), kind="config")
    for rest in built:
        if not RULE_NAME_RE.match(rest["name"]):
            raise LifecycleError("rule name %r is longer than 256 characters" % rest["name"], kind="config")
    if state == "absent":
        return built, settings, []
    refuse_history_deletes(built, container, default_prefix)
    warnings.extend(history_tier_warnings(settings, container, default_prefix))
    return built, settings, warnings


# ---------------------------------------------------------------------------------------------
# History is never deleted


def reaches(prefix_match, root):
    """Whether a prefixMatch string selects some blob under root (both plain string prefixes)."""
    return root.startswith(prefix_match) or prefix_match.startswith(root)


def history_deletes(rule, root):
    """What of a rule (REST shape) deletes blobs under root: {'rule', 'enabled', 'actions',
    'prefix_match'} or None. Disabled rules count too: enabling one is a click."""
    definition = rule.get("definition") or {}
    actions = definition.get("actions") or {}
    deletes = ["%s.%s" % (part, action) for part, action in DELETE_ACTIONS if (actions.get(part) or {}).get(action)]
    if not deletes:
        return None
    prefixes = (definition.get("filters") or {}).get("prefixMatch") or []
    if prefixes:
        reaching = [p for p in prefixes if isinstance(p, str) and reaches(p, root)]
    else:
        reaching = ["(none: every blob of the account)"]
    if not reaching:
        return None
    return {
        "rule": rule.get("name"),
        "enabled": rule.get("enabled", True) is not False,
        "actions": deletes,
        "prefix_match": reaching,
    }


def history_violations(rules, container, prefix):
    """The rules (REST shape) with a delete action that reaches the history objects."""
    root = history_root(container, prefix)
    found = (history_deletes(r, root) for r in rules or [])
    return [v for v in found if v]


def describe_violation(violation):
    return "rule %s (%s; prefixMatch %s%s)" % (
        violation["rule"],
        ", ".join(violation["actions"]),
        ", ".join(violation["prefix_match"]),
        "" if violation["enabled"] else "; disabled",
    )


def refuse_history_deletes(rules, container, prefix, existing=False):
    """Raises LifecycleError (config) naming every rule that would delete history objects."""
    violations = history_violations(rules, container, prefix)
    if not violations:
        return
    fix = (
        "remove the rule (lifecycle_policy state: absent with its name, or purge_rules) or its delete action, "
        "or narrow its prefixMatch to the dump sets"
        if existing
        else "give dump sets a rule of target dumps with their hosts (<prefix>/<host>/) and history a rule of "
        "target history without delete"
    )
    raise LifecycleError(
        "%s would delete history objects under %s, which may be the only copy of dropped chunks: "
        "no delete rule may reach the history archive (a prefixMatch is a plain prefix of "
        "<container>/<blob name>, so %s/ or %s/<prefix>/ covers it); %s"
        % (
            "; ".join(describe_violation(v) for v in violations),
            history_root(container, prefix),
            container,
            container,
            fix,
        ),
        kind="config",
    )


def history_tier_warnings(settings_list, container, prefix):
    """What tiering history costs, for every rule whose prefixes reach the history objects."""
    root = history_root(container, prefix)
    warnings = []
    for rule in settings_list:
        if rule["container"] != container or not any(reaches(p, root) for p in prefix_matches(rule)):
            continue
        steps = ["%s after %d days" % (tier, rule[key]) for key, _a, tier in STEPS if tier and rule.get(key)]
        if not steps:
            continue
        text = (
            "rule %s moves history objects (%s) to %s: history_restore reads Cool and Cold directly but pays "
            "per GB read, and moving them on early is billed (Cool 30, Cold 90 days)"
            % (rule["name"], root, ", ".join(steps))
        )
        if rule.get("archive_after_days") is not None:
            text += (
                "; objects in Archive cannot be read: history_restore fails on them until they are rehydrated "
                "(set the tier to Hot or Cool: Standard priority up to 15 hours, High under an hour for objects "
                "under 10 GB, billed per GB) and Archive bills 180 days at least"
            )
        warnings.append(text)
    return warnings


# ---------------------------------------------------------------------------------------------
# Comparison and merge


def canonical_rule(rule):
    """A rule reduced to what decides its effect, for comparison: no nulls, no empty parts,
    lists sorted, enabled explicit."""

    def clean(value):
        if isinstance(value, dict):
            out = {k: clean(v) for k, v in value.items() if v is not None}
            return {k: v for k, v in out.items() if v not in ({}, [])}
        if isinstance(value, list):
            items = [clean(v) for v in value]
            return sorted(items, key=repr)
        return value

    out = clean(copy.deepcopy(rule))
    out["enabled"] = bool(rule.get("enabled", True))
    out.setdefault("type", "Lifecycle")
    return out


def canonical_rules(rules):
    return sorted((canonical_rule(r) for r in rules or []), key=lambda r: r.get("name", ""))


def split_family(name, families):
    """Whether a rule name is a split part (<family>2, <family>3 ...) of one of families."""
    return any(re.match(r"^%s[0-9]+$" % re.escape(family), name or "") for family in families)


def merge_rules(current, wanted, state="present", purge=False, families=()):
    """The rules the policy should hold: ours (by name, and the split parts of the dumps rules
    named in families) replaced or removed, other rules kept unless purge."""
    names = {r["name"] for r in wanted}
    kept = (
        []
        if purge
        else [r for r in current if r.get("name") not in names and not split_family(r.get("name"), families)]
    )
    return kept + (list(wanted) if state == "present" else [])


def compare(current, desired):
    """(changed, diff) between two rule lists."""
    before = {"rules": canonical_rules(current)}
    after = {"rules": canonical_rules(desired)}
    return before != after, {
        "before": before,
        "after": after,
        "before_header": "management policy (current)",
        "after_header": "management policy (desired)",
    }


def families(settings_list):
    """The names of the dumps rules, whose split parts are ours too."""
    return [s["name"] for s in settings_list if s["target"] == "dumps"]


def target_tier(rule, age_days, tier_change_age_days=None):
    """The coldest tier a blob of this age should be in under the rule, or None (stay)."""
    tier = None
    for key, _action, step_tier in STEPS:
        days = rule.get(key)
        if step_tier is None or days is None or age_days <= days:
            continue
        if step_tier == "Archive" and tier_change_age_days is not None:
            minimum = rule.get("archive_after_tier_change_days")
            if minimum is not None and tier_change_age_days <= minimum:
                continue
        tier = step_tier
    return tier
