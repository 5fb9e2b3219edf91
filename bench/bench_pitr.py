"""The physical paths of the bench (pgBackRest, role pitr): a host container of its own
(insa-tsdb-bench-pitr, PostgreSQL on 127.0.0.1:15832) with the bench dataset, a private Azurite
over HTTPS (pgBackRest reaches Azurite only so; a self-signed certificate the host trusts), and
setup.yml with tsdb_pitr_enabled on an inventory that adds the host to the local one. A context
manager: the container, the Azurite and their files are removed at its end, also on failure."""

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time

import bench_rig as rig

NAME = "tsdb-bench-pitr"
CONTAINER_NAME = "insa-tsdb-bench-pitr"
PORT = 15832
CA = "/etc/ssl/certs/insa-bench-azurite.pem"
AZURITE = "/var/cache/insa-timescaledb-backup-rig/azurite-3.35.0/node_modules/.bin/azurite-blob"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PitrHost:
    def __init__(self, database, azure_container):
        self.database, self.azure_container = database, azure_container
        self.host = rig.Host(NAME, CONTAINER_NAME, PORT)
        self.tmp, self.azurite, self.port, self.inventory = None, None, None, ()

    def _script(self, action, check=True):
        argv = [rig.EXTRA_HOST, action, CONTAINER_NAME] + ([str(PORT)] if action in ("up", "fresh") else [])
        proc = subprocess.run(argv, check=False)
        if check and proc.returncode != 0:
            raise RuntimeError("%s %s failed (%d)" % (rig.EXTRA_HOST, action, proc.returncode))

    def __enter__(self):
        try:
            self.tmp = tempfile.mkdtemp(prefix="insa-bench-pitr-")
            self._start_azurite()
            self._script("down")
            self._script("up")
            # A cluster of its own layer: overlayfs cannot rename the image's data directory.
            self._script("fresh")
            subprocess.run([rig.DOCKER, "cp", self.cert, "%s:%s" % (CONTAINER_NAME, CA)], check=True)
            path = os.path.join(self.tmp, "pitr.json")
            with open(path, "w") as f:
                json.dump(self._inventory(), f, indent=2)
            self.inventory = (os.path.join(rig.REPO, "inventories", "local"), path)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start_azurite(self):
        self.cert, key = os.path.join(self.tmp, "cert.pem"), os.path.join(self.tmp, "key.pem")
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                key,
                "-out",
                self.cert,
                "-days",
                "1",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ],
            check=True,
            capture_output=True,
        )
        self.port = _free_port()
        data = os.path.join(self.tmp, "azurite")
        os.mkdir(data)
        log = open(os.path.join(self.tmp, "azurite.log"), "ab")
        self.azurite = subprocess.Popen(
            [
                AZURITE,
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(self.port),
                "--location",
                data,
                "--skipApiVersionCheck",
                "--loose",
                "--disableTelemetry",
                "--cert",
                self.cert,
                "--key",
                key,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.azurite.poll() is not None:
                    raise RuntimeError("the bench's HTTPS Azurite did not start: %s/azurite.log" % self.tmp) from None
                time.sleep(0.2)
        from azure.storage.blob import BlobServiceClient

        conn = "DefaultEndpointsProtocol=https;AccountName=%s;AccountKey=%s;BlobEndpoint=https://127.0.0.1:%d/%s;" % (
            "devstoreaccount1",
            os.environ["AZURE_STORAGE_KEY"],
            self.port,
            "devstoreaccount1",
        )
        BlobServiceClient.from_connection_string(conn, connection_verify=self.cert).create_container(
            self.azure_container
        )

    def __exit__(self, *exc):
        self._script("down", check=False)
        if self.azurite is not None and self.azurite.poll() is None:
            self.azurite.terminate()
            try:
                self.azurite.wait(15)
            except subprocess.TimeoutExpired:
                self.azurite.kill()
                self.azurite.wait(15)
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None
        return False

    def _inventory(self):
        return {
            "all": {
                "children": {
                    "tsdb_hosts": {
                        "hosts": {
                            NAME: {
                                "ansible_connection": "community.docker.docker",
                                "ansible_host": CONTAINER_NAME,
                                "ansible_python_interpreter": "/usr/bin/python3",
                                "tsdb_port": PORT,
                                "tsdb_pitr_enabled": True,
                                "tsdb_pitr_azure_host": "127.0.0.1",
                                "tsdb_pitr_azure_port": self.port,
                                "tsdb_pitr_azure_uri_style": "path",
                                "tsdb_pitr_storage_ca_file": CA,
                                # The bench starts each backup itself.
                                "pitr_initial_full": False,
                                "pitr_timers_enabled": False,
                                "backup_agent_timer_enabled": False,
                                "restore_drill_enabled": False,
                            }
                        }
                    },
                    "bench_pitr": {"hosts": {NAME: None}},
                }
            }
        }

    def setup(self):
        extra = dict(rig.site(self.database, self.azure_container), tsdb_backup_target="bench_pitr")
        rig.playbook("setup.yml", extra, inventory=self.inventory)

    def full_backup(self):
        """pgbackrest backup --type=full through the unit (check first, as the timer does)."""
        rig._exec("systemctl start tsdb-pitr-full.service", host=self.host)
        state = json.loads(rig._exec("cat /var/lib/tsdb-backup-pitr/pitr-state.json", host=self.host))
        if not state["jobs"]["full"]["success"]:
            raise RuntimeError("the full backup failed: %s" % state["jobs"]["full"]["error"])
        info = json.loads(rig._exec("su postgres -c 'pgbackrest --stanza=tsdb info --output=json'", host=self.host))
        newest = info[0]["backup"][-1]
        return {"size": newest["info"]["size"], "repo": newest["info"]["repository"]["delta"]}

    def physical_restore(self):
        """restore.yml -e restore_method=physical to the end of the archive; the module's timings.
        The data directory it moved aside is removed afterwards (the bench's, not an operator's)."""
        extra = dict(
            rig.site(self.database, self.azure_container),
            restore_method="physical",
            restore_host=NAME,
            restore_target_time="latest",
            restore_confirm=True,
        )
        out = rig.playbook("restore.yml", extra, json_output=True, inventory=self.inventory)
        result = rig._task_results(out, "Restore the whole cluster from pgBackRest")[NAME]
        rig._exec("rm -rf /var/lib/postgresql/17/main.before-restore-*", host=self.host)
        return result["timings"]
