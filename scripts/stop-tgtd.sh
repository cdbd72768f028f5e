#!/usr/bin/env bash
# Stops the tgtd that scripts/start-tgtd.sh started from STATE_DIR, with targets and sessions present.
# Idempotent: a tgtd that is not running is not an error. Backing files and the log stay for inspection.
#
# Usage: scripts/stop-tgtd.sh STATE_DIR
#
# Why not just SIGTERM: tgtd installs an empty SIGTERM handler, so SIGTERM never stops it (with or without
# targets), and a SIGINT is ignored when the daemon was started from a non-interactive shell. The one
# clean way out is its management API: delete every target (--force drops live sessions), then
# `tgtadm --op delete --mode system`, which tgtd refuses with "invalid request" while any target exists
# and otherwise obeys by leaving its event loop. SIGKILL is the fallback when the daemon does not answer;
# it is safe for a userspace target (the kernel closes the files, the next tgtd reclaims the socket).
set -euo pipefail

readonly WAIT_SECONDS=10
readonly TGTADM_TIMEOUT=5

die() {
    echo "stop-tgtd: $*" >&2
    exit 1
}

(($# == 1)) || die "usage: $0 STATE_DIR"
readonly PID_FILE="$1/tgtd.pid"
readonly CONTROL_PORT_FILE="$1/tgtd.control-port"

if [[ ! -s $PID_FILE ]]; then
    echo "stop-tgtd: no pid file in '$1'; nothing to stop."
    exit 0
fi
pid=$(cat "$PID_FILE")
[[ $pid =~ ^[0-9]+$ ]] || die "'$PID_FILE' does not hold a pid: '$pid'."

# A killed child stays a zombie until its parent reaps it, and kill -0 succeeds on zombies: only a live,
# non-zombie tgtd counts as running.
tgtd_alive() {
    [[ -r /proc/$pid/stat ]] || return 1
    local stat comm state
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    comm=${stat#*(}
    comm=${comm%%)*}
    state=${stat##*) }
    state=${state%% *}
    [[ $comm == tgtd && $state != Z ]]
}

wait_gone() {
    for ((i = 0; i < WAIT_SECONDS * 10; i++)); do
        tgtd_alive || return 0
        sleep 0.1
    done
    return 1
}

# The pid may have been reused since the start: only touch it if it still is a tgtd.
if ! tgtd_alive; then
    rm -f "$PID_FILE"
    echo "stop-tgtd: tgtd (pid $pid) was not running."
    exit 0
fi

graceful=no
if [[ -s $CONTROL_PORT_FILE ]]; then
    control_port=$(cat "$CONTROL_PORT_FILE")
    tgtadm_() { timeout "$TGTADM_TIMEOUT" tgtadm -C "$control_port" --lld iscsi "$@"; }
    # Asked first, so a wedged daemon costs one timeout before the SIGKILL, not one per call.
    if targets=$(tgtadm_ --op show --mode target 2>/dev/null); then
        # Offline so no initiator logs in again between the deletes below.
        tgtadm_ --op update --mode sys --name State -v offline >/dev/null 2>&1 || true
        # Deleting a target also drops its LUNs, ACLs and account bindings. Initiators that still have
        # the LUN open do not get an error: libiscsi keeps reconnecting and their I/O hangs.
        mapfile -t tids < <(sed -n 's/^Target \([0-9]\+\): .*/\1/p' <<<"$targets")
        for tid in "${tids[@]}"; do
            tgtadm_ --op delete --force --mode target --tid "$tid" >/dev/null 2>&1 ||
                echo "stop-tgtd: warning: could not delete target $tid; will kill tgtd." >&2
        done
        if tgtadm_ --op delete --mode system >/dev/null 2>&1 && wait_gone; then
            graceful=yes
        fi
    fi
fi

if [[ $graceful == no ]]; then
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone || die "tgtd (pid $pid) survived SIGKILL for ${WAIT_SECONDS}s (stuck in the kernel?)."
    rm -f "$PID_FILE"
    echo "stop-tgtd: tgtd (pid $pid) did not shut down through tgtadm; killed it." >&2
    exit 0
fi
rm -f "$PID_FILE"
echo "stop-tgtd: stopped tgtd (pid $pid)."
