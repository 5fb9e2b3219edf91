#!/usr/bin/env bash
# start NAME PORT: a TimescaleDB host container (systemd as PID 1, host network, PostgreSQL
#                  17 listening on 127.0.0.1:PORT, password of role postgres from .local/).
# stop NAME:       remove that container.
# TSDB_TMPFS=PATH:OPTIONS adds a tmpfs mount to a new container (the fault suite's small disk).
source "$(dirname "$0")/lib.sh"
action=${1:-}; name=${2:-$TSDB_CONTAINER}; port=${3:-$TSDB_PORT}
pwfile="$LOCAL_DIR/pgpassword"

case "$action" in
  start)
    if [ "$("$DOCKER" inspect -f '{{.State.Running}}' "$name" 2>/dev/null)" = "true" ] \
       && [ "$("$DOCKER" inspect -f '{{.Config.Image}}' "$name")" = "$(image_ref)" ]; then
      fresh=0
    else
      fresh=1
    fi
    [ "$fresh" = 0 ] || { "$DOCKER" rm -f "$name" >/dev/null 2>&1 || true; }
    extra=()
    [ -z "${TSDB_TMPFS:-}" ] || extra+=(--tmpfs "$TSDB_TMPFS")
    # Host network keeps all traffic on loopback and lets the host reach Azurite on 127.0.0.1.
    [ "$fresh" = 0 ] || "$DOCKER" create --name "$name" --network host \
      --cap-add SYS_ADMIN --tmpfs /run --tmpfs /run/lock "${extra[@]}" --stop-signal SIGRTMIN+3 \
      --label insa.timescaledb_backup.rig=1 "$(image_ref)" /lib/systemd/systemd >/dev/null
    if [ "$fresh" = 1 ]; then
      printf 'port = %s\n' "$port" >"$LOCAL_DIR/$name-port.conf"
      "$DOCKER" cp "$LOCAL_DIR/$name-port.conf" "$name:/etc/postgresql/17/main/conf.d/20-port.conf"
      "$DOCKER" start "$name" >/dev/null
    fi
    wait_for 90 "$DOCKER" exec "$name" pg_isready -q -h 127.0.0.1 -p "$port" \
      || { "$DOCKER" logs "$name" | tail -20; die "PostgreSQL in $name did not start"; }
    [ -s "$pwfile" ] || (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$pwfile")
    # The password travels on stdin, never in argv. Set on every start, so that the checkout
    # whose env.sh is current always holds the right one.
    printf "ALTER ROLE postgres PASSWORD '%s';\n" "$(cat "$pwfile")" \
      | "$DOCKER" exec -i -u postgres "$name" psql -q -p "$port" -v ON_ERROR_STOP=1 >/dev/null
    # Runtime wheels for the backup agent's venv: hosts install offline from here.
    "$DOCKER" cp "$("$RIG_DIR/wheelhouse.sh")/." "$name:$RIG_WHEELHOUSE"
    log "TimescaleDB host $name: PostgreSQL on 127.0.0.1:$port"
    ;;
  stop)
    if "$DOCKER" rm -f "$name" >/dev/null 2>&1; then log "removed $name"; fi
    ;;
  *) die "usage: $0 start|stop [NAME] [PORT]" ;;
esac
