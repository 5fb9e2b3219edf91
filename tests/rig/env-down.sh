#!/usr/bin/env bash
# Stops what env-up started: the TimescaleDB container, Azurite, and dockerd if the rig started it.
source "$(dirname "$0")/lib.sh"
"$RIG_DIR/tsdb-host.sh" stop "$TSDB_CONTAINER"
"$RIG_DIR/azurite.sh" stop
[ "${KEEP_DOCKERD:-0}" = 1 ] || "$RIG_DIR/dockerd.sh" stop
