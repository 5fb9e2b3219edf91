#!/usr/bin/env bash
# Creates .venv from the pinned requirement files; reinstalls only when they change.
source "$(dirname "$0")/lib.sh"
venv="$REPO_ROOT/.venv"
stamp="$venv/.requirements.sha256"
want=$(cat "$REPO_ROOT"/requirements/*.txt | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
log "installing Python requirements into .venv"
[ -x "$venv/bin/python" ] || "${PYTHON:-python3}" -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip >/dev/null
"$venv/bin/pip" install -q -r "$REPO_ROOT/requirements/dev.txt"
echo "$want" >"$stamp"
