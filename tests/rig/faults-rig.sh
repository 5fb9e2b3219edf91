#!/usr/bin/env bash
# up:   the fault suite's own rig instance, beside the shared one (make env-up): its own
#       TimescaleDB container, PostgreSQL port, Azurite port and state directory, so that the
#       suite can run while `make test` uses the shared rig. Writes $LOCAL_DIR/env.sh.
# down: stops what `up` started (the container by name, Azurite by PID).
# The image must already exist (make env-up builds it): this script never builds it.
# Defaults: LOCAL_DIR=.local/faults TSDB_CONTAINER=insa-tsdb-faults TSDB_PORT=15532 AZURITE_PORT=10532.
here="$(cd "$(dirname "$0")" && pwd)"
export LOCAL_DIR="${FAULTS_LOCAL_DIR:-$here/../../.local/faults}"
export TSDB_CONTAINER="${FAULTS_CONTAINER:-insa-tsdb-faults}"
export TSDB_PORT="${FAULTS_PG_PORT:-15532}"
export AZURITE_PORT="${FAULTS_AZURITE_PORT:-10532}"
# A small disk inside the container for the disk-full faults (never the host's disks).
export TSDB_TMPFS="${FAULTS_TMPFS:-/var/backups/small:size=64m,mode=0755}"
source "$here/lib.sh"

case "${1:-up}" in
  up)
    "$DOCKER" image inspect "$(image_ref)" >/dev/null 2>&1 \
      || die "image $(image_ref) is missing: run make env-up first (this script does not build it)"
    "$RIG_DIR/env-up.sh"
    ;;
  down)
    "$RIG_DIR/tsdb-host.sh" stop "$TSDB_CONTAINER"
    "$RIG_DIR/azurite.sh" stop
    ;;
  *) die "usage: $0 up|down" ;;
esac
