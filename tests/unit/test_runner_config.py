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


def test_the_roles_env_files_read_back_exactly(tmp_path):
    """What the roles' env.j2 writes (backslash, quote, dollar, backtick escaped) reads back."""
    path = tmp_path / "agent.env"
    value = 'a "quoted" $HOME `id` back\\slash ü 🚀'
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace("`", "\\`")
    path.write_text('# managed\nTSDB_BACKUP_METRICS_DIR="%s"\nnot a setting\nX=unquoted\n' % escaped, encoding="utf-8")
    assert _runner.read_env_file(str(path)) == {"TSDB_BACKUP_METRICS_DIR": value}
    assert _runner.read_env_file(str(tmp_path / "missing.env")) == {}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"databases": []}, "no database"),
        ({"databases": ["x" * 64]}, "invalid database name"),
        ({"compression": "brotli"}, "compression"),
        ({"verify_level": "deep"}, "verify level"),
    ],
)
def test_one_check_for_the_timer_and_the_module(change, message):
    config = dict({"databases": ["iot"], "compression": "zstd", "verify_level": "archive"}, **change)
    with pytest.raises(_runner.ConfigError, match=message):
        _runner.check_config(config)


def test_wrong_azure_settings_still_leave_a_local_backup(monkeypatch):
    """Azure that cannot be configured fails each database at its upload step, after the dump."""

    def no_store(config, logger):
        raise _runner.ConfigError("auth_mode entra needs account_name")

    seen = []
    monkeypatch.setattr(_runner, "open_store", no_store)
    monkeypatch.setattr(
        _runner, "backup_database", lambda config, db, logger, store, azure: seen.append(store) or {"database": db}
    )
    _runner.run_backup({"upload": True, "databases": ["iot", "other"]}, logger=None)
    assert len(seen) == 2
    with pytest.raises(_runner.ConfigError, match="upload configuration: auth_mode entra needs account_name"):
        seen[0].catch_up("/var/backups/tsdb", database="iot", host="db01")


def test_the_connection_settings_of_agent_env_reach_every_connection():
    config = _runner.load_config(
        {
            "TSDB_BACKUP_DATABASES": '["iot"]',
            "PGHOST": "db.internal",
            "PGPORT": "6432",
            "PGUSER": "tsdb_backup",
            "PGSSLMODE": "require",
            "PGDATABASE": "maint",
            "PGPASSFILE": "/etc/tsdb-backup/pgpass",
        }
    )
    pg = config["pg"]
    assert (pg.host, pg.port, pg.user, pg.sslmode, pg.maintenance_db, pg.passfile) == (
        "db.internal",
        6432,
        "tsdb_backup",
        "require",
        "maint",
        "/etc/tsdb-backup/pgpass",
    )
    assert _runner.load_config({"TSDB_BACKUP_DATABASES": '["iot"]'})["pg"].maintenance_db == "postgres"


def test_an_empty_prefix_is_no_prefix_as_for_the_playbooks():
    assert (
        _runner.load_config({"TSDB_BACKUP_DATABASES": '["iot"]', "TSDB_BACKUP_AZURE_PREFIX": ""})["azure"]["prefix"]
        == ""
    )
    assert _runner.load_config({"TSDB_BACKUP_DATABASES": '["iot"]'})["azure"]["prefix"] is None
