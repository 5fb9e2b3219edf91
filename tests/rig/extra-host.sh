#!/usr/bin/env bash
# up NAME PORT: one more TimescaleDB host container beside the rig of `make env-up` (the bench's
#               fleet, bench/run.py --fleet): the same image, the same postgres password
#               ($LOCAL_DIR/pgpassword, so that .local/env.sh logs in to it too), PostgreSQL on
#               127.0.0.1:PORT and the demo database. It starts only the container: never dockerd,
#               the image or Azurite. Its backups go to the Azurite of the environment the
#               playbooks run with (.local/env.sh): one storage account for the whole fleet, as in
#               production, each host under its own host label.
# fresh NAME PORT: a new cluster 17/main in that container, as a freshly installed server has: its
#               own system identifier (every container of the image shares the one made when the
#               image was built) and a data directory in the container's own layer (overlayfs
#               refuses to rename a directory of the image's layer: EXDEV). The rig's settings
#               (conf.d, pg_hba.conf) and the postgres password are kept.
# down NAME:    removes that container (by name) and its port file.
# The rig's own host ($TSDB_CONTAINER) is refused: make env-up / env-down manage it.
source "$(dirname "$0")/lib.sh"
action=${1:-}; name=${2:-}; port=${3:-}
usage="usage: $0 up NAME PORT | fresh NAME PORT | down NAME"
[ -n "$name" ] || die "$usage"
[ "$name" != "$TSDB_CONTAINER" ] || die "$name is the rig's own host: make env-up and make env-down manage it"

running() { [ "$("$DOCKER" inspect -f '{{.State.Running}}' "$1" 2>/dev/null)" = "true" ]; }

case "$action" in
  up)
    [ -n "$port" ] || die "$usage"
    [ "$port" != "$TSDB_PORT" ] || die "port $port is the rig host's ($TSDB_CONTAINER)"
    "$DOCKER" image inspect "$(image_ref)" >/dev/null 2>&1 \
      || die "image $(image_ref) is missing: run make env-up first (this script does not build it)"
    pwfile="$LOCAL_DIR/pgpassword"
    [ -s "$pwfile" ] || die "no $pwfile: run make env-up first"
    # The playbooks log in with PGPASSWORD: it must be this state directory's password.
    [ -z "${PGPASSWORD:-}" ] || [ "$PGPASSWORD" = "$(cat "$pwfile")" ] \
      || die "PGPASSWORD is not the one in $pwfile: source this checkout's .local/env.sh (or set LOCAL_DIR)"
    # Host network: a port that already answers would be another server's (pg_isready would pass).
    if ! running "$name" && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      die "127.0.0.1:$port already answers: choose another port for $name"
    fi
    "$RIG_DIR/tsdb-host.sh" start "$name" "$port"
    demo_database "$name" "$port"
    ;;
  fresh)
    [ -n "$port" ] || die "$usage"
    running "$name" || die "$name is not running: $0 up $name $port first"
    # shellcheck disable=SC2016  # the script runs in the container, where $c is set
    "$DOCKER" exec "$name" bash -c '
      set -e; c=/etc/postgresql/17/main; rm -rf /var/tmp/rig-conf && mkdir /var/tmp/rig-conf
      cp -a $c/conf.d $c/pg_hba.conf /var/tmp/rig-conf/
      pg_dropcluster --stop 17 main && pg_createcluster --locale=C.UTF-8 17 main >/dev/null
      cp -a /var/tmp/rig-conf/conf.d/. $c/conf.d/ && cp /var/tmp/rig-conf/pg_hba.conf $c/
      # Right after the drop the old server can still hold the port: once more.
      pg_ctlcluster 17 main start || { sleep 3; pg_ctlcluster 17 main start; }'
    # The password travels on stdin, never in argv.
    printf "ALTER ROLE postgres PASSWORD '%s';\n" "$(cat "$LOCAL_DIR/pgpassword")" \
      | "$DOCKER" exec -i -u postgres "$name" psql -q -p "$port" -v ON_ERROR_STOP=1 >/dev/null
    demo_database "$name" "$port"
    log "$name: a fresh cluster 17/main on 127.0.0.1:$port"
    ;;
  down)
    "$RIG_DIR/tsdb-host.sh" stop "$name"
    rm -f "$LOCAL_DIR/$name-port.conf"
    ;;
  *) die "$usage" ;;
esac
