#!/usr/bin/env bash
# Brings up the local environment (one TimescaleDB host container + Azurite) and writes
# .local/env.sh. Idempotent: what already runs is kept.
source "$(dirname "$0")/lib.sh"
"$RIG_DIR/host-deps.sh"
"$RIG_DIR/dockerd.sh" start
"$RIG_DIR/build-image.sh"
"$RIG_DIR/azurite.sh" start
"$RIG_DIR/tsdb-host.sh" start "$TSDB_CONTAINER" "$TSDB_PORT"

# The demo database, with the extension, so that `psql` lands somewhere useful.
demo_database "$TSDB_CONTAINER" "$TSDB_PORT"

blob="http://127.0.0.1:$AZURITE_PORT/$AZURITE_ACCOUNT"
(
  umask 077
  cat >"$LOCAL_DIR/env.sh" <<ENV
# Written by tests/rig/env-up.sh: the local environment. Source it: . .local/env.sh
export TSDB_CONTAINER=$TSDB_CONTAINER
export PGHOST=127.0.0.1
export PGPORT=$TSDB_PORT
export PGUSER=postgres
export PGPASSWORD='$(cat "$LOCAL_DIR/pgpassword")'
export PGDATABASE=iot
export AZURE_STORAGE_ACCOUNT=$AZURITE_ACCOUNT
export AZURE_STORAGE_KEY='$AZURITE_KEY'
export AZURE_STORAGE_BLOB_ENDPOINT=$blob
export AZURE_STORAGE_CONNECTION_STRING='DefaultEndpointsProtocol=http;AccountName=$AZURITE_ACCOUNT;AccountKey=$AZURITE_KEY;BlobEndpoint=$blob;'
export AZURE_STORAGE_CONTAINER=$AZURE_STORAGE_CONTAINER
ENV
)
log "environment is up: . .local/env.sh && psql"
