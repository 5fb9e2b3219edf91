#!/usr/bin/env bash
# start: start dockerd unless one already answers, and remember its PID.
# stop:  stop dockerd only if this rig started it.
source "$(dirname "$0")/lib.sh"
pidfile="$LOCAL_DIR/dockerd.pid"

case "${1:-start}" in
  start)
    if "$DOCKER" info >/dev/null 2>&1; then exit 0; fi
    log "starting dockerd (log: $LOCAL_DIR/dockerd.log)"
    nohup dockerd >"$LOCAL_DIR/dockerd.log" 2>&1 &
    echo $! >"$pidfile"
    wait_for 60 "$DOCKER" info || die "dockerd did not come up; see $LOCAL_DIR/dockerd.log"
    ;;
  stop)
    [ -f "$pidfile" ] || exit 0
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
      log "stopping dockerd (pid $pid)"
      kill "$pid"
      for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    fi
    rm -f "$pidfile"
    ;;
  *) die "usage: $0 start|stop" ;;
esac
