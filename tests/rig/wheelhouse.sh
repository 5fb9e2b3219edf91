#!/usr/bin/env bash
# Downloads the runtime requirements as wheels for the DB hosts' Python (trixie: CPython 3.13),
# so hosts install them offline (pip --no-index --find-links), as an air-gapped site would.
source "$(dirname "$0")/lib.sh"
dest="$RIG_CACHE/wheelhouse-cp313"
stamp="$dest/.requirements.sha256"
want=$(sha256sum "$REPO_ROOT/requirements/runtime.txt" | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then echo "$dest"; exit 0; fi
log "downloading runtime wheels for CPython 3.13 into $dest"
rm -rf "$dest" && mkdir -p "$dest"
"$REPO_ROOT/.venv/bin/pip" download -q -r "$REPO_ROOT/requirements/runtime.txt" -d "$dest" \
  --only-binary=:all: --python-version 3.13 --implementation cp --abi cp313 --abi abi3 --abi none \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 >&2
echo "$want" >"$stamp"
echo "$dest"
