"""What goes wrong, and how the Azure tier says it: the service dying mid-upload, wrong
credentials, a missing container, bad names, damaged sets, name conflicts."""

import datetime
import os
import subprocess
import time

import azure_helpers as h
import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas


def test_azurite_killed_mid_upload_then_uploaded_on_the_next_run(azure_env, tmp_path):
    private = h.PrivateAzurite(str(tmp_path / "azurite")).start()
    try:
        key = azure_env["AZURE_STORAGE_KEY"]
        service = BlobServiceClient(
            private.endpoint, credential={"account_name": "devstoreaccount1", "account_key": key}
        )
        service.create_container("outage")
        bset = h.make_backup_set(str(tmp_path / "backups"), "iot", "20261127T020000Z", size=32 * h.MIB)
        sha_before = h.mf.sha256_file(bset.archive)
        args = {
            "auth_mode": "account_key",
            "account_name": "devstoreaccount1",
            "account_key": key,
            "account_url": private.endpoint,
            "container": "outage",
            "manifest_path": bset.manifest,
            "block_size_mb": 1,
            "max_concurrency": 1,
            "max_retries": 1,
            "retry_backoff": 0,
            "timeout": 5,
        }
        proc = subprocess.Popen(
            h.module_argv("blob_upload", args),
            cwd=h.REPO,
            env=h.module_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        archive = service.get_blob_client("outage", "timescaledb/%s/iot/2026/11/20261127T020000Z.dump" % h.HOST)
        staged = []
        deadline = time.monotonic() + 60
        while len(staged) < 3 and time.monotonic() < deadline and proc.poll() is None:
            try:
                staged = archive.get_block_list("uncommitted")[1]
            except ResourceNotFoundError:
                time.sleep(0.02)
        if len(staged) < 3:
            proc.kill()
            raise AssertionError("the upload was not caught in flight: %s %s" % proc.communicate())
        private.stop()
        stdout, stderr = proc.communicate(timeout=120)
        result = h.parse_result(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), [key])
        h.assert_clean_failure(result, "cannot reach Azure Blob Storage", "the local backup is kept")

        assert h.mf.sha256_file(bset.archive) == sha_before
        assert os.path.exists(bset.manifest) and os.path.exists(bset.globals_sql)

        private.start()
        assert h.blob_names(service, "outage") == [], "a partial upload is visible"
        # Bigger blocks this time: the ids are offsets of the same length, the stale blocks are dropped.
        again = h.run_module("blob_upload", dict(args, block_size_mb=8, max_concurrency=4, timeout=60))
        assert again["changed"] is True, again.get("msg")
        assert [b["status"] for b in again["blobs"]] == ["uploaded"] * 3
        props = archive.get_blob_properties()
        assert props.size == 32 * h.MIB and props.metadata["sha256"] == sha_before[0]
        assert len(archive.get_block_list("committed")[0]) == 4
    finally:
        private.stop()


def test_wrong_account_key(azure_env, service, container, tmp_path):
    service.create_container(container)
    bset = h.make_backup_set(str(tmp_path), "iot", "20261127T020000Z")
    wrong = "d3Jvbmcga2V5IG9mIGV4YWN0bHkgdGhlIHJpZ2h0IGxlbmd0aCBmb3IgYSBzdG9yYWdlIGFjY291bnQ=="
    result = h.run_module(
        "blob_upload",
        {
            "auth_mode": "account_key",
            "account_name": azure_env["AZURE_STORAGE_ACCOUNT"],
            "account_key": wrong,
            "account_url": azure_env["AZURE_STORAGE_BLOB_ENDPOINT"],
            "container": container,
            "manifest_path": bset.manifest,
            "max_retries": 0,
        },
        # The right key in the environment: the parameter wins.
        env={"AZURE_STORAGE_KEY": azure_env["AZURE_STORAGE_KEY"]},
        secrets=[azure_env["AZURE_STORAGE_KEY"]],
    )
    h.assert_clean_failure(result, "refused the credentials of auth_mode=account_key", "account_key")
    assert h.blob_names(service, container) == []


