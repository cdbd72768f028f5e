#!/usr/bin/env bash
# Starts a real OpenStack Identity service (Debian 12's Keystone, Zed) on loopback for kiln's
# integration tests: SQLite, Fernet tokens, everything under STATE_DIR, served by Python's own
# single-threaded WSGI server (no Apache, no uwsgi). Installs nothing: scripts/install-deps.sh must list
# `python3-keystone`.
#
# Usage: scripts/start-keystone.sh STATE_DIR PORT
#   Bootstraps Keystone with what the tests use:
#     project "service" with user "kiln" (role service: may validate tokens),
#     project "project-a" with "sched-a" (role scheduler) and "reader-a" (role reader),
#     project "project-b" with "reader-b" (role reader) and "admin-b" (role admin: an admin of
#     a project that is not the admin project),
#     project "admin" with "admin" (role admin, also granted on the system by bootstrap).
#   Writes STATE_DIR/fixture.json: the passwords, each user's project-scoped token, each
#   project's id, and "system_tokens": admin's system-scoped token (scope system all). The log is STATE_DIR/keystone.log, the pid STATE_DIR/keystone.pid.
#   Prints the endpoint (http://127.0.0.1:PORT) once Keystone answers.
#   Stop it with scripts/stop-keystone.sh STATE_DIR.
set -euo pipefail

readonly WAIT_SECONDS=60
# The interpreter Debian's Keystone is installed for (a pyenv python3 on PATH would not see it).
readonly PYTHON=/usr/bin/python3

die() {
    echo "start-keystone: $*" >&2
    exit 1
}

(($# == 2)) || die "usage: $0 STATE_DIR PORT"
if ! [[ $2 =~ ^[0-9]{1,5}$ ]] || (($2 < 1 || $2 > 65535)); then
    die "port '$2' is not a TCP port number."
fi
readonly PORT=$2
mkdir -p "$1"
STATE_DIR=$(cd "$1" && pwd -P)
readonly STATE_DIR
readonly CONF="$STATE_DIR/keystone.conf"
readonly PID_FILE="$STATE_DIR/keystone.pid"
readonly LOG_FILE="$STATE_DIR/keystone.log"
readonly URL="http://127.0.0.1:$PORT"

command -v keystone-manage >/dev/null ||
    die "'keystone-manage' is not installed; run scripts/install-deps.sh (it lists python3-keystone)."
command -v curl >/dev/null || die "'curl' is not installed; run scripts/install-deps.sh."

if [[ -s $PID_FILE ]] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
    die "a Keystone from '$STATE_DIR' already runs (pid $(cat "$PID_FILE")); stop it with scripts/stop-keystone.sh."
fi
if curl -s -o /dev/null --max-time 2 "$URL/"; then
    die "something already answers on $URL; pick another port."
fi

# A fresh identity database each time: the fixture's tokens and ids are made below.
rm -rf "$STATE_DIR/fernet-keys" "$STATE_DIR/receipt-keys" "$STATE_DIR/credential-keys" \
    "$STATE_DIR/keystone.sqlite" "$STATE_DIR/fixture.json"
mkdir -p "$STATE_DIR/fernet-keys" "$STATE_DIR/receipt-keys" "$STATE_DIR/credential-keys"
chmod 700 "$STATE_DIR/fernet-keys" "$STATE_DIR/receipt-keys" "$STATE_DIR/credential-keys"

cat >"$CONF" <<CONF_EOF
[DEFAULT]
log_file = $LOG_FILE
use_stderr = false
debug = false

[database]
connection = sqlite:///$STATE_DIR/keystone.sqlite

[token]
provider = fernet
expiration = 7200

[fernet_tokens]
key_repository = $STATE_DIR/fernet-keys

[fernet_receipts]
key_repository = $STATE_DIR/receipt-keys

[credential]
key_repository = $STATE_DIR/credential-keys

[oslo_policy]
enforce_new_defaults = false
enforce_scope = false
CONF_EOF

ADMIN_PASSWORD=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
readonly ADMIN_PASSWORD
manage() { keystone-manage --config-file "$CONF" "$@" >>"$STATE_DIR/keystone-manage.log" 2>&1; }
manage db_sync || die "keystone-manage db_sync failed; see $STATE_DIR/keystone-manage.log."
manage fernet_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)" ||
    die "keystone-manage fernet_setup failed; see $STATE_DIR/keystone-manage.log."
manage credential_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)" ||
    die "keystone-manage credential_setup failed; see $STATE_DIR/keystone-manage.log."
