#!/usr/bin/env bash
# start: install Azurite (pinned, cached) and start its blob service on loopback.
# stop:  stop the Azurite this rig started (by PID).
source "$(dirname "$0")/lib.sh"
pidfile="$LOCAL_DIR/azurite.pid"
prefix="$RIG_CACHE/azurite-$AZURITE_VERSION"
bin="$prefix/node_modules/.bin/azurite-blob"

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

case "${1:-start}" in
  start)
    if [ ! -x "$bin" ]; then
      log "npm install azurite@$AZURITE_VERSION"
      mkdir -p "$prefix"
      npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION" >/dev/null
    fi
    running && exit 0
    if (exec 3<>"/dev/tcp/127.0.0.1/$AZURITE_PORT") 2>/dev/null; then
      # Another checkout's Azurite (or the developer's own) already serves this port: use it.
      log "127.0.0.1:$AZURITE_PORT already answers; using that Azurite (not started by this checkout)"
      exit 0
    fi
    mkdir -p "$LOCAL_DIR/azurite-data"
    # --disableTelemetry: Azurite otherwise tries to send usage data off the machine.
    nohup "$bin" --blobHost 127.0.0.1 --blobPort "$AZURITE_PORT" \
      --location "$LOCAL_DIR/azurite-data" --skipApiVersionCheck --loose --disableTelemetry \
      >"$LOCAL_DIR/azurite.log" 2>&1 &
    echo $! >"$pidfile"
    wait_for 30 bash -c "exec 3<>/dev/tcp/127.0.0.1/$AZURITE_PORT" \
      || die "Azurite did not listen on 127.0.0.1:$AZURITE_PORT; see $LOCAL_DIR/azurite.log"
    log "Azurite $AZURITE_VERSION on 127.0.0.1:$AZURITE_PORT (pid $(cat "$pidfile"))"
    ;;
  stop)
    if running; then
      pid=$(cat "$pidfile"); kill "$pid"
      for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      log "Azurite stopped (pid $pid)"
    fi
    rm -f "$pidfile"
    ;;
  *) die "usage: $0 start|stop" ;;
esac
