"""blob_upload against Azurite: check mode sends nothing, the real run uploads a complete set
with its metadata, a re-run sends nothing (asserted on the service side), the three
Azurite-testable auth modes, and the runner's plain-dict entry point."""

import datetime
import hashlib
import json
import os
import subprocess
import time

import azure_helpers as h
from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas


def test_check_mode_then_upload_then_nothing_resent(azure_env, service, container, cs_args, tmp_path):
    bset = h.make_backup_set(str(tmp_path), "iot", "20261127T020000Z", size=3 * h.MIB + 17)
    # The connection string and the container come from the environment: parameters not given
    # fall back to AZURE_STORAGE_CONNECTION_STRING / AZURE_STORAGE_CONTAINER.
    args = dict(cs_args, manifest_path=bset.manifest, block_size_mb=1)
    del args["connection_string"], args["container"]
    env = {
        "AZURE_STORAGE_CONNECTION_STRING": azure_env["AZURE_STORAGE_CONNECTION_STRING"],
        "AZURE_STORAGE_CONTAINER": container,
    }

    def run_module(*a, **kw):
        return h.run_module(*a, env=env, secrets=[azure_env["AZURE_STORAGE_KEY"]], **kw)

    checked = run_module("blob_upload", args, check=True)
    assert checked["changed"] is True and checked["container_created"] is True
    assert [b["status"] for b in checked["blobs"]] == ["would_upload"] * 3
    assert not service.get_container_client(container).exists(), "check mode created the container"

    done = run_module("blob_upload", args)
    assert done["changed"] is True, done
    folder = "timescaledb/%s/iot/2026/11/20261127T020000Z" % h.HOST
    assert [b["name"] for b in done["blobs"]] == [folder + ".dump", folder + ".globals.sql", folder + ".manifest.json"]
    assert [b["status"] for b in done["blobs"]] == ["uploaded"] * 3
    assert h.blob_names(service, container) == sorted(b["name"] for b in done["blobs"])
    assert done["bytes"] == sum(os.path.getsize(p) for p in (bset.archive, bset.globals_sql, bset.manifest))
    assert done["url"].endswith("/%s/%s.dump" % (container, folder)) and "?" not in done["url"]
    assert done["duration"] > 0 and done["throughput_mib_s"] > 0

    manifest = json.load(open(bset.manifest))
    archive = service.get_blob_client(container, folder + ".dump")
    props = archive.get_blob_properties()
    assert props.size == manifest["archive"]["size_bytes"]
    assert props.metadata["sha256"] == manifest["archive"]["sha256"]
    assert props.metadata["backup_id"] == "20261127T020000Z"
    assert props.metadata["database"] == "iot" and props.metadata["host"] == h.HOST
    assert props.metadata["pg_version"] == "17.6" and props.metadata["tsdb_version"] == "2.19.3"
    assert props.metadata["kind"] == "archive"
    assert hashlib.sha256(archive.download_blob().readall()).hexdigest() == manifest["archive"]["sha256"]
    # Blocks of 1 MiB: the archive was sent in four blocks.
    committed, uncommitted = archive.get_block_list("all")
    assert len(committed) == 4 and not uncommitted
    manifest_blob = service.get_blob_client(container, folder + ".manifest.json")
    assert manifest_blob.download_blob().readall() == open(bset.manifest, "rb").read()
    # The manifest went last: it was committed no earlier than the archive.
    assert manifest_blob.get_blob_properties().last_modified >= props.last_modified

    before = h.blob_state(service, container)
    again = run_module("blob_upload", args)
    assert again["changed"] is False and again["bytes"] == 0
    assert [b["status"] for b in again["blobs"]] == ["skipped"] * 3
    assert h.blob_state(service, container) == before, "a re-run rewrote a blob"


def test_account_key_and_sas_modes(azure_env, service, container, tmp_path):
    service.create_container(container)
    endpoint = azure_env["AZURE_STORAGE_BLOB_ENDPOINT"]
    key_set = h.make_backup_set(str(tmp_path / "a"), "iot", "20261120T020000Z")
    by_key = h.run_module(
        "blob_upload",
        {
            "auth_mode": "account_key",
            "account_name": azure_env["AZURE_STORAGE_ACCOUNT"],
            "account_key": azure_env["AZURE_STORAGE_KEY"],
            "account_url": endpoint,
            "container": container,
            "manifest_path": key_set.manifest,
        },
    )
    assert by_key["changed"] is True, by_key
    assert all(b["status"] == "uploaded" for b in by_key["blobs"])

    sas = generate_container_sas(
        azure_env["AZURE_STORAGE_ACCOUNT"],
        container,
        account_key=azure_env["AZURE_STORAGE_KEY"],
        permission=ContainerSasPermissions(read=True, add=True, create=True, write=True, list=True),
        expiry=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1),
    )
    sas_set = h.make_backup_set(str(tmp_path / "b"), "iot", "20261121T020000Z")
    sas_args = {
        "auth_mode": "sas",
        "sas_token": "?" + sas,
        "account_url": endpoint,
        "container": container,
        "manifest_path": sas_set.manifest,
    }
    by_sas = h.run_module("blob_upload", sas_args)
    assert by_sas["changed"] is True, by_sas
    for blob in by_sas["blobs"]:
        assert "sig=" not in blob["url"] and "?" not in blob["url"]
    assert len(h.blob_names(service, container)) == 6


