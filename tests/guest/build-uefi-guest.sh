#!/usr/bin/env bash
# Build the UEFI-only kiln test guest: the same kernel, initramfs and /init as build-guest.sh (all from
# guest-common.sh, so the KILN-* console protocol is identical), packaged the way UEFI cloud images
# are: a GPT disk whose EFI System Partition holds a unified kernel image at the removable-media path.
#
# Usage: tests/guest/build-uefi-guest.sh OUTDIR  -> OUTDIR/kiln-test-guest-uefi.raw (path printed last)
#
# Debian packages needed (on top of build-guest.sh's linux-image-cloud-amd64 busybox-static cpio
# mtools dosfstools): systemd-boot-efi (the EFI stub), fdisk (sfdisk), binutils (objcopy, objdump).
#
# Layout (32 MiB raw, about half of it free):
#   LBA 0         protective MBR (type 0xee) with no boot code: SeaBIOS finds nothing to run
#   LBA 1..33     primary GPT header + entries; backup copy in the last 33 sectors
#   1..31 MiB     one partition, type "EFI System" (C12A7328-F81F-11D2-BA4B-00A0C93EC93B), FAT16,
#                 holding only \EFI\BOOT\BOOTX64.EFI
# BOOTX64.EFI is a unified kernel image (UKI): systemd's EFI stub with the kernel, the initramfs, the
# command line and an os-release added as PE sections. OVMF boots it through the removable-media
# fallback path, so no NVRAM boot entry is needed and a fresh VARS template is enough. Unlike the BIOS
# guest (whose startup.nsh path goes through the EFI shell's 5 s countdown) nothing waits on a timeout.
# The UKI is unsigned: secure-boot firmware with enrolled keys must refuse it.
#
# Everything is built in user space (sfdisk and mkfs.fat on plain files, mtools, objcopy, dd): no loop
# devices, no mounts, no root needed.
#
# Environment overrides: KILN_GUEST_KERNEL and KILN_GUEST_BUSYBOX as for build-guest.sh, plus
#   KILN_GUEST_EFI_STUB  path to a systemd EFI stub (default: /usr/lib/systemd/boot/efi/linuxx64.efi.stub)
set -euo pipefail

die() {
    echo "build-uefi-guest: $*" >&2
    exit 1
}

