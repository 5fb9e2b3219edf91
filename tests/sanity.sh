#!/usr/bin/env bash
# ansible-test sanity needs the collection at ansible_collections/insa/timescaledb_backup:
# mirror the checkout's files there and run it with its own pinned requirements (--venv
# --requirements). Extra arguments go to ansible-test, e.g. `tests/sanity.sh --test pylint`.
#
# Speed: the mirror lives in .local/sanity/ and is kept between runs, so ansible-test's
# delegation venv (tests/output/.tmp/delegation) survives; the per-test venvs are cached by
# ansible-test itself in ~/.ansible/test/venv. First run ~5 min (installs), later ~1-2 min.
# A lock serialises runs from one checkout, because they share the mirror.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
mkdir -p .local/sanity
exec 9>.local/sanity/.lock
flock 9

dest=.local/sanity/ansible_collections/insa/timescaledb_backup
mkdir -p "$dest"
# What git would ship (tracked + untracked, not ignored), minus the collections/ symlink that
# makes a plain checkout usable and would make the mirror contain itself.
git ls-files -z --cached --others --exclude-standard | grep -zv '^collections/' \
  | rsync -a --from0 --files-from=- --exclude tests/output/ ./ "$dest/"
# rsync --files-from does not delete files that left the checkout: remove them ourselves.
(cd "$dest" && find . -path ./tests/output -prune -o -path ./.git -prune -o \( -type f -o -type l \) -print0) \
  | while IFS= read -r -d '' f; do [ -e "$root/$f" ] || rm -f "$dest/$f"; done

# ansible-test bootstraps pip into every venv it creates with a script it downloads from
# ci-files.testing.ansible.com, which is unreachable here; it uses a cached copy when there
# is one. Give it our offline stand-in (tests/rig/get_pip_offline.py) unless a real one is there.
at_dir=$("$root/.venv/bin/python" -c 'import ansible_test, os; print(os.path.dirname(ansible_test.__file__))')
pip_version=$(sed -n "s/^ *pip='\([0-9.]*\)',\$/\1/p" "$at_dir/_internal/python_requirements.py")
[ -n "$pip_version" ] || { echo "sanity.sh: cannot find ansible-test's pip version" >&2; exit 1; }
get_pip=~/.ansible/test/cache/get_pip_${pip_version//./_}.py
if [ ! -f "$get_pip" ] || grep -q 'Stand-in for the get-pip bootstrap script' "$get_pip"; then
  mkdir -p "$(dirname "$get_pip")" && install -m 0644 tests/rig/get_pip_offline.py "$get_pip"
fi

cd "$dest"
# The mirror must be its own git work tree: otherwise ansible-test finds the checkout's .git
# above it, asks git for the files under .local/ (ignored there) and skips every target.
# It lists untracked files too, so nothing needs to be committed in the mirror.
[ -d .git ] || git init -q .

py=$("$root/.venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
# --python: only the controller's Python (3.11 on bookworm). Without it ansible-test runs the
# multi-version tests (compile, import) on every Python 3.8-3.13 it finds on PATH; a fresh
# bookworm has none of the others, and pyenv shims on dev machines point at interpreters that
# are not installed. The hosts' Pythons (3.10-3.13) meet the modules in the Molecule scenarios.
# No --docker: every test here runs offline in venvs; nothing is skipped on purpose.
ansible-test sanity --venv --requirements --python "$py" --color no "$@"
