# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The scheduled runner's settings: the environment the roles write (agent.env and the 0600
credentials.env; the variables are listed in _runner's docstring) read into one config dict,
and the checks that the timer's settings and the backup module's options share.

Private to the collection. No Ansible imports: the runner runs without Ansible.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re
import socket

from ansible_collections.insa.timescaledb_backup.plugins.module_utils import (
    _age,
    _dump,
    _errors,
    _pg,
    _replica,
    _verify,
)
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf

DEFAULT_LOCK_WAIT_MINUTES = 30  # the nightly backup waits this long for a history run to finish
DEFAULT_MAX_CLOCK_SKEW = 300  # seconds; _clock.DEFAULT_MAX_SKEW_SECONDS


class ConfigError(_errors.ConfigError):
    """The agent's settings files are wrong."""


def _bool(value, default):
    if value in (None, ""):
        return default
    if str(value).lower() in ("1", "true", "yes", "on"):
        return True
    if str(value).lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError("expected true or false, got %r" % value)


def _number(env, name, default):
    """A number setting; unset or empty is the default (0 is a value)."""
    text = env.get(name)
    try:
        return default if text in (None, "") else float(text)
    except ValueError:
        raise ConfigError("%s must be a number, not %r" % (name, text)) from None


def _json_list(name, text):
    """The value of a list setting written as JSON (what the roles write: names may hold ',' or
    '='), or None for the comma-separated form of earlier releases."""
    text = (text or "").strip()
    if not text.startswith("["):
        return None
    try:
        value = json.loads(text)
    except ValueError as e:
        raise ConfigError("%s is not a valid JSON list: %s" % (name, e)) from None
    if not isinstance(value, list):
        raise ConfigError("%s must be a JSON list" % name)
    return value


def _database_list(text):
    """'["iot", "plant 1"]' or 'iot,plant1' -> names."""
    found = _json_list("TSDB_BACKUP_DATABASES", text)
    if found is None:
        return [d.strip() for d in (text or "").split(",") if d.strip()]
    if not all(isinstance(d, str) for d in found):
        raise ConfigError("TSDB_BACKUP_DATABASES must list database names (strings)")
    return found


def _recipient_list(text):
    """'["age1...", "age1..."]' (what the roles write) or the same separated by commas or blanks:
    a value that names recipients never turns encryption off."""
    found = _json_list("TSDB_BACKUP_ENCRYPTION_RECIPIENTS", text)
    if found is not None:
        return found
    return [r for r in re.split(r"[\s,]+", (text or "").strip()) if r]


def _replica_list(text):
    """TSDB_BACKUP_REPLICAS: a JSON list of replica targets (mappings), or nothing."""
    if not text or not text.strip():
        return []
    try:
        value = json.loads(text)
    except ValueError:
        raise ConfigError(
            "TSDB_BACKUP_REPLICAS is not JSON: a list of mappings with name, auth_mode, container, credentials"
        ) from None
    if not isinstance(value, list):
        raise ConfigError("TSDB_BACKUP_REPLICAS must be a JSON list of replica targets")
    return value


def _retention_list(text):
    """'[{"hypertable": "public.esp_telemetry", "retention_days": 30}]', or the older
    'public.esp_telemetry=30,public.diagnostic_results=90' -> [{hypertable, retention_days}]."""
    found = _json_list("TSDB_HISTORY_RETENTION", text)
    if found is not None:
        for item in found:
            if not (
                isinstance(item, dict)
                and isinstance(item.get("hypertable"), str)
                and str(item.get("retention_days", "")).isdigit()
            ):
                raise ConfigError("TSDB_HISTORY_RETENTION entries need hypertable and retention_days, got %r" % item)
        return [{"hypertable": i["hypertable"], "retention_days": int(i["retention_days"])} for i in found]
    out = []
    for item in [i.strip() for i in text.split(",") if i.strip()]:
        name, sep, days = item.rpartition("=")
        if not sep or not days.strip().isdigit():
            raise ConfigError("TSDB_HISTORY_RETENTION entries are <hypertable>=<days>, got %r" % item)
        out.append({"hypertable": name.strip(), "retention_days": int(days)})
    return out


