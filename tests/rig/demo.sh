#!/usr/bin/env bash
# make demo: the main job on the embedded default, start to finish, with readable output.
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT" || exit 1
export PATH="$REPO_ROOT/.venv/bin:$PATH"
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "1/6 Python environment (.venv)"
"$RIG_DIR/venv.sh"
step "2/6 Local environment: TimescaleDB container + Azurite"
"$RIG_DIR/env-up.sh"
# shellcheck disable=SC1091
. "$LOCAL_DIR/env.sh"

step "3/6 IoT data in database iot"
if [ "${DEMO_RESEED:-0}" = 1 ] || ! psql -qAt -c "select 1 from esp_telemetry limit 1" >/dev/null 2>&1; then
  python tests/rig/seed_iot.py --dbname iot --devices "${DEVICES:-10}" --days "${DAYS:-30}" --interval "${INTERVAL:-60}"
else
  psql -qAt -c "select format('already seeded: %s esp_telemetry rows, %s chunks', count(*), (select count(*) from show_chunks('esp_telemetry'))) from esp_telemetry"
fi

step "4/6 setup.yml: backup agent, nightly timer and weekly drill on every database host"
ansible-playbook -i inventories/local playbooks/setup.yml
"$DOCKER" exec "$TSDB_CONTAINER" systemctl list-timers --no-pager 'tsdb-backup*'

step "5/6 backup.yml: dump -> verify -> upload -> prune, metrics (the nightly timer's pipeline)"
ansible-playbook -i inventories/local playbooks/backup.yml
# The demo's sets only: test runs keep theirs under other prefixes or databases.
python tests/rig/show_blobs.py backups/tsdb-local/iot/

step "6/6 drill.yml: restore the latest backup into a scratch database and compare"
ansible-playbook -i inventories/local playbooks/drill.yml

cat <<MSG

Done. What you have now:
  - backups in the container insa-tsdb-local under /var/backups/tsdb/iot/ (docker exec insa-tsdb-local ls -l /var/backups/tsdb/iot)
  - the same sets in Azurite, container $AZURE_STORAGE_CONTAINER (listed above)
  - timers on the host: nightly tsdb-backup.timer, weekly tsdb-backup-drill.timer
    (run one now: docker exec $TSDB_CONTAINER systemctl start tsdb-backup.service;
     its log: docker exec $TSDB_CONTAINER journalctl -u tsdb-backup.service)
  - psql: . .local/env.sh && psql
Stop everything with: make env-down
MSG
