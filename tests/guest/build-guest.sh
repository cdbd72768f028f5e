#!/usr/bin/env bash
# Build the kiln integration-test guest: a tiny BIOS-bootable raw disk image whose only job is to boot
# fast under TCG and report what it sees on the serial console in lines tests can grep.
#
# Usage: tests/guest/build-guest.sh OUTDIR      -> OUTDIR/kiln-test-guest.raw (path printed last)
#
# Layout (32 MiB raw, about half of it free):
#   LBA 0        syslinux mbr.bin + one bootable MBR partition (type 0x0e, FAT16 LBA)
#   1 MiB..end   FAT filesystem with ldlinux.sys/ldlinux.c32, syslinux.cfg, vmlinuz, initrd.gz and a
#                startup.nsh that lets OVMF boot the same disk through its EFI shell (see below)
# The VM boots it like a real cloud image (SeaBIOS -> MBR -> syslinux -> kernel), not by direct kernel
# boot, so the launch path under test is the same one a customer image takes.
#
# Everything is built in user space (mkfs.fat -C, syslinux's mtools installer, mcopy, cpio): no loop
# devices, no mounts, no root needed, so it also runs in unprivileged CI containers.
#
# Environment overrides:
#   KILN_GUEST_KERNEL   path to a vmlinuz (default: newest /boot/vmlinuz-*-cloud-amd64; the cloud flavour
#                       is small and has the virtio drivers we need as modules)
#   KILN_GUEST_BUSYBOX  path to a static busybox (default: /bin/busybox from busybox-static)
#
# Console protocol printed by the guest's /init (tests parse these; lines end in \r\n on the serial log):
#   KILN-BOOT firmware=bios|uefi
#   KILN-DISK <name> <bytes>               one per /sys/block/vd* at boot, in name order
#   KILN-FOUND <name> <KILN-MARK:...>      per-disk hook output, right after that disk's KILN-DISK line
#   KILN-READY                             boot-time disks listed and their hooks finished
#   KILN-DISK-ADDED <name> <bytes>         hot-plug, polled once a second (hooks run after it)
#   KILN-DISK-REMOVED <name>
#   KILN-DISK-RESIZED <name> <bytes>       capacity change, e.g. after a volume extend
#   KILN-POWER-BUTTON                      ACPI power button pressed (virsh shutdown); the guest powers off
set -euo pipefail

die() {
    echo "build-guest: $*" >&2
    exit 1
}