def load_config(environ=None):
    env = os.environ if environ is None else environ
    databases = _database_list(env.get("TSDB_BACKUP_DATABASES", ""))
    if not databases:
        raise ConfigError("TSDB_BACKUP_DATABASES is empty: list the databases to back up (a JSON list)")
    try:
        config = {
            "databases": databases,
            "backup_dir": env.get("TSDB_BACKUP_DIR", "/var/backups/tsdb"),
            "state_dir": env.get("TSDB_BACKUP_STATE_DIR", "/var/lib/tsdb-backup"),
            "host_label": env.get("TSDB_BACKUP_HOST_LABEL") or socket.getfqdn(),
            "compression": env.get("TSDB_BACKUP_COMPRESSION", "zstd"),
            "dump_jobs": int(env.get("TSDB_BACKUP_DUMP_JOBS") or 1),
            "verify_level": env.get("TSDB_BACKUP_VERIFY_LEVEL", "archive"),
            "keep_days": int(env.get("TSDB_BACKUP_KEEP_DAYS", "7")),
            "keep_last": int(env.get("TSDB_BACKUP_KEEP_LAST", "3")),
            "upload": _bool(env.get("TSDB_BACKUP_UPLOAD"), True),
            "metrics_dir": env.get("TSDB_BACKUP_METRICS_DIR") or None,
            "notify_config": env.get("TSDB_BACKUP_NOTIFY_CONFIG") or None,
            "log_format": env.get("TSDB_BACKUP_LOG_FORMAT", "text"),
            "drill_jobs": int(env.get("TSDB_BACKUP_DRILL_JOBS") or 1),
            "lock_wait_minutes": _number(env, "TSDB_BACKUP_LOCK_WAIT_MINUTES", DEFAULT_LOCK_WAIT_MINUTES),
            # age recipients (public keys): what leaves the host is encrypted to them (docs/SECURITY.md).
            "encryption_recipients": _recipient_list(env.get("TSDB_BACKUP_ENCRYPTION_RECIPIENTS")),
            # Second copies in other accounts (credentials.env: they carry secrets), docs/REPLICAS.md.
            "replicas": _replica_list(env.get("TSDB_BACKUP_REPLICAS")),
            # Days back each run checks that every day is covered in every target (a metric, an alert).
            "coverage_days": int(env.get("TSDB_BACKUP_COVERAGE_DAYS") or 30),
            "azure": {
                "auth_mode": env.get("TSDB_BACKUP_AZURE_AUTH_MODE") or None,
                # Set but empty is no prefix, as backup.yml passes it; only a missing key takes the default.
                "prefix": env.get("TSDB_BACKUP_AZURE_PREFIX"),
                "create_container": _bool(env.get("TSDB_BACKUP_AZURE_CREATE_CONTAINER"), False),
                "max_retries": int(env["TSDB_BACKUP_AZURE_MAX_RETRIES"])
                if env.get("TSDB_BACKUP_AZURE_MAX_RETRIES")
                else None,
                "retry_backoff": int(env["TSDB_BACKUP_AZURE_RETRY_BACKOFF"])
                if env.get("TSDB_BACKUP_AZURE_RETRY_BACKOFF")
                else None,
            },
        }
    except ValueError as e:
        raise ConfigError(str(e)) from None
    config["signing"] = {
        # This host's key signs its manifests; the trust store says whose signatures count (docs/SIGNING.md).
        "signing_key_file": env.get("TSDB_BACKUP_SIGNING_KEY_FILE") or None,
        "trusted_signers_file": env.get("TSDB_BACKUP_TRUSTED_SIGNERS_FILE") or None,
        "require_signatures": _bool(env.get("TSDB_BACKUP_REQUIRE_SIGNATURES"), None),
    }
    config["history"] = {
        "database": env.get("TSDB_HISTORY_DATABASE") or databases[0],
        "retention": _retention_list(env.get("TSDB_HISTORY_RETENTION", "")),
        "grace_hours": float(env.get("TSDB_HISTORY_GRACE_HOURS", "1")),
        # How far this host's clock may be from the database server's before history refuses to act.
        "max_clock_skew": _number(env, "TSDB_HISTORY_MAX_CLOCK_SKEW", DEFAULT_MAX_CLOCK_SKEW),
        # The host whose history the layout without host (earlier releases) is: unset, it is ignored.
        "legacy_owner": env.get("TSDB_HISTORY_LEGACY_OWNER") or None,
    }
    # libpq reads PG* itself for the tools; psycopg2 gets them explicitly.
    config["pg"] = _pg.ConnectionParams(
        login_host=env.get("PGHOST", "127.0.0.1"),
        port=int(env.get("PGPORT", "5432")),
        login_user=env.get("PGUSER", "postgres"),
        login_password=env.get("PGPASSWORD") or None,
        passfile=env.get("PGPASSFILE") or None,
        sslmode=env.get("PGSSLMODE", "prefer"),
        # tsdb_login_db: where cluster-level work (CREATE/DROP DATABASE, listings) connects.
        maintenance_db=env.get("PGDATABASE") or "postgres",
    )
    return check_config(config)


