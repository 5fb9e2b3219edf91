"""Settings per auth mode, their precedence, and keeping secrets out of messages and URLs."""

import pytest
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _azure as az

KEY = "Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9v"


def test_spec_is_a_plain_dict_with_secrets_hidden():
    spec = az.azure_common_argument_spec()
    assert {k for k, v in spec.items() if v.get("no_log")} == set(az.SECRET_KEYS)
    assert spec["auth_mode"]["choices"] == list(az.AUTH_MODES)
    assert spec is not az.azure_common_argument_spec()


def test_auth_mode_is_never_guessed():
    with pytest.raises(az.ConfigError, match="auth_mode is required"):
        az.resolve_settings({"container": "c01"}, environ={"AZURE_STORAGE_CONNECTION_STRING": "x"})


def test_parameter_wins_over_environment():
    env = {
        "AZURE_STORAGE_ACCOUNT": "envacct",
        "AZURE_STORAGE_KEY": "envkey",
        "AZURE_STORAGE_CONTAINER": "envc",
        "AZURE_STORAGE_BLOB_ENDPOINT": "http://127.0.0.1:10000/envacct",
    }
    s = az.resolve_settings({"auth_mode": "account_key", "account_key": KEY}, environ=env)
    assert (s["account_name"], s["account_key"], s["container"]) == ("envacct", KEY, "envc")
    assert s["account_url"] == "http://127.0.0.1:10000/envacct"
    s = az.resolve_settings(
        {"auth_mode": "account_key", "account_name": "mine", "account_key": KEY, "container": "mine"}, environ={}
    )
    assert s["account_url"] == "https://mine.blob.core.windows.net" and s["container"] == "mine"
    assert s["prefix"] == "timescaledb" and s["max_retries"] == 5


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"auth_mode": "connection_string"}, "needs connection_string"),
        (
            {"auth_mode": "connection_string", "connection_string": "x", "account_url": "https://a"},
            "cannot be combined",
        ),
        ({"auth_mode": "account_key", "account_name": "a"}, "needs account_name and account_key"),
        ({"auth_mode": "sas", "account_name": "a"}, "needs sas_token"),
        ({"auth_mode": "sas", "sas_token": "sv=1&sig=x"}, "needs account_url or account_name"),
        ({"auth_mode": "sas", "sas_token": "s", "account_url": "https://a.blob.core.windows.net/?sv=1"}, "query"),
        ({"auth_mode": "entra", "account_name": "a", "client_secret": "s"}, "tenant_id and client_id"),
        ({"auth_mode": "entra", "account_name": "a", "container": "Bad_Name"}, "not a valid container"),
        ({"auth_mode": "entra", "account_name": "a", "prefix": "../x"}, "'..'"),
        ({"auth_mode": "entra", "account_name": "a", "timeout": 0}, "timeout"),
    ],
)
def test_what_each_mode_needs(config, message):
    config = dict({"container": "c01"}, **config)
    with pytest.raises((az.ConfigError, az.BlobNameError), match=message):
        az.resolve_settings(config, environ={})


def test_connection_string_endpoint_comes_from_the_string():
    env = {"AZURE_STORAGE_BLOB_ENDPOINT": "http://elsewhere"}
    s = az.resolve_settings(
        {"auth_mode": "connection_string", "connection_string": "x", "container": "c01"}, environ=env
    )
    assert s["account_url"] is None


def test_urls_never_carry_a_sas():
    assert az.url_without_sas("https://a.blob.core.windows.net/c/b.dump?sv=2024&sig=abc%3D") == (
        "https://a.blob.core.windows.net/c/b.dump"
    )
    assert (
        az.url_without_sas("http://127.0.0.1:10000/devstoreaccount1/c#x") == "http://127.0.0.1:10000/devstoreaccount1/c"
    )
    assert az.url_without_sas(None) is None


def test_redaction():
    redact = az.redactor_for({"account_key": KEY, "sas_token": "?sv=2024&sig=SECRETSIG", "client_secret": "s3cr3t!"})
    text = redact(
        "key %s; url https://a/c?sv=2024&sig=OTHERSIG; DefaultEndpointsProtocol=https;AccountKey=abc/def==;"
        " client s3cr3t! Authorization: Bearer eyJ0eXAi.abc.def" % KEY
    )
    for secret in (KEY, "OTHERSIG", "abc/def==", "s3cr3t!", "eyJ0eXAi"):
        assert secret not in text
    assert "sig=********" in text and "AccountKey=********" in text


def test_entra_credential_choice():
    sp = az.entra_credential({"tenant_id": "t", "client_id": "c", "client_secret": "s"})
    assert type(sp).__name__ == "ClientSecretCredential"
    default = az.entra_credential({"client_id": "managed-id"})
    assert type(default).__name__ == "DefaultAzureCredential"
