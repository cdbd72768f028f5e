# shellcheck shell=bash
# shellcheck disable=SC2034  # the constants are used by the scripts that source this file
# Shared by the kiln test-guest builders (build-guest.sh: BIOS/syslinux, build-uefi-guest.sh: UEFI
# unified kernel image). Sourced, never run: it only defines constants and functions. The sourcing
# script must define die() first and run under 'set -euo pipefail'.
#
# What lives here is everything both guests must agree on: the kernel and its modules, the busybox
# initramfs with the /init that prints the KILN-* console protocol (documented in build-guest.sh),
# and the kernel command line. Both builders list this file among their inputs, so editing /init
# here rebuilds both images.
#
# Environment overrides (both builders):
#   KILN_GUEST_KERNEL   path to a vmlinuz (default: newest /boot/vmlinuz-*-cloud-amd64; the cloud flavour
#                       is small and has the virtio drivers we need as modules)
#   KILN_GUEST_BUSYBOX  path to a static busybox (default: /bin/busybox from busybox-static)

# Path of this file, for the builders' up-to-date checks.
GUEST_COMMON_SH=${BASH_SOURCE[0]}
readonly GUEST_COMMON_SH
# The guest's network side (copied into the initramfs; inputs of both builders too).
GUEST_NETWORK_FILES=("${GUEST_COMMON_SH%/*}/kiln-net.sh" "${GUEST_COMMON_SH%/*}/json-flat.awk"
    "${GUEST_COMMON_SH%/*}/udhcpc-apply.sh")
readonly GUEST_NETWORK_FILES

# Load order matters: insmod does no dependency resolution. virtio_blk is all the tests need to see
# disks; button + evdev are what let busybox acpid notice an ACPI power button press.
# failover..virtio_net give the guest its NICs; scsi_common..sr_mod, then isofs, let it read the
# config drive, a CD-ROM on IDE (the cloud kernel has no AHCI driver).
readonly MODULES=(virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk
    button evdev failover net_failover virtio_net scsi_common scsi_mod libata ata_piix cdrom sr_mod
    isofs)
# loglevel=4 keeps kernel chatter (hot-plug notices are KERN_INFO) from interleaving with the KILN-*
# lines, while real errors still reach the console. mitigations=off shaves a little off every syscall
# under TCG, where the guest is not a security boundary worth paying for.
readonly KERNEL_CMDLINE="console=ttyS0 loglevel=4 mitigations=off"