def check_config(config):
    """What the timer's settings and the backup module's options must both satisfy: the one
    place a run's configuration is validated. Returns the config."""
    if not config["databases"]:
        raise ConfigError("no database to back up: list at least one")
    for d in config["databases"]:
        try:
            mf.validate_database_name(d)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    if config["compression"] not in _dump.COMPRESSIONS:
        raise ConfigError("compression (TSDB_BACKUP_COMPRESSION) must be one of %s" % ", ".join(_dump.COMPRESSIONS))
    if config.get("dump_jobs", 1) < 0:
        raise ConfigError("dump jobs (TSDB_BACKUP_DUMP_JOBS) must be 0 (one per core) or a positive number")
    if config.setdefault("lock_wait_minutes", 0) < 0:
        raise ConfigError("the lock wait (TSDB_BACKUP_LOCK_WAIT_MINUTES) must be 0 minutes or more")
    if config["verify_level"] not in _verify.LEVELS:
        raise ConfigError("verify level (TSDB_BACKUP_VERIFY_LEVEL) must be one of %s" % ", ".join(_verify.LEVELS))
    config["encryption_recipients"] = _age.recipients(
        config.get("encryption_recipients"), "encryption recipients (TSDB_BACKUP_ENCRYPTION_RECIPIENTS)"
    )
    try:
        config["replicas"] = _replica.check_replicas(config.get("replicas"))
    except _errors.ConfigError as e:
        raise ConfigError("replicas (TSDB_BACKUP_REPLICAS): %s" % e) from None
    if config["encryption_recipients"]:
        if config.get("dump_jobs", 1) != 1:
            raise ConfigError(
                "encryption works with one-file archives: set the dump jobs (TSDB_BACKUP_DUMP_JOBS) to 1, "
                "or turn encryption off"
            )
        _age.find()  # a host without age fails here, before any dump
    return config


_ENV_LINE = re.compile(r'^([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"\s*$')


def read_env_file(path):
    """The settings of an EnvironmentFile the roles write (KEY="value", backslash escaping
    backslash, quote, dollar and backtick; see the roles' env.j2): {} when the file does not
    exist. Other lines are ignored."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return {}
    values = {}
    for line in lines:
        m = _ENV_LINE.match(line.strip())
        if m:
            values[m.group(1)] = re.sub(r"\\(.)", r"\1", m.group(2))
    return values
