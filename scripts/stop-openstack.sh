#!/usr/bin/env bash
# Stops the control plane that scripts/start-openstack.sh started from STATE_DIR, and any
# nova-compute scripts/start-nova-compute.sh started beside it. Idempotent, and safe after a start
# that failed half way: every service that has a pid file is stopped, the others are skipped. The
# state (databases, images, logs) stays for inspection.
#
# Usage: scripts/stop-openstack.sh STATE_DIR
set -euo pipefail

readonly WAIT_SECONDS=20
SCRIPTS_DIR=$(cd "$(dirname "$0")" && pwd -P)
readonly SCRIPTS_DIR

die() {
    echo "stop-openstack: $*" >&2
    exit 1
}

(($# == 1)) || die "usage: $0 STATE_DIR"
readonly STATE_DIR=$1
if [[ ! -d $STATE_DIR ]]; then
    echo "stop-openstack: no '$STATE_DIR'; nothing to stop."
    exit 0
fi

# Compute hosts first: they would otherwise log lost connections to everything below.
for compute_dir in "$STATE_DIR"/compute-*/; do
    [[ -d $compute_dir ]] || continue
    "$SCRIPTS_DIR/stop-nova-compute.sh" "$STATE_DIR" "$(basename "$compute_dir" | sed 's/^compute-//')" || true
done

# Each service was started by setsid: its pid is its process group, which holds its workers
# (nova-api's, uwsgi's) and helpers (RabbitMQ's beam.smp). NAME:word its command line contains.
readonly SERVICES=(nova-api:nova-api nova-scheduler:nova-scheduler nova-conductor:nova-conductor
    placement-api:uwsgi glance-api:glance-api neutron-api:neutron-api rabbitmq:rabbitmq epmd:epmd)

# Prints the process group's members whose command line names the service (nothing when the group
# is gone, or when its number now belongs to someone else).
ours() {
    local group=$1 word=$2 member
    for member in $(pgrep -g "$group" 2>/dev/null); do
        if tr '\0' ' ' <"/proc/$member/cmdline" 2>/dev/null | grep -qi -- "$word"; then
            echo "$member"
            return
        fi
    done
}

declare -A GROUPS_LEFT
for entry in "${SERVICES[@]}"; do
    name=${entry%%:*} word=${entry#*:}
    pid_file=$STATE_DIR/$name.pid
    [[ -s $pid_file ]] || continue
    pid=$(cat "$pid_file")
    [[ $pid =~ ^[0-9]+$ ]] || die "'$pid_file' does not hold a pid: '$pid'."
    if [[ -z $(ours "$pid" "$word") ]]; then
        rm -f "$pid_file"
        continue
    fi
    # SIGTERM to the group: the parent and its workers stop together (RabbitMQ shuts down cleanly).
    kill -TERM -- "-$pid" 2>/dev/null || true
    GROUPS_LEFT[$name]=$pid
done

deadline=$((SECONDS + WAIT_SECONDS))
while ((${#GROUPS_LEFT[@]} > 0)); do
    for name in "${!GROUPS_LEFT[@]}"; do
        pid=${GROUPS_LEFT[$name]}
        if [[ -z $(pgrep -g "$pid" 2>/dev/null) ]]; then
            echo "stop-openstack: stopped $name (pid $pid)."
            rm -f "$STATE_DIR/$name.pid"
            unset "GROUPS_LEFT[$name]"
        elif ((SECONDS >= deadline)); then
            kill -KILL -- "-$pid" 2>/dev/null || true
            echo "stop-openstack: $name (pid $pid) ignored SIGTERM for ${WAIT_SECONDS}s; killed it." >&2
            rm -f "$STATE_DIR/$name.pid"
            unset "GROUPS_LEFT[$name]"
        fi
    done
    ((${#GROUPS_LEFT[@]} == 0)) || sleep 0.1
done

"$SCRIPTS_DIR/stop-keystone.sh" "$STATE_DIR/keystone" | sed 's/^stop-keystone/stop-openstack/'
