"""What goes wrong, and how the Azure tier says it: the service dying mid-upload, wrong
credentials, a missing container, bad names, damaged sets, name conflicts."""

import datetime
import os
import subprocess
import time
import uuid

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


def test_bad_input_fails_clearly_and_sends_nothing(azure_env, service, tmp_path):
    """Wrong key, expired SAS, missing container, invalid blob name, damaged archive, a name
    taken by other content - one ansible-playbook run, one container each."""
    names = {
        case: "it-az-%s-%s" % (case, uuid.uuid4().hex[:8])
        for case in ("key", "sas", "missing", "name", "damaged", "taken")
    }
    try:
        for case, name in names.items():
            if case != "missing":
                service.create_container(name)
        endpoint, account, key = (
            azure_env["AZURE_STORAGE_BLOB_ENDPOINT"],
            azure_env["AZURE_STORAGE_ACCOUNT"],
            azure_env["AZURE_STORAGE_KEY"],
        )
        cs = {
            "auth_mode": "connection_string",
            "connection_string": azure_env["AZURE_STORAGE_CONNECTION_STRING"],
            "max_retries": 0,
        }
        bset = h.make_backup_set(str(tmp_path / "good"), "iot", "20261127T020000Z")
        damaged = h.make_backup_set(str(tmp_path / "damaged"), "iot", "20261127T020000Z", size=3 * h.MIB)
        with open(damaged.archive, "r+b") as f:
            f.seek(2 * h.MIB)
            byte = f.read(1)
            f.seek(2 * h.MIB)
            f.write(bytes([byte[0] ^ 0xFF]))
        # The name is taken by another backup with the same id.
        other = h.make_backup_set(str(tmp_path / "other"), "iot", "20261127T020000Z")
        h.store_for(azure_env, names["taken"]).upload_backup_set(other.manifest)
        taken_before = h.blob_state(service, names["taken"])
        wrong_key = "d3Jvbmcga2V5IG9mIGV4YWN0bHkgdGhlIHJpZ2h0IGxlbmd0aCBmb3IgYSBzdG9yYWdlIGFjY291bnQ=="
        expired = generate_container_sas(
            account,
            names["sas"],
            account_key=key,
            permission=ContainerSasPermissions(read=True, add=True, create=True, write=True, list=True),
            expiry=datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1),
        )

        results = h.run_tasks(
            [
                (
                    "blob_upload",
                    {
                        "auth_mode": "account_key",
                        "account_name": account,
                        "account_key": wrong_key,
                        "account_url": endpoint,
                        "container": names["key"],
                        "manifest_path": bset.manifest,
                        "max_retries": 0,
                    },
                ),
                (
                    "blob_upload",
                    {
                        "auth_mode": "sas",
                        "sas_token": expired,
                        "account_url": endpoint,
                        "container": names["sas"],
                        "manifest_path": bset.manifest,
                        "max_retries": 0,
                    },
                ),
                ("blob_upload", dict(cs, container=names["missing"], manifest_path=bset.manifest)),
                ("blob_upload", dict(cs, container=names["name"], manifest_path=bset.manifest, prefix="b/../etc")),
                ("blob_upload", dict(cs, container=names["damaged"], manifest_path=damaged.manifest, block_size_mb=1)),
                ("blob_upload", dict(cs, container=names["taken"], manifest_path=bset.manifest)),
            ],
            # The right key in the environment: the parameter wins, and neither key is ever shown.
            env={"AZURE_STORAGE_KEY": key},
            secrets=[key, expired.split("sig=")[1]],
        )
        h.assert_clean_failure(results[0], "refused the credentials of auth_mode=account_key", "account_key")
        h.assert_clean_failure(results[1], "refused the credentials of auth_mode=sas", "not expired")
        h.assert_clean_failure(results[2], "container %s does not exist" % names["missing"], "create_container: true")
        h.assert_clean_failure(results[3], "contains '..'")
        h.assert_clean_failure(results[4], "does not match its manifest", "not uploaded")
        h.assert_clean_failure(results[5], "refusing to overwrite", "never overwritten")
        for case in ("key", "sas", "name", "damaged"):
            assert h.blob_names(service, names[case]) == [], "%s: something was committed" % case
        assert not service.get_container_client(names["missing"]).exists()
        assert h.blob_state(service, names["taken"]) == taken_before
        assert os.path.exists(damaged.archive) and os.path.exists(damaged.manifest), "the local set was touched"

        # The same through the runner's entry point: a SAS signed with another key, odd host labels.
        forged = generate_container_sas(
            account,
            names["sas"],
            account_key="Zm9yZ2VkIGtleQ==",
            permission=ContainerSasPermissions(read=True, add=True, create=True, write=True, list=True),
            expiry=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1),
        )
        store = h._azure.open_store(
            {
                "auth_mode": "sas",
                "sas_token": forged,
                "account_url": endpoint,
                "container": names["sas"],
                "max_retries": 0,
            },
            environ={},
        )
        with pytest.raises(h._azure.ServiceError) as info:
            store.upload_backup_set(bset.manifest)
        assert "auth_mode=sas" in str(info.value) and forged.split("sig=")[1] not in str(info.value)
        store = h.store_for(azure_env, names["name"])
        for host in ("bad\x07host", "two words", "x" * 300, ".."):
            with pytest.raises(h._azure.BlobNameError):
                store.upload_backup_set(bset.manifest, host=host)
        assert h.blob_names(service, names["name"]) == []
    finally:
        for name in names.values():
            if service.get_container_client(name).exists():
                service.delete_container(name)
