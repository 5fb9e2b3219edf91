#!/usr/bin/env bash
# Installs the host packages the rig needs (bookworm only; trixie packages go into the image).
source "$(dirname "$0")/lib.sh"

# age: the tests make identities and try decryptions on the control node (tests/integration).
# postgresql-client: psql for people and the demo (any version talks to the v17 server; the
# dump and restore tools run inside the TimescaleDB host, where they match the server).
want=(docker.io debootstrap prometheus rsync shellcheck postgresql-client age)
# Azurite runs on Node.js; a machine that has none gets bookworm's (18.x runs Azurite 3.35.0).
command -v node >/dev/null || want+=(nodejs npm)
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # prometheus brings promtool for metric and alert-rule tests; its daemon is not started here.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v node >/dev/null || die "node is required for Azurite and could not be installed (apt-get install nodejs npm)"
