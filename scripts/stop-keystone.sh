#!/usr/bin/env bash
# Stops the Keystone that scripts/start-keystone.sh started from STATE_DIR.
# Usage: scripts/stop-keystone.sh STATE_DIR
set -euo pipefail

readonly WAIT_SECONDS=20
(($# == 1)) || { echo "usage: $0 STATE_DIR" >&2; exit 1; }
readonly PID_FILE="$1/keystone.pid"
if [[ ! -s $PID_FILE ]]; then
    echo "stop-keystone: no pid file in '$1'; nothing to stop."
    exit 0
fi
pid=$(cat "$PID_FILE")
if ! kill -0 "$pid" 2>/dev/null || ! grep -q python3 "/proc/$pid/cmdline" 2>/dev/null; then
    rm -f "$PID_FILE"
    echo "stop-keystone: Keystone (pid $pid) was not running."
    exit 0
fi
# setsid made it a process-group leader: SIGTERM to the group ends it and anything it started.
kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
for ((i = 0; i < WAIT_SECONDS * 4; i++)); do
    if ! kill -0 "$pid" 2>/dev/null; then
        rm -f "$PID_FILE"
        echo "stop-keystone: stopped Keystone (pid $pid)."
        exit 0
    fi
    sleep 0.25
done
kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
rm -f "$PID_FILE"
echo "stop-keystone: Keystone (pid $pid) ignored SIGTERM for ${WAIT_SECONDS}s; killed it." >&2
