#!/usr/bin/env bash
# Starts a real OpenStack Identity service (Debian 12's Keystone, Zed) on loopback for kiln's
# integration tests: SQLite, Fernet tokens, everything under STATE_DIR, served by Python's own
# single-threaded WSGI server (no Apache, no uwsgi). Installs nothing: scripts/install-deps.sh must list
# `python3-keystone`.
#
# Usage: scripts/start-keystone.sh STATE_DIR PORT [SPEC]
#   Bootstraps Keystone with what the tests use:
#     project "service" with user "kiln" (role service: may validate tokens),
#     project "project-a" with "sched-a" (role scheduler) and "reader-a" (role reader),
#     project "project-b" with "reader-b" (role reader) and "admin-b" (role admin: an admin of
#     a project that is not the admin project),
#     project "admin" with "admin" (role admin, also granted on the system by bootstrap).
#   Writes STATE_DIR/fixture.json: the passwords, each user's project-scoped token, each
#   project's id, and "system_tokens": admin's system-scoped token (scope system all). The log is STATE_DIR/keystone.log, the pid STATE_DIR/keystone.pid.
#   With SPEC (a JSON file, for another fixture: scripts/start-openstack.sh) the users above are
#   not made, only "admin" and SPEC's {"users": [{"name", "password", "project", "role"}],
#   "services": [{"name", "type", "url"}]}: each user gets its role on its project only, each
#   service public, internal and admin endpoints at its URL in region RegionOne. Their tokens
#   are in fixture.json like the others'.
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

