#!/usr/bin/env bash
# Stops the Glance that scripts/start-glance.sh started from STATE_DIR. Idempotent: a Glance that is
# not running is not an error. The state (database, images, log) stays for inspection.
#
# Usage: scripts/stop-glance.sh STATE_DIR
set -euo pipefail

readonly WAIT_SECONDS=15

die() {
    echo "stop-glance: $*" >&2
    exit 1
}

(($# == 1)) || die "usage: $0 STATE_DIR"
readonly PID_FILE="$1/glance-api.pid"

if [[ ! -s $PID_FILE ]]; then
    echo "stop-glance: no pid file in '$1'; nothing to stop."
    exit 0
fi
pid=$(cat "$PID_FILE")
[[ $pid =~ ^[0-9]+$ ]] || die "'$PID_FILE' does not hold a pid: '$pid'."

# Only signal the pid if it still is a glance-api (the pid may have been reused since).
if ! kill -0 "$pid" 2>/dev/null || ! grep -q glance-api "/proc/$pid/cmdline" 2>/dev/null; then
    rm -f "$PID_FILE"
    echo "stop-glance: glance-api (pid $pid) was not running."
    exit 0
fi

# glance-api forks its worker into the same process group (setsid made the parent the leader):
# SIGTERM to the group stops parent and workers together.
kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
for ((i = 0; i < WAIT_SECONDS * 4; i++)); do
    if ! kill -0 "$pid" 2>/dev/null; then
        rm -f "$PID_FILE"
        echo "stop-glance: stopped glance-api (pid $pid)."
        exit 0
    fi
    sleep 0.25
done
kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
rm -f "$PID_FILE"
echo "stop-glance: glance-api (pid $pid) ignored SIGTERM for ${WAIT_SECONDS}s; killed it." >&2
