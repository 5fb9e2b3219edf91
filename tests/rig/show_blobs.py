"""Lists the blobs of the rig's Azurite container (for make demo): name, tier, size. An argument
limits the listing to names that start with it (the demo's own sets, not the tests')."""

import os
import sys

from azure.storage.blob import BlobServiceClient


def main():
    svc = BlobServiceClient.from_connection_string(os.environ["AZURE_STORAGE_CONNECTION_STRING"])
    container = svc.get_container_client(os.environ.get("AZURE_STORAGE_CONTAINER", "tsdb-backups"))
    if not container.exists():
        print("container %s does not exist yet" % container.container_name)
        return 1
    total = 0
    start = sys.argv[1] if len(sys.argv) > 1 else None
    print("Blobs in %s (Azurite)%s:" % (container.container_name, " under %s" % start if start else ""))
    for b in container.list_blobs(name_starts_with=start):
        total += b.size
        print("  %-72s %-5s %10.1f KiB" % (b.name, b.blob_tier or "-", b.size / 1024.0))
    print("  total %.1f MiB" % (total / 1048576.0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
