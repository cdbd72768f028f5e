#!/usr/bin/env bash
# Starts Debian's real nova-compute (Zed, libvirt driver, QEMU without KVM) as compute host HOST of
# the control plane scripts/start-openstack.sh runs from STATE_DIR: the peer kilnd is measured
# against. It is handed the control plane's STATE_DIR/compute-host.conf unchanged, plus its own
# STATE_DIR/compute-HOST/nova-compute.conf (host, driver, paths, privsep as root without
# rootwrap), then mapped into cell1 with `nova-manage cell_v2 discover_hosts`.
# libvirtd must answer on qemu:///system: run scripts/start-services.sh first.
#
# Usage: scripts/start-nova-compute.sh STATE_DIR HOST
#   Prints how long the start took once the host is up in nova, mapped and has its resource
#   provider. Log: STATE_DIR/logs/nova-compute-HOST.log; pid: STATE_DIR/compute-HOST/nova-compute.pid;
#   instances in STATE_DIR/compute-HOST/instances. Stop it with scripts/stop-nova-compute.sh
#   STATE_DIR HOST (scripts/stop-openstack.sh also does).
set -euo pipefail

readonly WAIT_SECONDS=120
readonly PYTHON=/usr/bin/python3
readonly URI=qemu:///system
SCRIPTS_DIR=$(cd "$(dirname "$0")" && pwd -P)
readonly SCRIPTS_DIR
readonly START_TIME=$EPOCHREALTIME

die() {
    echo "start-nova-compute: $*" >&2
    exit 1
}

