#!/usr/bin/env bash
# Installs the host packages the rig needs (bookworm only; trixie packages go into the image).
source "$(dirname "$0")/lib.sh"

want=(docker.io debootstrap prometheus rsync shellcheck)
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
command -v node >/dev/null || die "node is required for Azurite (apt-get install nodejs npm)"