[[ $# -eq 1 ]] || die "usage: $0 OUTDIR"
readonly OUTDIR=$1
readonly IMAGE_NAME="kiln-test-guest.raw"
readonly IMAGE_MIB=32
# Partition starts at 1 MiB like every modern partitioner, which keeps the FAT cluster-aligned.
readonly PART_START_SECTOR=2048
readonly SYSLINUX_MBR=/usr/lib/syslinux/mbr/mbr.bin
readonly SYSLINUX_BIOS_MODULES=/usr/lib/syslinux/modules/bios
# Load order matters: insmod does no dependency resolution. virtio_blk is all the tests need to see
# disks; button + evdev are what let busybox acpid notice an ACPI power button press.
readonly MODULES=(virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk
    button evdev)
# loglevel=4 keeps kernel chatter (hot-plug notices are KERN_INFO) from interleaving with the KILN-*
# lines, while real errors still reach the console. mitigations=off shaves a little off every syscall
# under TCG, where the guest is not a security boundary worth paying for.
readonly KERNEL_CMDLINE="console=ttyS0 loglevel=4 mitigations=off"

kernel=${KILN_GUEST_KERNEL:-}
if [[ -z $kernel ]]; then
    shopt -s nullglob
    candidates=(/boot/vmlinuz-*-cloud-amd64)
    shopt -u nullglob
    kernel=$(printf '%s\n' "${candidates[@]}" | sort -V | tail -n 1)
    [[ -n $kernel ]] || die "no /boot/vmlinuz-*-cloud-amd64 found; install linux-image-cloud-amd64 or set KILN_GUEST_KERNEL."
fi
[[ -r $kernel ]] || die "kernel '$kernel' is not readable."
kernel_version=${kernel##*/vmlinuz-}
readonly MODULE_DIR=/lib/modules/$kernel_version
[[ -r $MODULE_DIR/modules.dep ]] || die "no modules for kernel '$kernel_version' in '$MODULE_DIR'."

busybox=${KILN_GUEST_BUSYBOX:-/bin/busybox}
[[ -x $busybox ]] || die "busybox '$busybox' not found; install busybox-static."
# A dynamically linked busybox would need its libraries in the initramfs too.
if ldd "$busybox" >/dev/null 2>&1; then
    die "busybox '$busybox' is dynamically linked; install busybox-static."
fi

for tool in mkfs.fat mcopy syslinux cpio gzip; do
    command -v "$tool" >/dev/null || die "'$tool' is missing; install dosfstools, mtools, syslinux, cpio, gzip."
done
[[ -r $SYSLINUX_MBR ]] || die "'$SYSLINUX_MBR' is missing; install syslinux-common."

# Resolve each module to its file through modules.dep (the authoritative list for this kernel) and
# accept built-ins, which differ between kernel flavours and releases.
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

mkdir -p "$OUTDIR"
readonly OUTPUT="$OUTDIR/$IMAGE_NAME"

# Skip the ~10 s rebuild when nothing that goes into the image changed. This script carries /init
# inline, so it is an input too.
if [[ -s $OUTPUT ]]; then
    newer=$(find "$0" "$kernel" "$busybox" "$SYSLINUX_MBR" "${module_files[@]}" -newer "$OUTPUT" -print -quit)
    if [[ -z $newer ]]; then
        echo "$OUTPUT"
        exit 0
    fi
fi

# Build next to the output so the final mv is a same-filesystem rename: readers (and concurrent
# builders) see either the old image or the new one, never a half-written file.
workdir=$(mktemp -d "$OUTDIR/.kiln-guest-build.XXXXXX")
trap 'rm -rf "$workdir"' EXIT

# ---------------------------------------------------------------- initramfs
root=$workdir/root
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

DISK_HOOKS="hook_find_marker"
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

# ---------------------------------------------------------------- boot partition
cat >"$workdir/syslinux.cfg" <<EOF
# Mirror syslinux to the serial port so a boot that dies before the kernel still leaves a trace in
# the console log; no prompt and no timeout because every second counts under TCG.
SERIAL 0 115200
DEFAULT kiln
PROMPT 0
TIMEOUT 0
LABEL kiln
  LINUX /vmlinuz
  INITRD /initrd.gz
  APPEND $KERNEL_CMDLINE
EOF

part=$workdir/part.img
part_kib=$(((IMAGE_MIB * 1024) - (PART_START_SECTOR / 2)))
# -h: hidden sectors = partition offset, which syslinux's boot sector uses to find itself on disk.
mkfs.fat -C -F 16 -h "$PART_START_SECTOR" -n KILNGUEST "$part" "$part_kib" >/dev/null
syslinux --install "$part"
mcopy -i "$part" "$kernel" ::/vmlinuz
mcopy -i "$part" "$workdir/initrd.gz" ::/initrd.gz
mcopy -i "$part" "$workdir/syslinux.cfg" ::/syslinux.cfg
# Not required, but free: under OVMF (no BOOTX64.EFI on the disk) the firmware falls back to its
# built-in shell, which runs startup.nsh, and the kernel's EFI stub boots with our command line. That
# lets UEFI tests use the same image; it costs the shell's 5 s startup countdown (~11 s to KILN-READY
# under TCG). fs0: is the boot disk as long as no other disk ahead of it carries a FAT filesystem.
printf 'fs0:\r\n\\vmlinuz %s initrd=\\initrd.gz\r\n' "$KERNEL_CMDLINE" >"$workdir/startup.nsh"
mcopy -i "$part" "$workdir/startup.nsh" ::/startup.nsh
# syslinux 6 needs ldlinux.c32 next to ldlinux.sys; Debian's installer writes both (hidden, hence
# mdir -a), older or differently packaged installers only the .sys.
if ! mdir -a -i "$part" ::/ldlinux.c32 >/dev/null 2>&1; then
    mcopy -i "$part" "$SYSLINUX_BIOS_MODULES/ldlinux.c32" ::/ldlinux.c32
fi

# ---------------------------------------------------------------- whole disk
image=$workdir/$IMAGE_NAME
# Boot code (first 440 bytes) from syslinux: it chain-loads the active partition's boot sector.
dd if="$SYSLINUX_MBR" of="$image" bs=440 count=1 conv=notrunc status=none
truncate -s "$((PART_START_SECTOR * 512))" "$image"

# One MBR entry at offset 446: active, type 0x0e (FAT16, LBA), CHS fields set to the "use LBA"
# sentinel, then little-endian start LBA and sector count. Written by hand because sfdisk is not
# part of a minimal Debian and busybox fdisk is interactive.
le32() {
    printf '\\x%02x\\x%02x\\x%02x\\x%02x' $(($1 & 255)) $((($1 >> 8) & 255)) $((($1 >> 16) & 255)) $((($1 >> 24) & 255))
}
part_sectors=$((part_kib * 2))
entry="\\x80\\xfe\\xff\\xff\\x0e\\xfe\\xff\\xff$(le32 "$PART_START_SECTOR")$(le32 "$part_sectors")"
printf '%b' "$entry" | dd of="$image" bs=1 seek=446 conv=notrunc status=none
printf '\x55\xaa' | dd of="$image" bs=1 seek=510 conv=notrunc status=none
cat "$part" >>"$image"
rm -f "$part"

# Tests boot it through qcow2 overlays as the libvirt-qemu user: the base must be world-readable.
chmod 644 "$image"
mv -f "$image" "$OUTPUT"
echo "$OUTPUT"
