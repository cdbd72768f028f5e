#!/usr/bin/env bash
# Starts an OpenStack Zed control plane without nova-compute, on 127.0.0.1 only, for kiln's
# integration tests and benchmarks: kilnd takes nova-compute's place in it (and
# scripts/start-nova-compute.sh starts Debian's real nova-compute as the peer to compare with).
# Plain background processes, SQLite everywhere, everything under STATE_DIR; Debian 12's packages
# (scripts/install-deps.sh lists them), nothing installed here.
#
# Usage: scripts/start-openstack.sh STATE_DIR [GUEST_IMAGE]
#   GUEST_IMAGE (default: $KILN_TEST_GUEST_IMAGE) is uploaded as a public raw image when it exists.
#   KILN_OPENSTACK_SERVICE_DOWN_TIME (default 60, nova's own): seconds without a heartbeat after
#   which nova calls a service down; tests of a dead compute host can make it short (it must stay
#   above the hosts' report_interval, 10 s).
#
# What runs (ports are fixed: the fixtures must not collide with each other or with a system
# service on the default ports):
#   Keystone        29501   scripts/start-keystone.sh in STATE_DIR/keystone, with the users
#                           nova, placement, glance, kiln (role admin on project service) and
#                           demo (role member on project demo), and the catalog (region RegionOne)
#   RabbitMQ        29672   node kiln29672@localhost, Erlang distribution on 29673, its own epmd
#                           on 29369 (ERL_EPMD_PORT), user kiln with a generated password
#   Glance          29293   Keystone auth, the filesystem store in STATE_DIR/glance/images
#   Placement       29778   under uwsgi, Keystone auth
#   nova-api        29774   the compute API only (no metadata API), Keystone auth
#   nova-conductor, nova-scheduler (one worker each), cells cell0 and cell1
#   Neutron         29696   tests/integration/stand-in/neutron-api: a cloud without networks
#                           (nova's API cannot show a server without Neutron, even with
#                           --network none); servers are made with --network none
# Writes STATE_DIR/fixture.json (every URL, user, password, the transport URL, the image and flavor
# ids), STATE_DIR/compute-host.conf (the nova.conf sections an operator hands a compute host),
# STATE_DIR/openrc-admin and STATE_DIR/openrc-demo (for the `openstack` CLI). Logs are in
# STATE_DIR/logs, pids in STATE_DIR/*.pid (Keystone's in STATE_DIR/keystone/keystone.pid).
# Every start begins from empty databases. On a failure it prints the end of the failing
# service's log, stops whatever it started and exits non-zero; the logs stay.
# Stop it with scripts/stop-openstack.sh STATE_DIR.
set -euo pipefail

readonly KEYSTONE_PORT=29501 RABBIT_PORT=29672 RABBIT_DIST_PORT=29673 EPMD_PORT=29369
readonly GLANCE_PORT=29293 PLACEMENT_PORT=29778 NOVA_PORT=29774 NEUTRON_PORT=29696
readonly WAIT_SECONDS=120
# The interpreter Debian's OpenStack is installed for (a pyenv python3 on PATH would not see it).
readonly PYTHON=/usr/bin/python3
# The control plane's own host name in nova (conductor and scheduler register under it).
readonly CONTROL_HOST=kiln-control
SCRIPTS_DIR=$(cd "$(dirname "$0")" && pwd -P)
readonly SCRIPTS_DIR

die() {
    echo "start-openstack: $*" >&2
    exit 1
}

# Seconds since the start, to a tenth.
elapsed() {
    local us=$((${EPOCHREALTIME/./} - ${START_TIME/./}))
    echo "$((us / 1000000)).$((us / 100000 % 10))"
}