manage bootstrap --bootstrap-password "$ADMIN_PASSWORD" --bootstrap-admin-url "$URL/v3/" \
    --bootstrap-public-url "$URL/v3/" --bootstrap-internal-url "$URL/v3/" \
    --bootstrap-region-id RegionOne ||
    die "keystone-manage bootstrap failed; see $STATE_DIR/keystone-manage.log."
# The test users, made offline by bootstrap (which creates a user, a project and a role and
# grants it; rerunning it is safe): Keystone's API on SQLite fails writes with "database is
# locked" here, while reads and token issuing work.
password() { head -c 18 /dev/urandom | base64 | tr -d '/+='; }
FIXTURE=(kiln "$(password)" service service
    sched-a "$(password)" project-a scheduler
    reader-a "$(password)" project-a reader
    reader-b "$(password)" project-b reader
    admin-b "$(password)" project-b admin
    admin "$ADMIN_PASSWORD" admin admin)
for ((i = 0; i < ${#FIXTURE[@]}; i += 4)); do
    manage bootstrap --bootstrap-username "${FIXTURE[i]}" --bootstrap-password "${FIXTURE[i + 1]}" \
        --bootstrap-project-name "${FIXTURE[i + 2]}" --bootstrap-role-name "${FIXTURE[i + 3]}" ||
        die "keystone-manage bootstrap of user ${FIXTURE[i]} failed; see $STATE_DIR/keystone-manage.log."
done

# The WSGI application in Python's threaded reference server: enough for tests, nothing to set up.
# The port goes through the environment: oslo.config reads sys.argv as its own options.
KILN_KEYSTONE_PORT=$PORT OS_KEYSTONE_CONFIG_FILES="$CONF" setsid "$PYTHON" - >>"$LOG_FILE" 2>&1 <<'PY_EOF' &
import os
import sys
from wsgiref.simple_server import WSGIRequestHandler, make_server

from keystone.server import wsgi


# One request at a time: SQLite does not take concurrent writers ("database is locked").
class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


sys.argv = sys.argv[:1]
app = wsgi.initialize_public_application()
make_server("127.0.0.1", int(os.environ["KILN_KEYSTONE_PORT"]), app,
            handler_class=QuietHandler).serve_forever()
PY_EOF
echo $! >"$PID_FILE"

for ((i = 0; i < WAIT_SECONDS * 4; i++)); do
    if curl -s -o /dev/null --max-time 2 "$URL/v3"; then break; fi
    kill -0 "$(cat "$PID_FILE")" 2>/dev/null || die "Keystone exited; see $LOG_FILE."
    sleep 0.25
done
curl -s -o /dev/null --max-time 2 "$URL/v3" || die "Keystone did not answer within ${WAIT_SECONDS}s; see $LOG_FILE."

# The fixture's tokens and project ids, through Keystone's own API (reads only).
"$PYTHON" - "$URL" "$STATE_DIR/fixture.json" "${FIXTURE[@]}" <<'PY_EOF' ||
import json
import sys
import urllib.request

url, out, fixture = sys.argv[1], sys.argv[2], sys.argv[3:]


def password_token(user, password, project):
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "domain": {"id": "default"}, "password": password}}},
        "scope": {"project": {"name": project, "domain": {"id": "default"}}}}}
    req = urllib.request.Request(url + "/v3/auth/tokens", method="POST",
                                 data=json.dumps(body).encode())
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.headers["X-Subject-Token"], json.loads(resp.read())["token"]["project"]["id"]


def system_token(user, password):
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "domain": {"id": "default"}, "password": password}}},
        "scope": {"system": {"all": True}}}}
    req = urllib.request.Request(url + "/v3/auth/tokens", method="POST",
                                 data=json.dumps(body).encode())
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.headers["X-Subject-Token"]


users, projects = {}, {}
for i in range(0, len(fixture), 4):
    user, password, project, role = fixture[i:i + 4]
    token, project_id = password_token(user, password, project)
    users[user] = {"password": password, "project": project, "role": role, "token": token}
    projects[project] = project_id
system_tokens = {"admin": system_token("admin", users["admin"]["password"])}
with open(out, "w") as f:
    json.dump({"url": url, "projects": projects, "users": users,
               "system_tokens": system_tokens}, f, indent=2)
PY_EOF
    die "issuing the test users' tokens failed; see $LOG_FILE."
chmod 600 "$STATE_DIR/fixture.json"
echo "$URL"