(($# == 2)) || die "usage: $0 STATE_DIR HOST"
[[ $2 =~ ^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$ ]] || die "host name '$2' is not a valid host name."
readonly HOST=$2
[[ -d $1 ]] || die "no control plane in '$1'; run scripts/start-openstack.sh $1 first."
STATE_DIR=$(cd "$1" && pwd -P)
readonly STATE_DIR
readonly FIXTURE=$STATE_DIR/fixture.json
readonly COMPUTE_DIR=$STATE_DIR/compute-$HOST
readonly CONF=$COMPUTE_DIR/nova-compute.conf
readonly PID_FILE=$COMPUTE_DIR/nova-compute.pid
readonly LOG_FILE=$STATE_DIR/logs/nova-compute-$HOST.log

[[ -s $FIXTURE ]] || die "'$FIXTURE' is missing; run scripts/start-openstack.sh $STATE_DIR first."
for tool in nova-compute nova-manage privsep-helper virsh curl; do
    command -v "$tool" >/dev/null ||
        die "'$tool' is not installed; run scripts/install-deps.sh (it lists nova-compute)."
done
virsh -c "$URI" version >/dev/null 2>&1 ||
    die "libvirt does not answer on $URI; run scripts/start-services.sh first."
if [[ -s $PID_FILE ]] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
    die "nova-compute '$HOST' already runs (pid $(cat "$PID_FILE")); stop it with scripts/stop-nova-compute.sh."
fi

# Domains a previous run left behind would collide with this run's: instance names restart at
# instance-00000001 with each new control plane.
"$SCRIPTS_DIR/stop-nova-compute.sh" "$STATE_DIR" "$HOST" >/dev/null
rm -rf "$COMPUTE_DIR"
mkdir -p "$COMPUTE_DIR"/{instances,lock} "$STATE_DIR/logs"
: >"$LOG_FILE"

# The helper runs as root already: privsep-helper without sudo and rootwrap, with both files.
readonly HELPER="privsep-helper --config-file $STATE_DIR/compute-host.conf --config-file $CONF"
cat >"$CONF" <<EOF
# Compute host $HOST; read after $STATE_DIR/compute-host.conf.
[DEFAULT]
host = $HOST
compute_driver = libvirt.LibvirtDriver
state_path = $COMPUTE_DIR
instances_path = $COMPUTE_DIR/instances
my_ip = 127.0.0.1
use_stderr = true
debug = false

[libvirt]
virt_type = qemu
cpu_mode = none
connection_uri = $URI

[vnc]
enabled = false

[oslo_concurrency]
lock_path = $COMPUTE_DIR/lock

[nova_sys_admin]
helper_command = $HELPER

[vif_plug_linux_bridge_privileged]
helper_command = $HELPER

[vif_plug_ovs_privileged]
helper_command = $HELPER

[privsep_osbrick]
helper_command = $HELPER
EOF

setsid nova-compute --config-file "$STATE_DIR/compute-host.conf" --config-file "$CONF" \
    </dev/null >>"$LOG_FILE" 2>&1 &
echo $! >"$PID_FILE"

fail() {
    {
        echo "start-nova-compute: $*"
        echo "---- last lines of $LOG_FILE"
        tail -n 40 "$LOG_FILE"
        echo "----"
    } >&2
    "$SCRIPTS_DIR/stop-nova-compute.sh" "$STATE_DIR" "$HOST" >/dev/null 2>&1 || true
    exit 1
}
elapsed() {
    local us=$((${EPOCHREALTIME/./} - ${START_TIME/./}))
    echo "$((us / 1000000)).$((us / 100000 % 10))"
}

# Up once its service is up in nova, its compute node exists and so does the node's resource
# provider (the resource tracker's first run makes both); then mapped into cell1 (what the
# conductor needs to send it a build, and what the hypervisors API shows).
"$PYTHON" - "$FIXTURE" "$HOST" "$WAIT_SECONDS" "$PID_FILE" "$STATE_DIR" <<'PY_EOF' ||
import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request

fixture_file, host, wait_seconds, pid_file, state_dir = sys.argv[1:6]
wait_seconds = int(wait_seconds)
with open(fixture_file) as f:
    fixture = json.load(f)
admin = fixture["users"]["admin"]
nova_url, placement_url = fixture["nova"]["url"], fixture["placement"]["url"]


def request(method, url, body=None, token=None, version="compute 2.53"):
    req = urllib.request.Request(url, method=method,
                                 data=json.dumps(body).encode() if body else None)
    req.add_header("Content-Type", "application/json")
    req.add_header("OpenStack-API-Version", version)
    if token:
        req.add_header("X-Auth-Token", token)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.headers, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return e.headers, None
        raise


# A fresh token: the fixture's may be older than Keystone's two hours.
headers, _ = request("POST", fixture["keystone"]["auth_url"] + "/auth/tokens", {"auth": {
    "identity": {"methods": ["password"], "password": {"user": {
        "name": "admin", "domain": {"name": "Default"}, "password": admin["password"]}}},
    "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}}}})
token = headers["X-Subject-Token"]
with open(pid_file) as f:
    pid = int(f.read())
cell1 = sqlite3.connect(f"file:{state_dir}/nova/nova_cell1.sqlite?mode=ro", uri=True, timeout=10)


def check(what, deadline):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit(f"nova-compute {host} exited before {what}")
    if time.monotonic() > deadline:
        sys.exit(f"nova-compute {host}: no {what} within {wait_seconds}s")
    time.sleep(0.2)


deadline = time.monotonic() + wait_seconds
while True:
    _, services = request("GET", f"{nova_url}/os-services?binary=nova-compute&host={host}",
                          token=token)
    # Unmapped nodes are not in the hypervisors API yet: the cell's database has them.
    nodes = cell1.execute("SELECT uuid, hypervisor_hostname FROM compute_nodes "
                          "WHERE host = ? AND deleted = 0", (host,)).fetchall()
    provider = nodes and request("GET", f"{placement_url}/resource_providers/{nodes[0][0]}",
                                 token=token, version="placement 1.0")[1]
    if any(s["state"] == "up" for s in services["services"]) and provider:
        break
    check("service, compute node and resource provider", deadline)
node_uuid, nodename = nodes[0]
print(f"nova-compute {host}: up, node {nodename} ({node_uuid})", flush=True)

with open(os.path.join(state_dir, "logs", "nova-manage.log"), "a") as log:
    subprocess.run(["nova-manage", "--config-file", os.path.join(state_dir, "nova", "nova.conf"),
                    "cell_v2", "discover_hosts", "--verbose"], stdout=log, stderr=log, check=True)
_, hypervisors = request("GET", f"{nova_url}/os-hypervisors/detail", token=token)
if not any(h["id"] == node_uuid for h in hypervisors["hypervisors"]):
    sys.exit(f"nova-manage cell_v2 discover_hosts did not map {host}; see {state_dir}/logs/nova-manage.log")
print(f"nova-compute {host}: mapped into cell1", flush=True)
PY_EOF
    fail "nova-compute '$HOST' did not come up."
echo "start-nova-compute: nova-compute '$HOST' up and mapped in $(elapsed) s"
