#!/usr/bin/env bash
# Starts a real OpenStack Glance (Debian 12's Zed) on loopback for kiln's integration tests:
# no Keystone, SQLite, the filesystem store, everything under STATE_DIR. Installs nothing:
# scripts/install-deps.sh must list `glance-api` (about 200 packages, ~1.5 minutes).
#
# Usage: scripts/start-glance.sh STATE_DIR PORT
#   Prints the endpoint (http://127.0.0.1:PORT) on stdout once `GET /v2/images` answers.
#   The image files land in STATE_DIR/images (the fs store), the log in STATE_DIR/glance-api.log,
#   the pid in STATE_DIR/glance-api.pid. Stop it with scripts/stop-glance.sh STATE_DIR.
set -euo pipefail

readonly WAIT_SECONDS=60

die() {
    echo "start-glance: $*" >&2
    exit 1
}

(($# == 2)) || die "usage: $0 STATE_DIR PORT"
if ! [[ $2 =~ ^[0-9]{1,5}$ ]] || (($2 < 1 || $2 > 65535)); then
    die "port '$2' is not a TCP port number."
fi
readonly PORT=$2
mkdir -p "$1"
STATE_DIR=$(cd "$1" && pwd -P)  # Glance wants absolute paths (the SQLite URL, the store)
readonly STATE_DIR
readonly CONF="$STATE_DIR/glance-api.conf"
readonly PID_FILE="$STATE_DIR/glance-api.pid"
readonly LOG_FILE="$STATE_DIR/glance-api.log"
readonly URL="http://127.0.0.1:$PORT"

for tool in glance-api glance-manage curl; do
    command -v "$tool" >/dev/null ||
        die "'$tool' is not installed; run scripts/install-deps.sh (it lists glance-api and curl)."
done
[[ -r /etc/glance/glance-api-paste.ini ]] || die "/etc/glance/glance-api-paste.ini is missing; reinstall glance-api."

if [[ -s $PID_FILE ]] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
    die "a Glance from '$STATE_DIR' already runs (pid $(cat "$PID_FILE")); stop it with scripts/stop-glance.sh."
fi
# Another process on the port would answer the readiness probe and fool the tests.
if curl -s -o /dev/null --max-time 2 "$URL/"; then
    die "something already answers on $URL; pick another port."
fi

mkdir -p "$STATE_DIR/images" "$STATE_DIR/staging" "$STATE_DIR/tasks" "$STATE_DIR/lock"

# Without Keystone every request acts as an anonymous, non-admin context: relax the rules that
# would otherwise refuse public images and admin-only fields (locations).
cat >"$STATE_DIR/policy.yaml" <<'EOF'
"context_is_admin": ""
"publicize_image": ""
"communitize_image": ""
"get_image_location": ""
"set_image_location": ""
"delete_image_location": ""
EOF

cat >"$CONF" <<EOF
[DEFAULT]
bind_host = 127.0.0.1
bind_port = $PORT
workers = 1
log_file = $LOG_FILE
use_stderr = false
debug = false
enabled_backends = fs:file
# The records then carry direct_url and locations (file:///...), which kiln can read directly.
show_image_direct_url = true
show_multiple_locations = true
policy_file = $STATE_DIR/policy.yaml
lock_path = $STATE_DIR/lock

[database]
connection = sqlite:///$STATE_DIR/glance.sqlite

[glance_store]
default_backend = fs

[fs]
filesystem_store_datadir = $STATE_DIR/images/

[os_glance_staging_store]
filesystem_store_datadir = $STATE_DIR/staging/

[os_glance_tasks_store]
filesystem_store_datadir = $STATE_DIR/tasks/

[paste_deploy]
# Empty flavor: the "glance-api" pipeline, with unauthenticated-context and no authtoken.
flavor =
config_file = /etc/glance/glance-api-paste.ini

[oslo_policy]
policy_file = $STATE_DIR/policy.yaml
enforce_new_defaults = false
enforce_scope = false

[oslo_concurrency]
lock_path = $STATE_DIR/lock
EOF

# db_sync is idempotent; on a second start it only checks the schema version.
glance-manage --config-file "$CONF" db_sync >>"$STATE_DIR/db-sync.log" 2>&1 ||
    die "'glance-manage db_sync' failed; see $STATE_DIR/db-sync.log."

# setsid: the server must outlive this script and the test harness's process group.
setsid glance-api --config-file "$CONF" >>"$STATE_DIR/glance-api.stdout" 2>&1 </dev/null &
echo $! >"$PID_FILE"

for ((i = 0; i < WAIT_SECONDS * 4; i++)); do
    if curl -sf -o /dev/null --max-time 2 "$URL/v2/images"; then
        echo "$URL"
        exit 0
    fi
    if ! kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
        rm -f "$PID_FILE"
        die "glance-api exited during start; see $LOG_FILE and $STATE_DIR/glance-api.stdout."
    fi
    sleep 0.25
done
die "glance-api did not answer $URL/v2/images within ${WAIT_SECONDS}s; see $LOG_FILE (still running: pid $(cat "$PID_FILE"))."
