#!/usr/bin/env bash
# Bring up the libvirt daemons kiln's integration tests talk to, on boxes where nobody else does.
#
# CI runners and dev containers boot without systemd as PID 1, so the Debian units that would normally
# socket-activate libvirtd never run. This script starts the daemons by hand when they are missing and is
# a no-op when they already run, so every test entry point can call it unconditionally.
#
# Usage: scripts/start-services.sh        (as root; waits at most ~20 s for qemu:///system to answer)
set -euo pipefail

readonly URI="qemu:///system"
readonly WAIT_SECONDS=20
# libvirtd started with -d has no terminal and, without systemd, no journal: its errors would vanish.
# A file we can point at in the failure message is the difference between a one-line fix and guessing.
readonly LIBVIRTD_LOG="/var/log/libvirt/libvirtd.log"
readonly VIRTLOGD_LOG="/var/log/libvirt/virtlogd.log"

die() {
    echo "start-services: $*" >&2
    exit 1
}

# qemu:///system is the root-owned daemon; as another user libvirtd would quietly start a session
# daemon instead, which is not what the tests expect.
[[ $(id -u) -eq 0 ]] || die "must run as root to start the system libvirtd (current uid $(id -u))."

for tool in virtlogd libvirtd virsh pgrep; do
    command -v "$tool" >/dev/null ||
        die "'$tool' is not installed; install libvirt-daemon-system, libvirt-clients and procps."
done

libvirt_answers() {
    virsh -c "$URI" version >/dev/null 2>&1
}

# Already up (a previous run, another test, or the host's own service manager): touch nothing.
if libvirt_answers; then
    echo "start-services: libvirt already answers on $URI"
    exit 0
fi

if [[ -d /run/systemd/system ]]; then
    # Under systemd the units own the sockets; a hand-started libvirtd would fight them for
    # /run/libvirt/libvirt-sock. Ask systemd instead.
    systemctl start virtlogd.socket libvirtd.socket libvirtd.service ||
        die "systemctl could not start libvirtd; see 'journalctl -u libvirtd'."
else
    # Neither daemon creates its log directory, and libvirtd refuses to start when it cannot open
    # its runtime directory; a fresh container has neither.
    mkdir -p /var/log/libvirt /run/libvirt

    # virtlogd first: libvirtd hands every QEMU's serial/console log to it, so without it a domain
    # with <log file=...> fails to start even though libvirtd itself looks healthy.
    if ! pgrep -x virtlogd >/dev/null; then
        # A failure here may just be a concurrent caller winning the pid-file lock; the readiness
        # check below is the real verdict.
        LIBVIRT_LOG_OUTPUTS="3:file:$VIRTLOGD_LOG" virtlogd -d ||
            echo "start-services: warning: 'virtlogd -d' failed; see $VIRTLOGD_LOG" >&2
    fi

    if ! pgrep -x libvirtd >/dev/null; then
        LIBVIRT_LOG_OUTPUTS="3:file:$LIBVIRTD_LOG" libvirtd -d ||
            echo "start-services: warning: 'libvirtd -d' failed; see $LIBVIRTD_LOG" >&2
    fi
fi

# libvirtd returns from -d before its drivers finish initialising (QEMU capability probing takes a
# few seconds on a cold cache), so wait for an actual answer rather than for the process.
deadline=$((SECONDS + WAIT_SECONDS))
until libvirt_answers; do
    if ((SECONDS >= deadline)); then
        pgrep -x libvirtd >/dev/null || die "libvirtd is not running; see $LIBVIRTD_LOG."
        pgrep -x virtlogd >/dev/null || die "virtlogd is not running; see $VIRTLOGD_LOG."
        die "libvirtd runs but '$URI' did not answer within ${WAIT_SECONDS} s; see $LIBVIRTD_LOG."
    fi
    sleep 0.5
done
echo "start-services: libvirt answers on $URI"
