#!/bin/sh
# kiln test guest, /bin/kiln-net: the guest's network side.
#   kiln-net boot   lists the NICs, finds the config drive (label config-2), prints the identity
#                   it holds and configures the NICs its network_data.json describes
#   kiln-net poll   reports NICs that came or went since the last call (hot-plug) and asks DHCP
#                   for an address on a new one
# KILN-* lines (a contract with tests/integration/network_test.cc):
#   KILN-NIC <ifname> <mac> <mtu>           one per NIC at boot
#   KILN-CONFIG-DRIVE <device> <label>      the config drive was found and mounted
#   KILN-UUID <uuid> / KILN-HOSTNAME <name> from meta_data.json
#   KILN-KEY <name>                         one per public key in meta_data.json
#   KILN-USERDATA <marker>                  the first KILN-USERDATA-MARK... word in user_data
#   KILN-NET <ifname> <mac> <address>/<netmask>   a static address from network_data.json
#   KILN-DHCP <ifname> <address>|none       an address leased by DHCP (or none)
#   KILN-NIC-ADDED <ifname> <mac> <mtu> / KILN-NIC-REMOVED <ifname>   hot-plug
#   KILN-PING-OWN|SPOOF-IP|SPOOF-MAC ok|fail, KILN-SPOOF-DONE   the spoofing test, run when
#                                           user_data holds a line "KILN-SPOOF-TEST <ipv4>"
drive=/mnt/config
state=/tmp/kiln-nics

nics() { for n in /sys/class/net/eth*; do [ -e "$n" ] && echo "${n##*/}"; done; }
ifname_of_mac() {
    for n in $(nics); do
        [ "$(cat "/sys/class/net/$n/address")" = "$1" ] && { echo "$n"; return; }
    done
}
get() { sed -n "s/^$1=//p" "$2" | head -n 1; }
dhcp() {
    ifconfig "$1" up
    udhcpc -i "$1" -n -q -t 10 -T 1 -s /bin/udhcpc-apply >/dev/null 2>&1 || echo "KILN-DHCP $1 none"
}

configure() {
    net=/tmp/network_data
    json-flat <"$drive/openstack/latest/network_data.json" >"$net"
    i=0
    while :; do
        link=$(get "networks\.$i\.link" "$net")
        [ -n "$link" ] || break
        j=0
        mac=""
        while :; do
            id=$(get "links\.$j\.id" "$net")
            [ -n "$id" ] || break
            [ "$id" = "$link" ] && mac=$(get "links\.$j\.ethernet_mac_address" "$net")
            j=$((j + 1))
        done
        ifname=$(ifname_of_mac "$mac")
        if [ -n "$ifname" ]; then
            case $(get "networks\.$i\.type" "$net") in
                ipv4)
                    address=$(get "networks\.$i\.ip_address" "$net")
                    netmask=$(get "networks\.$i\.netmask" "$net")
                    ifconfig "$ifname" "$address" netmask "$netmask" up
                    echo "KILN-NET $ifname $mac $address/$netmask"
                    ;;
                ipv4_dhcp) dhcp "$ifname" ;;
            esac
        fi
        i=$((i + 1))
    done
}

# Sends as itself, then from an address it does not own, then from a MAC it does not own.
spoof_test() {
    target=$1
    ping_as() { if ping -c 2 -W 2 "$@" "$target" >/dev/null 2>&1; then echo ok; else echo fail; fi; }
    echo "KILN-PING-OWN $(ping_as)"
    ip addr add 198.51.100.99/24 dev eth0
    echo "KILN-PING-SPOOF-IP $(ping_as -I 198.51.100.99)"
    ip addr del 198.51.100.99/24 dev eth0
    own=$(cat /sys/class/net/eth0/address)
    ip link set eth0 down
    ip link set eth0 address 0a:00:00:00:00:99
    ip link set eth0 up
    ip neigh flush dev eth0
    echo "KILN-PING-SPOOF-MAC $(ping_as)"
    ip link set eth0 down
    ip link set eth0 address "$own"
    ip link set eth0 up
    echo "KILN-SPOOF-DONE"
}

boot() {
    for n in $(nics); do
        echo "KILN-NIC $n $(cat "/sys/class/net/$n/address") $(cat "/sys/class/net/$n/mtu")"
    done
    nics >"$state"
    mkdir -p "$drive"
    for dev in /dev/sr0 /dev/sr1 /dev/sr2 /dev/sr3; do
        [ -b "$dev" ] || continue
        # The ISO 9660 volume id: 32 bytes at offset 32808 (cloud-init looks for config-2).
        label=$(dd if="$dev" bs=1 skip=32808 count=32 2>/dev/null | tr -d ' ')
        [ "$label" = config-2 ] || continue
        mount -t iso9660 -o ro "$dev" "$drive" 2>/dev/null || continue
        echo "KILN-CONFIG-DRIVE ${dev#/dev/} $label"
        meta=/tmp/meta_data
        json-flat <"$drive/openstack/latest/meta_data.json" >"$meta"
        echo "KILN-UUID $(get uuid "$meta")"
        hostname "$(get hostname "$meta")"
        echo "KILN-HOSTNAME $(hostname)"
        sed -n 's/^public_keys\.\([^=]*\)=.*/KILN-KEY \1/p' "$meta"
        user_data="$drive/openstack/latest/user_data"
        if [ -f "$user_data" ]; then
            marker=$(grep -o 'KILN-USERDATA-MARK[A-Za-z0-9_:-]*' "$user_data" | head -n 1)
            echo "KILN-USERDATA ${marker:-none}"
        fi
        configure
        target=$(sed -n 's/^KILN-SPOOF-TEST \([0-9.]*\).*/\1/p' "$user_data" 2>/dev/null)
        [ -n "$target" ] && spoof_test "$target"
        return
    done
}

poll() {
    nics >"$state.new"
    for n in $(cat "$state.new"); do
        grep -qx "$n" "$state" && continue
        echo "KILN-NIC-ADDED $n $(cat "/sys/class/net/$n/address") $(cat "/sys/class/net/$n/mtu")"
        dhcp "$n"
    done
    for n in $(cat "$state"); do
        grep -qx "$n" "$state.new" || echo "KILN-NIC-REMOVED $n"
    done
    mv "$state.new" "$state"
}

"$@"
