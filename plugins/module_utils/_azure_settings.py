# Copyright: (c) 2026, INSA platform team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Azure tier's settings without the SDK: the options every Azure module takes, their
resolution (defaults, environment, checks per auth mode) and the redactor of their secrets.
_azure builds the clients from them; its ``__all__`` is the API.

Private to the collection. No Ansible imports: the scheduled runner uses this too.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.insa.timescaledb_backup.plugins.module_utils._azure_names import (
    AUTH_MODES,
    DEFAULT_PREFIX,
    ENV_FALLBACK,
    SECRET_KEYS,
    ConfigError,
    Redactor,
    validate_container_name,
    validate_prefix,
)


def azure_common_argument_spec():
    """Options every Azure module takes; documented by the insa.timescaledb_backup.azure doc
    fragment. A plain dict: modules pass it to AnsibleModule, the runner uses its defaults."""
    return dict(
        auth_mode=dict(type="str", choices=list(AUTH_MODES)),
        account_name=dict(type="str"),
        account_url=dict(type="str"),
        account_key=dict(type="str", no_log=True),
        sas_token=dict(type="str", no_log=True),
        connection_string=dict(type="str", no_log=True),
        tenant_id=dict(type="str"),
        client_id=dict(type="str"),
        client_secret=dict(type="str", no_log=True),
        authority_host=dict(type="str"),
        container=dict(type="str"),
        prefix=dict(type="str", default=DEFAULT_PREFIX),
        create_container=dict(type="bool", default=False),
        max_retries=dict(type="int", default=5),
        retry_backoff=dict(type="int", default=4),
        timeout=dict(type="int", default=60),
    )


def resolve_settings(config, environ=None):
    """Settings from module params or a runner's plain dict: spec defaults for missing keys,
    environment variables for missing values, checks per auth_mode. Raises ConfigError."""
    spec = azure_common_argument_spec()
    env = os.environ if environ is None else environ
    settings = {}
    for key, option in spec.items():
        value = config.get(key)
        settings[key] = option.get("default") if value is None else value
    for key, var in ENV_FALLBACK.items():
        if settings.get(key) in (None, "") and env.get(var):
            settings[key] = env[var]
    mode = settings["auth_mode"]
    if mode not in AUTH_MODES:
        raise ConfigError("auth_mode is required and must be one of: %s" % ", ".join(AUTH_MODES))
    if not settings["container"]:
        raise ConfigError("container is required (or set AZURE_STORAGE_CONTAINER)")
    validate_container_name(settings["container"])
    settings["prefix"] = validate_prefix(settings["prefix"])
    if mode == "connection_string":
        if not settings["connection_string"]:
            raise ConfigError(
                "auth_mode=connection_string needs connection_string (or AZURE_STORAGE_CONNECTION_STRING)"
            )
        if config.get("account_url"):
            raise ConfigError(
                "account_url cannot be combined with auth_mode=connection_string: the connection string "
                "carries its own endpoint (BlobEndpoint=...)"
            )
        settings["account_url"] = None
    else:
        if mode == "account_key" and not (settings["account_name"] and settings["account_key"]):
            raise ConfigError(
                "auth_mode=account_key needs account_name and account_key "
                "(or AZURE_STORAGE_ACCOUNT and AZURE_STORAGE_KEY)"
            )
        if mode == "sas" and not settings["sas_token"]:
            raise ConfigError("auth_mode=sas needs sas_token (or AZURE_STORAGE_SAS_TOKEN)")
        if mode == "entra" and settings["client_secret"] and not (settings["tenant_id"] and settings["client_id"]):
            raise ConfigError("auth_mode=entra with client_secret also needs tenant_id and client_id")
        if not settings["account_url"]:
            if not settings["account_name"]:
                raise ConfigError(
                    "auth_mode=%s needs account_url or account_name (or AZURE_STORAGE_BLOB_ENDPOINT / "
                    "AZURE_STORAGE_ACCOUNT) to know the endpoint" % mode
                )
            settings["account_url"] = "https://%s.blob.core.windows.net" % settings["account_name"]
        if "?" in settings["account_url"]:
            raise ConfigError("account_url must not contain a query string; give a SAS token as sas_token")
        settings["account_url"] = settings["account_url"].rstrip("/")
    for key in ("max_retries", "retry_backoff", "timeout"):
        if int(settings[key]) < 0 or (key == "timeout" and int(settings[key]) == 0):
            raise ConfigError("%s must be a positive number" % key)
    return settings


def redactor_for(settings):
    secrets = [settings.get(k) for k in SECRET_KEYS]
    if settings.get("sas_token"):
        secrets.append(settings["sas_token"].lstrip("?"))
    return Redactor(secrets)
