#!/usr/bin/env bash
# ansible-test sanity needs the collection at ansible_collections/insa/timescaledb_backup:
# copy the tracked files there and run it with its own pinned requirements (in venvs it caches).
set -euo pipefail
cd "$(dirname "$0")/.."
# A private copy per run, so that runs side by side do not trample each other.
mkdir -p .local
work=$(mktemp -d "$PWD/.local/sanity.XXXXXX")
trap 'rm -rf "$work"' EXIT
dest=$work/ansible_collections/insa/timescaledb_backup
mkdir -p "$dest"
git ls-files -z --cached --others --exclude-standard | grep -zv '^collections/' \
  | rsync -a --from0 --files-from=- ./ "$dest/"
cd "$dest"
ansible-test sanity --venv --requirements --python "$(python -c 'import sys; print("%d.%d" % sys.version_info[:2])')" \
  --color no --exclude molecule/ --exclude tests/rig/ --exclude bench/ "$@"
