# shellcheck shell=bash disable=SC2034  # the settings are used by the scripts that source this file
# Shared settings of the test rig. Sourced by every script in tests/rig/.
set -euo pipefail

RIG_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$RIG_DIR/../.." && pwd)"
# Per-checkout state: pids, logs, env.sh, Azurite data. Never committed.
LOCAL_DIR="${LOCAL_DIR:-$REPO_ROOT/.local}"
# Caches that survive a fresh clone on the same machine (debootstrap debs, Azurite's npm tree).
RIG_CACHE="${RIG_CACHE:-/var/cache/insa-timescaledb-backup-rig}"

# Use the distribution's docker client: it matches the distribution's dockerd.
DOCKER="${DOCKER:-/usr/bin/docker}"

IMAGE_REPO="insa-tsdb-host"
AZURITE_VERSION="3.35.0"
AZURITE_PORT="${AZURITE_PORT:-10000}"
TSDB_CONTAINER="${TSDB_CONTAINER:-insa-tsdb-local}"
TSDB_PORT="${TSDB_PORT:-15432}"
AZURE_STORAGE_CONTAINER="${AZURE_STORAGE_CONTAINER:-tsdb-backups}"
# Where rig containers find the runtime wheels (see wheelhouse.sh).
RIG_WHEELHOUSE=/opt/tsdb-wheelhouse
# Azurite's documented development account (public, not a secret).
AZURITE_ACCOUNT="devstoreaccount1"
AZURITE_KEY="Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

mkdir -p "$LOCAL_DIR"

log() { printf '[rig] %s\n' "$*" >&2; }
die() { printf '[rig] ERROR: %s\n' "$*" >&2; exit 1; }

# The image tag is the hash of its recipe: edit the recipe and the next run rebuilds.
image_tag() {
  cat "$RIG_DIR/build-image.sh" "$RIG_DIR/image/"* | sha256sum | cut -c1-12
}
image_ref() { echo "$IMAGE_REPO:$(image_tag)"; }

# Wait until a command succeeds, at most $1 seconds.
wait_for() {
  local timeout=$1; shift
  local end=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || return 1
    sleep 0.5
  done
}

# The demo database iot, with the extension, in host container $1 (PostgreSQL on port $2).
demo_database() {
  local name=$1 port=$2
  "$DOCKER" exec -u postgres "$name" bash -c "
    psql -qAt -p $port -c \"select 1 from pg_database where datname='iot'\" | grep -q 1 \
    || createdb -p $port iot
    psql -q -p $port -d iot -c 'CREATE EXTENSION IF NOT EXISTS timescaledb' 2>&1 | grep -v WARNING || true"
}
