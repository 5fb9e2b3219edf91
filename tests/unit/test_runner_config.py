"""The runner's settings as the roles write them: JSON lists, so that database and hypertable
names may hold ',' and '='; the comma-separated form of earlier releases still reads."""

import json

import pytest
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _runner

NAMES = ["iot", 'plant 1, "north" 🚀', "a=b"]
RETENTION = [{"hypertable": '"Plant A".readings', "retention_days": 30}, {"hypertable": "x=y", "retention_days": "9"}]


def test_json_lists_carry_any_name():
    config = _runner.load_config(
        {"TSDB_BACKUP_DATABASES": json.dumps(NAMES), "TSDB_HISTORY_RETENTION": json.dumps(RETENTION)}
    )
    assert config["databases"] == NAMES
    assert config["history"]["retention"] == [
        {"hypertable": '"Plant A".readings', "retention_days": 30},
        {"hypertable": "x=y", "retention_days": 9},
    ]


def test_the_comma_form_of_earlier_releases():
    config = _runner.load_config(
        {"TSDB_BACKUP_DATABASES": "iot, other", "TSDB_HISTORY_RETENTION": "public.esp_telemetry=30,a=b=2"}
    )
    assert config["databases"] == ["iot", "other"]
    assert config["history"]["retention"] == [
        {"hypertable": "public.esp_telemetry", "retention_days": 30},
        {"hypertable": "a=b", "retention_days": 2},
    ]


@pytest.mark.parametrize(
    "env, message",
    [
        ({"TSDB_BACKUP_DATABASES": '["iot"'}, "not a valid JSON list"),
        ({"TSDB_BACKUP_DATABASES": "[1]"}, "database names"),
        ({"TSDB_BACKUP_DATABASES": json.dumps(["x" * 64])}, "invalid database name"),
        ({"TSDB_BACKUP_DATABASES": "[]"}, "is empty"),
        ({"TSDB_BACKUP_DATABASES": "iot", "TSDB_HISTORY_RETENTION": '[{"hypertable": "t"}]'}, "retention_days"),
    ],
)
def test_bad_lists_are_config_errors(env, message):
    with pytest.raises(_runner.ConfigError, match=message):
        _runner.load_config(env)
