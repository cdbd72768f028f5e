#!/usr/bin/env bash
# Stops the nova-compute scripts/start-nova-compute.sh started as HOST beside the control plane in
# STATE_DIR, its privsep helpers, and the domains it left in libvirt (those whose files are under
# its instances directory: instance names repeat across control planes). Idempotent.
#
# Usage: scripts/stop-nova-compute.sh STATE_DIR HOST
set -euo pipefail

readonly WAIT_SECONDS=20
readonly URI=qemu:///system

die() {
    echo "stop-nova-compute: $*" >&2
    exit 1
}

(($# == 2)) || die "usage: $0 STATE_DIR HOST"
readonly HOST=$2
COMPUTE_DIR=$1/compute-$HOST
if [[ ! -d $COMPUTE_DIR ]]; then
    echo "stop-nova-compute: no '$COMPUTE_DIR'; nothing to stop."
    exit 0
fi
COMPUTE_DIR=$(cd "$COMPUTE_DIR" && pwd -P)
readonly COMPUTE_DIR
readonly PID_FILE=$COMPUTE_DIR/nova-compute.pid

if [[ -s $PID_FILE ]]; then
    pid=$(cat "$PID_FILE")
    [[ $pid =~ ^[0-9]+$ ]] || die "'$PID_FILE' does not hold a pid: '$pid'."
    if kill -0 "$pid" 2>/dev/null && grep -q nova-compute "/proc/$pid/cmdline" 2>/dev/null; then
        # setsid made it a process-group leader: SIGTERM to the group.
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
        for ((i = 0; i < WAIT_SECONDS * 10; i++)); do
            [[ -n $(pgrep -g "$pid") ]] || break
            sleep 0.1
        done
        if [[ -n $(pgrep -g "$pid") ]]; then
            kill -KILL -- "-$pid" 2>/dev/null || true
            echo "stop-nova-compute: nova-compute '$HOST' (pid $pid) ignored SIGTERM for ${WAIT_SECONDS}s; killed it." >&2
        else
            echo "stop-nova-compute: stopped nova-compute '$HOST' (pid $pid)."
        fi
    fi
    rm -f "$PID_FILE"
fi

# The privsep daemons leave nova-compute's process group (they daemonize); they are known by the
# configuration file they were started with.
for helper in $(pgrep -f "privsep-helper .*--config-file $COMPUTE_DIR/nova-compute.conf" || true); do
    kill -TERM "$helper" 2>/dev/null || true
done

if virsh -c "$URI" version >/dev/null 2>&1; then
    for domain in $(virsh -c "$URI" list --all --name); do
        if virsh -c "$URI" dumpxml "$domain" 2>/dev/null | grep -q "$COMPUTE_DIR/instances/"; then
            virsh -c "$URI" destroy "$domain" >/dev/null 2>&1 || true
            virsh -c "$URI" undefine --nvram "$domain" >/dev/null 2>&1 ||
                virsh -c "$URI" undefine "$domain" >/dev/null 2>&1 || true
            echo "stop-nova-compute: removed domain '$domain' that nova-compute '$HOST' left."
        fi
    done
fi