# Uploads a small backup set first (the baseline: same process, same client, same blocks in
# flight), then the large one, and reports the peak of Python's traced allocations during each.
# tracemalloc counts what the code holds (the blocks, the SDK's request bodies) without the
# allocator's fragmentation, which made peak RSS swing between 70 and 160 MB on this machine.
RUNNER = r"""
import json, resource, sys, time, tracemalloc
sys.path.insert(0, sys.argv[1])
from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _azure
config = json.loads(sys.argv[2])
store = _azure.open_store(config, environ={})
tracemalloc.start()
small = store.upload_backup_set(sys.argv[3], block_size_mb=1, max_concurrency=4)
baseline_peak = tracemalloc.get_traced_memory()[1]
tracemalloc.reset_peak()
t0 = time.monotonic()
result = store.upload_backup_set(sys.argv[4], block_size_mb=1, max_concurrency=4)
seconds = time.monotonic() - t0
print(json.dumps({"seconds": seconds, "bytes": result["bytes"], "changed": result["changed"],
                  "small_changed": small["changed"], "baseline_peak": baseline_peak,
                  "peak": tracemalloc.get_traced_memory()[1],
                  "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}))
"""


def test_round_trip_200mb_small_blocks(azure_env, service, container, cs_args, tmp_path):
    """~200 MiB through 1 MiB blocks: uploaded by the runner's entry point (plain dict, no
    Ansible) with bounded memory, re-upload sends nothing, download through the module equals."""
    size = 200 * h.MIB + 12345
    t0 = time.monotonic()
    bset = h.make_backup_set(str(tmp_path / "src"), "iot", "20261127T020000Z", size=size)
    original = json.load(open(bset.manifest))["archive"]["sha256"]
    generated = time.monotonic() - t0
    small = h.make_backup_set(str(tmp_path / "small"), "iot", "20261126T020000Z", size=16 * h.MIB)

    config = {
        "auth_mode": "connection_string",
        "connection_string": azure_env["AZURE_STORAGE_CONNECTION_STRING"],
        "container": container,
        "create_container": True,
    }
    proc = subprocess.run(
        [
            h.PYTHON,
            "-c",
            RUNNER,
            os.path.join(h.REPO, "collections"),
            json.dumps(config),
            small.manifest,
            bset.manifest,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    runner = json.loads(proc.stdout)
    assert runner["small_changed"] is True and runner["changed"] is True and runner["bytes"] > size
    # Memory follows the blocks in flight (1 MiB x 4), not the archive: 12.5 times the data of
    # the 16 MiB baseline upload must not need more memory than it (a buffered archive: 200 MiB).
    assert runner["peak"] <= 1.25 * runner["baseline_peak"] + h.MIB, runner
    assert runner["peak"] < 16 * h.MIB, runner
    archive_name = "timescaledb/%s/iot/2026/11/20261127T020000Z.dump" % h.HOST
    props = service.get_blob_client(container, archive_name).get_blob_properties()
    assert props.size == size and props.metadata["sha256"] == original
    committed = service.get_blob_client(container, archive_name).get_block_list("committed")[0]
    assert len(committed) == 201

    before = h.blob_state(service, container)
    again = h.run_module("blob_upload", dict(cs_args, manifest_path=bset.manifest, block_size_mb=1))
    assert again["changed"] is False and again["bytes"] == 0
    assert h.blob_state(service, container) == before

    dest = str(tmp_path / "restore")
    t1 = time.monotonic()
    down = h.run_module("blob_download", dict(cs_args, dest=dest, database="iot", host_label=h.HOST))
    download_seconds = time.monotonic() - t1
    assert down["changed"] is True and down["backup_id"] == "20261127T020000Z", down
    got = os.path.join(dest, "iot", "20261127T020000Z.dump")
    assert down["files"][-1].endswith(".manifest.json")
    digest = hashlib.sha256()
    with open(got, "rb") as f:
        for block in iter(lambda: f.read(4 * h.MIB), b""):
            digest.update(block)
    assert digest.hexdigest() == original and os.path.getsize(got) == size
    assert not [n for n in os.listdir(os.path.join(dest, "iot")) if n.endswith(".partial")]
    print(
        "\nround trip %d bytes: generated %.1fs, upload %.1fs (traced peak %.1f MiB, %.1f MiB for the 16 MiB"
        " baseline; peak RSS %.0f MB), module download %.1fs"
        % (
            size,
            generated,
            runner["seconds"],
            runner["peak"] / h.MIB,
            runner["baseline_peak"] / h.MIB,
            runner["maxrss_mb"],
            download_seconds,
        )
    )


def test_directory_format_round_trip(service, container, cs_args, tmp_path):
    bset = h.make_backup_set(str(tmp_path / "src"), "iot", "20261127T030000Z", size=2 * h.MIB, directory_format=True)
    up = h.run_module("blob_upload", dict(cs_args, manifest_path=bset.manifest))
    assert up["changed"] is True, up
    names = h.blob_names(service, container)
    folder = "timescaledb/%s/iot/2026/11/20261127T030000Z" % h.HOST
    assert names == sorted(
        [
            folder + ".dir/3001.dat.zst",
            folder + ".dir/3002.dat.zst",
            folder + ".dir/toc.dat",
            folder + ".globals.sql",
            folder + ".manifest.json",
        ]
    )
    dest = str(tmp_path / "restore")
    down = h.store_for(h.rig.load_env(), container).download_backup(dest, "iot", host=h.HOST)
    assert down["changed"] is True, down
    from ansible_collections.insa.timescaledb_backup.plugins.module_utils import _manifest as mf

    fetched = mf.read_manifest(os.path.join(dest, "iot", "20261127T030000Z.manifest.json"))
    digest, _size, _files = mf.sha256_directory(os.path.join(dest, "iot", "20261127T030000Z.dir"))
    assert digest == fetched["archive"]["sha256"]


def test_service_client_for_the_runner_from_a_plain_dict(azure_env, container):
    """open_store() takes a partial dict: defaults from the argument spec, then the environment."""
    store = h._azure.open_store(
        {"auth_mode": "account_key", "container": container},
        environ={
            "AZURE_STORAGE_ACCOUNT": azure_env["AZURE_STORAGE_ACCOUNT"],
            "AZURE_STORAGE_KEY": azure_env["AZURE_STORAGE_KEY"],
            "AZURE_STORAGE_BLOB_ENDPOINT": azure_env["AZURE_STORAGE_BLOB_ENDPOINT"],
        },
    )
    assert store.prefix == "timescaledb" and store.settings["max_retries"] == 5
    assert isinstance(store.client, BlobServiceClient)
    assert store.ensure_container(create=True)["created"] is True
    assert store.ensure_container(create=False)["exists"] is True


def test_entra_through_default_azure_credential(service, tmp_path):
    """auth_mode=entra as far as Azurite allows: HTTPS with `--oauth basic` accepts any
    well-formed token. DefaultAzureCredential is limited to its Azure CLI credential
    (AZURE_TOKEN_CREDENTIALS, so nothing probes a metadata endpoint) and an `az` stub hands out
    the token - the module's real credential chain, bearer tokens over TLS, no network."""
    folder = str(tmp_path)
    cert, key = h.self_signed_certificate(folder)
    private = h.PrivateAzurite(
        os.path.join(folder, "azurite"), scheme="https", extra_args=["--cert", cert, "--key", key, "--oauth", "basic"]
    ).start()
    try:
        bset = h.make_backup_set(os.path.join(folder, "backups"), "iot", "20261127T020000Z", size=h.MIB)
        args = {"auth_mode": "entra", "account_url": private.endpoint, "container": "entra", "max_retries": 0}
        upload = dict(args, manifest_path=bset.manifest, create_container=True)
        env = {
            "PATH": h.fake_az_cli(folder, h.fake_jwt()) + os.pathsep + os.environ["PATH"],
            "AZURE_TOKEN_CREDENTIALS": "AzureCliCredential",
            "REQUESTS_CA_BUNDLE": cert,
        }
        done, down = h.run_tasks(
            [
                ("blob_upload", upload),
                ("blob_download", dict(args, dest=os.path.join(folder, "restore"), database="iot", host_label=h.HOST)),
            ],
            env=env,
        )
        assert done["changed"] is True and [b["status"] for b in done["blobs"]] == ["uploaded"] * 3, done
        assert "get-access-token" in open(os.path.join(folder, "az.calls")).read()
        assert done["url"].startswith("https://127.0.0.1:%d/devstoreaccount1/entra/" % private.port)
        assert down["changed"] is True, down
        assert h.mf.sha256_file(down["archive_path"]) == h.mf.sha256_file(bset.archive)

        env["PATH"] = h.fake_az_cli(os.path.join(folder, "other"), h.fake_jwt(audience="https://vault.azure.net"))
        env["PATH"] += os.pathsep + os.environ["PATH"]
        refused = h.run_module("blob_upload", dict(upload, create_container=False), env=env)
        h.assert_clean_failure(refused, "refused the credentials of auth_mode=entra", "Storage Blob Data")
    finally:
        private.stop()
