#!/usr/bin/env bash
# `make test`: installs what the tests need, then runs every stage and prints its time.
# Stages: setup, lint, sanity, unit, integration, molecule, build. STAGES="unit lint" runs a subset.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
STAGES="${STAGES:-setup lint sanity unit integration molecule build}"
declare -a summary=()
failed=0

stage() {
  local name=$1; shift
  case " $STAGES " in *" $name "*) ;; *) return 0 ;; esac
  local t0=$SECONDS
  printf '\n=== stage %s ===\n' "$name"
  if "$@"; then
    summary+=("$(printf '%-12s ok     %4ds' "$name" $((SECONDS - t0)))")
  else
    summary+=("$(printf '%-12s FAILED %4ds' "$name" $((SECONDS - t0)))")
    failed=1
  fi
}

# pytest exits 5 when it collected nothing: for us that means tests went missing, a failure.
run_pytest() {
  pytest "$@"
  local rc=$?
  if [ $rc -eq 5 ]; then echo "pytest collected no tests in $* — treating as failure" >&2; return 1; fi
  return $rc
}

setup() {
  tests/rig/venv.sh && tests/rig/env-up.sh
}
lint() {
  local rc=0
  yamllint -s . || rc=1
  ruff check . || rc=1
  ruff format --check --diff plugins tests bench >/dev/null 2>&1 || { ruff format --check plugins tests bench; rc=1; }
  ansible-lint -q || rc=1
  return $rc
}
sanity() { tests/sanity.sh; }
unit() { run_pytest -q tests/unit; }
integration() { run_pytest -q -p no:cacheprovider tests/integration; }
molecule_all() {
  local rc=0 s
  for s in molecule/*/molecule.yml; do
    s=$(basename "$(dirname "$s")")
    molecule test -s "$s" || rc=1
  done
  return $rc
}
build() {
  rm -rf .local/build && mkdir -p .local/build &&
    ansible-galaxy collection build --force --output-path .local/build . &&
    ansible-galaxy collection install --force -p .local/build/installed .local/build/*.tar.gz >/dev/null &&
    test -f .local/build/installed/ansible_collections/insa/timescaledb_backup/galaxy.yml -o \
         -f .local/build/installed/ansible_collections/insa/timescaledb_backup/MANIFEST.json
}

t_all=$SECONDS
stage setup setup
if [ $failed -ne 0 ]; then
  echo "setup failed; not running the test stages" >&2
else
  stage lint lint
  stage sanity sanity
  stage unit unit
  stage integration integration
  stage molecule molecule_all
  stage build build
fi
[ "${KEEP_ENV:-0}" = 1 ] || tests/rig/env-down.sh

printf '\n=== summary (total %ds) ===\n' $((SECONDS - t_all))
printf '%s\n' "${summary[@]}"
exit $failed
