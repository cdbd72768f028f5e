#!/usr/bin/env bash
# Starts a private tgt iSCSI target daemon (tgtd, fully userspace) on loopback for kiln's volume tests:
# Cinder's LVM/tgt backend exports volumes through this same daemon, and QEMU's built-in initiator
# (libiscsi, from qemu-block-extra) talks to it without the kernel's iscsi_tcp, which test boxes lack.
# Installs nothing: scripts/install-deps.sh must list `tgt`.
#
# Usage: scripts/start-tgtd.sh STATE_DIR CONTROL_PORT ISCSI_PORT
#   CONTROL_PORT (1..32767) is not a TCP port: tgtd only uses it to name its management socket,
#   /run/tgtd/socket.CONTROL_PORT, so each test picks its own and never touches the host's tgtd (0).
#   ISCSI_PORT is the TCP port of the one portal, 127.0.0.1:ISCSI_PORT.
#   Prints the portal (127.0.0.1:ISCSI_PORT) on stdout once tgtd answers and listens there.
#   Writes STATE_DIR/tgtd.pid, STATE_DIR/tgtd.control-port (stop-tgtd.sh and tgt-volume.sh read it),
#   STATE_DIR/tgtd.log. Create volumes with scripts/tgt-volume.sh; stop with scripts/stop-tgtd.sh.
set -euo pipefail

readonly WAIT_SECONDS=10

die() {
    echo "start-tgtd: $*" >&2
    exit 1
}

(($# == 3)) || die "usage: $0 STATE_DIR CONTROL_PORT ISCSI_PORT"
# tgtd keeps the control port in a C short and refuses anything above 32767.
if ! [[ $2 =~ ^[0-9]{1,5}$ ]] || (($2 < 1 || $2 > 32767)); then
    die "control port '$2' is not in 1..32767 (tgtd names its socket after it; 0 is the host's tgtd)."
fi
if ! [[ $3 =~ ^[0-9]{1,5}$ ]] || (($3 < 1 || $3 > 65535)); then
    die "iSCSI port '$3' is not a TCP port number."
fi
readonly CONTROL_PORT=$2
readonly ISCSI_PORT=$3
mkdir -p "$1"
STATE_DIR=$(cd "$1" && pwd -P)
readonly STATE_DIR
readonly PID_FILE="$STATE_DIR/tgtd.pid"
readonly CONTROL_PORT_FILE="$STATE_DIR/tgtd.control-port"
readonly LOG_FILE="$STATE_DIR/tgtd.log"
readonly PORTAL="127.0.0.1:$ISCSI_PORT"

for tool in tgtd tgtadm timeout; do
    command -v "$tool" >/dev/null || die "'$tool' is not installed; run scripts/install-deps.sh (it lists tgt)."
done

tgtadm_answers() {
    # A wedged daemon must not hang the caller: tgtadm itself has no timeout.
    timeout 5 tgtadm -C "$CONTROL_PORT" --lld iscsi --op show --mode target >/dev/null 2>&1
}

portal_accepts() {
    # bash's /dev/tcp: no nc/ss dependency. The subshell keeps the fd from leaking into this script.
    (exec 3<>"/dev/tcp/127.0.0.1/$ISCSI_PORT") 2>/dev/null
}

if [[ -s $PID_FILE ]] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
    die "a tgtd from '$STATE_DIR' already runs (pid $(cat "$PID_FILE")); stop it with scripts/stop-tgtd.sh."
fi
if tgtadm_answers; then
    die "another tgtd already owns control port $CONTROL_PORT (/run/tgtd/socket.$CONTROL_PORT); pick another."
fi
# Checked before the start because tgtd does not fail when it cannot bind its portal: it logs
# "unable to bind server socket", falls back to its default portals 0.0.0.0:3260 and [::]:3260 and
# keeps running, which would expose the test volumes on every interface.
if portal_accepts; then
    die "something already listens on $PORTAL; pick another iSCSI port."
fi

# -f keeps tgtd in the foreground so $! is its pid (no double fork to chase); setsid detaches it from
# the caller's process group so it outlives this script and the test harness's Ctrl-C.
setsid tgtd -f -C "$CONTROL_PORT" --iscsi "portal=$PORTAL" >>"$LOG_FILE" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$PID_FILE"
echo "$CONTROL_PORT" >"$CONTROL_PORT_FILE"

kill_and_die() {
    # wait reaps it here, and keeps bash from reporting the job as "Killed".
    { kill -KILL "$pid" && wait "$pid"; } 2>/dev/null || true
    rm -f "$PID_FILE"
    die "$*"
}

for ((i = 0; i < WAIT_SECONDS * 10; i++)); do
    if ! kill -0 "$pid" 2>/dev/null; then
        rm -f "$PID_FILE"
        die "tgtd exited during start; see $LOG_FILE."
    fi
    if tgtadm_answers; then
        # The fallback described above is only visible here: the portal list must be exactly ours.
        portals=$(timeout 5 tgtadm -C "$CONTROL_PORT" --lld iscsi --op show --mode portal 2>&1) ||
            kill_and_die "tgtd answers but 'tgtadm --op show --mode portal' failed: $portals"
        if [[ $portals != "Portal: $PORTAL,1" ]]; then
            kill_and_die "tgtd did not bind $PORTAL (its portals: $(echo "$portals" | tr '\n' ' ')); see $LOG_FILE."
        fi
        portal_accepts || kill_and_die "tgtd lists $PORTAL but nothing accepts connections there; see $LOG_FILE."
        echo "$PORTAL"
        exit 0
    fi
    sleep 0.1
done
kill_and_die "tgtd (pid $pid) did not answer on control port $CONTROL_PORT within ${WAIT_SECONDS}s; killed it. See $LOG_FILE."
