#!/usr/bin/env bash
# Installs everything kiln needs to build, run and test on Debian 12, from Debian's archive only.
# Idempotent: a second run installs nothing and takes a second.
set -euo pipefail

[[ $(id -u) -eq 0 ]] || { echo "install-deps: run as root" >&2; exit 1; }

PACKAGES=(
  # build
  build-essential cmake ninja-build pkg-config clang-format clang-tidy dpkg-dev
  libvirt-dev libboost-dev libboost-program-options-dev nlohmann-json3-dev libyaml-cpp-dev
  libpugixml-dev libsqlite3-dev libcurl4-openssl-dev libsystemd-dev libssl-dev libfmt-dev catch2
  # build: the config drive ISO is written in-process by libisofs
  libisofs-dev
  # build, drivers/network: taps and bridges over rtnetlink, the anti-spoofing filter in-process
  libnl-route-3-dev libnftables-dev
  # run: libvirt with QEMU (TCG and KVM), its iSCSI initiator, qemu-img, UEFI firmware
  libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils qemu-block-extra ovmf
  # tests: the guest image is built from Debian's cloud kernel and busybox, booted by syslinux
  linux-image-cloud-amd64 busybox-static cpio syslinux syslinux-common mtools dosfstools
  # tests: the UEFI-only guest (GPT, ESP, a unified kernel image on systemd's EFI stub)
  systemd-boot-efi fdisk
  sqlite3 procps curl
  # tests: config drives are read back with xorriso and isoinfo (genisoimage ships it, and makes
  # nova's own images to compare), then by cloud-init's own ConfigDrive reader (python3 module)
  xorriso genisoimage cloud-init
  # tests: drivers/network's host test checks the filter chains with `nft -j list chain` and makes
  # its veth pairs with `ip` (iproute2), inside a private network namespace
  nftables iproute2
  # tests: the network integration tests serve DHCP from dnsmasq inside a namespace they make
  dnsmasq-base
  # tests: the libFuzzer targets (scripts/fuzz.sh) and the API load benchmark (bench/api_load)
  clang libclang-rt-dev wrk
  # tests: a real OpenStack Glance (the image service) and tgt's iSCSI target on loopback
  glance-api tgt
  # tests: a real OpenStack Keystone (identity; the library and keystone-manage only: the
  # `keystone` package would set up Apache and a system-wide service)
  python3-keystone
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The packages enable their own glance-api and tgt services; the tests run private ones on
# loopback, so where systemd runs, the system-wide ones are switched off again.
for unit in glance-api tgt; do
  if [[ -d /run/systemd/system ]] && systemctl is-enabled "$unit" >/dev/null 2>&1; then
    systemctl disable --now "$unit" >/dev/null 2>&1 || true
  fi
done
# The tests need only cloud-init's Python code. A host that had no cloud-init must not start
# running it at its next boot; a host that had it (a cloud VM) keeps it as it was.
if [[ " ${missing[*]} " == *" cloud-init "* ]]; then
  touch /etc/cloud/cloud-init.disabled
fi
echo "install-deps: done"
