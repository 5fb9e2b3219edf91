#!/usr/bin/env bash
# `make test`: installs what the tests need, then runs every stage and prints its time.
# Stages: setup, lint, sanity, unit, integration, molecule, build. STAGES="unit lint" runs a subset.
# The stage functions are called through `stage NAME FUNCTION`, which shellcheck cannot see.
# shellcheck disable=SC2317
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
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
# Every pytest stage also writes its outcome to .local/pytest-<stage>.log so the final
# summary can name the failed tests: CI keeps only the tail of the output.
run_pytest() {
  local log=".local/pytest-$1.log"; shift
  mkdir -p .local
  pytest "$@" -rfE 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  if [ "$rc" -eq 5 ]; then echo "pytest collected no tests in $* — treating as failure" >&2; return 1; fi
  return "$rc"
}

setup() {
  tests/rig/venv.sh && tests/rig/env-up.sh
}
lint() {
  local rc=0
  yamllint -s . || rc=1
  shellcheck -x --source-path=SCRIPTDIR tests/rig/*.sh tests/run-all.sh tests/sanity.sh .ci/run || rc=1
  ruff check . || rc=1
  ruff format --check --diff plugins tests bench >/dev/null 2>&1 || { ruff format --check plugins tests bench; rc=1; }
  ansible-lint -q || rc=1
  python tests/lint/check_argument_specs.py || rc=1
  antsibull-changelog lint || rc=1
  antsibull-changelog lint-changelog-yaml changelogs/changelog.yaml || rc=1
  return "$rc"
}
sanity() { tests/sanity.sh; }
unit() { run_pytest unit -q tests/unit; }
# --durations: the slowest tests, so growth of the longest stage stays visible.
# Two suites need nothing of the rig's host and run in the background, one after the other, in
# parallel with the rest: the fault suite (tests/integration/faults: tests/rig/faults-rig.sh gives
# it a container, ports and Azurite of its own) and point-in-time recovery (tests/integration/pitr:
# a host container and an HTTPS Azurite of its own). Their output is in .local/pytest-{faults,pitr}.log.
# Each suite's exit code goes to .local/pytest-<suite>.rc: a crash prints no FAILED line.
background_suites() {
  run_pytest faults -q -p no:cacheprovider --durations=12 tests/integration/faults >/dev/null
  echo $? >.local/pytest-faults.rc
  run_pytest pitr -q -p no:cacheprovider --durations=5 tests/integration/pitr >/dev/null
  echo $? >.local/pytest-pitr.rc
}
integration() {
  local rc=0 background_pid suite
  mkdir -p .local && rm -f .local/pytest-faults.rc .local/pytest-pitr.rc
  background_suites &
  background_pid=$!
  run_pytest integration -q -p no:cacheprovider --durations=12 \
    --ignore=tests/integration/faults --ignore=tests/integration/pitr tests/integration || rc=1
  wait "$background_pid"
  for suite in faults pitr; do
    if [ "$(cat ".local/pytest-$suite.rc" 2>/dev/null)" = 0 ]; then
      tail -n 1 ".local/pytest-$suite.log"
    else
      rc=1
      printf '\nthe %s suite failed (.local/pytest-%s.log):\n' "$suite" "$suite" >&2
      tail -n 40 ".local/pytest-$suite.log" >&2
    fi
  done
  return "$rc"
}
# Each scenario's time and outcome goes into the final summary (CI keeps only the tail).
declare -a scenarios=()
molecule_all() {
  local rc=0 s t0 outcome line
  mkdir -p .local
  for s in molecule/*/molecule.yml; do
    s=$(basename "$(dirname "$s")")
    t0=$SECONDS
    molecule test -s "$s" 2>&1 | tee ".local/molecule-$s.log"
    if [ "${PIPESTATUS[0]}" -eq 0 ]; then outcome=ok; else outcome=FAILED; rc=1; fi
    scenarios+=("$(printf '  %-18s %-6s %4ds' "$s" "$outcome" $((SECONDS - t0)))")
    [ "$outcome" = ok ] && continue
    # What failed: testinfra's tests, a play's failed task (ignored ones say so after it), molecule's own verdict.
    while IFS= read -r line; do scenarios+=("      $line"); done < <(
      sed 's/\x1b\[[0-9;]*m//g' ".local/molecule-$s.log" | awk '
        match($0, /TASK \[[^]]*\]/) { task = substr($0, RSTART, RLENGTH) }
        match($0, /fatal: \[[^]]*\]/) { fatal = task " " substr($0, RSTART, RLENGTH); next }
        fatal != "" { if ($0 !~ /\.\.\.ignoring/) print fatal; fatal = "" }
        match($0, /(FAILED|ERROR) tests\/[^ ]+/) { print substr($0, RSTART, RLENGTH) }
        /CRITICAL/ { sub(/^.*CRITICAL */, "CRITICAL "); print }' | cut -c1-200 | head -n 12
    )
  done
  return "$rc"
}
build() {
  # The tarball must install, and must not carry the checkout's venv, caches or the
  # collections/ symlink (which points back at the checkout).
  local out=.local/build tarball
  rm -rf "$out" && mkdir -p "$out" &&
    ansible-galaxy collection build --force --output-path "$out" . &&
    tarball=$(ls "$out"/insa-timescaledb_backup-*.tar.gz) &&
    if tar tzf "$tarball" | grep -E '^(\.venv|\.local|\.git|collections|tests/output)(/|$)'; then
      echo "the tarball carries files it must not (above)" >&2; return 1
    fi &&
    ANSIBLE_COLLECTIONS_PATH="$PWD/$out/installed" \
      ansible-galaxy collection install --force -p "$out/installed" "$tarball" >/dev/null &&
    ANSIBLE_COLLECTIONS_PATH="$PWD/$out/installed" ansible-galaxy collection list insa.timescaledb_backup \
      | grep -E '^insa\.timescaledb_backup +[0-9]' &&
    printf 'tarball %s: %s files, %s\n' "$tarball" "$(tar tzf "$tarball" | grep -vc '/$')" "$(du -h "$tarball" | cut -f1)"
}

t_all=$SECONDS
rm -f .local/pytest-*.log
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
# Only a run that brought the rig up takes it down (`STAGES="lint unit"` beside a bench or another
# checkout's run leaves it alone). The fault suite stops its own instance; this catches one a
# killed run left behind.
case " $STAGES " in
  *" setup "*) [ "${KEEP_ENV:-0}" = 1 ] || { tests/rig/faults-rig.sh down >/dev/null 2>&1; tests/rig/env-down.sh; } ;;
esac

printf '\n=== summary (total %ds) ===\n' $((SECONDS - t_all))
printf '%s\n' "${summary[@]}"
[ ${#scenarios[@]} -eq 0 ] || { printf '\nmolecule scenarios:\n'; printf '%s\n' "${scenarios[@]}"; }
for log in .local/pytest-*.log; do
  [ -f "$log" ] || continue
  if grep -qE '^(FAILED|ERROR) ' "$log"; then
    printf '\nfailed in %s:\n' "$log"
    grep -E '^(FAILED|ERROR) ' "$log" | cut -c1-300
  fi
done
exit $failed
