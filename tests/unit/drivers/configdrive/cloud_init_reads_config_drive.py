#!/usr/bin/python3
"""cloud-init's own ConfigDrive code reads the config drive kiln makes.

usage: cloud_init_reads_config_drive.py CONFIGDRIVE_TOOL

Builds an ISO with configdrive-tool, extracts it with xorriso, then reads it with Debian's
cloud-init (cloudinit.sources.helpers.openstack: ConfigDriveReader.read_v2, convert_net_json) and
checks what a guest would get: instance id, hostname, keys, user data, and the network config
cloud-init would write for a static and a DHCP interface. Exits 77 (skipped) when cloud-init or
xorriso is not installed (scripts/install-deps.sh installs both).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

SKIP = 77

try:
    from cloudinit.sources import DataSourceConfigDrive
    from cloudinit.sources.helpers import openstack
except ImportError as e:
    print(f"skipped: cloud-init's Python code is not installed ({e})")
    sys.exit(SKIP)

for tool in ("xorriso", "isoinfo"):
    if shutil.which(tool) is None:
        print(f"skipped: {tool} is not installed")
        sys.exit(SKIP)

UUID = "0b6f4c1e-7d2a-4e52-9a8e-3f1c2d4b5a69"
USER_DATA = "#!/bin/sh\necho KILN-USERDATA-MARK\n"
KEYS = {
    "alice": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKilnTestKeyAlice alice@example",
    "bob": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKilnTestKeyBob bob@example",
}
STATIC_MAC = "fa:16:3e:11:22:33"
DHCP_MAC = "fa:16:3e:44:55:66"

INPUT = {
    "uuid": UUID,
    "name": "ci-guest",
    "hostname": "ci-guest",
    "project_id": "6b3c1f0e9d8a4b7c8e2f1a0b9c8d7e6f",
    "public_keys": KEYS,
    "user_data": USER_DATA,
    "network_info": [
        {
            "id": "5f0e8a4c-1b2d-4c3e-9f8a-7b6c5d4e3f21",
            "address": STATIC_MAC,
            "type": "bridge",
            "devname": "tap5f0e8a4c-1b",
            "network": {
                "id": "c3a1b2d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d",
                "bridge": "brq-c3a1b2d4",
                "label": "static-net",
                "meta": {"mtu": 1500},
                "subnets": [
                    {
                        "cidr": "198.51.100.0/24",
                        "version": 4,
                        "gateway": {"address": "198.51.100.1", "type": "gateway", "version": 4},
                        "ips": [{"address": "198.51.100.10", "type": "fixed", "version": 4}],
                        "dns": [{"address": "198.51.100.53", "type": "dns", "version": 4}],
                        "routes": [],
                        "meta": {},
                    }
                ],
            },
        },
        {
            "id": "9a8b7c6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d",
            "address": DHCP_MAC,
            "type": "bridge",
            "devname": "tap9a8b7c6d-5e",
            "network": {
                "id": "d4c3b2a1-0f9e-4d8c-7b6a-5f4e3d2c1b0a",
                "label": "dhcp-net",
                "meta": {},
                "subnets": [
                    {
                        "cidr": "203.0.113.0/24",
                        "gateway": "203.0.113.1",
                        "ips": [{"address": "203.0.113.20", "type": "fixed"}],
                        "meta": {"dhcp_server": "203.0.113.2"},
                    }
                ],
            },
        },
    ],
}


def check(condition, what):
    if not condition:
        print(f"FAILED: {what}")
        sys.exit(1)


def main():
    tool = sys.argv[1]
    with tempfile.TemporaryDirectory(prefix="kiln-configdrive-") as tmp:
        input_path = os.path.join(tmp, "input.json")
        iso = os.path.join(tmp, "disk.config")
        tree = os.path.join(tmp, "tree")
        with open(input_path, "w", encoding="utf-8") as f:
            json.dump(INPUT, f)
        subprocess.run([tool, input_path, iso], check=True)

        # DataSourceConfigDrive finds the drive by its filesystem label.
        pvd = subprocess.run(
            ["isoinfo", "-d", "-i", iso], check=True, capture_output=True, text=True
        ).stdout
        check("Volume id: config-2\n" in pvd, f"volume id config-2 in isoinfo -d:\n{pvd}")
        check("config-2" in DataSourceConfigDrive.LABEL_TYPES, "cloud-init looks for config-2")

        subprocess.run(
            ["xorriso", "-osirrox", "on", "-indev", iso, "-extract", "/", tree],
            check=True,
            capture_output=True,
        )
        # The image's files are read-only; the temporary directory must still go away.
        for root, dirs, _ in os.walk(tree):
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o755)
        os.chmod(tree, 0o755)

        reader = openstack.ConfigDriveReader(tree)
        results = reader.read_v2()
        print(f"cloud-init read openstack/{reader._find_working_version()}")
        metadata = results["metadata"]
        check(metadata["uuid"] == UUID, f"uuid {metadata.get('uuid')!r}")
        check(metadata["hostname"] == "ci-guest", f"hostname {metadata.get('hostname')!r}")
        # read_v2 copies them under cloud-init's own names, and decodes the seed.
        check(metadata.get("instance-id") == UUID, "cloud-init's instance-id is the uuid")
        check(metadata.get("local-hostname") == "ci-guest", "cloud-init's local-hostname")
        check(len(metadata["random_seed"]) == 512, "random_seed is 512 bytes")
        check(metadata["public_keys"] == KEYS, f"public_keys {metadata.get('public_keys')!r}")
        userdata = results["userdata"]
        if isinstance(userdata, bytes):
            userdata = userdata.decode()
        check("KILN-USERDATA-MARK" in userdata, f"user data {userdata!r}")
        check(results.get("vendordata") == {}, "vendor_data.json is {}")

        known_macs = {STATIC_MAC: "eth0", DHCP_MAC: "eth1"}
        config = openstack.convert_net_json(results["networkdata"], known_macs=known_macs)
        print(json.dumps(config, indent=1))
        check(config["version"] == 1, "network config version 1")
        physical = {c["mac_address"]: c for c in config["config"] if c["type"] == "physical"}
        check(set(physical) == {STATIC_MAC, DHCP_MAC}, f"physical MACs {sorted(physical)}")

        static = physical[STATIC_MAC]["subnets"]
        check(len(static) == 1 and static[0]["type"] == "static", f"static subnet {static}")
        address = static[0]["address"]
        netmask = static[0].get("netmask")
        check(
            (address == "198.51.100.10" and netmask == "255.255.255.0")
            or address == "198.51.100.10/24",
            f"static address {address!r} netmask {netmask!r}",
        )
        gateways = [r.get("gateway") for r in static[0].get("routes", [])]
        check(
            static[0].get("gateway") == "198.51.100.1" or "198.51.100.1" in gateways,
            f"gateway in {static[0]}",
        )
        check(physical[STATIC_MAC].get("mtu") == 1500, f"mtu {physical[STATIC_MAC].get('mtu')}")

        dhcp = physical[DHCP_MAC]["subnets"]
        check([s["type"] for s in dhcp] == ["dhcp4"], f"dhcp subnet {dhcp}")

        nameservers = [c for c in config["config"] if c["type"] == "nameserver"]
        check(
            any(c.get("address") in ("198.51.100.53", ["198.51.100.53"]) for c in nameservers)
            or "198.51.100.53" in static[0].get("dns_nameservers", []),
            f"nameserver 198.51.100.53 in {config['config']}",
        )
    print("cloud-init read the config drive")


if __name__ == "__main__":
    main()
