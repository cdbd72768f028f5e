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
# The kernel, modules, initramfs (with /init, which prints the protocol below) and command line live in
# guest-common.sh next to this file, shared with build-uefi-guest.sh (the UEFI-only variant).
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
#   KILN-EPH-WROTE <id> / KILN-EPH-FOUND <id>  the ephemeral disk (serial vdb) got, or already had, 1 MiB
#                                          of "KILN-EPH:<id>" lines at its start (the mark itself is never printed)
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
# MODULES, KERNEL_CMDLINE and the guest_* functions.
# shellcheck source=tests/guest/guest-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/guest-common.sh"

guest_find_kernel
guest_find_busybox

for tool in mkfs.fat mcopy syslinux cpio gzip; do
    command -v "$tool" >/dev/null || die "'$tool' is missing; install dosfstools, mtools, syslinux, cpio, gzip."
done
[[ -r $SYSLINUX_MBR ]] || die "'$SYSLINUX_MBR' is missing; install syslinux-common."

guest_find_modules

mkdir -p "$OUTDIR"
readonly OUTPUT="$OUTDIR/$IMAGE_NAME"

# Skip the ~10 s rebuild when nothing that goes into the image changed. The scripts (this one and
# guest-common.sh, which carries /init) are inputs too.
if [[ -s $OUTPUT ]]; then
    newer=$(find "$0" "$GUEST_COMMON_SH" "${GUEST_NETWORK_FILES[@]}" "$kernel" "$busybox" "$SYSLINUX_MBR" "${module_files[@]}" -newer "$OUTPUT" -print -quit)
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
guest_build_initramfs "$workdir"

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