def test_expired_and_forged_sas(azure_env, service, container, tmp_path):
    service.create_container(container)
    bset = h.make_backup_set(str(tmp_path), "iot", "20261127T020000Z")
    expired = generate_container_sas(
        azure_env["AZURE_STORAGE_ACCOUNT"],
        container,
        account_key=azure_env["AZURE_STORAGE_KEY"],
        permission=ContainerSasPermissions(read=True, add=True, create=True, write=True, list=True),
        expiry=datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1),
    )
    args = {
        "auth_mode": "sas",
        "sas_token": expired,
        "account_url": azure_env["AZURE_STORAGE_BLOB_ENDPOINT"],
        "container": container,
        "manifest_path": bset.manifest,
        "max_retries": 0,
    }
    result = h.run_module("blob_upload", args)
    h.assert_clean_failure(result, "refused the credentials of auth_mode=sas", "not expired")
    assert "sig=" not in result["msg"] or "sig=********" in result["msg"]

    # Signed with another key, through the runner's entry point: the message hides it as well.
    forged = generate_container_sas(
        azure_env["AZURE_STORAGE_ACCOUNT"],
        container,
        account_key="Zm9yZ2VkIGtleQ==",
        permission=ContainerSasPermissions(read=True, add=True, create=True, write=True, list=True),
        expiry=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1),
    )
    store = h._azure.open_store(dict(args, sas_token=forged), environ={})
    with pytest.raises(h._azure.ServiceError) as info:
        store.upload_backup_set(bset.manifest)
    assert "auth_mode=sas" in str(info.value)
    assert forged.split("sig=")[1] not in str(info.value)
    assert h.blob_names(service, container) == []


def test_missing_container_is_created_only_when_asked(service, container, cs_args, tmp_path):
    bset = h.make_backup_set(str(tmp_path), "iot", "20261127T020000Z")
    result = h.run_module("blob_upload", dict(cs_args, manifest_path=bset.manifest, create_container=False))
    h.assert_clean_failure(result, "container %s does not exist" % container, "create_container: true")
    assert not service.get_container_client(container).exists()


def test_invalid_blob_names_are_refused_before_anything_is_sent(service, container, cs_args, tmp_path):
    service.create_container(container)
    bset = h.make_backup_set(str(tmp_path), "iot", "20261127T020000Z")
    result = h.run_module("blob_upload", dict(cs_args, manifest_path=bset.manifest, prefix="backups/../etc"))
    h.assert_clean_failure(result, "contains '..'")
    store = h.store_for(h.rig.load_env(), container)
    for host in ("bad\x07host", "two words", "x" * 300):
        with pytest.raises(h._azure.BlobNameError):
            store.upload_backup_set(bset.manifest, host=host)
    assert h.blob_names(service, container) == []


def test_damaged_archive_is_not_committed(service, container, cs_args, tmp_path):
    bset = h.make_backup_set(str(tmp_path), "iot", "20261127T020000Z", size=3 * h.MIB)
    with open(bset.archive, "r+b") as f:
        f.seek(2 * h.MIB)
        byte = f.read(1)
        f.seek(2 * h.MIB)
        f.write(bytes([byte[0] ^ 0xFF]))
    result = h.run_module("blob_upload", dict(cs_args, manifest_path=bset.manifest, block_size_mb=1))
    h.assert_clean_failure(result, "does not match its manifest", "not uploaded")
    assert h.blob_names(service, container) == []


def test_same_name_other_content_is_never_overwritten(azure_env, service, container, cs_args, tmp_path):
    first = h.make_backup_set(str(tmp_path / "one"), "iot", "20261127T020000Z")
    assert h.store_for(azure_env, container).upload_backup_set(first.manifest)["changed"] is True
    before = h.blob_state(service, container)
    other = h.make_backup_set(str(tmp_path / "two"), "iot", "20261127T020000Z")
    result = h.run_module("blob_upload", dict(cs_args, manifest_path=other.manifest))
    h.assert_clean_failure(result, "refusing to overwrite", "never overwritten")
    assert h.blob_state(service, container) == before
