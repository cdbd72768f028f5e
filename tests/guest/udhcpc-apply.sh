#!/bin/sh
# kiln test guest: busybox udhcpc's hook, which puts the leased address on the interface.
case "$1" in
    deconfig) ifconfig "$interface" 0.0.0.0 up ;;
    bound | renew)
        ifconfig "$interface" "$ip" netmask "${subnet:-255.255.255.0}" up
        # udhcpc runs with its output discarded; the console is the contract.
        echo "KILN-DHCP $interface $ip" >/dev/ttyS0
        ;;
esac