# Sets kernel, kernel_version and MODULE_DIR.
guest_find_kernel() {
    kernel=${KILN_GUEST_KERNEL:-}
    if [[ -z $kernel ]]; then
        local candidates
        shopt -s nullglob
        candidates=(/boot/vmlinuz-*-cloud-amd64)
        shopt -u nullglob
        kernel=$(printf '%s\n' "${candidates[@]}" | sort -V | tail -n 1)
        [[ -n $kernel ]] || die "no /boot/vmlinuz-*-cloud-amd64 found; install linux-image-cloud-amd64 or set KILN_GUEST_KERNEL."
    fi
    [[ -r $kernel ]] || die "kernel '$kernel' is not readable."
    kernel_version=${kernel##*/vmlinuz-}
    declare -gr MODULE_DIR=/lib/modules/$kernel_version
    [[ -r $MODULE_DIR/modules.dep ]] || die "no modules for kernel '$kernel_version' in '$MODULE_DIR'."
}

# Sets busybox.
guest_find_busybox() {
    busybox=${KILN_GUEST_BUSYBOX:-/bin/busybox}
    [[ -x $busybox ]] || die "busybox '$busybox' not found; install busybox-static."
    # A dynamically linked busybox would need its libraries in the initramfs too.
    if ldd "$busybox" >/dev/null 2>&1; then
        die "busybox '$busybox' is dynamically linked; install busybox-static."
    fi
}

# Sets module_files. Needs guest_find_kernel first.
guest_find_modules() {
    # Resolve each module to its file through modules.dep (the authoritative list for this kernel) and
    # accept built-ins, which differ between kernel flavours and releases.
    local module rel
    module_files=()
    for module in "${MODULES[@]}"; do
        rel=$(awk -F: -v m="$module" '{ n = $1; sub(/.*\//, "", n); sub(/\.ko(\.(xz|zst|gz))?$/, "", n);
                                        gsub(/-/, "_", n); if (n == m) { print $1; exit } }' "$MODULE_DIR/modules.dep")
        if [[ -n $rel ]]; then
            module_files+=("$MODULE_DIR/$rel")
        elif grep -Eq "/$module\.ko$" "$MODULE_DIR/modules.builtin" 2>/dev/null; then
            : # built into the kernel; /init tolerates the missing file
        else
            die "module '$module' is neither a file nor built into kernel '$kernel_version'."
        fi
    done
}

# guest_build_initramfs WORKDIR: writes WORKDIR/initrd.gz (gzip'd newc cpio), staging the tree in
# WORKDIR/root. Needs the three guest_find_* functions first, and cpio, gzip.
guest_build_initramfs() {
    local workdir=$1
    local root=$workdir/root file base
    mkdir -p "$root"/{bin,dev,proc,sys,etc/acpi/PWRF,lib/modules,tmp}
    cp "$busybox" "$root/bin/busybox"
    for file in "${module_files[@]}"; do
        base=${file##*/}
        # busybox insmod cannot be trusted with every compression, so hand it plain .ko files.
        case $base in
            *.ko) cp "$file" "$root/lib/modules/$base" ;;
            *.ko.xz) xz -dc "$file" >"$root/lib/modules/${base%.xz}" ;;
            *.ko.gz) gzip -dc "$file" >"$root/lib/modules/${base%.gz}" ;;
            *.ko.zst) zstd -qdc "$file" >"$root/lib/modules/${base%.zst}" ;;
        esac
    done
    printf '%s\n' "${MODULES[@]}" >"$root/lib/modules/load-order"

    local dir=${GUEST_COMMON_SH%/*}
    mkdir -p "$root/lib/kiln" "$root/mnt"
    install -m 755 "$dir/kiln-net.sh" "$root/bin/kiln-net"
    install -m 755 "$dir/udhcpc-apply.sh" "$root/bin/udhcpc-apply"
    install -m 644 "$dir/json-flat.awk" "$root/lib/kiln/json-flat.awk"
    printf '#!/bin/sh\nexec awk -f /lib/kiln/json-flat.awk "$@"\n' >"$root/bin/json-flat"
    chmod 755 "$root/bin/json-flat"

    # busybox acpid runs ./PWRF/00000080 (relative to /etc/acpi) when the power button is pressed.
    cat >"$root/etc/acpi/PWRF/00000080" <<'EOF'
#!/bin/sh
echo "KILN-POWER-BUTTON" >/dev/ttyS0
sync
poweroff -f
EOF
    chmod 755 "$root/etc/acpi/PWRF/00000080"

    cat >"$root/init" <<'EOF'
#!/bin/busybox sh
# kiln test guest. PID 1 for the whole life of the VM: if this script exits, the kernel panics.
# Every KILN-* line is a contract with the integration tests; change them together.

/bin/busybox --install -s /bin
export PATH=/bin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
# devtmpfs gives us /dev/vd* nodes for boot-time and hot-plugged disks without running mdev.
mount -t devtmpfs devtmpfs /dev

# Write straight to the first serial port: /dev/console follows whatever console= came last on the
# kernel command line, and the tests only ever read ttyS0.
exec </dev/null >/dev/ttyS0 2>&1

while read -r module; do
    # A failure is fine when the driver is built in (no file) or already loaded.
    [ -f "/lib/modules/$module.ko" ] && insmod "/lib/modules/$module.ko" 2>/dev/null
done </lib/modules/load-order

# ACPI power button -> /etc/acpi/PWRF/00000080, so 'virsh shutdown' works without a guest agent.
if ls /dev/input/event* >/dev/null 2>&1; then
    acpid -l /dev/null
fi

if [ -d /sys/firmware/efi ]; then
    echo "KILN-BOOT firmware=uefi"
else
    echo "KILN-BOOT firmware=bios"
fi

# NICs and the config drive (tests/guest/kiln-net.sh documents its KILN-* lines).
kiln-net boot

# ----------------------------------------------------------------- per-disk hooks
# Each hook is a function taking the disk name (vda, vdb, ...). Hooks run once per disk when it is
# first seen: at boot before KILN-READY, and for hot-plugged disks right after KILN-DISK-ADDED. To add
# a behaviour, write a function and append its name to DISK_HOOKS.

# Volume tests write a line "KILN-MARK:<anything>" into the first 4 KiB of a volume; echoing it back
# proves the guest sees that very volume, not just a disk of the right size. vda is the boot disk.
hook_find_marker() {
    [ "$1" = vda ] && return 0
    dd if="/dev/$1" bs=4096 count=1 2>/dev/null |
        grep -ao '^KILN-MARK:[[:print:]]*' |
        sed "s/^/KILN-FOUND $1 /"
}

# The guest writes too: a line "KILN-WRITE:<text>" at the start of a volume (put there by a test
# from the host) makes the guest replace it with "KILN-MARK:<text>", synced to the volume. A later
# guest (another instance, after this one is deleted) then reports it with hook_find_marker, which
# proves the data went through the guest's disk to the volume and outlived the instance.
hook_write_marker() {
    [ "$1" = vda ] && return 0
    text=$(dd if="/dev/$1" bs=4096 count=1 2>/dev/null | grep -ao '^KILN-WRITE:[[:print:]]*' |
        head -n 1)
    [ -n "$text" ] || return 0
    text=${text#KILN-WRITE:}
    # A whole 4 KiB block, zero-padded, so no trace of the request is left behind.
    { printf 'KILN-MARK:%s\n' "$text"; dd if=/dev/zero bs=4096 count=1 2>/dev/null; } |
        dd of="/dev/$1" bs=4096 count=1 iflag=fullblock conv=fsync 2>/dev/null &&
        echo "KILN-WROTE $1 KILN-MARK:$text"
}

# The root disk carries a mark too, 100 MiB in (past the 32 MiB image, so the boot files are
# untouched): a guest that finds none writes one with a random id and says KILN-ROOT-WROTE; a guest
# that finds one (an instance launched from a snapshot) says KILN-ROOT-FOUND with that id.
hook_root_marker() {
    [ "$1" = vda ] || return 0
    disk_bytes vda
    [ "$bytes" -gt $((101 * 1024 * 1024)) ] || return 0
    found=$(dd if=/dev/vda bs=1M skip=100 count=1 2>/dev/null | head -c 64 |
        grep -ao '^KILN-ROOT:[0-9a-f-]*' | head -n 1)
    if [ -n "$found" ]; then
        echo "KILN-ROOT-FOUND ${found#KILN-ROOT:}"
        return 0
    fi
    id=$(cat /proc/sys/kernel/random/uuid)
    { printf 'KILN-ROOT:%s\n' "$id"; dd if=/dev/zero bs=4096 count=1 2>/dev/null; } |
        dd of=/dev/vda bs=4096 count=1 seek=25600 iflag=fullblock conv=fsync,notrunc 2>/dev/null &&
        echo "KILN-ROOT-WROTE $id"
}

# The ephemeral disk (serial "vdb": a blank disk kiln made, never a volume) carries a mark that a
# delete must purge: 1 MiB of "KILN-EPH:<id>" lines at its start, synced, and KILN-EPH-WROTE <id> on
# the console. The console never shows the mark itself, so a test that scans the host's storage for
# it cannot mistake the console log (which lives beside the disks) for the disk's data. A guest that
# finds a mark (the same instance after a stop and start) says KILN-EPH-FOUND <id>.
hook_ephemeral_marker() {
    serial=""
    read -r serial <"/sys/block/$1/serial" 2>/dev/null
    [ "$serial" = vdb ] || return 0
    found=$(dd if="/dev/$1" bs=4096 count=1 2>/dev/null | grep -ao '^KILN-EPH:[0-9a-f-]*' | head -n 1)
    if [ -n "$found" ]; then
        echo "KILN-EPH-FOUND ${found#KILN-EPH:}"
        return 0
    fi
    id=$(cat /proc/sys/kernel/random/uuid)
    yes "KILN-EPH:$id" | head -c 1048576 |
        dd of="/dev/$1" bs=65536 iflag=fullblock conv=fsync 2>/dev/null &&
        echo "KILN-EPH-WROTE $id"
}

DISK_HOOKS="hook_write_marker hook_find_marker hook_root_marker hook_ephemeral_marker"
# ----------------------------------------------------------------- end of per-disk hooks

run_disk_hooks() {
    # The sysfs entry can show up a moment before devtmpfs has created the node.
    tries=0
    while [ ! -b "/dev/$1" ] && [ $tries -lt 20 ]; do
        usleep 50000
        tries=$((tries + 1))
    done
    for hook in $DISK_HOOKS; do
        "$hook" "$1"
    done
}

# Sets $bytes for disk $1; the sysfs size is always in 512-byte sectors, whatever the block size.
disk_bytes() {
    sectors=0
    read -r sectors <"/sys/block/$1/size" 2>/dev/null
    bytes=$((sectors * 512))
}

# Known disks and their last size live in $known and in size_<name> variables (vd names are valid
# shell identifiers), so each poll costs one glob and one read per disk: no forks in the steady state.
known=""
for path in /sys/block/vd*; do
    [ -e "$path" ] || continue
    disk=${path##*/}
    disk_bytes "$disk"
    echo "KILN-DISK $disk $bytes"
    eval "size_$disk=$bytes"
    known="$known $disk"
    run_disk_hooks "$disk"
done

echo "KILN-READY"

while :; do
    sleep 1
    kiln-net poll
    current=""
    for path in /sys/block/vd*; do
        [ -e "$path" ] || continue
        disk=${path##*/}
        current="$current $disk"
        disk_bytes "$disk"
        case " $known " in
            *" $disk "*)
                previous=""
                eval "previous=\$size_$disk"
                if [ "$bytes" != "$previous" ]; then
                    echo "KILN-DISK-RESIZED $disk $bytes"
                    eval "size_$disk=$bytes"
                fi
                ;;
            *)
                echo "KILN-DISK-ADDED $disk $bytes"
                eval "size_$disk=$bytes"
                run_disk_hooks "$disk"
                ;;
        esac
    done
    for disk in $known; do
        case " $current " in
            *" $disk "*) ;;
            *) echo "KILN-DISK-REMOVED $disk" ;;
        esac
    done
    known=$current
done
EOF
    chmod 755 "$root/init"

    # -R 0:0 so the guest does not inherit the builder's uid; newc is the only format the kernel unpacks.
    (cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) | gzip -9 >"$workdir/initrd.gz"
}