(($# == 2 || $# == 3)) || die "usage: $0 STATE_DIR PORT [SPEC]"
if ! [[ $2 =~ ^[0-9]{1,5}$ ]] || (($2 < 1 || $2 > 65535)); then
    die "port '$2' is not a TCP port number."
fi
readonly PORT=$2
SPEC=
if (($# == 3)); then
    [[ -r $3 ]] || die "SPEC '$3' is not a readable file."
    SPEC=$(realpath "$3")
fi
readonly SPEC
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
# Write-ahead-log mode (kept in the file), as scripts/start-openstack.sh's databases: readers
# (token validation from parallel tests) go on while one writer writes.
[[ $(sqlite3 "$STATE_DIR/keystone.sqlite" 'PRAGMA journal_mode=WAL;') == wal ]] ||
    die "could not put $STATE_DIR/keystone.sqlite in SQLite's WAL mode."

cat >"$CONF" <<CONF_EOF
[DEFAULT]
log_file = $LOG_FILE
use_stderr = false
debug = false

[database]
connection = sqlite:///$STATE_DIR/keystone.sqlite

[identity]
# bcrypt's cheapest cost: each user made and each password checked costs ~0.25 s at the default.
password_hash_rounds = 4

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
password() { head -c 18 /dev/urandom | base64 | tr -d '/+='; }
if [[ -n $SPEC ]]; then
    # Another fixture's Keystone: only admin here, the SPEC's users come on top.
    FIXTURE=(admin "$ADMIN_PASSWORD" admin admin)
else
    FIXTURE=(kiln "$(password)" service service
        sched-a "$(password)" project-a scheduler
        reader-a "$(password)" project-a reader
        reader-b "$(password)" project-b reader
        admin-b "$(password)" project-b admin
        admin "$ADMIN_PASSWORD" admin admin)
fi
# One Python process bootstraps Keystone and then serves it: importing Keystone takes ~4 s, so
# it is imported once and a forked child does what keystone-manage db_sync, fernet_setup,
# credential_setup and bootstrap would (each keystone-manage run would import it again, and a
# bootstrap per user made this the slowest fixture). The users are made offline (bootstrap creates
# a user, a project and a role and grants it, also on the system; rerunning it is safe):
# Keystone's API on SQLite fails writes with "database is locked" here, while reads and token
# issuing work. The server is Python's own WSGI server; the port goes through the environment
# (oslo.config reads sys.argv as its own options).
KILN_KEYSTONE_PORT=$PORT OS_KEYSTONE_CONFIG_FILES="$CONF" setsid "$PYTHON" - "$CONF" "$URL" \
    "$STATE_DIR/keystone-manage.log" "$SPEC" "${FIXTURE[@]}" >>"$LOG_FILE" 2>&1 <<'PY_EOF' &
import json
import os
import sys
from wsgiref.simple_server import WSGIRequestHandler, make_server

import keystone.conf
from keystone.cmd import bootstrap
from keystone.common import driver_hints, fernet_utils, sql
from keystone.common.sql import upgrades
from keystone.credential.providers import fernet as credential_fernet
from keystone.server import wsgi


def keystone_manage_bootstrap(bootstrapper, user, password, project, role, identity_url=None):
    """What `keystone-manage bootstrap` does with these --bootstrap-* options."""
    bootstrapper.admin_username, bootstrapper.admin_password = user, password
    bootstrapper.project_name, bootstrapper.admin_role_name = project, role
    bootstrapper.service_name, bootstrapper.service_id = "keystone", None
    bootstrapper.admin_url = bootstrapper.public_url = bootstrapper.internal_url = identity_url
    bootstrapper.region_id = "RegionOne" if identity_url else None
    bootstrapper.bootstrap()


def bootstrap_keystone(conf_file, url, spec_file, fixture):
    spec = {}
    if spec_file:
        with open(spec_file) as f:
            spec = json.load(f)

    # What keystone-manage's main() does before it runs a command.
    conf = keystone.conf.CONF
    keystone.conf.configure()
    sql.initialize()
    keystone.conf.set_default_for_default_log_levels()
    conf(args=["--config-file", conf_file], project="keystone", default_config_files=[])
    keystone.conf.setup_logging()

    upgrades.offline_sync_database_to_version()  # db_sync
    uid, gid = os.getuid(), os.getgid()  # fernet_setup, credential_setup
    for group, max_active_keys in (("fernet_tokens", conf.fernet_tokens.max_active_keys),
                                   ("fernet_receipts", conf.fernet_receipts.max_active_keys),
                                   ("credential", credential_fernet.MAX_ACTIVE_KEYS)):
        keys = fernet_utils.FernetUtils(getattr(conf, group).key_repository, max_active_keys, group)
        keys.create_key_directory(uid, gid)
        if keys.validate_key_repository(requires_write=True):
            keys.initialize_key_repository(uid, gid)

    # bootstrap: first the admin with the identity endpoints, then one per user.
    bootstrapper = bootstrap.Bootstrapper()
    bootstrapper.immutable_roles = True
    admin_password = fixture[fixture.index("admin") + 1]
    keystone_manage_bootstrap(bootstrapper, "admin", admin_password, "admin", "admin", url + "/v3/")
    for i in range(0, len(fixture), 4):
        keystone_manage_bootstrap(bootstrapper, *fixture[i:i + 4])

    # The SPEC's users get their role on their project only, as `openstack role add --project`
    # would grant it (no system role, no implied role made from theirs).
    for entry in spec.get("users", []):
        bootstrapper.admin_username, bootstrapper.admin_password = entry["name"], entry["password"]
        bootstrapper.project_name, bootstrapper.admin_role_name = entry["project"], entry["role"]
        bootstrapper._bootstrap_project()
        bootstrapper._bootstrap_admin_user()
        bootstrapper.admin_role_id = bootstrapper._ensure_role_exists(entry["role"])["id"]
        bootstrapper._bootstrap_project_role_assignment()

    # The SPEC's catalog: one service per entry, its URL as the public, internal and admin endpoint.
    providers = bootstrap.PROVIDERS
    for entry in spec.get("services", []):
        hints = driver_hints.Hints()
        hints.add_filter("type", entry["type"])
        if providers.catalog_api.list_services(hints):
            continue
        service_id = os.urandom(16).hex()
        providers.catalog_api.create_service(service_id, {
            "id": service_id, "name": entry["name"], "type": entry["type"], "enabled": True,
            "description": entry.get("description", "")})
        for interface in ("public", "internal", "admin"):
            endpoint_id = os.urandom(16).hex()
            providers.catalog_api.create_endpoint(endpoint_id, {
                "id": endpoint_id, "interface": interface, "url": entry["url"],
                "service_id": service_id, "region_id": "RegionOne", "enabled": True})


# One request at a time: SQLite does not take concurrent writers ("database is locked").
class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


conf_file, url, manage_log, spec_file, fixture = (sys.argv[1], sys.argv[2], sys.argv[3],
                                                  sys.argv[4], sys.argv[5:])
child = os.fork()
if child == 0:
    log = os.open(manage_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    try:
        bootstrap_keystone(conf_file, url, spec_file, fixture)
    except BaseException:
        import traceback
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
_, status = os.waitpid(child, 0)
if status != 0:
    sys.exit(f"bootstrapping Keystone failed; see {manage_log}")

sys.argv = sys.argv[:1]
app = wsgi.initialize_public_application()
make_server("127.0.0.1", int(os.environ["KILN_KEYSTONE_PORT"]), app,
            handler_class=QuietHandler).serve_forever()
PY_EOF
echo $! >"$PID_FILE"

for ((i = 0; i < WAIT_SECONDS * 10; i++)); do
    if curl -s -o /dev/null --max-time 2 "$URL/v3"; then break; fi
    kill -0 "$(cat "$PID_FILE")" 2>/dev/null ||
        die "Keystone exited; see $LOG_FILE and $STATE_DIR/keystone-manage.log."
    sleep 0.1
done
curl -s -o /dev/null --max-time 2 "$URL/v3" || die "Keystone did not answer within ${WAIT_SECONDS}s; see $LOG_FILE."

# The fixture's tokens and project ids, through Keystone's own API (reads only).
"$PYTHON" - "$URL" "$STATE_DIR/fixture.json" "$SPEC" "${FIXTURE[@]}" <<'PY_EOF' ||
import json
import sys
import urllib.request

url, out, spec_file, fixture = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
if spec_file:
    with open(spec_file) as f:
        for entry in json.load(f).get("users", []):
            fixture += [entry["name"], entry["password"], entry["project"], entry["role"]]


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