(($# == 1 || $# == 2)) || die "usage: $0 STATE_DIR [GUEST_IMAGE]"
GUEST_IMAGE=${2:-${KILN_TEST_GUEST_IMAGE:-}}
if [[ -n $GUEST_IMAGE && ! -r $GUEST_IMAGE ]]; then
    echo "start-openstack: no guest image at '$GUEST_IMAGE'; Glance starts without an image." >&2
    GUEST_IMAGE=
fi
[[ -z $GUEST_IMAGE ]] || GUEST_IMAGE=$(realpath "$GUEST_IMAGE")
readonly GUEST_IMAGE
SERVICE_DOWN_TIME=${KILN_OPENSTACK_SERVICE_DOWN_TIME:-60}
if ! [[ $SERVICE_DOWN_TIME =~ ^[0-9]+$ ]] || ((SERVICE_DOWN_TIME <= 10)); then
    die "KILN_OPENSTACK_SERVICE_DOWN_TIME '$SERVICE_DOWN_TIME' is not a number of seconds above the report interval (10)."
fi
readonly SERVICE_DOWN_TIME
mkdir -p "$1"
STATE_DIR=$(cd "$1" && pwd -P)  # the services want absolute paths (SQLite URLs, stores)
readonly STATE_DIR
readonly LOGS="$STATE_DIR/logs"
readonly START_TIME=$EPOCHREALTIME

for tool in keystone-manage glance-api glance-manage uwsgi nova-api \
    nova-conductor nova-scheduler /usr/lib/rabbitmq/bin/rabbitmq-server epmd curl; do
    command -v "$tool" >/dev/null ||
        die "'$tool' is not installed; run scripts/install-deps.sh (it lists the OpenStack packages)."
done
[[ -r /usr/lib/uwsgi/plugins/python3_plugin.so ]] ||
    die "uwsgi's python3 plugin is missing; run scripts/install-deps.sh (uwsgi-plugin-python3)."
for file in /etc/glance/glance-api-paste.ini /etc/nova/api-paste.ini /usr/bin/placement-api; do
    [[ -r $file ]] || die "'$file' is missing; reinstall the package that ships it."
done

for pid_file in "$STATE_DIR"/*.pid "$STATE_DIR"/keystone/keystone.pid "$STATE_DIR"/compute-*/*.pid; do
    if [[ -s $pid_file ]] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then
        die "a control plane from '$STATE_DIR' still runs ($pid_file); stop it with scripts/stop-openstack.sh."
    fi
done
# Another process on one of the ports would answer the readiness probes and fool the tests.
for port in $KEYSTONE_PORT $RABBIT_PORT $RABBIT_DIST_PORT $EPMD_PORT $GLANCE_PORT \
    $PLACEMENT_PORT $NOVA_PORT $NEUTRON_PORT; do
    if (: </dev/tcp/127.0.0.1/"$port") 2>/dev/null; then
        die "something already listens on 127.0.0.1:$port; stop it first (ss -ltnp 'sport = :$port')."
    fi
done

# Empty databases, queues and stores each time: the fixture's ids are made below.
rm -rf "$LOGS" "$STATE_DIR"/{rabbitmq,glance,placement,nova,run} "$STATE_DIR"/*.pid \
    "$STATE_DIR"/{fixture.json,compute-host.conf,openrc-admin,openrc-demo,keystone-spec.json}
mkdir -p "$LOGS" "$STATE_DIR"/{rabbitmq/home,rabbitmq/mnesia,rabbitmq/log,run} \
    "$STATE_DIR"/glance/{images,staging,tasks,lock} "$STATE_DIR"/placement "$STATE_DIR"/nova/lock
chmod 700 "$STATE_DIR/rabbitmq/home"
# Keystone's logs are in its own state directory; links keep every log in one place.
ln -s ../keystone/keystone.log "$LOGS/keystone.log"
ln -s ../keystone/keystone-manage.log "$LOGS/keystone-manage.log"

password() { head -c 18 /dev/urandom | base64 | tr -d '/+='; }
NOVA_PASSWORD=$(password) PLACEMENT_PASSWORD=$(password) GLANCE_PASSWORD=$(password)
KILN_PASSWORD=$(password) DEMO_PASSWORD=$(password) RABBIT_PASSWORD=$(password)
readonly NOVA_PASSWORD PLACEMENT_PASSWORD GLANCE_PASSWORD KILN_PASSWORD DEMO_PASSWORD RABBIT_PASSWORD
readonly KEYSTONE_URL="http://127.0.0.1:$KEYSTONE_PORT"
readonly GLANCE_URL="http://127.0.0.1:$GLANCE_PORT"
readonly PLACEMENT_URL="http://127.0.0.1:$PLACEMENT_PORT"
readonly NOVA_URL="http://127.0.0.1:$NOVA_PORT/v2.1"
readonly NEUTRON_URL="http://127.0.0.1:$NEUTRON_PORT"
readonly TRANSPORT_URL="rabbit://kiln:$RABBIT_PASSWORD@127.0.0.1:$RABBIT_PORT/"

# --- configuration ------------------------------------------------------------------------------

# Keystone's users and catalog (built as JSON by Python, never by hand).
"$PYTHON" - "$STATE_DIR/keystone-spec.json" nova "$NOVA_PASSWORD" service admin \
    placement "$PLACEMENT_PASSWORD" service admin glance "$GLANCE_PASSWORD" service admin \
    kiln "$KILN_PASSWORD" service admin demo "$DEMO_PASSWORD" demo member \
    -- glance image "$GLANCE_URL" placement placement "$PLACEMENT_URL" nova compute "$NOVA_URL" \
    neutron network "$NEUTRON_URL" <<'PY_EOF'
import json
import sys

out, args = sys.argv[1], sys.argv[2:]
users, services = args[:args.index("--")], args[args.index("--") + 1:]
spec = {"users": [dict(zip(("name", "password", "project", "role"), users[i:i + 4]))
                  for i in range(0, len(users), 4)],
        "services": [dict(zip(("name", "type", "url"), services[i:i + 3]))
                     for i in range(0, len(services), 3)]}
with open(out, "w") as f:
    json.dump(spec, f, indent=2)
PY_EOF
chmod 600 "$STATE_DIR/keystone-spec.json"

# The [keystone_authtoken] section of an API service authenticating as USER.
authtoken_section() {
    cat <<EOF
[keystone_authtoken]
www_authenticate_uri = $KEYSTONE_URL
auth_url = $KEYSTONE_URL
auth_type = password
username = $1
password = $2
project_name = service
user_domain_name = Default
project_domain_name = Default
region_name = RegionOne
service_token_roles_required = true
EOF
}

# Credentials for keystoneauth's password plugin, as nova's [placement] and [service_user] take them.
password_auth() {
    cat <<EOF
auth_type = password
auth_url = $KEYSTONE_URL/v3
username = $1
password = $2
project_name = service
user_domain_name = Default
project_domain_name = Default
region_name = RegionOne
EOF
}

cat >"$STATE_DIR/rabbitmq/rabbitmq.conf" <<EOF
listeners.tcp.default = 127.0.0.1:$RABBIT_PORT
default_vhost = /
default_user = kiln
default_pass = $RABBIT_PASSWORD
default_permissions.configure = .*
default_permissions.read = .*
default_permissions.write = .*
# A test machine's disk may be small: the default alarm (50 MB free) blocks publishers anyway.
disk_free_limit.absolute = 50MB
EOF
echo '[].' >"$STATE_DIR/rabbitmq/enabled_plugins"
: >"$STATE_DIR/rabbitmq/rabbitmq-env.conf"  # not /etc/rabbitmq's
chmod 600 "$STATE_DIR/rabbitmq/rabbitmq.conf"

cat >"$STATE_DIR/glance/glance-api.conf" <<EOF
[DEFAULT]
bind_host = 127.0.0.1
bind_port = $GLANCE_PORT
workers = 1
use_stderr = true
debug = false
enabled_backends = fs:file
# Records carry direct_url (file:///...), which kiln can read without HTTP.
show_image_direct_url = true
lock_path = $STATE_DIR/glance/lock

[database]
connection = sqlite:///$STATE_DIR/glance/glance.sqlite

[glance_store]
default_backend = fs

[fs]
filesystem_store_datadir = $STATE_DIR/glance/images/

[os_glance_staging_store]
filesystem_store_datadir = $STATE_DIR/glance/staging/

[os_glance_tasks_store]
filesystem_store_datadir = $STATE_DIR/glance/tasks/

[paste_deploy]
# The glance-api-keystone pipeline: authtoken, so image visibility follows the caller's project.
flavor = keystone
config_file = /etc/glance/glance-api-paste.ini

$(authtoken_section glance "$GLANCE_PASSWORD")

[oslo_concurrency]
lock_path = $STATE_DIR/glance/lock
EOF

cat >"$STATE_DIR/placement/placement.conf" <<EOF
[DEFAULT]
use_stderr = true
debug = false

[api]
auth_strategy = keystone

[placement_database]
connection = sqlite:///$STATE_DIR/placement/placement.sqlite
sync_on_startup = true

$(authtoken_section placement "$PLACEMENT_PASSWORD")
EOF

cat >"$STATE_DIR/nova/nova.conf" <<EOF
[DEFAULT]
host = $CONTROL_HOST
my_ip = 127.0.0.1
state_path = $STATE_DIR/nova
use_stderr = true
debug = false
transport_url = $TRANSPORT_URL
control_exchange = nova
service_down_time = $SERVICE_DOWN_TIME
# A fixture has nothing to drain on stop: SIGTERM ends the services within seconds.
graceful_shutdown_timeout = 2
enabled_apis = osapi_compute
osapi_compute_listen = 127.0.0.1
osapi_compute_listen_port = $NOVA_PORT
osapi_compute_workers = 1

[api]
auth_strategy = keystone

[wsgi]
api_paste_config = /etc/nova/api-paste.ini

[api_database]
connection = sqlite:///$STATE_DIR/nova/nova_api.sqlite

[database]
connection = sqlite:///$STATE_DIR/nova/nova_cell1.sqlite

[conductor]
workers = 1

[scheduler]
workers = 1
# Hosts are mapped by scripts/start-nova-compute.sh (nova-manage cell_v2 discover_hosts) or by
# the test that starts a kilnd; a periodic discovery would race them.
discover_hosts_in_cells_interval = -1

[oslo_messaging_notifications]
driver = noop

[oslo_messaging_rabbit]
# Queue declarations must match on every side (compute-host.conf says the same) or RabbitMQ
# refuses them (406 PRECONDITION_FAILED).
amqp_durable_queues = false
rabbit_ha_queues = false
rabbit_quorum_queue = false

[oslo_concurrency]
lock_path = $STATE_DIR/nova/lock

$(authtoken_section nova "$NOVA_PASSWORD")

[placement]
$(password_auth placement "$PLACEMENT_PASSWORD")

[glance]
region_name = RegionOne

[neutron]
$(password_auth nova "$NOVA_PASSWORD")

[service_user]
send_service_user_token = true
$(password_auth nova "$NOVA_PASSWORD")
EOF
chmod 600 "$STATE_DIR/glance/glance-api.conf" "$STATE_DIR/placement/placement.conf" \
    "$STATE_DIR/nova/nova.conf"

# What an operator hands a compute host (nova-compute or kilnd): the same option names as nova.conf.
cat >"$STATE_DIR/compute-host.conf" <<EOF
# The control plane at $STATE_DIR, for a compute host (scripts/start-openstack.sh).
[DEFAULT]
transport_url = $TRANSPORT_URL
control_exchange = nova
report_interval = 10

[oslo_messaging_notifications]
driver = noop

[oslo_messaging_rabbit]
amqp_durable_queues = false
rabbit_ha_queues = false
rabbit_quorum_queue = false

[placement]
$(password_auth placement "$PLACEMENT_PASSWORD")
# Optional in nova: without it the catalog's placement endpoint is used.
endpoint_override = $PLACEMENT_URL

[glance]
region_name = RegionOne
# Optional in nova: without it the catalog's image endpoint is used.
endpoint_override = $GLANCE_URL

[neutron]
$(password_auth nova "$NOVA_PASSWORD")
# Optional in nova: without it the catalog's network endpoint is used.
endpoint_override = $NEUTRON_URL

$(authtoken_section nova "$NOVA_PASSWORD")

[service_user]
send_service_user_token = true
$(password_auth nova "$NOVA_PASSWORD")
EOF
chmod 600 "$STATE_DIR/compute-host.conf"

# --- starting the services, independent ones at once --------------------------------------------

# Runs "$@" in a new session (its own process group, for stop-openstack.sh) and records its pid.
spawn() {
    local name=$1
    shift
    setsid "$@" </dev/null >>"$LOGS/$name.log" 2>&1 &
    echo $! >"$STATE_DIR/$name.pid"
}

# A step's failure: its message, the end of the service's log, and the exit status of the step.
fail() {
    local log=$1
    shift
    {
        echo "start-openstack: $*"
        if [[ -s $log ]]; then
            echo "---- last lines of $log"
            tail -n 40 "$log"
            echo "----"
        fi
    } >&2
    exit 1
}

# Polls CHECK (a command) every 0.1 s until it succeeds; fails with LOG's tail when the process
# of NAME.pid exits or WAIT_SECONDS pass.
wait_for() {
    local name=$1 log=$2
    shift 2
    local pid deadline=$((SECONDS + WAIT_SECONDS))
    pid=$(cat "$STATE_DIR/$name.pid")
    until "$@" >/dev/null 2>&1; do
        kill -0 "$pid" 2>/dev/null || fail "$log" "$name exited during start."
        ((SECONDS < deadline)) || fail "$log" "$name did not answer within ${WAIT_SECONDS}s."
        sleep 0.1
    done
}

http_answers() { curl -sf -o /dev/null --max-time 2 "$1"; }

# Creates an empty SQLite database in write-ahead-log mode (the mode is kept in the file, so
# the service's schema sync and every later connection use it). WAL lets readers go on while one
# writer writes; in the default rollback-journal mode they fail with "database is locked". Two
# colliding writers still fail (measured: Placement answers HTTP 500 to some concurrent
# inventory writes); production runs MySQL, which serialises them.
sqlite_wal() {
    [[ $(sqlite3 "$1" 'PRAGMA journal_mode=WAL;') == wal ]] ||
        die "could not put $1 in SQLite's WAL mode."
}
port_listens() { (: </dev/tcp/127.0.0.1/"$1") 2>/dev/null; }

start_keystone() {
    "$SCRIPTS_DIR/start-keystone.sh" "$STATE_DIR/keystone" "$KEYSTONE_PORT" \
        "$STATE_DIR/keystone-spec.json" >>"$LOGS/keystone-start.log" 2>&1 ||
        fail "$STATE_DIR/keystone/keystone-manage.log" \
            "Keystone did not start: $(tail -n 1 "$LOGS/keystone-start.log"); see also $STATE_DIR/keystone/keystone.log."
    echo "start-openstack: Keystone answers after $(elapsed) s"
}

start_rabbitmq() {
    local rmq=$STATE_DIR/rabbitmq
    # Our own epmd, in the foreground so its pid is ours: one rabbitmq-server started itself would
    # daemonize out of reach, and a system epmd on 4369 is none of our business.
    spawn epmd epmd -address 127.0.0.1 -port "$EPMD_PORT"
    wait_for epmd "$LOGS/epmd.log" epmd -port "$EPMD_PORT" -names
    HOME=$rmq/home RABBITMQ_NODENAME=kiln$RABBIT_PORT@localhost \
        RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT=$RABBIT_PORT \
        RABBITMQ_DIST_PORT=$RABBIT_DIST_PORT ERL_EPMD_ADDRESS=127.0.0.1 ERL_EPMD_PORT=$EPMD_PORT \
        RABBITMQ_MNESIA_BASE=$rmq/mnesia RABBITMQ_LOG_BASE=$rmq/log RABBITMQ_LOGS=- \
        RABBITMQ_CONFIG_FILE=$rmq/rabbitmq.conf RABBITMQ_ENABLED_PLUGINS_FILE=$rmq/enabled_plugins \
        RABBITMQ_CONF_ENV_FILE=$rmq/rabbitmq-env.conf RABBITMQ_ADVANCED_CONFIG_FILE=$rmq/advanced.config \
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1}' \
        spawn rabbitmq /usr/lib/rabbitmq/bin/rabbitmq-server
    # RabbitMQ opens its AMQP listener last, once the vhost and the user exist.
    wait_for rabbitmq "$LOGS/rabbitmq.log" port_listens "$RABBIT_PORT"
    touch "$STATE_DIR/run/rabbitmq.ready"
    # rabbitmqctl for this broker (tests close connections and delete queues with it).
    cat >"$STATE_DIR/rabbitmqctl" <<CTL_EOF
#!/bin/sh
HOME=$rmq/home ERL_EPMD_PORT=$EPMD_PORT ERL_EPMD_ADDRESS=127.0.0.1 \\
    exec /usr/lib/rabbitmq/bin/rabbitmqctl -n kiln$RABBIT_PORT@localhost "\$@"
CTL_EOF
    chmod 0700 "$STATE_DIR/rabbitmqctl"
    echo "start-openstack: RabbitMQ answers after $(elapsed) s"
}

start_glance() {
    local conf=$STATE_DIR/glance/glance-api.conf
    sqlite_wal "$STATE_DIR/glance/glance.sqlite"
    glance-manage --config-file "$conf" db_sync >>"$LOGS/glance-manage.log" 2>&1 ||
        fail "$LOGS/glance-manage.log" "'glance-manage db_sync' failed."
    spawn glance-api glance-api --config-file "$conf"
    wait_for glance-api "$LOGS/glance-api.log" http_answers "$GLANCE_URL/healthcheck"
    echo "start-openstack: Glance answers after $(elapsed) s"
}

start_placement() {
    local conf_dir=$STATE_DIR/placement
    sqlite_wal "$STATE_DIR/placement/placement.sqlite"
    # The application syncs its database as it loads ([placement_database] sync_on_startup): no
    # placement-manage process importing placement once more. --http11-socket, not --http-socket:
    # the latter closes every connection after its response without a "Connection: close", and
    # clients that reuse the connection (keystoneauth, the CLI) meet "Connection reset by peer".
    OS_PLACEMENT_CONFIG_DIR=$conf_dir spawn placement-api uwsgi --plugin python3 \
        --http11-socket "127.0.0.1:$PLACEMENT_PORT" --wsgi-file /usr/bin/placement-api \
        --master --processes 1 --threads 4 --die-on-term --need-app --lazy-apps --no-orphans \
        --worker-reload-mercy 5 \
        --procname-prefix placement- --chdir "$conf_dir"
    wait_for placement-api "$LOGS/placement-api.log" http_answers "$PLACEMENT_URL/"
    echo "start-openstack: Placement answers after $(elapsed) s"
}

start_neutron() {
    spawn neutron-api "$PYTHON" "$SCRIPTS_DIR/../tests/integration/stand-in/neutron-api" "$NEUTRON_PORT"
    wait_for neutron-api "$LOGS/neutron-api.log" http_answers "$NEUTRON_URL/"
    echo "start-openstack: the Neutron stand-in answers after $(elapsed) s"
}

start_nova() {
    local conf=$STATE_DIR/nova/nova.conf
    local db
    for db in nova_api nova_cell0 nova_cell1; do sqlite_wal "$STATE_DIR/nova/$db.sqlite"; done
    # nova-manage api_db sync, cell_v2 map_cell0, cell_v2 create_cell --name cell1 and db sync in
    # one process: each nova-manage run spends ~4 s importing nova.
    "$PYTHON" - "$conf" "sqlite:///$STATE_DIR/nova/nova_cell0.sqlite" \
        >>"$LOGS/nova-manage.log" 2>&1 <<'PY_EOF' ||
import sys

from oslo_log import log as logging

import nova.conf
from nova import config, objects
from nova.cmd import manage

conf_file, cell0_connection = sys.argv[1], sys.argv[2]
config.parse_args(["nova-manage", "--config-file", conf_file])
logging.setup(nova.conf.CONF, "nova")
objects.register_all()
cells = manage.CellV2Commands()
for name, step in (("api_db sync", lambda: manage.ApiDbCommands().sync()),
                   ("cell_v2 map_cell0", lambda: cells.map_cell0(cell0_connection)),
                   ("cell_v2 create_cell --name cell1", lambda: cells.create_cell(name="cell1")),
                   ("db sync", lambda: manage.DbCommands().sync())):
    status = step()
    if status not in (None, 0):
        sys.exit(f"nova-manage {name} failed with status {status}")
    print(f"nova-manage {name}: done", flush=True)
PY_EOF
        fail "$LOGS/nova-manage.log" "setting up nova's databases failed."
    spawn nova-api nova-api --config-file "$conf"
    # The conductor and the scheduler connect to RabbitMQ at once; started before it listens,
    # they would back off for seconds.
    local deadline=$((SECONDS + WAIT_SECONDS))
    until [[ -e $STATE_DIR/run/rabbitmq.ready ]]; do
        ((SECONDS < deadline)) || fail "$LOGS/rabbitmq.log" "RabbitMQ was not ready within ${WAIT_SECONDS}s."
        sleep 0.1
    done
    spawn nova-conductor nova-conductor --config-file "$conf"
    spawn nova-scheduler nova-scheduler --config-file "$conf"
    wait_for nova-api "$LOGS/nova-api.log" http_answers "http://127.0.0.1:$NOVA_PORT/"
    echo "start-openstack: nova-api answers after $(elapsed) s"
}

# Stops whatever was started when any step fails (the logs stay).
STEP_PIDS=()
on_exit() {
    local status=$?
    ((status == 0)) && return
    # Each step is a process group of its own (set -m): this also ends what a step runs in the
    # foreground (a database sync, start-keystone.sh, a readiness probe).
    for pid in "${STEP_PIDS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
    "$SCRIPTS_DIR/stop-openstack.sh" "$STATE_DIR" 2>&1 | sed 's/^/  /' >&2 || true
    echo "start-openstack: failed after $(elapsed) s; stopped what had started, logs are in $LOGS." >&2
}
trap on_exit EXIT

set -m  # each step in a process group of its own
for step in start_keystone start_rabbitmq start_glance start_placement start_neutron start_nova; do
    "$step" &
    STEP_PIDS+=($!)
done
set +m  # and no job-control chatter about them
# The first step to fail stops the start (on_exit kills the others).
running=("${STEP_PIDS[@]}")
while ((${#running[@]} > 0)); do
    finished=
    wait -n -p finished "${running[@]}" || exit 1
    [[ -n $finished ]] || die "lost track of the start-up steps."
    still=()
    for pid in "${running[@]}"; do [[ $pid == "$finished" ]] || still+=("$pid"); done
    running=("${still[@]}")
done
echo "start-openstack: services answer after $(elapsed) s"

# --- what the services hold: flavors, the image, readiness of the RPC servers, the fixture --------

"$PYTHON" - state_dir="$STATE_DIR" guest_image="$GUEST_IMAGE" wait_seconds="$WAIT_SECONDS" \
    keystone_url="$KEYSTONE_URL" glance_url="$GLANCE_URL" placement_url="$PLACEMENT_URL" \
    neutron_url="$NEUTRON_URL" \
    nova_url="$NOVA_URL" transport_url="$TRANSPORT_URL" rabbit_password="$RABBIT_PASSWORD" \
    rabbit_port="$RABBIT_PORT" rabbit_dist_port="$RABBIT_DIST_PORT" epmd_port="$EPMD_PORT" \
    service_down_time="$SERVICE_DOWN_TIME" control_host="$CONTROL_HOST" \
    nova="$NOVA_PASSWORD" placement="$PLACEMENT_PASSWORD" glance="$GLANCE_PASSWORD" \
    kiln="$KILN_PASSWORD" demo="$DEMO_PASSWORD" >>"$LOGS/setup.log" 2>&1 <<'PY_EOF' ||
import json
import os
import sys
import time
import urllib.error
import urllib.request

import shlex

import kombu

params = dict(arg.split("=", 1) for arg in sys.argv[1:])
state_dir, guest_image = params["state_dir"], params["guest_image"]
wait_seconds = int(params["wait_seconds"])
keystone_url, glance_url = params["keystone_url"], params["glance_url"]
nova_url, transport_url = params["nova_url"], params["transport_url"]
with open(os.path.join(state_dir, "keystone", "fixture.json")) as f:
    keystone = json.load(f)
users = keystone["users"]
admin_token = users["admin"]["token"]


def call(method, url, body=None, token=admin_token, headers=None, data=None, ok=(200, 201, 202, 204)):
    if body is not None:
        data = json.dumps(body).encode()
    req = urllib.request.Request(url, method=method, data=data)
    req.add_header("X-Auth-Token", token)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    for key, value in (headers or {}).items():
        req.add_header(key, value)
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            text = resp.read()
            return json.loads(text) if text else None
    except urllib.error.HTTPError as e:
        sys.exit(f"{method} {url} answered {e.code}: {e.read().decode(errors='replace')}")


# Flavors: kiln.tiny is the test guest's (1 vCPU, 1 GB root disk). 128 MiB, not m1.tiny's 64:
# with 64 MiB the guest's kernel and initramfs do not fit and SeaBIOS reboots it in a loop while
# syslinux loads them (96 MiB boots; 128 leaves room for a bigger kernel).
flavor_specs = [
    {"name": "kiln.tiny", "ram": 128, "vcpus": 1, "disk": 1},
    {"name": "kiln.small", "ram": 256, "vcpus": 1, "disk": 1},
    {"name": "kiln.tiny.2cpu", "ram": 128, "vcpus": 2, "disk": 1},
    {"name": "kiln.tiny.ephemeral", "ram": 128, "vcpus": 1, "disk": 1,
     "OS-FLV-EXT-DATA:ephemeral": 1, "swap": 16},
    # For servers that boot from a volume.
    {"name": "kiln.tiny.nodisk", "ram": 128, "vcpus": 1, "disk": 0},
]
flavors = {}
for spec in flavor_specs:
    made = call("POST", nova_url + "/flavors", {"flavor": spec})["flavor"]
    flavors[made["name"]] = {"id": made["id"], "ram": made["ram"], "vcpus": made["vcpus"],
                             "disk": made["disk"],
                             "ephemeral": made.get("OS-FLV-EXT-DATA:ephemeral", 0),
                             "swap": made["swap"] or 0}
print("flavors:", ", ".join(flavors), flush=True)

image = None
if guest_image:
    made = call("POST", glance_url + "/v2/images",
                {"name": "kiln-test-guest", "disk_format": "raw", "container_format": "bare",
                 "visibility": "public"})
    with open(guest_image, "rb") as data:
        call("PUT", glance_url + "/v2/images/" + made["id"] + "/file", data=data,
             headers={"Content-Type": "application/octet-stream",
                      "Content-Length": str(os.fstat(data.fileno()).st_size)})
    got = call("GET", glance_url + "/v2/images/" + made["id"])
    if got["status"] != "active":
        sys.exit(f"image {made['id']} is {got['status']} after its upload")
    image = {"id": got["id"], "name": got["name"], "path": guest_image, "size": got["size"],
             "checksum": got["checksum"], "os_hash_algo": got["os_hash_algo"],
             "os_hash_value": got["os_hash_value"], "disk_format": "raw",
             "container_format": "bare", "visibility": "public"}
    print("image:", image["id"], flush=True)

# The conductor and the scheduler are ready once they consume their topic queues: a message
# sent to a queue nobody declared yet would be dropped.
deadline = time.monotonic() + wait_seconds
with kombu.Connection(hostname="127.0.0.1", port=int(params["rabbit_port"]), userid="kiln",
                      password=params["rabbit_password"], virtual_host="/") as conn:
    for topic in ("conductor", "scheduler"):
        while True:
            channel = conn.channel()
            try:
                _, _, consumers = channel.queue_declare(topic, passive=True)
                if consumers > 0:
                    break
            except Exception:  # 404 until the service declares its queue; it closes the channel
                pass
            finally:
                try:
                    channel.close()
                except Exception:
                    pass
            with open(os.path.join(state_dir, f"nova-{topic}.pid")) as f:
                pid = int(f.read())
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                with open(os.path.join(state_dir, "logs", f"nova-{topic}.log")) as f:
                    print("".join(f.readlines()[-30:]))
                sys.exit(f"nova-{topic} exited; see {state_dir}/logs/nova-{topic}.log")
            if time.monotonic() > deadline:
                sys.exit(f"nova-{topic} did not consume its queue within {wait_seconds}s")
            time.sleep(0.1)
        print(f"nova-{topic} consumes its queue", flush=True)

services = call("GET", nova_url + "/os-services")["services"]
up = sorted(s["binary"] for s in services if s["state"] == "up")
if up != ["nova-conductor", "nova-scheduler"]:
    sys.exit(f"nova's services up: {up}")

passwords = {name: params[name] for name in ("nova", "placement", "glance", "kiln", "demo")}
passwords["admin"] = users["admin"]["password"]
fixture_users = {}
for name, password in passwords.items():
    entry = users[name]
    assert entry["password"] == password, name
    fixture_users[name] = {"name": name, "password": password, "project": entry["project"],
                           "project_id": keystone["projects"][entry["project"]],
                           "role": entry["role"], "user_domain_name": "Default",
                           "project_domain_name": "Default", "token": entry["token"]}
fixture = {
    "state_dir": state_dir,
    "region": "RegionOne",
    "keystone": {"url": keystone_url, "auth_url": keystone_url + "/v3"},
    "users": fixture_users,
    "projects": keystone["projects"],
    "transport_url": transport_url,
    "rabbitmq": {"host": "127.0.0.1", "port": int(params["rabbit_port"]), "user": "kiln",
                 "password": params["rabbit_password"], "vhost": "/",
                 "node": "kiln" + params["rabbit_port"] + "@localhost",
                 "dist_port": int(params["rabbit_dist_port"]),
                 "epmd_port": int(params["epmd_port"])},
    "control_exchange": "nova",
    "service_down_time": int(params["service_down_time"]),
    "report_interval": 10,
    "glance": {"url": glance_url, "images_dir": os.path.join(state_dir, "glance", "images")},
    "placement": {"url": params["placement_url"]},
    "neutron": {"url": params["neutron_url"], "stand_in": True},
    "nova": {"url": nova_url, "control_host": params["control_host"],
             "conf": os.path.join(state_dir, "nova", "nova.conf")},
    "image": image,
    "flavors": flavors,
    "compute_host_conf": os.path.join(state_dir, "compute-host.conf"),
    "openrc": {"admin": os.path.join(state_dir, "openrc-admin"),
               "demo": os.path.join(state_dir, "openrc-demo")},
}
path = os.path.join(state_dir, "fixture.json")
with open(path + ".tmp", "w") as f:
    json.dump(fixture, f, indent=2)
os.chmod(path + ".tmp", 0o600)
os.rename(path + ".tmp", path)

for name in ("admin", "demo"):
    user = fixture_users[name]
    with open(os.path.join(state_dir, "openrc-" + name), "w") as f:
        os.fchmod(f.fileno(), 0o600)
        for key, value in (("OS_AUTH_URL", keystone_url + "/v3"), ("OS_IDENTITY_API_VERSION", "3"),
                           ("OS_USERNAME", name), ("OS_PASSWORD", user["password"]),
                           ("OS_PROJECT_NAME", user["project"]),
                           ("OS_USER_DOMAIN_NAME", "Default"),
                           ("OS_PROJECT_DOMAIN_NAME", "Default"),
                           ("OS_REGION_NAME", "RegionOne"), ("OS_INTERFACE", "public"),
                           # --network none (2.37) and the newer server fields.
                           ("OS_COMPUTE_API_VERSION", "2.79")):
            f.write(f"export {key}={shlex.quote(value)}\n")
print("fixture written", flush=True)
PY_EOF
    fail "$LOGS/setup.log" "making the flavors, the image or the fixture failed, or a service died."

echo "start-openstack: control plane ready in $(elapsed) s; fixture: $STATE_DIR/fixture.json"
