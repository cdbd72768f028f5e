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
  # build: kilnd speaks oslo.messaging's RPC to nova-conductor and nova-scheduler over AMQP
  librabbitmq-dev
  # tests and benchmarks: the OpenStack control plane kilnd joins (scripts/start-openstack.sh):
  # RabbitMQ, nova's API, conductor and scheduler, Placement under uwsgi, the openstack CLI with
  # its placement commands; and Debian's real nova-compute, the peer kilnd is measured against
  # (scripts/start-nova-compute.sh)
  rabbitmq-server nova-api nova-conductor nova-scheduler nova-compute placement-api
  uwsgi uwsgi-plugin-python3 python3-openstackclient python3-osc-placement
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
# The packages enable system-wide services (each UNIT:PACKAGE:USER below); the tests run private
# ones on loopback (scripts/start-glance.sh, start-tgtd.sh, start-openstack.sh), and nothing may
# listen on the default ports (5672, 4369, 8774, 8775, 8778, 9292, 3260) afterwards. Where systemd
# runs, the units are disabled and stopped. Without systemd, invoke-rc.d may have started a fresh
# package's init script (unless a policy-rc.d forbade it): it is stopped again, and whatever still
# runs as the package's own system user (RabbitMQ's beam.smp and the epmd it spawned, nova's and
# placement's daemons) is ended. The tests' own services run as root and are not touched.
SYSTEM_SERVICES=(glance-api:glance-api:glance tgt:tgt:
  rabbitmq-server:rabbitmq-server:rabbitmq epmd.socket:rabbitmq-server: epmd.service:rabbitmq-server:
  nova-api:nova-api:nova nova-api-metadata:nova-api:nova nova-conductor:nova-conductor:nova
  nova-scheduler:nova-scheduler:nova nova-compute:nova-compute:nova
  placement-api:placement-api:placement)
stray_users=()
for entry in "${SYSTEM_SERVICES[@]}"; do
  IFS=: read -r unit package user <<<"$entry"
  if [[ -d /run/systemd/system ]]; then
    if systemctl is-enabled "$unit" >/dev/null 2>&1 || systemctl is-active "$unit" >/dev/null 2>&1; then
      systemctl disable --now "$unit" >/dev/null 2>&1 || true
    fi
  elif [[ " ${missing[*]} " == *" $package "* ]]; then
    [[ ! -x /etc/init.d/$unit ]] || /etc/init.d/"$unit" stop >/dev/null 2>&1 || true
    [[ -z $user ]] || stray_users+=("$user")
  fi
done
for user in $(printf '%s\n' "${stray_users[@]}" | sort -u); do
  id -u "$user" >/dev/null 2>&1 || continue
  for signal in TERM KILL; do
    mapfile -t pids < <(pgrep -u "$user" || true)
    ((${#pids[@]} > 0)) || break
    kill -"$signal" "${pids[@]}" 2>/dev/null || true
    sleep 1
  done
done
# The tests need only cloud-init's Python code. A host that had no cloud-init must not start
# running it at its next boot; a host that had it (a cloud VM) keeps it as it was.
if [[ " ${missing[*]} " == *" cloud-init "* ]]; then
  touch /etc/cloud/cloud-init.disabled
fi
echo "install-deps: done"