[[ $# -eq 1 ]] || die "usage: $0 OUTDIR"
readonly OUTDIR=$1
readonly IMAGE_NAME="kiln-test-guest-uefi.raw"
readonly IMAGE_MIB=32
readonly PART_START_SECTOR=2048
readonly ESP_TYPE=C12A7328-F81F-11D2-BA4B-00A0C93EC93B
# Fixed GUIDs keep rebuilds identical in layout (it is a base image: every VM gets its own overlay).
readonly DISK_GUID=6B696C6E-0000-4000-8000-000000000001
readonly ESP_GUID=6B696C6E-0000-4000-8000-000000000002
readonly EFI_STUB=${KILN_GUEST_EFI_STUB:-/usr/lib/systemd/boot/efi/linuxx64.efi.stub}

# MODULES, KERNEL_CMDLINE and the guest_* functions.
# shellcheck source=tests/guest/guest-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/guest-common.sh"

guest_find_kernel
guest_find_busybox

for tool in mkfs.fat mcopy mmd sfdisk objcopy objdump cpio gzip; do
    command -v "$tool" >/dev/null ||
        die "'$tool' is missing; install dosfstools, mtools, fdisk, binutils, cpio, gzip."
done
[[ -r $EFI_STUB ]] || die "EFI stub '$EFI_STUB' is missing; install systemd-boot-efi."

guest_find_modules

mkdir -p "$OUTDIR"
readonly OUTPUT="$OUTDIR/$IMAGE_NAME"

# Skip the rebuild when nothing that goes into the image changed (os-release and the partition layout
# are in this script, /init is in guest-common.sh).
if [[ -s $OUTPUT ]]; then
    newer=$(find "$0" "$GUEST_COMMON_SH" "${GUEST_NETWORK_FILES[@]}" "$kernel" "$busybox" "$EFI_STUB" "${module_files[@]}" \
        -newer "$OUTPUT" -print -quit)
    if [[ -z $newer ]]; then
        echo "$OUTPUT"
        exit 0
    fi
fi

# Build next to the output so the final mv is a same-filesystem rename: readers (and concurrent
# builders) see either the old image or the new one, never a half-written file.
workdir=$(mktemp -d "$OUTDIR/.kiln-uefi-guest-build.XXXXXX")
trap 'rm -rf "$workdir"' EXIT

# ---------------------------------------------------------------- initramfs
guest_build_initramfs "$workdir"

# ---------------------------------------------------------------- unified kernel image
cat >"$workdir/os-release" <<EOF
NAME="kiln test guest"
ID=kiln-test-guest
VERSION_ID=$kernel_version
PRETTY_NAME="kiln test guest (UEFI, kernel $kernel_version)"
EOF
printf '%s' "$KERNEL_CMDLINE" >"$workdir/cmdline"

# The added sections must not overlap the stub's own, and a PE loader wants every section's address
# (RVA) to be a multiple of the image's SectionAlignment. So find where the stub's last section ends
# (its layout changes between systemd releases) and stack ours after it, each start rounded up to a
# page (which is a multiple of SectionAlignment unless that is larger, then we use it).
hex=$(objdump -p "$EFI_STUB" | awk '$1 == "SectionAlignment" { print $2; exit }')
[[ -n $hex ]] || die "'$EFI_STUB' does not look like a PE image (no SectionAlignment)."
align=$((16#$hex))
((align >= 4096)) || align=4096
end=0
while read -r size vma; do
    ((16#$vma + 16#$size > end)) && end=$((16#$vma + 16#$size))
done < <(objdump -h "$EFI_STUB" | awk '$1 ~ /^[0-9]+$/ && NF >= 7 { print $3, $4 }')
((end > 0)) || die "found no sections in '$EFI_STUB'."

objcopy_args=()
add_section() { # NAME FILE: place FILE as section NAME at the next aligned address
    local vma=$(((end + align - 1) / align * align))
    objcopy_args+=(--add-section "$1=$2" --change-section-vma "$(printf '%s=0x%x' "$1" "$vma")")
    end=$((vma + $(stat -Lc %s "$2")))
}
add_section .osrel "$workdir/os-release"
add_section .cmdline "$workdir/cmdline"
add_section .linux "$kernel"
add_section .initrd "$workdir/initrd.gz"
objcopy "${objcopy_args[@]}" "$EFI_STUB" "$workdir/BOOTX64.EFI"

# ---------------------------------------------------------------- disk and EFI System Partition
image=$workdir/$IMAGE_NAME
truncate -s "${IMAGE_MIB}M" "$image"
# No size: sfdisk fills the space before the backup GPT, rounded down to its 1 MiB grain (30 MiB).
sfdisk --quiet --no-reread --no-tell-kernel "$image" >/dev/null <<EOF
label: gpt
label-id: $DISK_GUID
unit: sectors
first-lba: $PART_START_SECTOR
start=$PART_START_SECTOR, type=$ESP_TYPE, uuid=$ESP_GUID, name="EFI System Partition"
EOF
# Read back what sfdisk chose rather than redoing its arithmetic.
read -r part_start part_sectors < <(sfdisk --dump "$image" |
    sed -n 's/.*start= *\([0-9]*\), *size= *\([0-9]*\),.*/\1 \2/p')
[[ $part_start == "$PART_START_SECTOR" && -n $part_sectors ]] || die "unexpected partition table: $(sfdisk --dump "$image")"

part=$workdir/esp.img
# mkfs.fat counts in KiB; an odd last sector stays unused. -h: hidden sectors = partition offset.
# FAT16: the size is below FAT32's minimum cluster count, and UEFI reads FAT12/16/32 alike.
mkfs.fat -C -F 16 -h "$part_start" -n KILN-ESP "$part" "$((part_sectors / 2))" >/dev/null
mmd -i "$part" ::/EFI ::/EFI/BOOT
mcopy -i "$part" "$workdir/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
dd if="$part" of="$image" bs=1M oflag=seek_bytes seek="$((part_start * 512))" conv=notrunc status=none
rm -f "$part"

# Tests boot it through qcow2 overlays as the libvirt-qemu user: the base must be world-readable.
chmod 644 "$image"
mv -f "$image" "$OUTPUT"
echo "$OUTPUT"
